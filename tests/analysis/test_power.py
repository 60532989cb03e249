"""Power: the images the decision rule needs (n_needed) and the difference it can detect (mde),
against a simulation of the rule itself (t interval and exact Wilcoxon on image means)."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.power import TTestPower

from metacam.analysis.paired import summarise, verdict
from metacam.analysis.power import (
    WILCOXON_EFFICIENCY,
    detectable_difference,
    images_needed,
    minimum_images,
)

STUDIES = 2000


def rule_power(difference: float, sd: float, n_images: int, seed: int) -> float:
    """Share of simulated studies of ``n_images`` normal per-image differences that the rule calls better."""
    d = np.random.default_rng(seed).normal(difference, sd, (n_images, STUDIES))
    table = summarise(d, power=None)
    return float(np.mean([verdict(1, a, b, p) == "better"
                          for a, b, p in zip(table["ci_low"], table["ci_high"], table["p"], strict=True)]))


@pytest.mark.parametrize(("difference", "sd"), [(0.01, 0.02), (0.02, 0.02)])
def test_n_needed_is_within_20_percent_of_the_simulated_rule(difference, sd):
    predicted = images_needed(difference, sd)
    # The simulated answer: the fewest images at which the rule says "better" in >= 80% of studies,
    # searched in a window of ±40% around the prediction (a wrong prediction fails either way).
    window = range(max(minimum_images(), int(0.6 * predicted)), int(1.4 * predicted) + 2)
    simulated = next((n for n in window if rule_power(difference, sd, n, seed=n) >= 0.8), None)
    assert simulated is not None
    # Measured: predicted 35 / 11, simulated 36 / 12 images (effect sizes 0.5 / 1).
    assert abs(predicted - simulated) <= 0.2 * simulated, (predicted, simulated)


def test_mde_is_detected_with_80_percent_power():
    sd, n_images = 0.02, 25
    mde = detectable_difference(sd, n_images)
    assert 0.75 <= rule_power(mde, sd, n_images, seed=7) <= 0.85  # measured 0.78
    assert rule_power(mde / 2, sd, n_images, seed=8) < 0.4


def test_power_functions_by_hand():
    assert minimum_images(0.05) == 6 and minimum_images(0.01) == 8  # 2/2^6 < 0.05, 2/2^8 < 0.01
    # n_needed: statsmodels' t-test n divided by the signed-rank test's efficiency 3/π, rounded up.
    n_t = TTestPower().solve_power(effect_size=0.5, nobs=None, alpha=0.05, power=0.8, alternative="two-sided")
    assert images_needed(0.01, 0.02) == np.ceil(n_t / WILCOXON_EFFICIENCY)
    assert np.isnan(images_needed(0.0, 0.02)) and np.isnan(images_needed(-0.01, 0.02))
    assert images_needed(0.5, 0.0) == 6 and images_needed(10.0, 0.02) == 6  # the exact test's floor
    effect = TTestPower().solve_power(effect_size=None, nobs=20 * WILCOXON_EFFICIENCY, alpha=0.05, power=0.8)
    assert detectable_difference(0.02, 20) == pytest.approx(0.02 * effect)
    assert np.isnan(detectable_difference(0.02, 5))  # below the floor nothing is detectable
