"""The sweep's Hydra app: a thin ``@hydra.main`` around :func:`metacam.sweep.run_job`.

Run it as ``metacam sweep [overrides]`` or ``python experiments/sweep.py -m [overrides]``;
``launcher=submitit_slurm`` (or ``hydra/launcher=submitit_slurm``) sends the same
64 jobs to SLURM as one job array.
"""

import sys
import time
from dataclasses import asdict
from importlib.resources import files
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from metacam.errors import MetaCAMError
from metacam.results import result_files
from metacam.sweep import (
    DataSpec,
    JobSpec,
    ModelSpec,
    RoadSpec,
    experiments_of,
    run_job,
    sweep_identity,
    units_of,
)

CONF_DIR = Path(str(files("metacam.conf")))  # conf/ in a checkout, package data when installed
_process_started: float | None = None
_jobs_in_process = 0


def _plain(node) -> object:
    return OmegaConf.to_container(node, resolve=True)


def resolve_sweep_id(cfg: DictConfig) -> str:
    """The configured sweep_id, or for ``auto`` a hash of what determines the results."""
    if str(cfg.sweep_id) != "auto":
        return str(cfg.sweep_id)
    road = {key: value for key, value in _plain(cfg.road).items() if key != "batch_size"}
    parts = {
        "model": _plain(cfg.model),
        "data": _plain(cfg.data),
        "groups": _plain(cfg.groups),
        "road": road,
        "ks": _plain(cfg.threshold.ks),
        "seed": cfg.seed,
    }
    return f"{cfg.model.name.split(':')[-1]}-{sweep_identity(parts)}"


def results_dir_of(cfg: DictConfig, sweep_id: str) -> Path:
    if cfg.results_dir:
        return Path(cfg.results_dir)
    return Path(cfg.out_dir) / "sweeps" / sweep_id / "results"


def job_spec(cfg: DictConfig) -> JobSpec:
    """The plain-data job description of a composed config."""
    sweep_id = resolve_sweep_id(cfg)
    return JobSpec(
        combo={key: bool(value) for key, value in _plain(cfg.combo).items()},
        groups={key: list(value) for key, value in _plain(cfg.groups).items()},
        model=ModelSpec(**_plain(cfg.model)),
        data=DataSpec(**_plain(cfg.data)),
        road=RoadSpec(**_plain(cfg.road)),
        ks=[float(k) for k in _plain(cfg.threshold.ks)],
        seed=int(cfg.seed),
        device=str(cfg.device),
        results_dir=str(results_dir_of(cfg, sweep_id)),
        cache_dir=None if cfg.cache_dir is None else str(cfg.cache_dir),
        member_batch_size=cfg.member_batch_size,
        sweep_id=sweep_id,
    )


def sweep_size(spec: JobSpec) -> tuple[int, int]:
    """(jobs, experiments) of the whole sweep: 2^groups jobs, plus one single-method
    experiment per member, scored by its group's single-group job."""
    jobs = 2 ** len(spec.groups)
    return jobs, jobs + sum(len(members) for members in spec.groups.values())


def finished_experiments(spec: JobSpec) -> int:
    """Experiments whose every unit has a result file."""
    units = len(units_of(spec.data))
    per_folder: dict[str, int] = {}
    for path in result_files(Path(spec.results_dir)):
        per_folder[path.parent.name] = per_folder.get(path.parent.name, 0) + 1
    return sum(1 for count in per_folder.values() if count >= units)


def run(cfg: DictConfig) -> dict:
    """One job: score this combination (and its single-method baselines); report progress."""
    global _process_started, _jobs_in_process
    _process_started = _process_started or time.perf_counter()
    spec = job_spec(cfg)
    report = run_job(spec)
    _jobs_in_process += 1
    jobs, experiments = sweep_size(spec)
    done = finished_experiments(spec)
    names = ", ".join(e.folder for e in experiments_of(spec.combo, spec.groups))
    elapsed = time.perf_counter() - _process_started
    remaining = max(experiments - done, 0) * elapsed / max(done, 1)
    print(
        f"[{done}/{experiments} experiments] {names}: {report.units_done} unit(s) scored, "
        f"{report.units_skipped} already done, {report.seconds:.1f}s (members "
        f"{report.member_seconds:.1f}s, ROAD forward {report.road.forward_seconds:.1f}s, "
        f"imputation {report.road.impute_seconds:.1f}s); "
        f"elapsed {_clock(elapsed)}, ETA {_clock(remaining) if done < experiments else 'done'}",
        flush=True,
    )
    return asdict(report)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="sweep")
def app(cfg: DictConfig) -> dict:
    return run(cfg)


def check_overrides(overrides: list[str]) -> None:
    """Compose the config with the user's overrides (first value of each sweep) and
    validate it, so a typo is one clear error before any job starts."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from metacam.sweep import load_bundle, validate

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        raise MetaCAMError(f"cannot parse the overrides: {_first_line(error)}") from None
    simple = []
    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra"):
            continue  # Hydra's own settings: Hydra checks them itself
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            simple.append(f"{override.get_key_element()}={first}")
        else:
            simple.append(override.input_line)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("sweep", overrides=simple)
        spec = job_spec(cfg)
    except (HydraException, OmegaConfBaseException, ValueError, TypeError) as error:
        raise MetaCAMError(_first_line(error)) from None
    finally:
        GlobalHydra.instance().clear()
    validate(spec)
    load_bundle(spec.model, "cpu")  # unknown model, missing weights or wrong layer: fail now


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def main(argv: list[str] | None = None, *, multirun: bool = False) -> int:
    """Validate the overrides, then run the Hydra app (as a multirun when asked)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = [arg for arg in argv if arg.startswith("-")]
    overrides = [arg for arg in argv if not arg.startswith("-")]
    if not any(flag in ("-h", "--help", "--hydra-help", "-c", "--cfg", "--info") for flag in flags):
        try:
            check_overrides(overrides)
        except MetaCAMError as error:
            print(f"metacam sweep: error: {error}", file=sys.stderr)
            return 2
    if multirun and not any(flag in ("-m", "--multirun") for flag in flags):
        argv = ["--multirun", *argv]
    sys.argv = [sys.argv[0], *argv]
    app()
    return 0


def cli(argv: list[str]) -> int:
    """``metacam sweep [overrides]``: always the full sweep (a Hydra multirun)."""
    return main(argv, multirun=True)


if __name__ == "__main__":
    sys.exit(main())
