"""Paired comparisons: mean difference and its CI, wins, Wilcoxon on cluster means,
rank-biserial r, Holm and the verdict, by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from metacam.analysis.bootstrap import ClusterBootstrap
from metacam.analysis.paired import compare, rank_biserial, verdict

# Six units in six clusters; MetaCAM against two opponents. Binary fractions, so equal
# differences are exactly equal (ties) in floating point.
MINE = np.array([0.5, 0.25, 0.375, 0.125, 0.5, 0.75])
A = np.array([0.375, 0.375, 0.375, 0.0, 0.25, 0.375])  # differences 1/8, −1/8, 0, 1/8, 2/8, 3/8
B = np.array([0.125, np.nan, 0.0, -0.25, 0.125, 0.25])  # differences 3/8, (none), 3/8, 3/8, 3/8, 4/8


def test_rank_biserial_by_hand():
    # Non-zero differences 1, −1, 1, 2, 3 (eighths): |d| ranks: 1 ×3 -> 2 each, 2 -> 4, 3 -> 5.
    # R+ = 2 + 2 + 4 + 5 = 13, R− = 2; r = (13 − 2) / 15.
    assert rank_biserial(MINE - A) == pytest.approx(11 / 15)
    assert np.isnan(rank_biserial(np.zeros(3)))


def test_compare_by_hand():
    boot = ClusterBootstrap.draw(6, 1000, seed=0)
    table = compare(MINE, np.column_stack([A, B]), ["a", "b"], np.arange(6), boot).set_index("opponent")
    a, b = table.loc["a"], table.loc["b"]
    assert (a["wins"], a["ties"], a["losses"], a["n_units"], a["n_clusters"]) == (4, 1, 1, 6, 6)
    assert a["win_rate"] == pytest.approx(4 / 6)
    assert a["mean_difference"] == pytest.approx(0.75 / 6)
    assert a["ci_low"] < a["mean_difference"] < a["ci_high"]
    assert a["wilcoxon_p"] == pytest.approx(stats.wilcoxon(MINE - A).pvalue)
    assert a["rank_biserial"] == pytest.approx(11 / 15)
    # b is paired over the five units it has; MetaCAM's mean over those five units.
    assert b["n_units"] == 5 and b["mine_mean"] == pytest.approx(np.mean(MINE[[0, 2, 3, 4, 5]]))
    assert b["mean_difference"] == pytest.approx(2.0 / 5) and b["wins"] == 5
    # Holm over the two: the smaller p doubled, the larger at least as large.
    low, high = sorted([a["wilcoxon_p"], b["wilcoxon_p"]])
    assert sorted(table["p_holm"]) == pytest.approx([2 * low, max(2 * low, high)])


def test_lower_is_better_flips_wins_and_r():
    boot = ClusterBootstrap.draw(6, 200, seed=0)
    row = compare(MINE, A[:, None], ["a"], np.arange(6), boot, sign=-1).iloc[0]
    assert (row["wins"], row["losses"]) == (1, 4)
    assert row["rank_biserial"] == pytest.approx(-11 / 15)
    assert row["mean_difference"] == pytest.approx(0.125)  # the difference itself keeps its sign


def test_wilcoxon_uses_cluster_means():
    # Two targets per image: units 0-1 in cluster 0, 2-3 in cluster 1, ... The test runs on the
    # three cluster means of the differences, not on the six correlated units.
    mine = np.array([1.0, 1.2, 0.5, 0.7, 0.9, 0.9])
    theirs = np.zeros(6)
    boot = ClusterBootstrap.draw(3, 200, seed=0)
    row = compare(mine, theirs[:, None], ["x"], np.repeat(np.arange(3), 2), boot).iloc[0]
    assert row["n_units"] == 6 and row["n_clusters"] == 3
    assert row["wilcoxon_p"] == pytest.approx(stats.wilcoxon([1.1, 0.6, 0.9]).pvalue)  # exact: 0.25


@pytest.mark.parametrize(("sign", "low", "high", "p", "expected"), [
    (1, 0.01, 0.03, 0.001, "better"),
    (1, -0.03, -0.01, 0.001, "worse"),
    (1, -0.01, 0.03, 0.001, "no clear difference"),
    (1, 0.01, 0.03, 0.2, "no clear difference"),
    (-1, -0.03, -0.01, 0.001, "better"),
    (-1, 0.01, 0.03, 0.001, "worse"),
    (1, np.nan, np.nan, 0.001, "no clear difference"),
])
def test_verdict(sign, low, high, p, expected):
    assert verdict(sign, low, high, p) == expected
