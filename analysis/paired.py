"""Paired comparisons of one method against several, over units.

For each opponent, over the units where both have a score (d_u = mine − theirs):

* mean difference with a cluster-bootstrap 95% CI (:mod:`metacam.analysis.bootstrap`);
* wins / ties / losses and the win rate (a win is a strictly better score in
  the metric's direction);
* Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, two-sided) and the
  matched-pairs rank-biserial correlation r = (R+ − R−) / (R+ + R−), signed
  so that r > 0 favours ``mine``. Both are computed on the *cluster means* of
  d (one value per image × model): the signed-rank test assumes independent
  pairs, which the targets of one image are not; with one target per image the
  cluster means are the units themselves;
* Holm's correction (statsmodels ``multipletests``) across the opponents of one
  family (one metric).

A verdict says ``better`` when the CI excludes 0 on the favourable side and
the Holm p < 0.05, ``worse`` for the mirror case, otherwise ``no clear difference``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from metacam.analysis.bootstrap import ClusterBootstrap, cluster_sums
from metacam.analysis.multiple import holm
from metacam.analysis.settings import ALPHA

VERDICTS = ("better", "worse", "no clear difference")


def rank_biserial(differences: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of the non-zero differences (NaN if none)."""
    nonzero = differences[differences != 0]
    if not len(nonzero):
        return float("nan")
    ranks = stats.rankdata(np.abs(nonzero))
    plus, minus = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
    return float((plus - minus) / (plus + minus))


def signed_rank_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p (zeros dropped); NaN when every difference is 0."""
    if not np.any(differences != 0):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample and tie warnings: the p-value is still the one reported
        return float(stats.wilcoxon(differences, zero_method="wilcox", alternative="two-sided").pvalue)


def verdict(sign: int, ci_low: float, ci_high: float, p_holm: float) -> str:
    """``better`` / ``worse`` / ``no clear difference`` for a difference mine − theirs."""
    if not (np.isfinite(ci_low) and np.isfinite(ci_high) and np.isfinite(p_holm)) or p_holm >= ALPHA:
        return VERDICTS[2]
    favourable_low, favourable_high = sorted((sign * ci_low, sign * ci_high))
    if favourable_low > 0:
        return VERDICTS[0]
    if favourable_high < 0:
        return VERDICTS[1]
    return VERDICTS[2]


def compare(mine: np.ndarray, theirs: np.ndarray, names: Sequence[str], clusters: np.ndarray,
            boot: ClusterBootstrap, sign: int = 1) -> pd.DataFrame:
    """Compare ``mine`` with each column of ``theirs``, paired over units.

    Args:
        mine: ``(n_units,)`` scores, NaN where absent.
        theirs: ``(n_units, K)`` opponents' scores, NaN where absent.
        names: the K opponents.
        clusters: ``(n_units,)`` cluster code of each unit (0..C-1, C = boot.n_clusters).
        boot: the resampling plan.
        sign: +1 if higher scores are better.

    Returns:
        One row per opponent: opponent, n_units, n_clusters, mine_mean,
        theirs_mean, mean_difference (mine − theirs), ci_low, ci_high, wins,
        ties, losses, win_rate, wilcoxon_p, p_holm, rank_biserial, verdict.
    """
    theirs = np.asarray(theirs, dtype=np.float64).reshape(len(mine), -1)
    paired = ~np.isnan(theirs) & ~np.isnan(mine)[:, None]
    difference = np.where(paired, mine[:, None] - theirs, np.nan)
    estimate = boot.means(difference, clusters)
    low, high = estimate.interval()
    sums, counts = cluster_sums(difference, clusters, boot.n_clusters)
    with np.errstate(invalid="ignore", divide="ignore"):
        cluster_means = sums / counts
    better = sign * difference
    rows = []
    for k, name in enumerate(names):
        kept = paired[:, k]
        by_cluster = cluster_means[:, k][counts[:, k] > 0]
        n = int(kept.sum())
        rows.append({
            "opponent": name,
            "n_units": n,
            "n_clusters": len(by_cluster),
            "mine_mean": float(mine[kept].mean()) if n else np.nan,
            "theirs_mean": float(theirs[kept, k].mean()) if n else np.nan,
            "mean_difference": estimate.point[k],
            "ci_low": low[k],
            "ci_high": high[k],
            "wins": int((better[kept, k] > 0).sum()),
            "ties": int((better[kept, k] == 0).sum()),
            "losses": int((better[kept, k] < 0).sum()),
            "win_rate": float((better[kept, k] > 0).mean()) if n else np.nan,
            "wilcoxon_p": signed_rank_p(by_cluster) if len(by_cluster) else np.nan,
            "rank_biserial": sign * rank_biserial(by_cluster) if len(by_cluster) else np.nan,
        })
    table = pd.DataFrame(rows, columns=["opponent", "n_units", "n_clusters", "mine_mean", "theirs_mean",
                                        "mean_difference", "ci_low", "ci_high", "wins", "ties", "losses",
                                        "win_rate", "wilcoxon_p", "rank_biserial"])
    table["p_holm"] = holm(table["wilcoxon_p"].to_numpy(dtype=np.float64))
    table["verdict"] = [verdict(sign, a, b, p) for a, b, p in
                        zip(table["ci_low"], table["ci_high"], table["p_holm"], strict=True)]
    return table

