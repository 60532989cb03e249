"""The sweep's Hydra app: a thin ``@hydra.main`` around :func:`metacam.sweep.run_job`.

Run it as ``metacam sweep [overrides]`` or ``python experiments/sweep.py -m [overrides]``.
``metacam sweep`` first plans and validates the whole study (every model, shard and
combination; :mod:`metacam.experiments.plan`), writes its manifests, then runs the
jobs: in this process (``launcher=local``, the default), as submitit subprocesses
(``launcher=submitit_local``), or on SLURM (``launcher=submitit_slurm``: job arrays
sized to the cluster, ``--detach`` to return at once; :mod:`metacam.experiments.submit`).
``hydra/launcher=submitit_slurm`` is Hydra's own launcher: one array, waited on.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict

import hydra
from omegaconf import DictConfig

from metacam.errors import MetaCAMError
from metacam.experiments.plan import CONF_DIR, job_spec, plan_sweep, write_manifests
from metacam.experiments.schema import register
from metacam.progress import clock
from metacam.sweep import experiments_of, run_job, validate

register()
_process_started: float | None = None


def run(cfg: DictConfig) -> dict:
    """One job: score this combination (and its baselines, controls); report progress."""
    global _process_started
    _process_started = _process_started or time.perf_counter()
    spec = job_spec(cfg)
    report = run_job(spec)
    from metacam.status import study_status

    status = study_status(spec.results_dir, read=False)
    job = validate(spec)
    names = ", ".join(e.folder for e in experiments_of(job.groups, job.combo_id, spec.controls))
    elapsed = time.perf_counter() - _process_started
    print(f"[{status.files_done}/{status.files_expected} result files] {spec.model.name} {names}: "
          f"{report.line()}; elapsed {clock(elapsed)}, ETA {status.eta_text()}", flush=True)
    return asdict(report)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="sweep")
def app(cfg: DictConfig) -> dict:
    return run(cfg)


_HELP = ("-h", "--help", "--hydra-help", "-c", "--cfg", "--info", "--resolve", "-p", "--package")
_WITH_VALUE = ("-cd", "--config-dir", "-cp", "--config-path", "-cn", "--config-name", "-c", "--cfg",
               "-p", "--package", "--info")


def split_arguments(argv: list[str]) -> tuple[list[str], list[str], list[str], bool]:
    """(Hydra flags with their values, overrides, config dirs, --detach) of a command line."""
    flags: list[str] = []
    overrides: list[str] = []
    config_dirs: list[str] = []
    detach = False
    items = iter(argv)
    for arg in items:
        if arg == "--detach":
            detach = True
        elif arg.startswith("-"):
            name, eq, value = arg.partition("=")
            flags.append(arg)
            if not eq and name in _WITH_VALUE and name not in ("--info", "-c", "--cfg"):
                value = next(items, "")
                flags.append(value)
            if name in ("-cd", "--config-dir"):
                config_dirs.append(value)
        else:
            overrides.append(arg)
    return flags, overrides, config_dirs, detach


def _slurm(overrides: list[str]) -> bool:
    return any(o.replace("+", "").strip() in ("launcher=submitit_slurm",) for o in overrides)


def main(argv: list[str] | None = None, *, multirun: bool = False) -> int:
    """Plan and validate the study, then run it (as a Hydra multirun when asked)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    flags, overrides, config_dirs, detach = split_arguments(argv)
    if not any(flag in _HELP for flag in flags):
        try:
            if detach and not _slurm(overrides):
                raise MetaCAMError("--detach needs launcher=submitit_slurm (local jobs run in this process)")
            plan = plan_sweep(overrides, config_dirs)
            write_manifests(plan)
            if _slurm(overrides):
                from metacam.experiments.submit import submit

                return submit(plan, detach=detach)
        except MetaCAMError as error:
            print(f"metacam sweep: error: {error}", file=sys.stderr)
            return 2
    if multirun and not any(flag in ("-m", "--multirun") for flag in flags):
        flags = ["--multirun", *flags]
    sys.argv = [sys.argv[0], *flags, *overrides]
    app()
    return 0


def cli(argv: list[str]) -> int:
    """``metacam sweep [overrides]``: always the full sweep (a Hydra multirun)."""
    return main(argv, multirun=True)


if __name__ == "__main__":
    sys.exit(main())
