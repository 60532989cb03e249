"""Row assembly: the results dataset's rows (DESIGN §3) of one job, and their file.

Every row of a job shares its provenance (:class:`Provenance`); a scored (experiment,
image, target) gives one row per k, and an (experiment, image) without a score gives
one ``status`` row saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from metacam import __version__
from metacam.atomic import write_atomically
from metacam.models import ModelBundle
from metacam.schema import file_metadata, results_schema
from metacam.sweep.design import Experiment
from metacam.sweep.spec import Job, as_plain


@dataclass(frozen=True)
class Provenance:
    """What every row of a job records besides its scores, and the file metadata."""

    sweep_id: str
    model: str
    target_layer: str
    columns: tuple[str, ...]  # the g_<group> flag columns
    fixed: dict  # provenance columns: road_ties, percentiles, ..., metacam_version
    metrics: tuple[dict, ...]  # the "metrics" list (CONTRACTS §1): the score columns
    metadata: dict[bytes, bytes]

    @classmethod
    def of(cls, job: Job, bundle: ModelBundle, model: str) -> Provenance:
        """model: the model key (metacam.sweep.design.model_key), the ``model`` column: it
        tells apart weights of one architecture (checkpoints, seeds, input sizes)."""
        spec, evaluator = job.spec, job.evaluator
        fixed = evaluator.provenance(seed=spec.seed, device=bundle.device)
        heldout = evaluator.heldout.percentiles if evaluator.heldout is not None else []
        record = {
            "ties": evaluator.road.ties,
            "percentiles": list(evaluator.road.percentiles),
            "heldout_percentiles": list(heldout),
            "heldout_stream": spec.heldout.stream,
            "noise": evaluator.road.noise,
            "ks": list(evaluator.ks),
            "seed": spec.seed,
            "deletion": as_plain(spec.deletion),
            "members": as_plain(spec.members),
            "target": job.targets.text(),
            "controls": spec.controls,
            "comparator": job.groups.comparator,
            "torch": torch.__version__,
            "device": fixed["device"],
            "metacam": __version__,
        }
        metrics = tuple(evaluator.entries())
        metadata = file_metadata(job.groups.to_json(), record, metrics)
        return cls(spec.sweep_id, model, bundle.target_layer_name, job.groups.columns, fixed, metrics, metadata)

    @property
    def schema(self) -> pa.Schema:
        return results_schema([c[2:] for c in self.columns], self.metadata, self.metrics)

    def base(self, experiment: Experiment) -> dict:
        """The columns every row of ``experiment`` shares."""
        return {
            "sweep_id": self.sweep_id,
            "kind": experiment.kind,
            "combo_id": experiment.combo_id,
            "method": experiment.method,
            **dict(zip(self.columns, experiment.flags, strict=True)),
            "model": self.model,
            "target_layer": self.target_layer,
            **self.fixed,
        }

    def status_row(self, experiment: Experiment, image_id: str, path: str, label: int | None,
                   status: str, target: tuple[int, int] | None = None) -> dict:
        """The one row of an (experiment, image[, target]) that has no score, and why."""
        row = {**self.base(experiment), "image_id": image_id, "image_path": path, "label": label,
               "status": status}
        if target is not None:
            row["target_class"], row["target_rank"] = target
        return row


def write_unit(rows: list[dict], path: Path, schema: pa.Schema, *, stale_before: float | None = None) -> Path:
    """Write one unit's rows as one Parquet file, atomically (temporary name, then rename).

    stale_before: a time.time() at which this unit's computation started; leftover
    temporary files of the same unit older than that (a killed writer's) are removed.
    """
    table = pa.Table.from_pylist(rows, schema=schema)
    write_atomically(path, lambda partial: pq.write_table(table, partial), stale_before=stale_before)
    return path
