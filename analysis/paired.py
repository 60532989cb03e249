"""Paired comparisons over images: every verdict of the analysis is made here.

Images are the sampled units (a cluster = one image, under every model and target it
is scored with). A comparison of ``mine`` with ``theirs`` first averages each image's
differences over its units (models × targets) where both have a score,

    d_i = mean over the units u of image i of (mine_u − theirs_u),

and then treats the d_i as the n independent observations, one weight per image,
for the estimate, the interval, the test and the power alike (one weighting):

* estimate: the mean of d_i (= mean over images of mine − mean of theirs);
* 95% interval: Student's t on the d_i (``scipy.stats.ttest_1samp(...).confidence_interval``),
  two-sided; the cluster bootstrap's corrected interval converges to it;
* test: Wilcoxon signed-rank on the d_i (``scipy.stats.wilcoxon``, two-sided,
  ``zero_method="wilcox"``) with its method named per comparison: ``exact`` (n ≤ 50
  non-zero, untied d_i), ``permutation`` (n ≤ 13 with ties or zeros: every sign
  flip of the midranks, the null distribution SciPy's
  ``PermutationMethod(n_resamples=inf)`` enumerates, computed here for all comparisons of
  one n at once — SciPy's takes 0.2 s per comparison; tests/analysis/test_paired.py checks
  they agree), else ``asymptotic``.
  The exact test's smallest two-sided p is 2/2^n (``p_floor``): below 6 images it
  cannot reach p < 0.05, whatever the data;
* power: ``mde`` and ``n_needed`` (:mod:`metacam.analysis.power`);
* wins / ties / losses and the matched-pairs rank-biserial r = (R+ − R−)/(R+ + R−)
  over images, signed so that r > 0 and a win favour ``mine``.

Two-sided throughout: a comparison is ``better`` when the interval lies on the
favourable side of 0 *and* p < α (``worse`` for the mirror case), so the chance of
calling it better when it is not is at most α/2 per comparison.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from metacam.analysis.bootstrap import cluster_sums
from metacam.analysis.power import detectable_difference, images_needed
from metacam.analysis.settings import ALPHA, LEVEL, POWER

VERDICTS = ("better", "worse", "no clear difference")
EXACT_MAX = 50
"""Largest n for the exact null distribution of the signed-rank statistic (SciPy's own limit)."""
PERMUTATION_MAX = 13
"""Largest n with ties or zeros for which every sign flip is enumerated (2^13 = 8,192)."""
COLUMNS = ("n_clusters", "mean_difference", "ci_low", "ci_high", "sd", "wins", "ties", "losses", "win_rate",
           "p", "test", "p_floor", "rank_biserial", "mde", "n_needed")


def image_means(values: np.ndarray, clusters: np.ndarray, n_clusters: int) -> np.ndarray:
    """Mean of each image's units per column, NaN where an image has none: ``(n_units, K) -> (C, K)``
    (or ``(n_units,) -> (C,)``)."""
    values = np.asarray(values, dtype=np.float64)
    sums, counts = cluster_sums(values, clusters, n_clusters)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), np.nan)
    return means[:, 0] if values.ndim == 1 else means


