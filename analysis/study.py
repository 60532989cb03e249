"""A study: CRE and factorial effects per model and per target rank, beside the pooled ones.

Exploratory: these tables slice the study after the fact and make no correction
across the slices; the pooled analysis answers the questions. Each subset (one model,
or one target rank over all models) is analysed like the whole: experiment means over
its units, CRE_g with a cluster-bootstrap CI (its own resampling of its own images),
and the factorial OLS (model or rank fixed effects where the subset spans several,
clustered by image within the subset, CR2 below 30 images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from metacam.analysis.bootstrap import ClusterBootstrap
from metacam.analysis.cre import cre_curves, experiment_means
from metacam.analysis.experiments import estimate_experiments
from metacam.analysis.factorial import fit_factorial
from metacam.analysis.settings import MIN_CLUSTERS
from metacam.groups import GroupSet

DIMENSIONS: tuple[str, ...] = ("model", "target_rank")


@dataclass(frozen=True)
class Subset:
    """One slice of the study: ``dimension`` (model or target_rank) = ``value``.

    metacam: its scores, unit codes renumbered 0..n-1; units: its unit table
    (same renumbering, clusters — its images — renumbered 0..C-1).
    """

    dimension: str
    value: object
    metacam: pd.DataFrame
    units: pd.DataFrame

    @property
    def n_clusters(self) -> int:
        return int(self.units["cluster"].nunique())

    @property
    def label(self) -> str:
        return f"{self.dimension} {self.value}"


def restrict(metacam: pd.DataFrame, units: pd.DataFrame, mask: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The units where ``mask`` holds and their scores, with unit and cluster codes renumbered."""
    kept = units.loc[mask].copy()
    new_code = pd.Series(np.arange(len(kept)), index=kept.index)
    _, kept["cluster"] = np.unique(kept["cluster"].to_numpy(), return_inverse=True)
    kept.index = pd.Index(np.arange(len(kept)), name="unit")
    rows = metacam[metacam["unit"].isin(new_code.index)].copy()
    rows["unit"] = new_code.reindex(rows["unit"].to_numpy()).to_numpy()
    return rows.reset_index(drop=True), kept


def subsets(metacam: pd.DataFrame, units: pd.DataFrame, dimension: str) -> list[Subset]:
    """One Subset per value of ``dimension`` present among units with MetaCAM scores."""
    scored = units.index.isin(metacam["unit"].unique())
    values = units.loc[scored, dimension].dropna().unique()
    found = []
    for value in sorted(values.tolist()):
        mask = scored & (units[dimension] == value).fillna(False).to_numpy(dtype=bool)
        rows, kept = restrict(metacam, units, mask)
        found.append(Subset(dimension, value, rows, kept))
    return found


def cre_by(parts: list[Subset], groups: GroupSet, sign: int, replicates: int, seed: int) -> pd.DataFrame:
    """CRE_g with its cluster-bootstrap CI in each subset.

    Returns:
        One row per (subset, group): <dimension>, n_units, n_clusters,
        n_experiments, group, cre, ci_low, ci_high, rank (1 = most helpful in that subset).
    """
    rows = []
    for index, part in enumerate(parts):
        boot = ClusterBootstrap.draw(part.n_clusters, replicates, (seed, DIMENSIONS.index(part.dimension) + 1, index))
        estimates = estimate_experiments(part.metacam, part.units["cluster"].to_numpy(), groups, boot, sign)
        low, high = estimates.cre.interval()
        ranks = pd.Series(-sign * estimates.cre.point).rank(method="min").to_numpy()
        for g, name in enumerate(groups.names):
            rows.append({part.dimension: part.value, "n_units": len(part.units), "n_clusters": part.n_clusters,
                         "n_experiments": len(estimates.combos), "group": name, "cre": estimates.cre.point[g],
                         "ci_low": low[g], "ci_high": high[g], "rank": ranks[g]})
    return pd.DataFrame(rows)


def effects_by(parts: list[Subset], groups: GroupSet, interactions: bool) -> pd.DataFrame:
    """The factorial OLS in each subset (those with at least two experiments).

    Returns:
        One row per (subset, term): <dimension>, n_units, n_clusters,
        inference (CR1/CR2/iid), term, label, kind, estimate, std_err, ci_low,
        ci_high, p_value, p_holm.
    """
    frames = []
    for part in parts:
        if part.metacam["combo_id"].nunique() < 2:
            continue
        fit = fit_factorial(part.metacam, part.units, groups.names, interactions=interactions)
        effects = fit.effects.drop(columns="n_clusters")
        for position, (column, value) in enumerate(((part.dimension, part.value), ("n_units", fit.n_units),
                                                    ("n_clusters", fit.n_clusters), ("inference", fit.inference))):
            effects.insert(position, column, value)
        frames.append(effects)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def curves_by(parts: list[Subset], groups: GroupSet, sign: int) -> list[tuple[str, pd.DataFrame, int]]:
    """(title, CRE curves, n_units) per subset with at least two experiments, for the small multiples."""
    found = []
    for part in parts:
        means = experiment_means(part.metacam)
        if len(means) >= 2:
            found.append((f"{part.value}", cre_curves(means, groups.names, sign), len(part.units)))
    return found


def few_cluster_subsets(parts: list[Subset]) -> list[Subset]:
    return [p for p in parts if p.n_clusters < MIN_CLUSTERS]
