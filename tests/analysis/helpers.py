"""Builders of small hand-made results datasets for the analysis tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from metacam.analysis.synthetic import make_groups, synthetic_results, write_results
from metacam.groups import GroupSet

SCORE_COLUMNS = ("road_combined", "road_heldout_combined")


def hand_frame(scores: Mapping[int, Sequence[float]], *, groups: GroupSet | None = None,
               singles: Mapping[str, Sequence[float]] | None = None) -> pd.DataFrame:
    """A full-schema frame with one row per (entry, unit) at k = 100 (so plain = adaptive),
    one model, one target per image (each unit its own cluster), no controls.

    ``scores[combo_id][u]`` is unit u's ROAD combined (in-sample and held-out alike) for
    that experiment; combos not in ``scores`` are left out. ``singles[method][u]`` likewise.
    """
    groups = groups or make_groups(6)
    n_units = len(next(iter(scores.values())))
    frame = synthetic_results(n_units, groups=groups, ks=(100.0,), models=("m",),
                              singles={m: 0.0 for m in (singles or {})}, controls={},
                              noise=0.0, unit_sd=0.0, image_sd=0.0, entry_image_sd=0.0)
    frame = frame[(frame["kind"] == "single") | frame["combo_id"].isin(list(scores))].reset_index(drop=True)
    unit = frame["image_id"].map({v: i for i, v in enumerate(sorted(frame["image_id"].unique()))})
    values = np.empty(len(frame))
    for i, (kind, combo, method, u) in enumerate(zip(frame["kind"], frame["combo_id"], frame["method"], unit,
                                                     strict=True)):
        values[i] = scores[int(combo)][u] if kind == "metacam" else singles[method][u]  # type: ignore[index]
    for column in SCORE_COLUMNS:
        frame[column] = values.astype(np.float32)
    frame["road_lerf"] = frame["road_heldout_lerf"] = (0.5 + values).astype(np.float32)
    frame["road_morf"] = frame["road_heldout_morf"] = (0.5 - values).astype(np.float32)
    return frame


def write_hand(root: Path, scores: Mapping[int, Sequence[float]], *, groups: GroupSet | None = None,
               **kwargs) -> Path:
    groups = groups or make_groups(6)
    write_results(hand_frame(scores, groups=groups, **kwargs), root, groups)
    return root
