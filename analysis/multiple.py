"""Holm's step-down correction for multiple tests.

Written out here (five lines) rather than called from statsmodels'
``multipletests(method="holm")``, which gives the same numbers
(tests/analysis/test_multiple.py checks it) but runs ``gc.collect()`` on every
call: about 0.1 s each with pandas and matplotlib loaded, and the analysis
corrects dozens of families.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values of one family, ``(m,) -> (m,)``; NaN entries stay NaN and are not counted.

    With p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j <= i} min(1, (m − j + 1)·p_(j)).
    """
    p_values = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(len(p_values), np.nan)
    finite = np.flatnonzero(np.isfinite(p_values))
    order = finite[np.argsort(p_values[finite], kind="stable")]
    m = len(order)
    scaled = np.minimum(1.0, (m - np.arange(m)) * p_values[order])
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def holm_within(p_values: pd.Series, families: pd.Series) -> np.ndarray:
    """Holm-adjusted p-values within each family (e.g. main effects, interactions)."""
    adjusted = np.full(len(p_values), np.nan)
    values = p_values.to_numpy(dtype=np.float64)
    for family in pd.unique(families):
        index = np.flatnonzero((families == family).to_numpy())
        adjusted[index] = holm(values[index])
    return adjusted
