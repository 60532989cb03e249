"""The results dataset schema (DESIGN §3): one row per
(experiment or single method, model, image, target, k).

This module needs only pyarrow, so the analysis can import it without torch.
"""

import pyarrow as pa

from metacam.groups import GROUP_KEYS

GROUP_COLUMNS: tuple[str, ...] = tuple(f"g_{key}" for key in GROUP_KEYS)

RESULTS_SCHEMA = pa.schema(
    [
        ("sweep_id", pa.string()),
        ("kind", pa.string()),  # "metacam" (a combination) or "single" (one CAM method)
        ("combo_id", pa.int16()),  # 0..63 for metacam rows; null for single rows
        ("method", pa.string()),  # member name (single) or groups joined by "+" (metacam)
        *[(column, pa.bool_()) for column in GROUP_COLUMNS],
        ("model", pa.string()),
        ("target_layer", pa.string()),
        ("image_id", pa.string()),  # file name plus a short content hash
        ("image_path", pa.string()),
        ("label", pa.int32()),  # ground-truth class from a labels CSV; null if unknown
        ("target_class", pa.int32()),
        ("target_prob", pa.float32()),  # softmax probability of the target, clean image
        ("k", pa.float32()),  # threshold percentage in (0, 100]; 100 = the plain map
        ("road_combined", pa.float32()),
        ("road_morf", pa.float32()),
        ("road_lerf", pa.float32()),
        ("is_best_k", pa.bool_()),  # k* of its (kind, combo/method, model, image, target)
        ("road_mode", pa.string()),  # "default" (seeded tie-break) or "paper" (inclusive ties)
        ("percentiles", pa.string()),  # removal percentages, e.g. "20,40,60,80"
        ("seed", pa.int64()),
        ("device", pa.string()),
        ("metacam_version", pa.string()),
        ("status", pa.string()),  # "ok", or why this unit has no score
    ]
)

REQUIRED_COLUMNS: tuple[str, ...] = tuple(RESULTS_SCHEMA.names)
