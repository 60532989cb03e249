"""Which number the analysis calls "the score" of an (experiment, unit).

``--score adaptive`` (default) takes the row marked ``is_best_k`` (ROAD at k*),
``--score plain`` the row with k = 100 (the unthresholded map; for MetaCAM the
normalised sum of all members), ``--score k=K`` the row with k = K.
``--metric`` picks ROAD combined (default), MoRF or LeRF. For MoRF *lower* is
better (removing the most relevant pixels should destroy the prediction);
``ScoreSpec.sign`` carries that direction to every ranking and comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from metacam.analysis.dataset import K_TOLERANCE, Dataset
from metacam.analysis.errors import AnalysisError

# metric name -> (column, label, +1 if higher is better else -1)
METRICS: dict[str, tuple[str, str, int]] = {
    "combined": ("road_combined", "ROAD combined", 1),
    "morf": ("road_morf", "ROAD MoRF", -1),
    "lerf": ("road_lerf", "ROAD LeRF", 1),
}
PLAIN_K = 100.0


@dataclass(frozen=True)
class ScoreSpec:
    """A score choice: ``mode`` is ``adaptive``, ``plain`` or ``k`` (then ``k`` is set)."""

    mode: str = "adaptive"
    k: float | None = None
    metric: str = "combined"

    @property
    def column(self) -> str:
        return METRICS[self.metric][0]

    @property
    def sign(self) -> int:
        """+1 when a higher score is better, -1 when lower is (MoRF)."""
        return METRICS[self.metric][2]

    @property
    def label(self) -> str:
        name = METRICS[self.metric][1]
        if self.mode == "adaptive":
            return f"adaptive {name} (at each unit's k*)"
        if self.mode == "plain":
            return f"plain {name} (k = 100, the unthresholded map)"
        return f"{name} at k = {self.k:g}"

    @property
    def short(self) -> str:
        """A compact name for axis labels."""
        name = METRICS[self.metric][1]
        if self.mode in ("adaptive", "plain"):
            return f"{self.mode} {name}"
        return f"{name} @ k={self.k:g}"

    @property
    def direction(self) -> str:
        return "higher is better" if self.sign > 0 else "lower is better"

    def with_mode(self, mode: str) -> ScoreSpec:
        return ScoreSpec(mode=mode, k=PLAIN_K if mode == "plain" else None, metric=self.metric)


def parse_score(text: str, metric: str = "combined") -> ScoreSpec:
    """Parse ``adaptive``, ``plain`` or ``k=K`` (K a percentage in (0, 100])."""
    if metric not in METRICS:
        raise AnalysisError(f"--metric '{metric}' is unknown; use one of {', '.join(METRICS)}")
    text = text.strip().lower()
    if text in ("adaptive", "plain"):
        return ScoreSpec(mode=text, k=PLAIN_K if text == "plain" else None, metric=metric)
    if text.startswith("k="):
        try:
            k = float(text[2:])
        except ValueError:
            k = math.nan
        if not 0 < k <= 100:
            raise AnalysisError(f"--score '{text}': K must be a percentage in (0, 100], e.g. k=25")
        return ScoreSpec(mode="k", k=k, metric=metric)
    raise AnalysisError(f"--score '{text}' is unknown; use adaptive, plain or k=K (e.g. k=25)")


@dataclass(frozen=True)
class Scores:
    """One score per (experiment, unit) and per (single method, unit).

    Attributes:
        spec: how the score was chosen.
        metacam: columns ``combo_id`` (int), ``unit`` (int), ``score`` (float64).
        singles: columns ``method`` (str), ``unit``, ``score``.
        n_null: ok rows dropped because the chosen metric was null/NaN.
    """

    spec: ScoreSpec
    metacam: pd.DataFrame
    singles: pd.DataFrame
    n_null: int


def select_scores(dataset: Dataset, spec: ScoreSpec) -> Scores:
    """Pick the score rows of ``spec`` from the dataset.

    Raises:
        AnalysisError: the chosen k is absent (the message lists the k values
            present), no ``is_best_k`` rows, or the same score appears twice.
    """
    rows = dataset.rows
    if spec.mode == "adaptive":
        chosen = rows["is_best_k"].fillna(False).to_numpy(dtype=bool)
        if not chosen.any():
            raise AnalysisError("no rows are marked is_best_k, so there is no adaptive score; "
                                "use --score plain or --score k=K")
    else:
        assert spec.k is not None
        present = dataset.k_values
        if not any(abs(k - spec.k) <= K_TOLERANCE for k in present):
            listed = ", ".join(f"{k:g}" for k in present)
            raise AnalysisError(f"no rows with k = {spec.k:g} ({spec.mode} score); k values present: {listed}; "
                                "choose --score k=K with one of them, or --score adaptive")
        chosen = (np.abs(rows["k"].to_numpy(dtype=np.float64) - spec.k) <= K_TOLERANCE)
    picked = rows.loc[chosen, ["kind", "combo_id", "method", "unit", spec.column]]
    picked = picked.rename(columns={spec.column: "score"})
    picked["score"] = picked["score"].astype(np.float64)
    null = picked["score"].isna()
    picked = picked[~null]

    kind = picked["kind"].astype(str)
    metacam = picked.loc[kind == "metacam", ["combo_id", "unit", "score"]].astype({"combo_id": np.int64})
    singles = picked.loc[kind == "single", ["method", "unit", "score"]].astype({"method": str})
    for frame, key, what in ((metacam, "combo_id", "MetaCAM experiment"), (singles, "method", "single method")):
        duplicated = frame.duplicated([key, "unit"])
        if duplicated.any():
            first = frame.loc[duplicated].iloc[0]
            unit = dataset.units.loc[int(first["unit"])]
            raise AnalysisError(
                f"{int(duplicated.sum())} {spec.mode} scores appear more than once for the same {what} and unit "
                f"(e.g. {key} {first[key]}, model {unit['model']}, image {unit['image_id']}); "
                "the dataset holds some results twice — remove the duplicate files"
            )
    return Scores(spec=spec, metacam=metacam.reset_index(drop=True),
                  singles=singles.reset_index(drop=True), n_null=int(null.sum()))
