"""Scoring one unit of images for every experiment of a job.

For each (image, target) of the unit: the member maps (from the shared cache), the
candidates of each experiment at every k, ROAD of all of them in one batched call
(the in-sample draw that chooses k*), then the held-out re-scoring and deletion /
insertion AUC of each experiment's chosen (k*) and plain (k = 100) maps, and the
two null controls in the all-groups job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from metacam.evaluation.adaptive import AdaptiveResult, score_methods
from metacam.batching import Batches
from metacam.cache import EntryKey, MemberCache
from metacam.cams import compute_members, resolve_member
from metacam.evaluation.deletion import deletion_insertion
from metacam.ensemble import metacam_map, metacam_maps, threshold_maps
from metacam.images import LoadedImage, load_images
from metacam.models import ModelBundle
from metacam.evaluation.roadscore import Probe, RoadStats, road_many
from metacam.seeds import generator, stream_seed
from metacam.sweep.design import Experiment, study_units
from metacam.sweep.rows import Provenance
from metacam.sweep.spec import Job, label_key

PLAIN_K = 100.0
SMOOTH_GRID = 7  # the smooth-noise control: a 7 x 7 Gaussian field, upsampled


@dataclass
class Timings:
    """Where a job's time goes (seconds), and its cache traffic."""

    members: float = 0.0
    road: RoadStats = field(default_factory=RoadStats)
    heldout: RoadStats = field(default_factory=RoadStats)
    deletion: float = 0.0


@dataclass
class JobContext:
    """What every unit of a job shares."""

    job: Job
    bundle: ModelBundle
    model: str  # the model key (weights' identity)
    cache: MemberCache
    provenance: Provenance
    timings: Timings = field(default_factory=Timings)


@dataclass(frozen=True)
class Item:
    """One (image, target) of a unit: a row group of every experiment."""

    image: LoadedImage
    target: int
    rank: int
    label: int | None


def score_unit(ctx: JobContext, entries: list[str], experiments: list[Experiment]) -> dict[str, list[dict]]:
    """Rows of every experiment on one unit of images: one row per (image, target, k),
    or one status row for an (image[, target]) that has no score."""
    job, prov = ctx.job, ctx.provenance
    rows: dict[str, list[dict]] = {e.folder: [] for e in experiments}
    images, problems = load_images(entries)
    for problem in problems:
        image_id = f"{Path(problem.source).stem}-unreadable"
        label = job.labels.get(label_key(problem.source))
        for e in experiments:
            rows[e.folder].append(prov.status_row(e, image_id, problem.source, label,
                                                  f"unreadable image: {problem.reason}"))
    if not images:
        return rows
    items, probe = _items(ctx, images)
    maps, failures = member_maps(ctx, probe, _needed(experiments))
    candidates = {e.folder: _candidates(ctx, e, maps, probe, images) for e in experiments}
    results = score_methods(probe, candidates, job.ks, job.road, stats=ctx.timings.road)
    extra = _rescore(ctx, probe, results)
    for e in experiments:
        for i, item in enumerate(items):
            failed = [failures[i, m] for m in e.members if (i, m) in failures]
            if failed:
                rows[e.folder].append(prov.status_row(e, item.image.image_id, item.image.source, item.label,
                                                      failed[0], (item.target, item.rank)))
                continue
            rows[e.folder].extend(_score_rows(ctx, e, item, results[e.folder], extra.get(e.folder), i,
                                              float(probe.clean[i])))
    return rows


def _items(ctx: JobContext, images: list[LoadedImage]) -> tuple[list[Item], Probe]:
    """Each image's targets (data.target) and the probe over all (image, target) pairs."""
    job, bundle = ctx.job, ctx.bundle
    x = bundle.preprocess(images)
    logits = clean_logits(bundle.net, x)
    job.targets.check_classes(logits.shape[1])
    items: list[Item] = []
    index: list[int] = []
    for b, image in enumerate(images):
        label = job.labels.get(label_key(image.source))
        for target, rank in job.targets.targets(logits[b], label):
            items.append(Item(image, target, rank, label))
            index.append(b)
    targets = torch.tensor([item.target for item in items], device=x.device)
    clean = logits.softmax(-1)[index].gather(1, targets[:, None].to(logits.device))[:, 0].to(x.device)
    probe = Probe(bundle.net, x[index], targets, clean, tuple(item.image.image_id for item in items),
                  job.spec.seed)
    return items, probe


def clean_logits(net: torch.nn.Module, x: Tensor) -> Tensor:
    """The logits of the clean images (B, classes), in batches that halve on CUDA OOM."""
    out: dict[int, Tensor] = {}

    def forward(start: int, stop: int) -> None:
        with torch.inference_mode():
            out[start] = net(x[start:stop]).float()

    Batches(x.shape[0], "clean forward").run(x.shape[0], forward)
    return torch.cat([out[start] for start in sorted(out)])


