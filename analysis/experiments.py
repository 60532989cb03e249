"""The MetaCAM experiments (group combinations): mean scores with cluster-bootstrap
CIs, the ranking with rank intervals, CRE_g and the main-effect contrasts β_g with
their CIs — all from one set of bootstrap replicates (over images) of the experiment means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from metacam.analysis.bootstrap import ClusterBootstrap, Estimate
from metacam.analysis.cre import contrast_weights, cre_matrix
from metacam.analysis.design import flag_matrix
from metacam.analysis.scores import wide
from metacam.groups import GroupSet


@dataclass(frozen=True)
class ExperimentEstimates:
    """Experiment means and what derives from them.

    combos: the combo_ids present, sorted (the columns of ``means``).
    means: the experiment means s_e, ``(E,)``, with replicates ``(B, E)``.
    cre: CRE_g, ``(G,)`` with replicates ``(B, G)`` (NaN when fewer than two experiments).
    beta: β_g = mean of s_e with g on − mean with g off, ``(G,)`` with replicates ``(B, G)``
        (NaN for a group never on or never off).
    ranks: rank of each experiment (1 = best), ``(E,)`` with replicates ``(B, E)``.
    """

    combos: list[int]
    means: Estimate
    cre: Estimate
    beta: Estimate
    ranks: Estimate


def _ranks(values: np.ndarray, sign: int) -> np.ndarray:
    """Rank 1 = best along the last axis (ties by position; NaN ranked last)."""
    key = np.where(np.isnan(values), np.inf, -sign * values)
    order = np.argsort(key, axis=-1, kind="stable")
    return np.argsort(order, axis=-1, kind="stable").astype(np.float64) + 1


def estimate_experiments(metacam: pd.DataFrame, clusters: np.ndarray, groups: GroupSet,
                         boot: ClusterBootstrap, sign: int = 1) -> ExperimentEstimates:
    """Bootstrap the experiment means, CRE and ranks.

    Args:
        metacam: columns combo_id, unit, score.
        clusters: ``(n_units,)`` cluster code of each unit (dataset.units["cluster"]).
        groups: the sweep's groups (their count sets the flags).
        boot: the resampling plan over the same clusters.
        sign: +1 if higher scores are better.
    """
    combos, values = wide(metacam, "combo_id", len(clusters))
    means = boot.means(values, clusters)
    flags = flag_matrix(combos, groups.size)
    if len(combos) >= 2:
        cre = means.derive(cre_matrix(means.point, flags), cre_matrix(means.replicates, flags))
        weights = contrast_weights(flags)
        beta = means.derive(means.point @ weights, means.replicates @ weights)
    else:
        cre = means.derive(np.full(groups.size, np.nan), np.full((boot.replicates, groups.size), np.nan))
        beta = cre
    ranks = Estimate(_ranks(means.point[None, :], sign)[0], _ranks(means.replicates, sign), means.n_clusters)
    return ExperimentEstimates([int(c) for c in combos], means, cre, beta, ranks)


def experiment_table(estimates: ExperimentEstimates, metacam: pd.DataFrame, groups: GroupSet,
                     sign: int = 1) -> pd.DataFrame:
    """One row per experiment present, ranked best first.

    Returns:
        Columns rank, combo_id, method, groups_on, one 0/1 column per group flag
        (g_<group>), mean, ci_low, ci_high (cluster bootstrap), n_units, n_clusters (images),
        residual (mean − median of means), rank_low, rank_high (95% percentile
        interval of the bootstrap rank).
    """
    means = estimates.means
    low, high = means.interval()
    rank_low, rank_high = estimates.ranks.percentile_interval()
    flags = flag_matrix(estimates.combos, groups.size)
    n_units = metacam.groupby("combo_id")["unit"].nunique().reindex(estimates.combos).to_numpy()
    table = pd.DataFrame({
        "combo_id": estimates.combos,
        "method": [groups.combo_name(c) for c in estimates.combos],
        "groups_on": flags.sum(axis=1),
        **{column: flags[:, i] for i, column in enumerate(groups.columns)},
        "mean": means.point,
        "ci_low": low,
        "ci_high": high,
        "n_units": n_units,
        "n_clusters": means.n_clusters,
        "residual": means.point - np.median(means.point),
        "rank_low": rank_low,
        "rank_high": rank_high,
    })
    table = table.assign(_key=-sign * table["mean"]).sort_values(["_key", "combo_id"], kind="stable")
    table = table.drop(columns="_key").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table
