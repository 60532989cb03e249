"""One job of the 64-experiment ablation, as a plain function (Hydra lives in experiments/).

A job is one on/off combination of the CAM groups (``combo_id`` = the bitmask
over the groups, bit 0 = the first group). It scores its MetaCAM map at every
k of the grid on every image unit, plus, when exactly one group is on, each of
that group's members alone (the single-method baselines: the 12 members are
spread over the 6 single-group jobs). Member maps come from the shared cache;
each finished (experiment, unit) lands as one Parquet file; finished units are
skipped, so a rerun or a requeued job resumes where the last one stopped.
"""

import csv
import functools
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from metacam import __version__
from metacam.cache import EntryKey, MemberCache
from metacam.cams import compute_members, resolve_methods
from metacam.device import resolve_device
from metacam.ensemble import check_ks, metacam_maps, threshold_maps
from metacam.errors import MetaCAMError
from metacam.groups import combo_id_of
from metacam.images import LoadedImage, expand_specs, load_images
from metacam.models import ModelBundle, load_model
from metacam.results import is_complete, unit_name, write_rows
from metacam.roadscore import TIE_RULES, RoadStats, check_percentiles, image_seed, road
from metacam.schema import GROUP_COLUMNS

ROAD_MODES = {"default": "random", "paper": "inclusive"}


@dataclass
class ModelSpec:
    """Which network: a name (efficientnet_lite0, a torchvision name, module:factory)."""

    name: str = "efficientnet_lite0"
    layer: str | None = None
    checkpoint: str | None = None
    categories: str | None = None
    num_classes: int | None = None
    pretrained: bool = True
    seed: int = 0  # weights seed when pretrained is false
    input_size: list[int] | None = None


@dataclass
class DataSpec:
    """Which images: specs as for ``metacam explain``, split into units and shards.

    target: None = each image's top-1 class, an int = that class, "label" = the
    class in ``labels`` (a CSV with columns image,label; image = file name).
    """

    images: list[str] = field(default_factory=lambda: ["samples"])
    labels: str | None = None
    target: int | str | None = None
    shard_index: int = 0
    shard_count: int = 1
    images_per_unit: int = 1


@dataclass
class RoadSpec:
    mode: str = "default"  # "default" (seeded tie-break) or "paper" (grad-cam's inclusive ties)
    percentiles: list[float] = field(default_factory=lambda: [20.0, 40.0, 60.0, 80.0])
    noise: float = 0.01
    batch_size: int | None = None  # perturbed images per forward pass

    @property
    def ties(self) -> str:
        return ROAD_MODES[self.mode]


@dataclass
class JobSpec:
    """Everything one job needs, as plain data."""

    combo: dict[str, bool]
    groups: dict[str, list[str]]
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    road: RoadSpec = field(default_factory=RoadSpec)
    ks: list[float] = field(default_factory=lambda: [float(k) for k in range(10, 101, 10)])
    seed: int = 0
    device: str = "auto"
    results_dir: str = "outputs/results"
    cache_dir: str | None = "outputs/cache"
    member_batch_size: int | None = None
    sweep_id: str = ""


@dataclass
class Experiment:
    """One row-producing experiment: a MetaCAM combination or a single method."""

    kind: str  # "metacam" or "single"
    method: str
    combo_id: int | None
    flags: dict[str, bool]
    members: list[str]

    @property
    def folder(self) -> str:
        return (
            f"metacam-combo{self.combo_id:02d}"
            if self.kind == "metacam"
            else f"single-{self.method}"
        )


