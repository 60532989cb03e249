"""The experiment design: which experiments a job scores, which units of images a
shard holds, where each result file goes, and the study's identity.

A job is one on/off combination of the G groups (``combo_id``, bit i = group i).
It scores its MetaCAM map and, when exactly one group is on, each of that group's
members alone (the single-method baselines); the job with every group on also
scores the two null controls. A study (one ``sweep_id``) may hold several models,
image shards and targets per image: its id hashes what defines it, not what
varies inside it, and every result file's path names its model and experiment.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from metacam.config import ModelConfig, layer_entries
from metacam.datasets import image_set
from metacam.evaluation.registry import resolve_metrics
from metacam.groups import GroupSet
from metacam.schema import CONTROL_METHODS, KIND_CONTROL, KIND_METACAM, KIND_SINGLE
from metacam.sweep.controls import CONTROLS
from metacam.sweep.spec import Job, JobSpec, as_plain
from metacam.sweep.targets import TargetRule

MANIFEST_DIR = "_manifest"


@dataclass(frozen=True)
class Experiment:
    """One row-producing experiment: a MetaCAM combination, a single method or a control.

    flags: one bool per group (the ``g_<group>`` columns); members: the member maps it needs.
    """

    kind: str  # one of metacam.schema.KINDS
    method: str
    combo_id: int | None
    flags: tuple[bool, ...]
    members: tuple[str, ...]

    @property
    def folder(self) -> str:
        if self.kind == KIND_METACAM:
            return f"metacam-combo{self.combo_id:02d}"
        return f"{self.kind}-{safe_name(self.method)}"


def safe_name(text: str) -> str:
    """``text`` usable as one path component (plug-in paths contain ':' and '.')."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def experiments_of(groups: GroupSet, combo_id: int, controls: bool = True) -> list[Experiment]:
    """The combination ``combo_id``; its group's members alone when exactly one group is on;
    and the null controls in the all-groups job (when ``controls``)."""
    flags = tuple(groups.flags(combo_id).values())
    found = [Experiment(KIND_METACAM, groups.combo_name(combo_id), combo_id, flags,
                        tuple(groups.members_of(combo_id)))]
    if sum(flags) == 1:
        (group,) = [members for members, on in zip(groups.members, flags, strict=True) if on]
        found += [Experiment(KIND_SINGLE, m, None, flags, (m,)) for m in group]
    if controls and combo_id == groups.all_on:
        off = (False,) * groups.size
        comparator = tuple(groups.members_of(groups.comparator))  # e.g. the shuffled control's source
        found += [Experiment(KIND_CONTROL, name, None, off, comparator if CONTROLS[name].uses_comparator else ())
                  for name in CONTROL_METHODS]
    return found


def all_experiments(groups: GroupSet, controls: bool = True) -> list[Experiment]:
    """Every experiment of the sweep, in job order."""
    return [e for combo_id in range(groups.n_combos) for e in experiments_of(groups, combo_id, controls)]


def study_units(spec: JobSpec) -> list[list[str]]:
    """All units of the study's image set (after sampling), in order: ``images_per_unit`` entries each."""
    entries = image_set(spec.data).entries
    size = spec.data.images_per_unit
    return [list(entries[i : i + size]) for i in range(0, len(entries), size)]


def shard_units(spec: JobSpec) -> list[list[str]]:
    """This shard's units: unit i belongs to shard i mod shard_count, so a unit's content
    (and its file name) does not depend on how the study is sharded."""
    data = spec.data
    return study_units(spec)[data.shard_index :: data.shard_count]


def model_key(model: ModelConfig) -> str:
    """The explained network's identity: name (``library/name``), checkpoint content hash,
    or seed; constructor arguments (a hash), input size and target layers if set (so a
    study of two layer choices keeps them apart as two models)."""
    key = model.load_name
    if model.checkpoint:
        key += "@" + hashlib.sha1(Path(model.checkpoint).read_bytes()).hexdigest()[:10]
    elif not model.pretrained:
        key += f"-random{model.seed}"
    if model.num_classes is not None:
        key += f"-c{model.num_classes}"
    if model.kwargs:
        text = json.dumps(model.kwargs, sort_keys=True, default=str)
        key += "-kw" + hashlib.sha1(text.encode()).hexdigest()[:8]
    if model.input_size:
        key += "-{}x{}".format(*model.input_size)
    layers = layer_entries(model.layer)
    if layers:
        key += "-" + "+".join(map(str, layers))
    return key


