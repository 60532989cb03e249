"""Builders of small hand-made results datasets for the analysis tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from metacam.analysis.synthetic import synthetic_results, write_results


def hand_frame(
    scores: Mapping[int, Sequence[float]], *, singles: Mapping[str, Sequence[float]] | None = None
) -> pd.DataFrame:
    """A full-schema frame with one row per (experiment, unit) at k = 100 (so plain = adaptive).

    ``scores[combo_id][u]`` is unit u's road_combined for that experiment; combos
    not in ``scores`` are left out. ``singles[method][u]`` likewise.
    """
    n_units = len(next(iter(scores.values())))
    frame = synthetic_results(
        n_units,
        ks=(100.0,),
        singles={m: 0.0 for m in (singles or {})},
        noise=0.0,
        unit_sd=0.0,
        models=("m",),
    )
    frame = frame[(frame["kind"] == "single") | frame["combo_id"].isin(list(scores))].reset_index(
        drop=True
    )
    unit = frame["image_id"].map({v: i for i, v in enumerate(sorted(frame["image_id"].unique()))})
    values = np.empty(len(frame))
    for i, (kind, combo, method, u) in enumerate(
        zip(frame["kind"], frame["combo_id"], frame["method"], unit, strict=True)
    ):
        values[i] = scores[int(combo)][u] if kind == "metacam" else singles[method][u]  # type: ignore[index]
    frame["road_combined"] = values.astype(np.float32)
    frame["road_lerf"] = (0.5 + values).astype(np.float32)
    frame["road_morf"] = (0.5 - values).astype(np.float32)
    return frame


def write_hand(root: Path, scores: Mapping[int, Sequence[float]], **kwargs) -> Path:
    write_results(hand_frame(scores, **kwargs), root)
    return root