def paired_image_means(mine: np.ndarray, theirs: np.ndarray, clusters: np.ndarray, n_clusters: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image, over the units where both have a score: mean of mine, of theirs and of the
    difference, each ``(C, K)`` for ``mine (n_units,)`` or ``(n_units, K)`` and ``theirs (n_units, K)``."""
    theirs = np.asarray(theirs, dtype=np.float64)
    theirs = theirs.reshape(len(theirs), -1)
    mine = np.asarray(mine, dtype=np.float64)
    mine = np.broadcast_to(mine[:, None] if mine.ndim == 1 else mine, theirs.shape)
    paired = ~np.isnan(mine) & ~np.isnan(theirs)
    both = np.concatenate([np.where(paired, mine, np.nan), np.where(paired, theirs, np.nan)], axis=1)
    means = image_means(both, clusters, n_clusters)
    k = theirs.shape[1]
    return means[:, :k], means[:, k:], means[:, :k] - means[:, k:]


def _tied(values: np.ndarray) -> np.ndarray:
    """Per column: do two non-NaN entries share a value? ``(C, K) -> (K,)``."""
    ordered = np.sort(values, axis=0)  # NaN sort last
    return np.any(np.diff(ordered, axis=0) == 0, axis=0)


def signed_rank(differences: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-sided Wilcoxon signed-rank test of each column of ``differences (C, K)`` (NaN = absent).

    Returns ``(p, method, floor)``, each ``(K,)``: the p-value (NaN when every difference is 0 or
    absent), the method used (``exact``, ``permutation``, ``asymptotic`` or ``none``) and the
    smallest p that method can give with this many non-zero differences.
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d.reshape(len(d), -1)
    finite = ~np.isnan(d)
    nonzero = finite & (d != 0)
    n = nonzero.sum(axis=0)
    zeros = (finite & (d == 0)).any(axis=0)
    tied = _tied(np.where(nonzero, np.abs(d), np.nan))
    method = np.where(n == 0, "none", np.where(
        (n <= EXACT_MAX) & ~zeros & ~tied, "exact", np.where(n <= PERMUTATION_MAX, "permutation", "asymptotic")))
    p = np.full(d.shape[1], np.nan)
    for name in ("exact", "asymptotic"):
        columns = np.flatnonzero(method == name)
        if not len(columns):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small-sample notes; the p-value is the one reported
            p[columns] = stats.wilcoxon(d[:, columns], zero_method="wilcox", alternative="two-sided",
                                        method=name, axis=0, nan_policy="omit").pvalue
    permuted = np.flatnonzero(method == "permutation")
    if len(permuted):
        p[permuted] = sign_flip_p(np.where(nonzero[:, permuted], d[:, permuted], np.nan))
    # Smallest p: every difference on one side. Exact and permutation: 2/2^n; asymptotic: the normal tail.
    with np.errstate(all="ignore"):
        z = (n * (n + 1) / 4) / np.sqrt(n * (n + 1) * (2 * n + 1) / 24)
        floor = np.where(method == "asymptotic", 2 * stats.norm.sf(z), np.minimum(1.0, 2.0 * 0.5**n))
    return p, method, np.where(n == 0, np.nan, floor)


def sign_flip_p(differences: np.ndarray) -> np.ndarray:
    """Two-sided signed-rank p of each column of ``(C, K)`` (NaN = absent; no zeros) from every sign
    flip of its midranks (2^n of them, n ≤ PERMUTATION_MAX): 2·min(P(T ≥ t), P(T ≤ t)), capped at 1,
    with T the sum of the positive differences' ranks."""
    d = np.asarray(differences, dtype=np.float64)
    present = ~np.isnan(d)
    n = present.sum(axis=0)
    ranks = stats.rankdata(np.where(present, np.abs(d), np.nan), axis=0, nan_policy="omit")
    p = np.full(d.shape[1], np.nan)
    for size in np.unique(n[n > 0]):
        columns = np.flatnonzero(n == size)
        order = np.argsort(~present[:, columns], axis=0, kind="stable")[:size]  # the present rows first
        r = np.take_along_axis(ranks[:, columns], order, axis=0)  # (size, K)
        observed = np.where(np.take_along_axis(d[:, columns], order, axis=0) > 0, r, 0.0).sum(axis=0)
        signs = (np.arange(2**size)[:, None] >> np.arange(size)[None, :]) & 1  # every assignment
        null = signs @ r  # (2^size, K)
        tolerance = 1e-9 * r.sum(axis=0)
        upper = (null >= observed - tolerance).mean(axis=0)
        lower = (null <= observed + tolerance).mean(axis=0)
        p[columns] = np.minimum(1.0, 2 * np.minimum(upper, lower))
    return p


def rank_biserial(differences: np.ndarray) -> np.ndarray | float:
    """Matched-pairs rank-biserial correlation (R+ − R−)/(R+ + R−) of the non-zero differences,
    per column of ``(C, K)`` (or of one ``(C,)`` vector); NaN where every difference is 0 or absent."""
    d = np.asarray(differences, dtype=np.float64)
    nonzero = ~np.isnan(d) & (d != 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-NaN columns give NaN, as intended
        ranks = stats.rankdata(np.where(nonzero, np.abs(d), np.nan), axis=0, nan_policy="omit")
    plus = np.where(nonzero & (d > 0), ranks, 0.0).sum(axis=0)
    minus = np.where(nonzero & (d < 0), ranks, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(nonzero.any(axis=0), (plus - minus) / (plus + minus), np.nan)
    return float(r) if d.ndim == 1 else r


def verdict(sign: int, ci_low: float, ci_high: float, p: float, alpha: float = ALPHA) -> str:
    """``better`` / ``worse`` / ``no clear difference`` for a difference mine − theirs: the interval
    on one side of 0 and ``p`` (raw or adjusted, as the family requires) below ``alpha``."""
    if not (np.isfinite(ci_low) and np.isfinite(ci_high) and np.isfinite(p)) or p >= alpha:
        return VERDICTS[2]
    favourable_low, favourable_high = sorted((sign * ci_low, sign * ci_high))
    if favourable_low > 0:
        return VERDICTS[0]
    if favourable_high < 0:
        return VERDICTS[1]
    return VERDICTS[2]


def summarise(differences: np.ndarray, sign: int = 1, *, level: float = LEVEL, alpha: float = ALPHA,
              power: float | None = POWER) -> pd.DataFrame:
    """The paired comparison of each column of per-image differences ``(C, K)`` (NaN = image absent).

    Returns one row per column: n_clusters, mean_difference, ci_low, ci_high (t interval), sd,
    wins, ties, losses, win_rate (over images, in the metric's direction), p (Wilcoxon), test (its
    method), p_floor, rank_biserial (> 0 favours mine), mde and n_needed (NaN when ``power`` is None).
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d.reshape(len(d), -1)
    n = (~np.isnan(d)).sum(axis=0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # columns with fewer than two images give NaN, as intended
        mean = np.nanmean(d, axis=0)
        sd = np.nanstd(d, axis=0, ddof=1)
        interval = stats.ttest_1samp(d, 0.0, axis=0, nan_policy="omit").confidence_interval(level)
    low = np.where(n >= 2, interval.low, np.nan)
    high = np.where(n >= 2, interval.high, np.nan)
    p, method, floor = signed_rank(d)
    better = sign * d
    wins, ties, losses = ((better > 0).sum(axis=0), (better == 0).sum(axis=0), (better < 0).sum(axis=0))
    table = pd.DataFrame({
        "n_clusters": n, "mean_difference": np.where(n > 0, mean, np.nan), "ci_low": low, "ci_high": high,
        "sd": np.where(n >= 2, sd, np.nan), "wins": wins, "ties": ties, "losses": losses,
        "win_rate": np.where(n > 0, wins / np.maximum(n, 1), np.nan), "p": p, "test": method, "p_floor": floor,
        "rank_biserial": sign * rank_biserial(d),
    })
    if power is None:
        table["mde"] = table["n_needed"] = np.nan
    else:
        table["mde"] = [detectable_difference(s, int(c), alpha, power) for s, c in zip(sd, n, strict=True)]
        table["n_needed"] = [images_needed(sign * m, s, alpha, power) for m, s in zip(mean, sd, strict=True)]
    return table


def compare(mine: np.ndarray, theirs: np.ndarray, names: list[str], clusters: np.ndarray, n_clusters: int,
            sign: int = 1) -> pd.DataFrame:
    """Compare ``mine (n_units,)`` with each column of ``theirs (n_units, K)``, paired by image.

    Returns one row per opponent: opponent, n_units (paired units), mine_mean, theirs_mean (means
    over images of each image's mean), then :func:`summarise`'s columns (raw p; the caller adds the
    family's adjustment and the verdict).
    """
    theirs = np.asarray(theirs, dtype=np.float64).reshape(len(mine), -1)
    mine_by_image, theirs_by_image, difference = paired_image_means(mine, theirs, clusters, n_clusters)
    paired = ~np.isnan(theirs) & ~np.isnan(np.asarray(mine, dtype=np.float64))[:, None]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mine_mean, theirs_mean = np.nanmean(mine_by_image, axis=0), np.nanmean(theirs_by_image, axis=0)
    table = summarise(difference, sign)
    table.insert(0, "theirs_mean", theirs_mean)
    table.insert(0, "mine_mean", mine_mean)
    table.insert(0, "n_units", paired.sum(axis=0))
    table.insert(0, "opponent", list(names))
    return table
