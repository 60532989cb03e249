"""Running a job and resuming it: score every unit that has no result file yet.

Each finished (experiment, unit) lands as one Parquet file, written whole or not at
all, so a rerun or a requeued job skips what is done (also once ``metacam compact``
merged it: :func:`metacam.results.is_complete`) and a killed job loses at most the
unit it was computing. A unit that cannot be scored (an unreadable image, a plug-in
that returns NaN, out of memory even at batch 1) gets ``status`` rows; the rest of
the sweep goes on. After each unit the job prints a progress line and rewrites its
progress record (:class:`metacam.progress.JobProgress`), which ``metacam status`` reads.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from metacam.atomic import write_atomically
from metacam.cache import MemberCache
from metacam.cams import check_members, resolve_member
from metacam.config import ModelConfig
from metacam.device import resolve_device
from metacam.errors import MetaCAMError
from metacam.models import ModelBundle, load_model
from metacam.progress import JobProgress
from metacam.results import is_complete
from metacam.sweep.design import (
    experiments_of,
    images_manifest,
    images_manifest_path,
    manifest,
    manifest_path,
    model_key,
    result_path,
    safe_name,
    shard_units,
    unit_name,
)
from metacam.sweep.rows import Provenance, write_unit
from metacam.sweep.scoring import JobContext, Timings, score_unit
from metacam.sweep.spec import Job, JobSpec, label_key, validate


@dataclass
class JobReport:
    combo_id: int
    experiments: int
    units_done: int = 0
    units_skipped: int = 0
    units_failed: int = 0
    rows: int = 0
    seconds: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    timings: Timings = field(default_factory=Timings)

    @property
    def forward_seconds(self) -> float:
        return self.timings.road.forward_seconds + self.timings.heldout.forward_seconds

    @property
    def impute_seconds(self) -> float:
        return self.timings.road.impute_seconds + self.timings.heldout.impute_seconds

    def split(self) -> dict[str, float]:
        """Where the job's time went, in seconds (the progress record's ``timings``)."""
        t = self.timings
        return {"job": self.seconds, "members": t.members, "forward": self.forward_seconds,
                "impute": self.impute_seconds, "heldout": t.heldout.total_seconds, "deletion": t.deletion}

    def line(self) -> str:
        """A one-line account of the job's time."""
        t = self.timings
        return (
            f"{self.units_done} unit(s) scored, {self.units_skipped} already done"
            + (f", {self.units_failed} failed" if self.units_failed else "")
            + f", {self.seconds:.1f}s (members {t.members:.1f}s, ROAD forward {self.forward_seconds:.1f}s, "
            f"imputation {self.impute_seconds:.1f}s, held-out {t.heldout.total_seconds:.1f}s, "
            f"deletion/insertion {t.deletion:.1f}s, other metrics {t.other_metrics:.2f}s)"
        )


@functools.lru_cache(maxsize=4)
def _cached_model(model_json: str, device: str) -> ModelBundle:
    model = ModelConfig(**json.loads(model_json))
    size = model.input_size
    return load_model(
        model.load_name,
        device,
        layer=model.layer,
        reshape=model.reshape,
        checkpoint=model.checkpoint,
        categories=model.categories,
        num_classes=model.num_classes,
        pretrained=model.pretrained,
        seed=model.seed,
        input_size=(int(size[0]), int(size[1])) if size else None,
        kwargs=model.kwargs,
    )


def load_bundle(spec: JobSpec) -> ModelBundle:
    """The job's model, loaded once per process (the local launcher runs every job in one)."""
    return _cached_model(json.dumps(asdict(spec.model), sort_keys=True), str(resolve_device(spec.device)))


