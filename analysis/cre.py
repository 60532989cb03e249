"""Cumulative Residual Effect (DESIGN §2) and how it relates to factorial main effects.

With s_e the score of experiment e (mean over units), m the median of s_e over
the experiments present and r_e = s_e − m:

    CRE_g = Σ_{e : g on in e} r_e = n_g · (mean of s_e with g on − m),

n_g the number of experiments present with g on. On the complete 2^6 design
n_g = 32 and the mean with g on is mean(s) + β_g / 2, where β_g = mean(on) −
mean(off) is the main-effect contrast, so CRE_g = 32·(mean(s) − m) + 16·β_g:
an increasing affine map of β_g with one offset for all groups.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from metacam.analysis.summary import summarise
from metacam.groups import GROUP_KEYS, combo_name
from metacam.schema import GROUP_COLUMNS

N_COMBOS = 2 ** len(GROUP_KEYS)


def flag_matrix(combo_ids: np.ndarray | pd.Index | pd.Series) -> np.ndarray:
    """On/off flags ``(n, 6)`` int of each combo_id (bit i = GROUP_KEYS[i])."""
    ids = np.asarray(combo_ids, dtype=np.int64)
    return (ids[:, None] >> np.arange(len(GROUP_KEYS))[None, :]) & 1


def experiment_summary(metacam: pd.DataFrame, sign: int = 1) -> pd.DataFrame:
    """One row per experiment present, ranked best first.

    Args:
        metacam: columns ``combo_id``, ``unit``, ``score``.
        sign: +1 if higher scores are better, -1 if lower are.

    Returns:
        Columns rank, combo_id, method, n_groups, g_gradcam..g_random (0/1),
        mean, std, n (units), ci_low, ci_high, residual (mean − median of means).
    """
    table = summarise(metacam, "combo_id").reset_index()
    flags = flag_matrix(table["combo_id"])
    table.insert(1, "method", [combo_name(int(c)) for c in table["combo_id"]])
    table.insert(2, "n_groups", flags.sum(axis=1))
    for i, column in enumerate(GROUP_COLUMNS):
        table.insert(3 + i, column, flags[:, i])
    table["residual"] = table["mean"] - table["mean"].median()
    # Best first; ties broken by combo_id so the order is reproducible.
    table = table.assign(_key=-sign * table["mean"]).sort_values(["_key", "combo_id"], kind="stable")
    table = table.drop(columns="_key").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def cre(means: pd.Series) -> pd.Series:
    """CRE per group from the experiment scores ``means`` (index: combo_id)."""
    residual = means.to_numpy(dtype=np.float64) - np.median(means.to_numpy(dtype=np.float64))
    values = residual @ flag_matrix(means.index)
    return pd.Series(values, index=pd.Index(GROUP_KEYS, name="group"), name="cre")


def cre_curves(means: pd.Series, sign: int = 1) -> pd.DataFrame:
    """The CRE plot's data: experiments ranked best first, running sum of r_e per group.

    Returns:
        One row per position 1..n: position, combo_id, score, residual, then one
        column per group holding Σ r_e over the experiments up to this
        position that contain the group (its last value is CRE_g).
    """
    order = pd.DataFrame({"combo_id": means.index.to_numpy(), "score": means.to_numpy(dtype=np.float64)})
    order = order.assign(_key=-sign * order["score"]).sort_values(["_key", "combo_id"], kind="stable")
    order = order.drop(columns="_key").reset_index(drop=True)
    order["residual"] = order["score"] - order["score"].median()
    flags = flag_matrix(order["combo_id"])
    running = np.cumsum(order["residual"].to_numpy()[:, None] * flags, axis=0)
    curves = pd.DataFrame(running, columns=list(GROUP_KEYS))
    curves.insert(0, "position", np.arange(1, len(order) + 1))
    return pd.concat([curves.iloc[:, :1], order, curves.iloc[:, 1:]], axis=1)


def cre_per_unit(metacam: pd.DataFrame) -> pd.DataFrame:
    """CRE computed within each unit (its own median over the experiments it has).

    Args:
        metacam: columns ``combo_id``, ``unit`` (int code), ``score``.

    Returns:
        Index ``unit``; one column per group and ``n_experiments``.
    """
    units, unit_index = np.unique(metacam["unit"].to_numpy(), return_inverse=True)
    scores = np.full((len(units), N_COMBOS), np.nan)
    scores[unit_index, metacam["combo_id"].to_numpy(dtype=np.int64)] = metacam["score"].to_numpy(dtype=np.float64)
    present = ~np.isnan(scores)
    median = np.nanmedian(scores, axis=1, keepdims=True)
    residual = np.where(present, scores - median, 0.0)  # absent experiments add nothing
    values = residual @ flag_matrix(np.arange(N_COMBOS))
    table = pd.DataFrame(values, index=pd.Index(units, name="unit"), columns=list(GROUP_KEYS))
    table["n_experiments"] = present.sum(axis=1)
    return table


def main_effect_contrasts(means: pd.Series) -> pd.Series:
    """β_g = mean of s_e with g on − mean with g off (NaN if g is never on or never off)."""
    values = means.to_numpy(dtype=np.float64)
    flags = flag_matrix(means.index).astype(bool)
    beta = []
    for i in range(len(GROUP_KEYS)):
        on, off = values[flags[:, i]], values[~flags[:, i]]
        beta.append(on.mean() - off.mean() if len(on) and len(off) else np.nan)
    return pd.Series(beta, index=pd.Index(GROUP_KEYS, name="group"), name="beta")


def cre_ols_identity(means: pd.Series) -> tuple[pd.DataFrame, dict[str, float | bool | int]]:
    """Check CRE_g = 32·(mean − median) + 16·β_g numerically on these experiment scores.

    Returns:
        A table per group (cre, n_on, beta, offset, sixteen_beta, identity_rhs,
        difference) and a dict with ``complete``, ``n_experiments``, ``mean``,
        ``median``, ``offset`` and ``max_abs_difference``. The identity is exact
        only on the complete design (``complete``).
    """
    values = means.to_numpy(dtype=np.float64)
    mean, median = float(values.mean()), float(np.median(values))
    offset = 32.0 * (mean - median)
    table = pd.DataFrame({"cre": cre(means), "n_on": flag_matrix(means.index).sum(axis=0)})
    table["beta"] = main_effect_contrasts(means)
    table["offset"] = offset
    table["sixteen_beta"] = 16.0 * table["beta"]
    table["identity_rhs"] = offset + table["sixteen_beta"]
    table["difference"] = table["cre"] - table["identity_rhs"]
    facts: dict[str, float | bool | int] = {
        "complete": set(means.index.tolist()) == set(range(N_COMBOS)),
        "n_experiments": len(values),
        "mean": mean,
        "median": median,
        "offset": offset,
        "max_abs_difference": float(np.nanmax(np.abs(table["difference"]))) if table["difference"].notna().any() else float("nan"),
    }
    return table, facts