def validate(spec: JobSpec) -> None:
    """Check a job's configuration before any work: one clear error per problem."""
    if set(spec.combo) != set(spec.groups):
        unknown = sorted(set(spec.combo) - set(spec.groups))
        missing = sorted(set(spec.groups) - set(spec.combo))
        detail = (
            f"unknown group(s) {', '.join(unknown)}"
            if unknown
            else f"no flag for {', '.join(missing)}"
        )
        raise MetaCAMError(
            f"combo flags and groups disagree: {detail}; groups are {', '.join(spec.groups)}"
        )
    for group, members in spec.groups.items():
        if not members:
            raise MetaCAMError(f"group {group!r} has no members; give at least one CAM method")
        resolve_methods(members)
    check_ks(spec.ks)
    check_percentiles(spec.road.percentiles)
    if spec.road.mode not in ROAD_MODES:
        raise MetaCAMError(
            f"road mode {spec.road.mode!r} is unknown; use one of {', '.join(ROAD_MODES)}"
        )
    assert spec.road.ties in TIE_RULES
    if spec.road.noise < 0:
        raise MetaCAMError(f"road noise {spec.road.noise} is negative")
    if not 0 <= spec.data.shard_index < spec.data.shard_count:
        raise MetaCAMError(
            f"data shard_index {spec.data.shard_index} is outside 0..{spec.data.shard_count - 1}"
        )
    target = spec.data.target
    if target == "label" and not spec.data.labels:
        raise MetaCAMError("data target 'label' needs data.labels, a CSV with columns image,label")
    if isinstance(target, str) and target not in ("label", "top1"):
        raise MetaCAMError(f"data target {target!r}: use null (top-1), a class index, or 'label'")
    if spec.data.images_per_unit < 1:
        raise MetaCAMError("data images_per_unit must be at least 1")
    if not spec.data.images:
        raise MetaCAMError("data images is empty; give files, folders or sample names")


def experiments_of(combo: dict[str, bool], groups: dict[str, list[str]]) -> list[Experiment]:
    """The combination of this job, plus the single-method baselines of its group when
    exactly one group is on."""
    keys = tuple(groups)
    combo_id = combo_id_of(combo, keys)
    on = [key for key in keys if combo.get(key)]
    members = [m for key in on for m in groups[key]]
    flags = {key: bool(combo.get(key)) for key in keys}
    found = [
        Experiment("metacam", "+".join(on) or "none", combo_id, flags, list(dict.fromkeys(members)))
    ]
    if len(on) == 1:
        for member in groups[on[0]]:
            found.append(Experiment("single", member, None, flags, [member]))
    return found


def sweep_identity(parts: dict) -> str:
    """A short stable id for a sweep from what determines its results (not the launcher,
    the combo of one job, the device or batch sizes), so the same command resumes."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def model_key(model: ModelSpec) -> str:
    """The weights' identity for the cache: name, checkpoint content hash, or seed."""
    key = model.name
    if model.checkpoint:
        key += "@" + hashlib.sha1(Path(model.checkpoint).read_bytes()).hexdigest()[:10]
    elif not model.pretrained:
        key += f"-random{model.seed}"
    if model.input_size:
        key += "-{}x{}".format(*model.input_size)
    return key


@functools.lru_cache(maxsize=4)
def _cached_model(model_json: str, device: str) -> ModelBundle:
    model = ModelSpec(**json.loads(model_json))
    return load_model(
        model.name,
        device,
        layer=model.layer,
        checkpoint=model.checkpoint,
        categories=model.categories,
        num_classes=model.num_classes,
        pretrained=model.pretrained,
        seed=model.seed,
        input_size=(int(model.input_size[0]), int(model.input_size[1])) if model.input_size else None,
    )


def load_bundle(model: ModelSpec, device: str) -> ModelBundle:
    """The model, loaded once per process (the local launcher runs every job in one)."""
    return _cached_model(json.dumps(asdict(model), sort_keys=True), str(resolve_device(device)))


def units_of(data: DataSpec) -> list[list[str]]:
    """This shard's image entries, in units of ``images_per_unit``."""
    entries = expand_specs(data.images)[data.shard_index :: data.shard_count]
    size = data.images_per_unit
    return [entries[i : i + size] for i in range(0, len(entries), size)]


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


@dataclass
class JobReport:
    combo_id: int
    experiments: int
    units_done: int = 0
    units_skipped: int = 0
    rows: int = 0
    seconds: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    member_seconds: float = 0.0  # computing member maps (cache misses)
    road: RoadStats = field(default_factory=RoadStats)


