"""What one sweep job is (plain data) and its validation, before any work.

:class:`StudyConfig` is what every job of a study is configured with; the sweep's Hydra
schema (``metacam.experiments.schema.SweepConfig``) and :class:`JobSpec` both extend it,
so neither copies its fields. ``metacam.experiments`` builds a JobSpec from the composed
config (or you build one by hand); :func:`validate` checks it and resolves it into a
:class:`Job`: the group set (plug-ins imported), the combination, the target rule, the
evaluator (the k grid, ROAD's draws, the metrics, plug-ins imported), the study's images
(:mod:`metacam.datasets`) and, given the model's classes, their labels. Every problem is
one :class:`MetaCAMError` line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, get_type_hints

from metacam.cams import MemberOptions, resolve_member
from metacam.config import DataConfig, HeldoutConfig, ModelConfig, RoadConfig, ThresholdConfig
from metacam.datasets import ImageSet, image_set, resolve_labels
from metacam.errors import MetaCAMError
from metacam.evaluation.deletion import DeletionConfig
from metacam.evaluation.engine import Evaluator
from metacam.groups import GroupError, GroupSet
from metacam.schema import FIXED_COLUMNS, flag_columns
from metacam.sweep.targets import TargetRule


@dataclass
class StudyConfig:
    """What every job of a study is configured with (each default written once, in the
    config dataclasses these fields hold).

    groups: group name -> members (from conf/groups/*.yaml: a default here would merge
        with them). members: the member CAMs' knobs (batch sizes, variants).
    metrics: plug-in metrics (``package.module:function``) scored besides the built-ins.
    combo_id: which groups are on (bit i = the i-th group); None = all on.
    controls: score the null controls (in the all-groups job).
    cache_dir: the member-map cache shared by the jobs (None: no cache).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    groups: dict[str, list[str]] = field(default_factory=dict)
    road: RoadConfig = field(default_factory=RoadConfig)
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)
    deletion: DeletionConfig = field(default_factory=DeletionConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    members: MemberOptions = field(default_factory=MemberOptions)
    metrics: list[str] = field(default_factory=list)
    combo_id: int | None = None
    controls: bool = True
    seed: int = 0
    device: str = "auto"  # auto: CUDA when the job sees a GPU
    cache_dir: str | None = None


@dataclass
class JobSpec(StudyConfig):
    """Everything one job needs, as plain data: the study's config, and where it writes.

    results_dir: the dataset folder; sweep_id: the study's id (metacam.sweep.study_id).
    """

    results_dir: str = ""
    sweep_id: str = ""

    @classmethod
    def of(cls, config: Any, **job: Any) -> JobSpec:
        """A JobSpec from any object or mapping with :class:`StudyConfig`'s fields (e.g.
        a composed Hydra config as plain dicts): each config dataclass built from its
        mapping (one-line errors), plus the job's own fields ``job``."""
        get = config.get if isinstance(config, dict) else lambda name: getattr(config, name)
        types = get_type_hints(StudyConfig)
        values: dict[str, Any] = {}
        for f in fields(StudyConfig):
            value, kind = get(f.name), types[f.name]
            values[f.name] = build(kind, value, f.name) if isinstance(kind, type) and is_dataclass(kind) else value
        return cls(**values, **job)


@dataclass(frozen=True)
class Job:
    """A validated JobSpec and what it resolves to."""

    spec: JobSpec
    groups: GroupSet
    combo_id: int
    targets: TargetRule
    evaluator: Evaluator  # the k grid, ROAD's in-sample and held-out draws, the metrics
    images: ImageSet  # the study's images (all shards), in study order
    labels: dict[str, int]  # label_key(entry) -> class; empty unless validated with the model's classes


def build(cls: type, values: Any, what: str) -> Any:
    """A config dataclass from a mapping (e.g. a Hydra node as a dict); one-line errors."""
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise MetaCAMError(f"{what}: expected a mapping of settings, got {values!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise MetaCAMError(f"{what}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return cls(**values)
    except TypeError as error:
        raise MetaCAMError(f"{what}: {error}") from None


def as_plain(value: Any) -> Any:
    """Dataclasses (nested) as dicts, for hashing and records."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {k: as_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_plain(v) for v in value]
    return value


def resolve_groups(groups: dict[str, list[str]]) -> GroupSet:
    """The group set with every member resolved (plug-ins imported here, in this process)."""
    try:
        checked = GroupSet.from_mapping(groups)
    except GroupError as error:
        raise MetaCAMError(str(error)) from None
    members = {m: resolve_member(m) for group in checked.members for m in group}
    return GroupSet.from_mapping(groups, is_control=lambda m: members[m].control)


def label_key(entry: str) -> str:
    """How an image entry is looked up in ``Job.labels``: the entry as listed (its full path),
    so files of the same name in two class folders keep their own labels."""
    return str(entry)


def validate(spec: JobSpec, categories: Sequence[str] | None = None) -> Job:
    """Check a job's configuration before any work: one clear error per problem.

    categories: the model's class names; with them the labels are resolved to class
    indices (a label that maps to no class, or outside them, is an error); without,
    ``Job.labels`` is empty (for callers that do not score).
    """
    groups = resolve_groups(spec.groups)
    combo_id = groups.all_on if spec.combo_id is None else int(spec.combo_id)
    if not 0 <= combo_id < groups.n_combos:
        raise MetaCAMError(
            f"combo_id {combo_id} is outside 0..{groups.n_combos - 1} for the {groups.size} groups "
            f"{', '.join(groups.names)}"
        )
    evaluator = Evaluator.of(spec.threshold.ks, spec.road, spec.heldout, spec.deletion, spec.metrics,
                             reserved=[*FIXED_COLUMNS, *flag_columns(groups.names)])
    data = spec.data
    if data.images_per_unit < 1:
        raise MetaCAMError(f"data images_per_unit {data.images_per_unit} must be at least 1")
    if data.shard_count < 1:
        raise MetaCAMError(f"data shard_count {data.shard_count} must be at least 1")
    if not 0 <= data.shard_index < data.shard_count:
        raise MetaCAMError(
            f"data shard_index {data.shard_index} is outside 0..{data.shard_count - 1} "
            f"(shard_count {data.shard_count})"
        )
    targets = TargetRule.parse(data.target)
    if targets.kind == "label" and data.layout == "files" and not data.labels:
        raise MetaCAMError("data target 'label' needs data.labels, a CSV with columns image,label "
                           "(or data=imagefolder, whose class folders are the labels)")
    images = image_set(data, need_labels=targets.kind == "label")
    labels = resolve_labels(images, categories, spec.model.name) if categories is not None else {}
    return Job(spec, groups, combo_id, targets, evaluator, images, labels)
