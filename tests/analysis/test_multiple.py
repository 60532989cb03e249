"""Holm's correction against a hand computation and against statsmodels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from metacam.analysis.multiple import holm, holm_within


def test_holm_by_hand():
    # p = 0.01, 0.04, 0.03, 0.005 (m = 4). Sorted: 0.005, 0.01, 0.03, 0.04.
    # Step i multiplies by m − i + 1: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04,
    # then the running maximum: 0.02, 0.03, 0.06, 0.06. Back in the original order:
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03, 0.005])), [0.03, 0.06, 0.06, 0.02])
    # Capped at 1: 0.3·3 = 0.9, 0.5·2 = 1.0, 0.6·1 = 0.6 -> running max 0.9, 1.0, 1.0.
    np.testing.assert_allclose(holm(np.array([0.5, 0.3, 0.6])), [1.0, 0.9, 1.0])


def test_holm_skips_missing_p_values():
    # NaN is not a test: the family is the two finite p-values (m = 2): 0.01·2, then max(0.02, 0.04·1).
    np.testing.assert_allclose(holm(np.array([0.04, np.nan, 0.01])), [0.04, np.nan, 0.02])
    assert holm(np.array([])).shape == (0,)


@pytest.mark.parametrize("seed", range(5))
def test_holm_equals_statsmodels(seed):
    p = np.random.default_rng(seed).uniform(0, 0.2, 12)
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], rtol=1e-12)


def test_holm_within_families():
    p = pd.Series([0.01, 0.02, 0.01, 0.02])
    families = pd.Series(["main", "main", "interaction", "interaction"])
    # Each family of two: 0.01·2 = 0.02, max(0.02, 0.02·1) = 0.02.
    np.testing.assert_allclose(holm_within(p, families), [0.02, 0.02, 0.02, 0.02])
