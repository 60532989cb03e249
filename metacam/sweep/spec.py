"""What one sweep job is (plain data) and its validation, before any work.

:class:`JobSpec` is built from the composed Hydra config by ``metacam.experiments``
(or by hand); :func:`validate` checks it and resolves it into a :class:`Job`:
the group set (plug-ins imported), the combination, the target rule and the
checked ROAD settings. Every problem is one :class:`MetaCAMError` line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from metacam.cams import MemberOptions, resolve_member
from metacam.config import DataConfig, HeldoutConfig, ModelConfig, RoadConfig, check_ks
from metacam.evaluation.deletion import DeletionConfig
from metacam.errors import MetaCAMError
from metacam.groups import GroupError, GroupSet
from metacam.images import expand_specs
from metacam.sweep.targets import TargetRule


@dataclass
class JobSpec:
    """Everything one job needs, as plain data.

    combo_id: which groups are on (bit i = the i-th group); None = all on.
    controls: score the null controls (in the all-groups job).
    results_dir / cache_dir: the dataset folder and the member-map cache (None: no cache).
    """

    groups: dict[str, list[str]]
    combo_id: int | None
    model: ModelConfig
    data: DataConfig
    road: RoadConfig
    heldout: HeldoutConfig
    deletion: DeletionConfig
    ks: list[float]
    seed: int
    device: str
    results_dir: str
    cache_dir: str | None
    members: MemberOptions
    controls: bool
    sweep_id: str


@dataclass(frozen=True)
class Job:
    """A validated JobSpec and what it resolves to."""

    spec: JobSpec
    groups: GroupSet
    combo_id: int
    targets: TargetRule
    ks: tuple[float, ...]
    road: RoadConfig
    heldout: RoadConfig | None  # None: no held-out re-scoring
    labels: dict[str, int]


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


def read_labels(path: str | None) -> dict[str, int]:
    """image file name -> class, from a CSV with columns image,label."""
    if path is None:
        return {}
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"image", "label"} <= set(reader.fieldnames):
                raise MetaCAMError(f"labels file {path}: needs the columns image,label")
            return {Path(row["image"]).name: int(row["label"]) for row in reader}
    except OSError as error:
        raise MetaCAMError(f"labels file {path}: {error.strerror}") from None
    except ValueError:
        raise MetaCAMError(f"labels file {path}: a label is not an integer class index") from None


def label_key(entry: str) -> str:
    """How an image entry is looked up in the labels CSV: its file name."""
    return Path(entry).name


def validate(spec: JobSpec) -> Job:
    """Check a job's configuration before any work: one clear error per problem."""
    groups = resolve_groups(spec.groups)
    combo_id = groups.all_on if spec.combo_id is None else int(spec.combo_id)
    if not 0 <= combo_id < groups.n_combos:
        raise MetaCAMError(
            f"combo_id {combo_id} is outside 0..{groups.n_combos - 1} for the {groups.size} groups "
            f"{', '.join(groups.names)}"
        )
    ks = tuple(check_ks(spec.ks))
    road = spec.road.checked()
    heldout = spec.heldout.road(road) if spec.heldout.enabled else None
    data = spec.data
    if not data.images:
        raise MetaCAMError("data images is empty; give files, folders or sample names")
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
    labels = read_labels(data.labels)
    if targets.kind == "label":
        if not data.labels:
            raise MetaCAMError("data target 'label' needs data.labels, a CSV with columns image,label")
        missing = [e for e in expand_specs(data.images) if label_key(e) not in labels]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise MetaCAMError(
                f"labels file {data.labels} has no label for {label_key(missing[0])}{more}; "
                f"add them or use data.target=top1"
            )
    return Job(spec, groups, combo_id, targets, ks, road, heldout, labels)
