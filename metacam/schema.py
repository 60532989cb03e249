"""The results dataset schema (DESIGN §3): one row per
(experiment, single method or control; model; image; target; k).

The flag columns depend on the sweep's groups (``g_<group>``, one per group, in
group order), so the schema is built from a :class:`~metacam.groups.GroupSet`.
Every file also carries the group definition and the run's provenance as
Parquet key-value metadata under :data:`METADATA_KEY` (see :func:`file_metadata`).

This module needs only pyarrow, so the analysis can import it without torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pyarrow as pa

KINDS: tuple[str, ...] = ("metacam", "single", "control")
CONTROL_METHODS: tuple[str, ...] = ("shuffled", "smooth_noise")
METADATA_KEY = b"metacam"
METADATA_FORMAT = 2

_BEFORE_FLAGS: list[tuple[str, pa.DataType]] = [
    ("sweep_id", pa.string()),
    ("kind", pa.string()),  # "metacam" (a combination), "single" (one CAM method), "control"
    ("combo_id", pa.int16()),  # 0..2^G-1 for metacam rows; null otherwise
    ("method", pa.string()),  # member name / plug-in path (single), groups joined by "+" (metacam),
    #                           "shuffled" or "smooth_noise" (control)
]
_AFTER_FLAGS: list[tuple[str, pa.DataType]] = [
    ("model", pa.string()),
    ("target_layer", pa.string()),
    ("image_id", pa.string()),  # file name plus a short content hash
    ("image_path", pa.string()),
    ("label", pa.int32()),  # ground-truth class from a labels CSV; null if unknown
    ("target_class", pa.int32()),
    ("target_rank", pa.int16()),  # 1 = the model's most probable class, 2 = the second, ...
    ("target_prob", pa.float32()),  # softmax probability of the target, clean image
    ("k", pa.float32()),  # threshold percentage in (0, 100]; 100 = the plain map
    # in-sample ROAD: the draw (permutation, noise, percentiles) that chose k*
    ("road_combined", pa.float32()),
    ("road_morf", pa.float32()),
    ("road_lerf", pa.float32()),
    # held-out ROAD: an independent draw; only on the k* and k = 100 rows, null elsewhere
    ("road_heldout_combined", pa.float32()),
    ("road_heldout_morf", pa.float32()),
    ("road_heldout_lerf", pa.float32()),
    # the second metric (RISE deletion / insertion AUC), on the same rows as held-out
    ("deletion_auc", pa.float32()),
    ("insertion_auc", pa.float32()),
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

REQUIRED_COLUMNS: tuple[str, ...] = (
    "sweep_id", "kind", "combo_id", "method", "model", "target_layer", "image_id",
    "target_class", "target_rank", "target_prob", "k", "road_combined", "road_morf", "road_lerf",
    "road_heldout_combined", "road_heldout_morf", "road_heldout_lerf", "deletion_auc",
    "insertion_auc", "is_best_k", "seed", "device", "metacam_version", "status",
)  # fmt: skip
"""DESIGN §3's columns (plus one g_<group> per group): all a reader may rely on.
The other provenance columns (road_ties, percentiles, ...) are optional for readers."""


def flag_columns(group_names: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"g_{name}" for name in group_names)


def results_schema(group_names: Sequence[str], metadata: Mapping[bytes, bytes] | None = None) -> pa.Schema:
    """The schema of a sweep with these groups (in order), with optional file metadata."""
    fields = [
        *_BEFORE_FLAGS,
        *[(column, pa.bool_()) for column in flag_columns(group_names)],
        *_AFTER_FLAGS,
    ]
    return pa.schema(fields, metadata=dict(metadata) if metadata else None)


def file_metadata(groups: list[dict], provenance: Mapping[str, object]) -> dict[bytes, bytes]:
    """Parquet key-value metadata recording the group definition and the run's provenance.

    groups: ``GroupSet.to_json()`` (name, members, control per group, in order).
    provenance: torch version, device, ROAD and held-out settings, k grid, seed, ...
    """
    record = {"format": METADATA_FORMAT, "groups": groups, "provenance": dict(provenance)}
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

