"""Mean ± 95% t-interval over units, vectorised over groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95


def t_halfwidth(std: np.ndarray | pd.Series, n: np.ndarray | pd.Series, level: float = LEVEL) -> np.ndarray:
    """Half-width of the two-sided t confidence interval of a mean; NaN where n < 2."""
    n = np.asarray(n, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = stats.t.ppf(0.5 + level / 2, np.where(n > 1, n - 1, np.nan))
        return q * std / np.sqrt(n)


def summarise(frame: pd.DataFrame, by: str, value: str = "score") -> pd.DataFrame:
    """Per ``by`` value: mean, std, n, ci_low, ci_high (95% t-interval over rows)."""
    grouped = frame.groupby(by, sort=True)[value].agg(["mean", "std", "count"])
    grouped = grouped.rename(columns={"count": "n"})
    half = t_halfwidth(grouped["std"], grouped["n"])
    grouped["ci_low"] = grouped["mean"] - half
    grouped["ci_high"] = grouped["mean"] + half
    return grouped
