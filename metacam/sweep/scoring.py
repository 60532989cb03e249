"""Scoring one unit of images for every experiment of a job.

For each (image, target) of the unit: the member maps (from the shared cache), then
each experiment's maps — a MetaCAM combination's members, a single method's map or a
null control's (:mod:`metacam.sweep.controls`) — go to the evaluation engine
(:class:`metacam.evaluation.engine.Evaluator`) in one call: candidates at every k,
in-sample ROAD, k*, then every metric of the run on the chosen (k*) and plain (k = 100)
maps. This module only turns the engine's result into rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from metacam.batching import Batches
from metacam.cache import EntryKey, MemberCache
from metacam.cams import compute_members, resolve_member
from metacam.config import PLAIN_K
from metacam.ensemble import metacam_map
from metacam.evaluation.engine import EvaluationStats, MapSource, MethodEvaluation
from metacam.evaluation.roadscore import Probe
from metacam.images import LoadedImage, load_images
from metacam.models import ModelBundle
from metacam.schema import KIND_CONTROL, KIND_SINGLE
from metacam.seeds import stream_seed
from metacam.sweep.controls import CONTROLS, ControlInput
from metacam.sweep.design import Experiment, study_units
from metacam.sweep.rows import Provenance
from metacam.sweep.spec import Job, label_key


@dataclass
class Timings(EvaluationStats):
    """Where a job's time goes (seconds): the member maps, and the evaluation's split."""

    members: float = 0.0


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
    sources = {e.folder: _maps_of(ctx, e, maps, probe, items) for e in experiments}
    evaluation = job.evaluator.evaluate(probe, sources, stats=ctx.timings)
    for e in experiments:
        result = evaluation[e.folder]
        for i, item in enumerate(items):
            failed = [failures[i, m] for m in e.members if (i, m) in failures]
            failed += [result.failures[i]] if i in result.failures else []
            if failed:
                rows[e.folder].append(prov.status_row(e, item.image.image_id, item.image.source, item.label,
                                                      failed[0], (item.target, item.rank)))
                continue
            rows[e.folder].extend(_score_rows(ctx, e, item, result, i, float(probe.clean[i])))
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
            EntryKey(ctx.model, bundle.layer_key, image_id, int(probe.targets[b]), m.name, size,
                     _variant(job, m, image_id), m.fingerprint)
            for m in entries
        ]
        for b, image_id in enumerate(probe.image_ids)
    ]

    def compute(indices: list[int], members: list[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
        result = compute_members(
            bundle, probe.x[indices], probe.targets[indices], members,
            seed=job.spec.seed, image_ids=[probe.image_ids[i] for i in indices],
            options=job.spec.members, on_error="collect",
        )
        return result.maps, result.failures

    started = time.perf_counter()
    maps, failures = ctx.cache.get_or_compute(keys, compute, probe.x.device)
    ctx.timings.members += time.perf_counter() - started
    return maps, failures


def _variant(job: Job, member, image_id: str) -> str:
    """What else changes a member's map: a seeded member's seed, FullGrad's bias layers."""
    parts = [f"seed={stream_seed(job.spec.seed, f'member.{member.name}', image_id)}"] if member.seeded else []
    if member.needs_bias_gradients and not job.spec.members.fullgrad_bn_subclasses:
        parts.append("bn_subclasses=false")
    return ",".join(parts)


def _maps_of(ctx: JobContext, e: Experiment, maps: dict[str, Tensor], probe: Probe, items: list[Item]) -> MapSource:
    """What the engine scores for one experiment: a single method's or a control's map
    (B, H, W), or a combination's member maps (MetaCAM_k; combo 0, no member, is a
    constant map)."""
    if e.kind == KIND_SINGLE:
        return maps[e.members[0]]
    if e.kind == KIND_CONTROL:
        study = [entry for unit in study_units(ctx.job.spec) for entry in unit]
        partners: dict[str, Tensor | None] = {}

        def comparator_of(entry: str) -> Tensor | None:
            if entry not in partners:  # each partner image once
                partners[entry] = _comparator_map(ctx, entry, list(e.members))
            return partners[entry]

        inp = ControlInput(probe, {m: maps[m] for m in e.members}, [item.image.source for item in items], study,
                           comparator_of)
        return CONTROLS[e.method].make(inp)
    if not e.members:
        return torch.zeros(probe.x.shape[0], *probe.x.shape[-2:], device=probe.x.device)
    return {m: maps[m] for m in e.members}


def _comparator_map(ctx: JobContext, entry: str, comparator: list[str]) -> Tensor | None:
    """The plain comparator MetaCAM map (H, W) of image ``entry`` for its top-1 class
    (cached members), or None if it cannot be read."""
    found, _ = load_images([entry])
    if not found:
        return None
    image = found[0]
    x = ctx.bundle.preprocess([image])
    probe = Probe.of(ctx.bundle.net, x, image_ids=[image.image_id], seed=ctx.job.spec.seed)
    maps, _ = member_maps(ctx, probe, comparator)
    return metacam_map(maps, PLAIN_K)[0]


def _score_rows(ctx: JobContext, e: Experiment, item: Item, result: MethodEvaluation, i: int,
                clean: float) -> list[dict]:
    """One row per k for item i of experiment e: its unit's columns and the engine's scores."""
    unit = {
        **ctx.provenance.base(e),
        "image_id": item.image.image_id,
        "image_path": item.image.source,
        "label": item.label,
        "target_class": item.target,
        "target_rank": item.rank,
        "target_prob": clean,
        "status": "ok",
    }
    return [{**unit, **scores} for scores in result.rows(i)]
