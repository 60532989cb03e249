"""Running a job and resuming it: score every unit that has no result file yet.

Each finished (experiment, unit) lands as one Parquet file, written whole or not at
all, so a rerun or a requeued job skips what is done and a killed job loses at most
the unit it was computing. A unit that cannot be scored (an unreadable image, a
plug-in that returns NaN, out of memory even at batch 1) gets ``status`` rows; the
rest of the sweep goes on.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from metacam.atomic import write_atomically
from metacam.cache import MemberCache
from metacam.device import resolve_device
from metacam.errors import MetaCAMError
from metacam.models import ModelBundle, load_model
from metacam.results import is_complete
from metacam.sweep.design import (
    experiments_of,
    manifest,
    manifest_path,
    model_key,
    result_path,
    shard_units,
    unit_name,
)
from metacam.sweep.rows import Provenance, write_unit
from metacam.sweep.scoring import JobContext, Timings, score_unit
from metacam.sweep.spec import JobSpec, validate


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
    model = json.loads(model_json)
    size = model.get("input_size")
    return load_model(
        model["name"],
        device,
        layer=model.get("layer"),
        checkpoint=model.get("checkpoint"),
        categories=model.get("categories"),
        num_classes=model.get("num_classes"),
        pretrained=model.get("pretrained", True),
        seed=model.get("seed", 0),
        input_size=(int(size[0]), int(size[1])) if size else None,
    )


def load_bundle(spec: JobSpec) -> ModelBundle:
    """The job's model, loaded once per process (the local launcher runs every job in one)."""
    return _cached_model(json.dumps(asdict(spec.model), sort_keys=True), str(resolve_device(spec.device)))


def write_manifest(record: dict, results_dir: str | Path) -> Path:
    """The (model, shard)'s expected files, for ``metacam status``; idempotent."""
    path = manifest_path(results_dir, record["model_key"], record["shard_index"], record["shard_count"])
    text = json.dumps(record, indent=1, sort_keys=True)
    if path.exists() and path.read_text() == text:
        return path
    return write_atomically(path, lambda partial: partial.write_text(text))


def run_job(spec: JobSpec) -> JobReport:
    """Score every unit of this job that has no result file yet."""
    job = validate(spec)
    started = time.perf_counter()
    experiments = experiments_of(job.groups, job.combo_id, spec.controls)
    report = JobReport(job.combo_id, len(experiments))
    bundle = load_bundle(spec)
    model = model_key(spec.model)
    job.targets.check_classes(len(bundle.categories))
    write_manifest(manifest(job, model, bundle.target_layer_name), spec.results_dir)
    ctx = JobContext(job, bundle, model, MemberCache(spec.cache_dir), Provenance.of(job, bundle, model),
                     report.timings)
    for entries in shard_units(spec):
        name = unit_name(model, bundle.target_layer_name, entries, job.targets)
        paths = {e.folder: result_path(spec.results_dir, model, e, name) for e in experiments}
        todo = [e for e in experiments if not is_complete(paths[e.folder])]
        if not todo:
            report.units_skipped += 1
            continue
        # Score all of the job's experiments even if only some are missing: the same
        # batches as an uninterrupted run, so a resumed dataset is bit-identical.
        unit_started = time.time()
        try:
            rows = score_unit(ctx, entries, experiments)
        except MetaCAMError as error:  # e.g. out of memory at batch 1: this unit only
            rows = {e.folder: [ctx.provenance.status_row(e, Path(entry).stem + "-failed", entry,
                                                         job.labels.get(Path(entry).name), str(error))
                               for entry in entries] for e in experiments}
            report.units_failed += 1
        for experiment in todo:
            write_unit(rows[experiment.folder], paths[experiment.folder], ctx.provenance.schema,
                       stale_before=unit_started)
            report.rows += len(rows[experiment.folder])
        report.units_done += 1
    report.seconds = time.perf_counter() - started
    report.cache_hits, report.cache_misses = ctx.cache.hits, ctx.cache.misses
    return report