def prepare(spec: JobSpec) -> tuple[Job, ModelBundle]:
    """The job validated against its model, before any work: the model loads (name,
    weights, layers), every label and target rank fits its classes, and every member of
    the groups can explain it (one MetaCAMError line naming the member and the network,
    never a wrong map)."""
    bundle = load_bundle(spec)
    job = validate(spec, bundle.categories)
    job.targets.check_classes(len(bundle.categories))
    for group, members in zip(job.groups.names, job.groups.members, strict=True):
        check_members([resolve_member(m) for m in members], bundle,
                      advice=f"leave it out of group {group} (or drop the group: '~groups.{group}')")
    return job, bundle


def write_manifest(job: Job, model: str, layer: str) -> Path:
    """Record what this (model, shard) must produce and the study's chosen images, for
    ``metacam status`` and for the record; idempotent. Returns the shard manifest's path."""
    spec = job.spec
    record = manifest(job, model, layer)
    _write_json(images_manifest_path(spec.results_dir, spec.sweep_id), images_manifest(job))
    return _write_json(manifest_path(spec.results_dir, model, spec.data.shard_index, spec.data.shard_count), record)


def _write_json(path: Path, record: dict) -> Path:
    text = json.dumps(record, indent=1, sort_keys=True)
    try:
        if path.read_text() == text:
            return path
    except OSError:
        pass
    return write_atomically(path, lambda partial: partial.write_text(text))


def progress_key(spec: JobSpec, model: str, combo_id: int) -> str:
    """The job's progress record name: model, shard and combination."""
    data = spec.data
    return f"{safe_name(model)}.shard-{data.shard_index}-of-{data.shard_count}.combo-{combo_id}"


def run_job(spec: JobSpec, *, emit: Callable[[str], None] | None = None) -> JobReport:
    """Score every unit of this job that has no result file yet.

    emit: where the per-unit progress lines go (default: stdout).
    """
    started = time.perf_counter()
    job, bundle = prepare(spec)
    experiments = experiments_of(job.groups, job.combo_id, spec.controls)
    report = JobReport(job.combo_id, len(experiments))
    model = model_key(spec.model)
    write_manifest(job, model, bundle.target_layer_name)
    ctx = JobContext(job, bundle, model, MemberCache(spec.cache_dir), Provenance.of(job, bundle, model),
                     report.timings)
    units = shard_units(spec)
    data = spec.data
    label = f"{model} combo {job.combo_id} shard {data.shard_index}/{data.shard_count}"
    progress = JobProgress(spec.results_dir, progress_key(spec, model, job.combo_id), label, len(units),
                           sum(map(len, units)), emit)
    for entries in units:
        name = unit_name(model, bundle.target_layer_name, entries, job.targets)
        paths = {e.folder: result_path(spec.results_dir, model, e, name) for e in experiments}
        todo = [e for e in experiments if not is_complete(paths[e.folder])]
        if not todo:
            report.units_skipped += 1
            progress.unit(len(entries), None, report.split())
            continue
        # Score all of the job's experiments even if only some are missing: the same
        # batches as an uninterrupted run, so a resumed dataset is bit-identical.
        unit_started = time.time()
        unit_clock = time.perf_counter()
        try:
            rows = score_unit(ctx, entries, experiments)
        except MetaCAMError as error:  # e.g. out of memory at batch 1: this unit only
            rows = {e.folder: [ctx.provenance.status_row(e, Path(entry).stem + "-failed", entry,
                                                         job.labels.get(label_key(entry)), str(error))
                               for entry in entries] for e in experiments}
            report.units_failed += 1
        for experiment in todo:
            write_unit(rows[experiment.folder], paths[experiment.folder], ctx.provenance.schema,
                       stale_before=unit_started)
            report.rows += len(rows[experiment.folder])
        report.units_done += 1
        report.seconds = time.perf_counter() - started
        progress.unit(len(entries), time.perf_counter() - unit_clock, report.split())
    report.seconds = time.perf_counter() - started
    report.cache_hits, report.cache_misses = ctx.cache.hits, ctx.cache.misses
    progress.finish(report.split())
    return report
