"""Power of the paired comparison: the difference a study can detect, the images a difference needs.

A comparison is "better" when the 95% t interval of the mean per-image difference
excludes 0 and the two-sided Wilcoxon signed-rank p < α, both on the per-image
differences (:mod:`metacam.analysis.paired`). Its power is computed with
statsmodels' ``TTestPower`` (the one-sample t-test on the image means, two-sided,
at α) with the signed-rank test's asymptotic relative efficiency against the t-test
at the normal, 3/π ≈ 0.955 (Lehmann, *Nonparametrics*, 1975): the signed-rank test
with n images has about the power of the t-test with 3n/π. Simulated, the images
this gives are within 10% of the rule's (tests/analysis/test_power.py). On top of
that, the exact test cannot reach p < α with fewer than :func:`minimum_images`
images (its smallest two-sided p is 2/2^n), whatever the difference.

* ``mde``: the smallest true mean difference detected with probability POWER by a
  study with the same images and paired spread (sd of the per-image differences).
* ``n_needed``: the images a study needs to detect the observed difference with
  probability POWER; NaN when the observed difference is 0 or unfavourable.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
from scipy import stats

from metacam.analysis.settings import ALPHA, POWER

WILCOXON_EFFICIENCY = 3 / math.pi
"""Pitman efficiency of the signed-rank test relative to the t-test for normal differences."""


def minimum_images(alpha: float = ALPHA) -> int:
    """The fewest images with which the exact two-sided signed-rank test can give p < ``alpha``
    (its smallest p with n non-zero differences is 2/2^n): 6 at α = 0.05."""
    n = 1
    while 2.0 * 0.5**n >= alpha:
        n += 1
    return n


def _solve(**kwargs: float | None) -> float:
    """statsmodels' ``TTestPower().solve_power`` (two-sided) for the one argument given as None; NaN
    where its root finder fails."""
    # Loaded on use (statsmodels is heavy). sm_exceptions registers an "always" filter for its
    # ConvergenceWarning when first imported: import it before silencing warnings, not inside.
    import statsmodels.tools.sm_exceptions  # noqa: F401
    from statsmodels.stats.power import TTestPower

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the root finder's chatter; a failure comes back as NaN
        try:
            return float(np.squeeze(TTestPower().solve_power(alternative="two-sided", **kwargs)))
        except (ValueError, RuntimeError):
            return float("nan")


@lru_cache(maxsize=4096)
def _detectable_effect(n_images: int, alpha: float, power: float) -> float:
    """The standardised difference (mean / sd) the rule detects with ``power`` at ``n_images``."""
    return _solve(effect_size=None, nobs=n_images * WILCOXON_EFFICIENCY, alpha=alpha, power=power)


def detectable_difference(sd: float, n_images: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """``mde``: the true mean per-image difference detected with probability ``power`` with
    ``n_images`` images whose differences have standard deviation ``sd``; NaN below
    :func:`minimum_images` (the exact test cannot reject there) or without a spread."""
    if not np.isfinite(sd) or n_images < minimum_images(alpha):
        return float("nan")
    return _detectable_effect(int(n_images), alpha, power) * float(sd)


def images_needed(difference: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """``n_needed``: the images needed to detect a favourable mean per-image ``difference`` (> 0 in
    the metric's favourable direction) with probability ``power``, given the per-image ``sd``;
    NaN when the difference is 0, unfavourable or not finite."""
    if not (np.isfinite(difference) and np.isfinite(sd)) or difference <= 0:
        return float("nan")
    floor = minimum_images(alpha)
    if sd <= 0:
        return float(floor)  # every image differs by the same amount: the floor is all it needs
    effect = difference / sd
    n_t = _solve(effect_size=effect, nobs=None, alpha=alpha, power=power)
    if not np.isfinite(n_t):
        # Far outside the root finder's bracket (n below 2): the normal approximation is enough there.
        n_t = ((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) / effect) ** 2
    return float(max(floor, math.ceil(n_t / WILCOXON_EFFICIENCY)))