def run_job(spec: JobSpec) -> JobReport:
    """Score every unit of this job that has no result file yet."""
    validate(spec)
    started = time.perf_counter()
    experiments = experiments_of(spec.combo, spec.groups)
    report = JobReport(experiments[0].combo_id or 0, len(experiments))
    bundle = load_bundle(spec.model, spec.device)
    key = model_key(spec.model)
    cache = MemberCache(spec.cache_dir)
    labels = read_labels(spec.data.labels)
    results = Path(spec.results_dir)
    extra = json.dumps({"target": spec.data.target, "labels": sorted(labels.items())})
    for entries in units_of(spec.data):
        name = unit_name(key, bundle.target_layer_name, entries, extra) + ".parquet"
        todo = [e for e in experiments if not is_complete(results / e.folder / name)]
        if not todo:
            report.units_skipped += 1
            continue
        # Score all of the job's experiments even if only some are missing: the same
        # batches as an uninterrupted run, so a resumed dataset is bit-identical.
        unit_started = time.time()
        rows = score_unit(spec, bundle, key, cache, labels, entries, experiments, report)
        for experiment in todo:
            write_rows(rows[experiment.folder], results / experiment.folder / name, stale_before=unit_started)
            report.rows += len(rows[experiment.folder])
        report.units_done += 1
    report.seconds = time.perf_counter() - started
    report.cache_hits, report.cache_misses = cache.hits, cache.misses
    return report


def _targets(
    spec: JobSpec, images: list[LoadedImage], labels: dict[str, int], logits: torch.Tensor
) -> tuple[list[int | None], list[str | None]]:
    """Each image's target class (or None with the reason it has none)."""
    targets: list[int | None] = []
    reasons: list[str | None] = []
    for b, image in enumerate(images):
        wanted = spec.data.target
        if wanted is None or wanted == "top1":
            targets.append(int(logits[b].argmax()))
            reasons.append(None)
        elif wanted == "label":
            label = labels.get(Path(image.source).name)
            targets.append(label)
            reasons.append(
                None
                if label is not None
                else f"no label for {Path(image.source).name} in {spec.data.labels}"
            )
        else:
            targets.append(int(wanted))
            reasons.append(None)
    return targets, reasons


def _base_row(spec: JobSpec, bundle: ModelBundle, experiment: Experiment) -> dict:
    row = {
        "sweep_id": spec.sweep_id,
        "kind": experiment.kind,
        "combo_id": experiment.combo_id,
        "method": experiment.method,
        "model": bundle.name,
        "target_layer": bundle.target_layer_name,
        "road_mode": spec.road.mode,
        "percentiles": ",".join(f"{p:g}" for p in spec.road.percentiles),
        "seed": spec.seed,
        "device": str(bundle.device),
        "metacam_version": __version__,
    }
    row.update(
        {
            column: experiment.flags[column[2:]]
            for column in GROUP_COLUMNS
            if column[2:] in experiment.flags
        }
    )
    return row


def _status_rows(
    spec, bundle, experiments, image_id: str, path: str, label, status: str
) -> dict[str, list[dict]]:
    return {
        e.folder: [
            {
                **_base_row(spec, bundle, e),
                "image_id": image_id,
                "image_path": path,
                "label": label,
                "status": status,
            }
        ]
        for e in experiments
    }


