"""Paired comparisons by image: per-image means, the t interval and the Wilcoxon test on them
(SciPy as the oracle, the method named), wins over images, rank-biserial r, the verdict."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from metacam.analysis.paired import (
    compare,
    image_means,
    rank_biserial,
    signed_rank,
    summarise,
    verdict,
)
from metacam.analysis.power import detectable_difference, images_needed

# Six images, one unit each; MetaCAM against two opponents. Binary fractions, so equal
# differences are exactly equal (ties) in floating point.
MINE = np.array([0.5, 0.25, 0.375, 0.125, 0.5, 0.75])
A = np.array([0.375, 0.375, 0.375, 0.0, 0.25, 0.375])  # differences 1/8, −1/8, 0, 1/8, 2/8, 3/8
B = np.array([0.125, np.nan, 0.0, -0.25, 0.125, 0.25])  # differences 3/8, (none), 3/8, 3/8, 3/8, 4/8


def test_image_means_by_hand():
    values = np.array([[1.0, np.nan], [3.0, 2.0], [5.0, 4.0], [np.nan, np.nan]])
    means = image_means(values, np.array([0, 0, 1, 2]), 3)
    np.testing.assert_array_equal(means[:2], [[2.0, 2.0], [5.0, 4.0]])
    assert np.isnan(means[2]).all()  # an image without values has no mean


def test_rank_biserial_by_hand():
    # Non-zero differences 1, −1, 1, 2, 3 (eighths): |d| ranks: 1 ×3 -> 2 each, 2 -> 4, 3 -> 5.
    # R+ = 2 + 2 + 4 + 5 = 13, R− = 2; r = (13 − 2) / 15.
    assert rank_biserial(MINE - A) == pytest.approx(11 / 15)
    assert np.isnan(rank_biserial(np.zeros(3)))


def test_compare_by_hand():
    table = compare(MINE, np.column_stack([A, B]), ["a", "b"], np.arange(6), 6).set_index("opponent")
    a, b = table.loc["a"], table.loc["b"]
    assert (a["wins"], a["ties"], a["losses"], a["n_units"], a["n_clusters"]) == (4, 1, 1, 6, 6)
    assert a["win_rate"] == pytest.approx(4 / 6)
    assert a["mean_difference"] == pytest.approx(0.75 / 6)
    interval = stats.ttest_1samp(MINE - A, 0.0).confidence_interval(0.95)
    assert (a["ci_low"], a["ci_high"]) == pytest.approx((interval.low, interval.high))
    # A zero and ties among |d|: every sign flip is enumerated (SciPy's permutation method).
    assert a["test"] == "permutation"
    assert a["p"] == pytest.approx(stats.wilcoxon(MINE - A, method=stats.PermutationMethod(n_resamples=np.inf)).pvalue)
    assert a["p_floor"] == pytest.approx(2 / 2**5)  # five non-zero differences
    assert a["rank_biserial"] == pytest.approx(11 / 15)
    # b is paired over the five images it has; MetaCAM's mean over those five images.
    assert b["n_units"] == 5 and b["n_clusters"] == 5 and b["mine_mean"] == pytest.approx(np.mean(MINE[[0, 2, 3, 4, 5]]))
    assert b["mean_difference"] == pytest.approx(2.0 / 5) and b["wins"] == 5


def test_differences_are_averaged_per_image_first():
    # Two images under 3 models × (1 or 2) targets: 3 and 6 units. Every unit weighs 1/units-of-its-image.
    clusters = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1])
    mine = np.array([1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    theirs = np.zeros(9)
    row = compare(mine, theirs[:, None], ["x"], clusters, 2).iloc[0]
    assert row["n_units"] == 9 and row["n_clusters"] == 2
    assert row["mine_mean"] == pytest.approx((2.0 + 0.5) / 2)  # per-image means 2 and 0.5
    assert row["mean_difference"] == pytest.approx(1.25)


def test_lower_is_better_flips_wins_and_r():
    row = compare(MINE, A[:, None], ["a"], np.arange(6), 6, sign=-1).iloc[0]
    assert (row["wins"], row["losses"]) == (1, 4)
    assert row["rank_biserial"] == pytest.approx(-11 / 15)
    assert row["mean_difference"] == pytest.approx(0.125)  # the difference itself keeps its sign
    assert np.isnan(row["n_needed"])  # the observed difference favours the opponent


def test_wilcoxon_runs_on_image_means_and_names_its_method():
    # Two targets per image: units 0-1 in image 0, 2-3 in image 1, ... The test runs on the
    # three image means of the differences, not on the six correlated units.
    mine = np.array([1.0, 1.2, 0.5, 0.7, 0.9, 0.9])
    row = compare(mine, np.zeros((6, 1)), ["x"], np.repeat(np.arange(3), 2), 3).iloc[0]
    assert row["n_units"] == 6 and row["n_clusters"] == 3 and row["test"] == "exact"
    assert row["p"] == pytest.approx(stats.wilcoxon([1.1, 0.6, 0.9], method="exact").pvalue)  # 0.25
    assert row["p"] == pytest.approx(row["p_floor"]) == pytest.approx(2 / 2**3)


def test_signed_rank_method_per_column():
    rng = np.random.default_rng(0)
    exact = rng.normal(0.3, 1, 20)
    tied = np.round(rng.normal(0.3, 1, 12), 1)
    large = np.full(80, np.nan)
    large[:60] = rng.normal(0.3, 1, 60)
    d = np.full((80, 3), np.nan)
    d[:20, 0], d[:12, 1], d[:, 2] = exact, tied, large
    p, method, floor = signed_rank(d)
    assert method.tolist() == ["exact", "permutation", "asymptotic"]
    assert p[0] == pytest.approx(stats.wilcoxon(exact, method="exact").pvalue)
    assert p[1] == pytest.approx(stats.wilcoxon(tied, method=stats.PermutationMethod(n_resamples=np.inf)).pvalue)
    assert p[2] == pytest.approx(stats.wilcoxon(large[:60], method="asymptotic").pvalue)
    assert floor[0] == pytest.approx(2 / 2**20) and floor[2] < 1e-10


def test_fewer_than_six_images_cannot_reach_p_below_005():
    # Five images, MetaCAM ahead on each by a wide margin: the CI excludes 0, but the exact test's
    # smallest two-sided p is 2/2^5 = 0.0625, so the comparison cannot be "better".
    d = np.array([[0.10], [0.11], [0.12], [0.13], [0.14]])
    row = summarise(d).iloc[0]
    assert row["ci_low"] > 0 and row["p"] == pytest.approx(0.0625) and row["p_floor"] == pytest.approx(0.0625)
    assert verdict(1, row["ci_low"], row["ci_high"], row["p"]) == "no clear difference"
    assert np.isnan(row["mde"])  # below the exact test's floor nothing is detectable
    six = summarise(np.vstack([d, [[0.15]]])).iloc[0]
    assert six["p"] == pytest.approx(2 / 64) and verdict(1, six["ci_low"], six["ci_high"], six["p"]) == "better"


def test_power_columns_match_the_power_functions():
    rng = np.random.default_rng(3)
    d = rng.normal(0.02, 0.05, (25, 1))
    row = summarise(d).iloc[0]
    sd = d[:, 0].std(ddof=1)
    assert row["sd"] == pytest.approx(sd)
    assert row["mde"] == pytest.approx(detectable_difference(sd, 25))
    assert row["n_needed"] == images_needed(d.mean(), sd)


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
