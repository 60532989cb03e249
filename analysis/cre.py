"""Cumulative Residual Effect (DESIGN §2) for G groups, and how it relates to the main effects.

With s_e the score of experiment e (mean over units), m the median of s_e over
the experiments present and r_e = s_e − m:

    CRE_g = Σ_{e : g on in e} r_e = n_g · (mean of s_e with g on − m),

n_g the number of experiments present with g on. On the complete 2^G design
n_g = 2^{G−1} and the mean with g on is mean(s) + β_g / 2, where β_g =
mean(on) − mean(off) is the main-effect contrast, so

    CRE_g = 2^{G−1}·(mean(s) − m) + 2^{G−2}·β_g:

an increasing affine map of β_g with one offset for all groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from metacam.analysis.design import flag_matrix


def experiment_means(metacam: pd.DataFrame) -> pd.Series:
    """s_e: mean score over units per experiment; ``metacam`` has combo_id, unit, score. Index combo_id."""
    return metacam.groupby("combo_id", sort=True)["score"].mean().rename("mean")


def cre_matrix(means: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """CRE from experiment scores: ``means (..., E)``, ``flags (E, G)`` -> ``(..., G)``.

    Vectorised over leading axes (bootstrap replicates); a row with a NaN score gives NaN.
    """
    residual = means - np.median(means, axis=-1, keepdims=True)
    return residual @ flags.astype(np.float64)


def cre(means: pd.Series, names: Sequence[str]) -> pd.Series:
    """CRE per group from the experiment scores ``means`` (index: combo_id)."""
    flags = flag_matrix(means.index, len(names))
    values = cre_matrix(means.to_numpy(dtype=np.float64), flags)
    return pd.Series(values, index=pd.Index(list(names), name="group"), name="cre")


def rank_best_first(means: pd.Series, sign: int = 1) -> pd.DataFrame:
    """Experiments ordered best first (ties broken by combo_id): columns combo_id, score."""
    order = pd.DataFrame({"combo_id": means.index.to_numpy(dtype=np.int64),
                          "score": means.to_numpy(dtype=np.float64)})
    order = order.assign(_key=-sign * order["score"]).sort_values(["_key", "combo_id"], kind="stable")
    return order.drop(columns="_key").reset_index(drop=True)


def cre_curves(means: pd.Series, names: Sequence[str], sign: int = 1) -> pd.DataFrame:
    """The CRE plot's data: experiments ranked best first, running sum of r_e per group.

    Returns:
        One row per position 1..n: position, combo_id, score, residual, then one
        column per group (named as the group) holding Σ r_e over the experiments
        up to this position that contain the group (its last value is CRE_g).
    """
    order = rank_best_first(means, sign)
    order["residual"] = order["score"] - order["score"].median()
    flags = flag_matrix(order["combo_id"], len(names))
    running = np.cumsum(order["residual"].to_numpy()[:, None] * flags, axis=0)
    curves = pd.DataFrame(running, columns=list(names))
    curves.insert(0, "position", np.arange(1, len(order) + 1))
    return pd.concat([curves.iloc[:, :1], order, curves.iloc[:, 1:]], axis=1)


def cre_per_unit(metacam: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """CRE computed within each unit (its own median over the experiments it has).

    Args:
        metacam: columns ``combo_id``, ``unit`` (int code), ``score``.
        names: the group names in bit order.

    Returns:
        Index ``unit``; one column per group and ``n_experiments``.
    """
    n_groups = len(names)
    units, unit_index = np.unique(metacam["unit"].to_numpy(), return_inverse=True)
    scores = np.full((len(units), 2**n_groups), np.nan)
    scores[unit_index, metacam["combo_id"].to_numpy(dtype=np.int64)] = metacam["score"].to_numpy(dtype=np.float64)
    present = ~np.isnan(scores)
    median = np.nanmedian(scores, axis=1, keepdims=True)
    residual = np.where(present, scores - median, 0.0)  # absent experiments add nothing
    values = residual @ flag_matrix(np.arange(2**n_groups), n_groups)
    table = pd.DataFrame(values, index=pd.Index(units, name="unit"), columns=list(names))
    table["n_experiments"] = present.sum(axis=1)
    return table


def contrast_weights(flags: np.ndarray) -> np.ndarray:
    """``(E, G) -> (E, G)``: weights w with means @ w = β (1/n_on on, −1/n_off off; NaN columns where
    a group is never on or never off)."""
    on = flags.astype(np.float64)
    n_on, n_off = on.sum(axis=0), (1 - on).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = on / n_on - (1 - on) / n_off
    return np.where((n_on > 0) & (n_off > 0), weights, np.nan)


def main_effect_contrasts(means: pd.Series, names: Sequence[str]) -> pd.Series:
    """β_g = mean of s_e with g on − mean with g off (NaN if g is never on or never off)."""
    weights = contrast_weights(flag_matrix(means.index, len(names)))
    beta = np.nansum(means.to_numpy(dtype=np.float64)[:, None] * weights, axis=0)
    beta = np.where(np.isnan(weights).all(axis=0), np.nan, beta)
    return pd.Series(beta, index=pd.Index(list(names), name="group"), name="beta")


def identity_coefficients(n_groups: int) -> tuple[float, float]:
    """(2^{G−1}, 2^{G−2}): the offset and slope factors of CRE_g = 2^{G−1}·(mean − median) + 2^{G−2}·β_g."""
    return 2.0 ** (n_groups - 1), 2.0 ** (n_groups - 2)


def cre_identity(means: pd.Series, names: Sequence[str]) -> tuple[pd.DataFrame, dict[str, float | bool | int]]:
    """Check CRE_g = 2^{G−1}·(mean − median) + 2^{G−2}·β_g numerically on these experiment scores.

    Returns:
        A table indexed by group (cre, n_on, beta, offset, slope_beta = 2^{G−2}·β_g,
        identity_rhs, difference) and a dict with ``complete``, ``n_groups``,
        ``n_experiments``, ``mean``, ``median``, ``offset``, ``half`` (2^{G−1}),
        ``quarter`` (2^{G−2}) and ``max_abs_difference``. The identity is exact
        only on the complete design (``complete``).
    """
    n_groups = len(names)
    half, quarter = identity_coefficients(n_groups)
    values = means.to_numpy(dtype=np.float64)
    mean, median = float(values.mean()), float(np.median(values))
    offset = half * (mean - median)
    table = pd.DataFrame({"cre": cre(means, names), "n_on": flag_matrix(means.index, n_groups).sum(axis=0)})
    table["beta"] = main_effect_contrasts(means, names)
    table["offset"] = offset
    table["slope_beta"] = quarter * table["beta"]
    table["identity_rhs"] = offset + table["slope_beta"]
    table["difference"] = table["cre"] - table["identity_rhs"]
    finite = table["difference"].dropna()
    facts: dict[str, float | bool | int] = {
        "complete": set(means.index.tolist()) == set(range(2**n_groups)),
        "n_groups": n_groups,
        "n_experiments": len(values),
        "mean": mean,
        "median": median,
        "offset": offset,
        "half": half,
        "quarter": quarter,
        "max_abs_difference": float(finite.abs().max()) if len(finite) else float("nan"),
    }
    return table, facts