def unit_name(model: str, layer: str, entries: list[str], targets: TargetRule) -> str:
    """A stable file name for a unit of images: hashed from what determines its rows."""
    text = "\n".join([model, layer, targets.text(), *entries])
    return f"unit-{hashlib.sha1(text.encode()).hexdigest()[:16]}.parquet"


def result_path(results_dir: str | Path, model: str, experiment: Experiment, unit: str) -> Path:
    """results/<model>/<experiment>/<unit>.parquet"""
    return Path(results_dir) / safe_name(model) / experiment.folder / unit


def study_id(spec: JobSpec) -> str:
    """The automatic sweep_id: a hash of what defines the study (groups, ROAD and held-out
    settings, the metrics, k grid, member variants, seed, controls, the image set as a whole
    and its targets), never of the model, the shard, the combination, the device or batch sizes.

    The image set is ``data.images`` as given (a folder's contents may grow; v0.2's ids
    stay as they were); a dataset layout (``data.root``) or a sample adds the layout, the
    sample's size and seed and a digest of the chosen images (their paths relative to
    the root), so the same sample of the same data is the same study wherever it lies."""
    road = {k: v for k, v in as_plain(spec.road).items() if k != "batch_size"}
    deletion = {k: v for k, v in as_plain(spec.deletion).items() if k not in ("cpu_batch", "cuda_batch")}
    members = {k: v for k, v in as_plain(spec.members).items() if k not in ("batch_size", "ablation_batch")}
    data = spec.data
    parts = {
        "groups": spec.groups,
        "road": road,
        "heldout": as_plain(spec.heldout),
        "deletion": deletion,
        "ks": [float(k) for k in spec.threshold.ks],
        "members": members,
        "metrics": [m.name for m in resolve_metrics(spec.metrics)],  # the columns the files hold
        "seed": spec.seed,
        "controls": spec.controls,
        "images": list(data.images),
        "images_per_unit": data.images_per_unit,
        "labels": data.labels,
        "target": TargetRule.parse(data.target).text(),
    }
    if data.layout != "files" or data.sample is not None:
        parts["dataset"] = {"layout": data.layout, "sample": data.sample, "sample_seed": data.sample_seed,
                            "chosen": image_set(data).digest()}
    text = json.dumps(parts, sort_keys=True, default=str)
    return "study-" + hashlib.sha1(text.encode()).hexdigest()[:10]


def manifest(job: Job, model: str, layer: str) -> dict:
    """What this (model, shard) must produce: every experiment x every unit file."""
    spec = job.spec
    units = [unit_name(model, layer, entries, job.targets) for entries in shard_units(spec)]
    return {
        "format": 1,
        "sweep_id": spec.sweep_id,
        "model": spec.model.name,
        "model_key": model,
        "model_dir": safe_name(model),
        "shard_index": spec.data.shard_index,
        "shard_count": spec.data.shard_count,
        "groups": job.groups.to_json(),
        "experiments": [e.folder for e in all_experiments(job.groups, spec.controls)],
        "units": units,
        "images_per_unit": spec.data.images_per_unit,
        "target": job.targets.text(),
    }


def manifest_path(results_dir: str | Path, model: str, shard_index: int, shard_count: int) -> Path:
    name = f"{safe_name(model)}.shard-{shard_index}-of-{shard_count}.json"
    return Path(results_dir) / MANIFEST_DIR / name


def images_manifest(job: Job) -> dict:
    """The study's chosen images (after sampling, all shards) with their labels as written:
    what a sample drew is on record beside the results."""
    data, images = job.spec.data, job.images
    return {
        "format": 1,
        "sweep_id": job.spec.sweep_id,
        "layout": data.layout,
        "root": data.root,
        "images": list(data.images),
        "labels_file": data.labels,
        "sample": data.sample,
        "sample_seed": data.sample_seed,
        "total": images.total,
        "chosen": len(images.entries),
        "digest": images.digest(),
        "entries": list(images.entries),
        "labels": list(images.labels) if images.has_labels else None,
    }


def images_manifest_path(results_dir: str | Path, sweep_id: str) -> Path:
    return Path(results_dir) / MANIFEST_DIR / f"images.{safe_name(sweep_id)}.json"