def _needed(experiments: list[Experiment]) -> list[str]:
    return list(dict.fromkeys(m for e in experiments for m in e.members))


def member_maps(ctx: JobContext, probe: Probe, names: list[str]) -> tuple[dict[str, Tensor], dict[tuple[int, str], str]]:
    """Member maps (B, H, W) of the probe's images and targets, through the cache;
    and (item, member) -> reason for members that failed (plug-ins)."""
    if not names:
        return {}, {}
    job, bundle = ctx.job, ctx.bundle
    size = (int(probe.x.shape[-2]), int(probe.x.shape[-1]))
    entries = [resolve_member(name) for name in names]
    keys = [
        [
            EntryKey(ctx.model, bundle.target_layer_name, image_id, int(probe.targets[b]), m.name, size,
                     f"seed={stream_seed(job.spec.seed, f'member.{m.name}', image_id)}" if m.seeded else "",
                     m.fingerprint)
            for m in entries
        ]
        for b, image_id in enumerate(probe.image_ids)
    ]

    def compute(indices: list[int], members: list[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
        result = compute_members(
            bundle.net, probe.x[indices], bundle.target_layer, probe.targets[indices], members,
            seed=job.spec.seed, image_ids=[probe.image_ids[i] for i in indices],
            options=job.spec.members, on_error="collect",
        )
        return result.maps, result.failures

    started = time.perf_counter()
    maps, failures = ctx.cache.get_or_compute(keys, compute, probe.x.device)
    ctx.timings.members += time.perf_counter() - started
    return maps, failures


def _candidates(ctx: JobContext, e: Experiment, maps: dict[str, Tensor], probe: Probe,
                images: list[LoadedImage]) -> Tensor:
    """The maps ROAD scores for one experiment: (B, K, H, W)."""
    ks = ctx.job.ks
    batch, _, height, width = probe.x.shape
    if e.kind == "single":
        return threshold_maps(maps[e.members[0]], ks)
    if e.kind == "control":
        control = smooth_noise(probe) if e.method == "smooth_noise" else shuffled(ctx, probe, e, maps, images)
        return threshold_maps(control, ks)
    if not e.members:  # combo 0: no explanation, a constant map
        return torch.zeros(batch, len(ks), height, width, device=probe.x.device)
    return metacam_maps({m: maps[m] for m in e.members}, ks)


def smooth_noise(probe: Probe) -> Tensor:
    """The smooth-noise control: per image a seeded 7 x 7 Gaussian field (stream
    ``control.smooth_noise``), bilinearly upsampled and min-max normalised. It depends on
    the image's id only, never on its pixels. -> (B, H, W)."""
    fields = [
        torch.randn(1, 1, SMOOTH_GRID, SMOOTH_GRID, generator=generator(probe.seed, "control.smooth_noise", i))
        for i in probe.image_ids
    ]
    size = (probe.x.shape[-2], probe.x.shape[-1])
    up = F.interpolate(torch.cat(fields), size=size, mode="bilinear", align_corners=False)[:, 0]
    low = up.flatten(1).amin(1)[:, None, None]
    high = up.flatten(1).amax(1)[:, None, None]
    return ((up - low) / (high - low)).to(probe.x.device)


def shuffled(ctx: JobContext, probe: Probe, e: Experiment, maps: dict[str, Tensor],
             images: list[LoadedImage]) -> Tensor:
    """The shuffled control: the plain MetaCAM comparator map of *another* image of the
    study (the next one in the image list, for its top-1 class); in a one-image study,
    a fixed seeded permutation of this image's own map (stream ``control.shuffled``).
    -> (B, H, W)."""
    comparator = list(e.members)
    own = metacam_map({m: maps[m] for m in comparator}, PLAIN_K)
    entries = [e for unit in study_units(ctx.job.spec) for e in unit]
    by_id = {image.image_id: image for image in images}
    partners: list[str | None] = []
    for image_id in probe.image_ids:
        source = by_id[image_id].source
        position = entries.index(source) if source in entries else -1
        partners.append(entries[(position + 1) % len(entries)] if len(entries) > 1 and position >= 0 else None)
    loaded = {p: load_images([p])[0] for p in set(partners) if p is not None}
    partner_images = {p: found[0] for p, found in loaded.items() if found}
    out = torch.empty_like(own)
    for i, partner in enumerate(partners):
        if partner in partner_images:
            out[i] = _partner_map(ctx, partner_images[partner], comparator)
        else:  # one image in the study, or the partner is unreadable
            pixels = own[i].numel()
            order = torch.randperm(pixels, generator=generator(probe.seed, "control.shuffled", probe.image_ids[i]))
            out[i] = own[i].flatten()[order.to(own.device)].view_as(own[i])
    return out


def _partner_map(ctx: JobContext, image: LoadedImage, comparator: list[str]) -> Tensor:
    """The plain comparator MetaCAM map of ``image`` for its top-1 class (cached members)."""
    x = ctx.bundle.preprocess([image])
    probe = Probe.of(ctx.bundle.net, x, image_ids=[image.image_id], seed=ctx.job.spec.seed)
    maps, _ = member_maps(ctx, probe, comparator)
    return metacam_map(maps, PLAIN_K)[0]


@dataclass
class Rescored:
    """Held-out ROAD and deletion/insertion of an experiment's k* and plain maps.

    Fields (B, 2): column 0 = the k* map, column 1 = the k = 100 map (NaN without it).
    """

    heldout_combined: Tensor
    heldout_morf: Tensor
    heldout_lerf: Tensor
    deletion: Tensor
    insertion: Tensor


def _rescore(ctx: JobContext, probe: Probe, results: dict[str, AdaptiveResult]) -> dict[str, Rescored]:
    """Held-out ROAD and deletion/insertion AUC of every experiment's chosen maps, the k*
    map then the plain map of each: (B, 2E, H, W), each distinct map of an image once
    (k* = 100 makes both the same map; one-member combinations equal their single)."""
    job = ctx.job
    if not results:
        return {}
    chosen = []
    for result in results.values():
        plain = result.candidates[:, result.at(PLAIN_K)] if PLAIN_K in result.ks else result.best_map
        chosen += [result.best_map, plain]
    stacked = torch.stack(chosen, dim=1)
    scores = {name: torch.full(stacked.shape[:2], float("nan"), device=probe.x.device)
              for name in ("combined", "morf", "lerf", "deletion", "insertion")}
    for b in range(stacked.shape[0]):
        distinct, inverse = torch.unique(stacked[b].flatten(1), dim=0, return_inverse=True)
        maps = distinct.view(1, -1, *stacked.shape[-2:])
        image = probe.subset([b])
        if job.heldout is not None:
            heldout = road_many(image, maps, job.heldout, stats=ctx.timings.heldout)
            for name in ("combined", "morf", "lerf"):
                scores[name][b] = getattr(heldout, name)[0, inverse]
        started = time.perf_counter()
        auc = deletion_insertion(image.net, image.x, maps, image.targets, config=job.spec.deletion,
                                 seeds=image.seeds("deletion.permutation"), clean=image.clean)
        ctx.timings.deletion += time.perf_counter() - started
        scores["deletion"][b] = auc.deletion_auc[0, inverse]
        scores["insertion"][b] = auc.insertion_auc[0, inverse]
    if PLAIN_K not in job.ks:  # no plain map: only the k* rows are re-scored
        for values in scores.values():
            values[:, 1::2] = float("nan")
    return {folder: Rescored(*(values[:, 2 * i : 2 * i + 2] for values in scores.values()))
            for i, folder in enumerate(results)}


def _value(values: Tensor, i: int, column: int) -> float | None:
    value = float(values[i, column])
    return None if value != value else value  # NaN -> null


def _score_rows(ctx: JobContext, e: Experiment, item: Item, result: AdaptiveResult,
                extra: Rescored | None, i: int, clean: float) -> list[dict]:
    """One row per k for item i of experiment e."""
    base = ctx.provenance.base(e)
    best = int(result.best_index[i])
    rows = []
    for j, k in enumerate(result.ks):
        column = 0 if j == best else (1 if k == PLAIN_K else None)
        row = {
            **base,
            "image_id": item.image.image_id,
            "image_path": item.image.source,
            "label": item.label,
            "target_class": item.target,
            "target_rank": item.rank,
            "target_prob": clean,
            "k": k,
            "road_combined": float(result.scores.combined[i, j]),
            "road_morf": float(result.scores.morf[i, j]),
            "road_lerf": float(result.scores.lerf[i, j]),
            "is_best_k": j == best,
            "status": "ok",
        }
        if column is not None and extra is not None:
            row.update(
                road_heldout_combined=_value(extra.heldout_combined, i, column),
                road_heldout_morf=_value(extra.heldout_morf, i, column),
                road_heldout_lerf=_value(extra.heldout_lerf, i, column),
                deletion_auc=_value(extra.deletion, i, column),
                insertion_auc=_value(extra.insertion, i, column),
            )
        rows.append(row)
    return rows
