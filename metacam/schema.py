"""The results dataset schema (DESIGN §3): one row per
(experiment, single method or control; model; image; target; k).

The flag columns depend on the sweep's groups (``g_<group>``, one per group, in
group order), and the score columns on the run's metrics (the metric registry,
:mod:`metacam.evaluation.registry`: the built-ins' columns, then each plug-in's), so
the schema is built from both. Every file also carries the group definition, the
run's provenance and its metrics (CONTRACTS §1) as Parquet key-value metadata under
:data:`METADATA_KEY` (see :func:`file_metadata`).

This module needs only pyarrow (the registry imports no torch), so the analysis can
import it without torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pyarrow as pa

from metacam.evaluation.registry import builtins

# The experiment kinds: one word each, used by name everywhere through these constants.
KIND_METACAM = "metacam"  # a combination of groups (combo_id)
KIND_SINGLE = "single"  # one CAM method alone
KIND_CONTROL = "control"  # a null control (CONTROL_METHODS)
KINDS: tuple[str, ...] = (KIND_METACAM, KIND_SINGLE, KIND_CONTROL)
CONTROL_METHODS: tuple[str, ...] = ("shuffled", "smooth_noise")
METADATA_KEY = b"metacam"
METADATA_FORMAT = 3  # 3: the "metrics" list (CONTRACTS §1); 2: groups and provenance only

_BEFORE_FLAGS: list[tuple[str, pa.DataType]] = [
    ("sweep_id", pa.string()),
    ("kind", pa.string()),  # "metacam" (a combination), "single" (one CAM method), "control"
    ("combo_id", pa.int16()),  # 0..2^G-1 for metacam rows; null otherwise
    ("method", pa.string()),  # member name / plug-in path (single), groups joined by "+" (metacam),
    #                           "shuffled" or "smooth_noise" (control)
]
_UNIT: list[tuple[str, pa.DataType]] = [
    ("model", pa.string()),
    ("target_layer", pa.string()),
    ("image_id", pa.string()),  # file name plus a short content hash
    ("image_path", pa.string()),
    ("label", pa.int32()),  # ground-truth class from a labels CSV; null if unknown
    ("target_class", pa.int32()),
    ("target_rank", pa.int16()),  # 1 = the model's most probable class, 2 = the second, ...
    ("target_prob", pa.float32()),  # softmax probability of the target, clean image
    ("k", pa.float32()),  # threshold percentage in (0, 100]; 100 = the plain map
]
# ... then the score columns (float32) of the run's metrics: in-sample ROAD (the draw that
# chose k*) on every row, then each metric's column on the k* and k = 100 rows only
_AFTER_SCORES: list[tuple[str, pa.DataType]] = [
    ("is_best_k", pa.bool_()),  # k* of its (kind, combo/method, model, image, target)
    # provenance
    ("road_ties", pa.string()),  # "random" (seeded tie-break) or "inclusive" (grad-cam's rule)
    ("percentiles", pa.string()),  # in-sample removal percentages, e.g. "20,40,60,80"
    ("heldout_percentiles", pa.string()),
    ("noise", pa.float32()),
    ("seed", pa.int64()),
    ("device", pa.string()),  # e.g. "cpu: AMD EPYC" or "cuda:0: NVIDIA H200"
    ("torch_version", pa.string()),
    ("metacam_version", pa.string()),
    ("status", pa.string()),  # "ok", or why this unit has no score
]


def v02_metrics() -> list[dict]:
    """The metrics list of a dataset that records none: version 0.2's five (ROAD combined,
    MoRF, LeRF, deletion, insertion; CONTRACTS §1's reader default). A sweep writes its
    own list; this is the default of :func:`results_schema` and :func:`file_metadata`."""
    return [entry for m in builtins() for score, entry in zip(m.scores, m.entries(), strict=True)
            if not score.optional]


def metric_columns(metrics: Sequence[Mapping] | None = None) -> list[str]:
    """The score columns of a run's metrics list (CONTRACTS §1 entries; None:
    :func:`v02_metrics`): the in-sample columns, then the chosen columns, in the list's order."""
    listed = v02_metrics() if metrics is None else metrics
    insample = [m["insample_column"] for m in listed if m.get("insample_column")]
    chosen = [m["chosen_column"] for m in listed if m.get("chosen_column")]
    return list(dict.fromkeys([*insample, *chosen]))


FIXED_COLUMNS: tuple[str, ...] = tuple(name for name, _ in (*_BEFORE_FLAGS, *_UNIT, *_AFTER_SCORES))
"""Every column besides the group flags and the score columns (no metric may take one)."""

REQUIRED_COLUMNS: tuple[str, ...] = (
    "sweep_id", "kind", "combo_id", "method", "model", "target_layer", "image_id",
    "target_class", "target_rank", "target_prob", "k", *metric_columns(),
    "is_best_k", "seed", "device", "metacam_version", "status",
)  # fmt: skip
"""DESIGN §3's columns (plus one g_<group> per group): all a reader may rely on.
The other provenance columns (road_ties, percentiles, ...) and the scores new in format 3
(sparseness, complexity) are optional for readers."""


def flag_columns(group_names: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"g_{name}" for name in group_names)


def results_schema(group_names: Sequence[str], metadata: Mapping[bytes, bytes] | None = None,
                   metrics: Sequence[Mapping] | None = None) -> pa.Schema:
    """The schema of a sweep with these groups (in order) and metrics (CONTRACTS §1
    entries; None: :func:`v02_metrics`), with optional file metadata."""
    fields = [
        *_BEFORE_FLAGS,
        *[(column, pa.bool_()) for column in flag_columns(group_names)],
        *_UNIT,
        *[(column, pa.float32()) for column in metric_columns(metrics)],
        *_AFTER_SCORES,
    ]
    return pa.schema(fields, metadata=dict(metadata) if metadata else None)


def file_metadata(groups: list[dict], provenance: Mapping[str, object],
                  metrics: Sequence[Mapping] | None = None) -> dict[bytes, bytes]:
    """Parquet key-value metadata recording the group definition, the run's provenance
    and its metrics.

    groups: ``GroupSet.to_json()`` (name, members, control per group, in order).
    provenance: torch version, device, ROAD and held-out settings, k grid, seed, ...
    metrics: the ``"metrics"`` list (CONTRACTS §1), one entry per analysable score in the
    order they were computed (None: :func:`v02_metrics`).
    """
    listed = v02_metrics() if metrics is None else [dict(m) for m in metrics]
    record = {"format": METADATA_FORMAT, "groups": groups, "provenance": dict(provenance), "metrics": listed}
    return {METADATA_KEY: json.dumps(record, sort_keys=True, default=str).encode()}


def read_file_metadata(schema: pa.Schema) -> dict | None:
    """The record :func:`file_metadata` wrote, or None for a file without one."""
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None