def score_unit(
    spec: JobSpec,
    bundle: ModelBundle,
    key: str,
    cache: MemberCache,
    labels: dict[str, int],
    entries: Sequence[str],
    experiments: list[Experiment],
    report: JobReport | None = None,
) -> dict[str, list[dict]]:
    """Rows of every experiment on one unit of images: one row per (image, k), or one
    status row for an image that has no score."""
    rows: dict[str, list[dict]] = {e.folder: [] for e in experiments}
    images, problems = load_images(entries)
    for problem in problems:
        image_id = f"{Path(problem.source).stem}-unreadable"
        label = labels.get(Path(problem.source).name)
        for folder, status_rows in _status_rows(
            spec,
            bundle,
            experiments,
            image_id,
            problem.source,
            label,
            f"unreadable image: {problem.reason}",
        ).items():
            rows[folder].extend(status_rows)
    if not images:
        return rows
    x = bundle.preprocess(images)
    with torch.inference_mode():
        logits = bundle.net(x).float()
    targets, reasons = _targets(spec, images, labels, logits)
    scored = [b for b, reason in enumerate(reasons) if reason is None]
    for b, reason in enumerate(reasons):
        if reason is not None:
            image = images[b]
            for folder, status_rows in _status_rows(
                spec, bundle, experiments, image.image_id, image.source, None, reason
            ).items():
                rows[folder].extend(status_rows)
    if not scored:
        return rows
    images = [images[b] for b in scored]
    x = x[scored]
    target = torch.tensor([targets[b] for b in scored], device=x.device)
    clean = (
        logits[scored].softmax(-1).gather(1, target[:, None].to(logits.device))[:, 0].to(x.device)
    )
    seeds = [image_seed(spec.seed, image.image_id) for image in images]
    report = report if report is not None else JobReport(0, len(experiments))
    tick = time.perf_counter()
    maps = _member_maps(spec, bundle, key, cache, x, images, target, seeds, experiments)
    report.member_seconds += time.perf_counter() - tick
    ks = [float(k) for k in spec.ks]
    candidates = torch.cat([_candidates(e, maps, x, ks) for e in experiments], dim=1)
    scores = road(
        bundle.net,
        x,
        candidates,
        target,
        spec.road.percentiles,
        ties=spec.road.ties,
        noise=spec.road.noise,
        image_seeds=seeds,
        batch_size=spec.road.batch_size,
        clean=clean,
        stats=report.road,
    )
    for i, experiment in enumerate(experiments):
        view = slice(i * len(ks), (i + 1) * len(ks))
        combined = scores.combined[:, view]
        best = combined.argmax(dim=1)  # the first maximum: the smallest k on ties
        base = _base_row(spec, bundle, experiment)
        for b, image in enumerate(images):
            label = labels.get(Path(image.source).name)
            for j, k in enumerate(ks):
                rows[experiment.folder].append(
                    {
                        **base,
                        "image_id": image.image_id,
                        "image_path": image.source,
                        "label": label,
                        "target_class": int(target[b]),
                        "target_prob": float(clean[b]),
                        "k": k,
                        "road_combined": float(combined[b, j]),
                        "road_morf": float(scores.morf[b, view][j]),
                        "road_lerf": float(scores.lerf[b, view][j]),
                        "is_best_k": bool(best[b] == j),
                        "status": "ok",
                    }
                )
    return rows


def _member_maps(
    spec, bundle, key, cache, x, images, target, seeds, experiments
) -> dict[str, torch.Tensor]:
    needed = list(dict.fromkeys(m for e in experiments for m in e.members))
    if not needed:
        return {}
    size = tuple(x.shape[-2:])
    keys = [
        [
            EntryKey(
                key,
                bundle.target_layer_name,
                image.image_id,
                int(target[b]),
                member,
                size,
                f"seed={seeds[b]}" if member == "randomcam" else "",
                __version__,
            )
            for member in needed
        ]
        for b, image in enumerate(images)
    ]

    def compute(indices: list[int], members: list[str]) -> dict[str, torch.Tensor]:
        return compute_members(
            bundle.net,
            x[indices],
            bundle.target_layer,
            target[indices],
            members,
            image_seeds=[seeds[i] for i in indices],
            batch_size=spec.member_batch_size,
        ).maps

    return cache.get_or_compute(keys, compute, x.device)


def _candidates(
    experiment: Experiment, maps: dict[str, torch.Tensor], x: torch.Tensor, ks: list[float]
) -> torch.Tensor:
    """The maps ROAD scores for one experiment: (B, K, H, W)."""
    batch, _, height, width = x.shape
    if experiment.kind == "single":
        return threshold_maps(maps[experiment.members[0]], ks)
    if not experiment.members:  # combo 0: no explanation, a constant map
        return torch.zeros(batch, len(ks), height, width, device=x.device)
    return metacam_maps({m: maps[m] for m in experiment.members}, ks)
