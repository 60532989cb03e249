"""The sweep's Hydra schema: the library's config dataclasses, registered as structured configs.

Every default lives in those dataclasses (metacam.config, metacam.evaluation.deletion); the YAML
files under conf/ only say what an option changes. A typo in a key or a value of the
wrong type is refused by Hydra when the config is composed (before any job starts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from metacam.config import DEFAULT_KS, DataConfig, HeldoutConfig, ModelConfig, RoadConfig
from metacam.evaluation.deletion import DeletionConfig

SCHEMA = "sweep_schema"


@dataclass
class ThresholdConfig:
    """The k grid of adaptive thresholding."""

    ks: list[float] = field(default_factory=lambda: list(DEFAULT_KS))


@dataclass
class SlurmConfig:
    """How ``metacam sweep launcher=submitit_slurm`` submits (see metacam.experiments.submit).

    max_array_size: the largest job array to submit (None: the cluster's MaxArraySize,
        read from ``scontrol show config``); bigger sweeps are split into several arrays.
    """

    max_array_size: int | None = None


@dataclass
class SweepConfig:
    """The composed config of one sweep job (conf/sweep.yaml)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    # The groups come from conf/groups/*.yaml only (a default here would merge with them).
    groups: dict[str, list[str]] = field(default_factory=dict)
    road: RoadConfig = field(default_factory=RoadConfig)
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)
    deletion: DeletionConfig = field(default_factory=DeletionConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    combo_id: int | None = None  # this job's combination (bitmask); None: all groups on
    controls: bool = True  # score the null controls (shuffled, smooth_noise)
    sweep_id: str = "auto"  # auto: a hash of what defines the study (metacam.sweep.study_id)
    seed: int = 0
    device: str = "auto"  # auto: CUDA when the job sees a GPU
    out_dir: str = "outputs"  # on a cluster: a shared filesystem
    results_dir: str | None = None  # default: ${out_dir}/sweeps/<sweep_id>/results
    cache_dir: str | None = "${out_dir}/cache"  # member-map cache shared by all jobs; null: off
    member_batch_size: int | None = None  # ScoreCAM images per forward (memory bound)


def combos(groups: object) -> str:
    """The sweeper's combo_id values for a groups node: ``range(0,2^G)``."""
    return f"range(0,{2 ** len(groups)})"  # type: ignore[arg-type]


def register() -> None:
    """Register the schema and the ``metacam.combos`` resolver (idempotent)."""
    ConfigStore.instance().store(name=SCHEMA, node=SweepConfig)
    if not OmegaConf.has_resolver("metacam.combos"):
        OmegaConf.register_new_resolver("metacam.combos", combos)
