"""A sweep's plan before anything runs: every variant of the study, validated.

``metacam sweep`` takes Hydra overrides, some of them sweeps (``model=a,b``,
``data.shard_index=range(4)``). The jobs are the product of those values and the
combinations (``combo_id``). This module composes one config per variant (every
sweep value except the combination), validates it — unknown models, layers, groups,
members, plug-ins, shard indices, target rules, label files — and loads each model
once on the CPU, so a bad value anywhere is one line before any job starts. The same
plan writes the study's manifests (what ``metacam status`` expects) and gives the
SLURM submitter its task list.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from importlib.resources import files
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from metacam.errors import MetaCAMError
from metacam.experiments.schema import register
from metacam.sweep import (
    JobSpec,
    load_bundle,
    model_key,
    prepare,
    study_id,
    validate,
    write_manifest,
)
from metacam.sweep.spec import StudyConfig

CONF_DIR = Path(str(files("metacam.conf")))  # conf/ in a checkout, package data when installed
COMBO_KEY = "combo_id"


def _plain(node: object) -> object:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def job_spec(cfg: DictConfig) -> JobSpec:
    """The plain-data job description of a composed config (its study fields as they are,
    then the job's sweep id and results folder)."""
    spec = JobSpec.of({f.name: _plain(cfg[f.name]) for f in fields(StudyConfig)})
    sweep_id = str(cfg.sweep_id) if str(cfg.sweep_id) != "auto" else study_id(spec)
    results = Path(cfg.results_dir) if cfg.results_dir else Path(cfg.out_dir) / "sweeps" / sweep_id / "results"
    return replace(spec, sweep_id=sweep_id, results_dir=str(results))


@contextmanager
def composed(overrides: list[str], config_dirs: list[str] = (), hydra: bool = False) -> Iterator[DictConfig]:
    """The sweep config composed with ``overrides`` (no sweeps among them), Hydra's
    global state cleared after use. config_dirs: extra folders searched first
    (Hydra's --config-dir)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register()
    search = [f"hydra.searchpath=[{','.join('file://' + str(Path(d).resolve()) for d in config_dirs)}]"] if config_dirs else []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            yield compose("sweep", overrides=[*search, *overrides], return_hydra_config=hydra)
    finally:
        GlobalHydra.instance().clear()


@dataclass
class SweepPlan:
    """The jobs of a sweep: variants (one JobSpec per combination of the non-combo sweep
    values, combo_id unset) x combos. launcher: the composed hydra.launcher settings."""

    variants: list[JobSpec]
    combos: list[int]
    launcher: dict
    max_array_size: int | None
    compact: bool = False  # compact the dataset when the sweep ends (compact=true)

    @property
    def results_dirs(self) -> list[str]:
        return list(dict.fromkeys(v.results_dir for v in self.variants))

    def tasks(self) -> list[JobSpec]:
        return [replace(v, combo_id=c) for v in self.variants for c in self.combos]


def _expand(overrides: list[str]) -> tuple[list[list[str]], list[str] | None]:
    """(one override list per variant, the user's combo_id values or None)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        raise MetaCAMError(f"cannot parse the overrides: {_first_line(error)}") from None
    choices: list[list[str]] = []
    combos = None
    for override in parsed:
        key = override.get_key_element()
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else None
        if override.key_or_group == COMBO_KEY:
            combos = values if values is not None else [override.value()]
            continue
        if values is None:
            choices.append([override.input_line])
        else:
            choices.append([f"{key}={value}" for value in values])
    return [list(variant) for variant in itertools.product(*choices)], combos


def plan_sweep(overrides: list[str], config_dirs: list[str] = ()) -> SweepPlan:
    """Compose and validate every variant; raise MetaCAMError (one line) on any problem."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    variants, combo_values = _expand(overrides)
    specs: list[JobSpec] = []
    launcher: dict = {}
    max_array = None
    compact = False
    for i, variant in enumerate(variants):
        try:
            with composed(variant, config_dirs, hydra=i == 0) as cfg:
                spec = job_spec(cfg)
                if i == 0:
                    launcher = _plain(cfg.hydra.launcher)  # type: ignore[assignment]
                    max_array = cfg.slurm.max_array_size
                    compact = bool(cfg.compact)
        except (HydraException, OmegaConfBaseException, ValueError, TypeError) as error:
            raise MetaCAMError(_first_line(error)) from None
        validate(spec)  # groups, settings, the data's layout: before loading any model
        # unknown model, weights or layer, a label outside its classes, a member that cannot explain it: now
        prepare(replace(spec, device="cpu"))
        specs.append(spec)
    groups = validate(specs[0]).groups
    try:
        combos = [int(c) for c in combo_values] if combo_values is not None else list(range(groups.n_combos))
    except ValueError:
        raise MetaCAMError(f"combo_id {combo_values}: give integers in 0..{groups.n_combos - 1}") from None
    for combo in combos:
        validate(replace(specs[0], combo_id=combo))
    return SweepPlan(specs, combos, launcher, max_array, compact)


def write_manifests(plan: SweepPlan) -> None:
    """Record what each (model, shard) of the study must produce (for `metacam status`)."""
    for spec in plan.variants:
        bundle = load_bundle(replace(spec, device="cpu"))
        write_manifest(validate(spec), model_key(spec.model), bundle.target_layer_name)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
