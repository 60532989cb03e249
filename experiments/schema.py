"""The sweep's Hydra schema: the library's config dataclasses, registered as structured configs.

:class:`SweepConfig` is the library's :class:`metacam.sweep.spec.StudyConfig` (what every
job of a study is configured with: model, data, groups, road, heldout, deletion,
threshold, members, metrics, ...) plus what only the Hydra app needs. Every default
lives in those dataclasses (metacam.config, metacam.evaluation.deletion,
metacam.cams.MemberOptions); the YAML files under conf/ only say what an option changes.
A typo in a key or a value of the wrong type is refused by Hydra when the config is
composed (before any job starts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from metacam.config import FINE_KS
from metacam.sweep.spec import StudyConfig

SCHEMA = "sweep_schema"


@dataclass
class SlurmConfig:
    """How ``metacam sweep launcher=submitit_slurm`` submits (see metacam.experiments.submit).

    max_array_size: the largest job array to submit (None: the cluster's MaxArraySize,
        read from ``scontrol show config``); bigger sweeps are split into several arrays.
    """

    max_array_size: int | None = None


@dataclass
class SweepConfig(StudyConfig):
    """The composed config of one sweep job (conf/sweep.yaml): the study's config plus
    where things go and how jobs are launched. ``combo_id`` is swept by Hydra."""

    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    sweep_id: str = "auto"  # auto: a hash of what defines the study (metacam.sweep.study_id)
    out_dir: str = "outputs"  # on a cluster: a shared filesystem
    results_dir: str | None = None  # default: ${out_dir}/sweeps/<sweep_id>/results
    cache_dir: str | None = "${out_dir}/cache"  # member-map cache shared by all jobs; null: off
    compact: bool = False  # at the end of the sweep, merge the unit files (metacam compact)


def combos(groups: object) -> str:
    """The sweeper's combo_id values for a groups node: ``range(0,2^G)``."""
    return f"range(0,{2 ** len(groups)})"  # type: ignore[arg-type]


def register() -> None:
    """Register the schema and the ``metacam.combos`` / ``metacam.fine_ks`` resolvers (idempotent)."""
    ConfigStore.instance().store(name=SCHEMA, node=SweepConfig)
    if not OmegaConf.has_resolver("metacam.combos"):
        OmegaConf.register_new_resolver("metacam.combos", combos)
    if not OmegaConf.has_resolver("metacam.fine_ks"):  # conf/threshold/fine.yaml: the grid, written once
        OmegaConf.register_new_resolver("metacam.fine_ks", lambda: list(FINE_KS))
