"""The evidence for the paper's question: does MetaCAM beat every single CAM, and the controls?

All tables here pair entries over units and take their CIs from the shared
cluster bootstrap. The entries:

* the pre-specified comparator: MetaCAM with every non-control group
  (``GroupSet.comparator``), fixed before looking at the data;
* the "best" combination: the one with the best *in-sample* mean, i.e.
  chosen on the draw that also chose k*; reported beside the comparator,
  never used for the headline;
* each single CAM method and each null control.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from metacam.analysis.bootstrap import ClusterBootstrap
from metacam.analysis.metrics import METRICS
from metacam.analysis.paired import compare
from metacam.analysis.scores import Scores
from metacam.groups import GroupSet


@dataclass(frozen=True)
class Entry:
    """A row of the evidence tables: kind ``metacam``/``single``/``control`` and its key."""

    label: str
    kind: str
    key: int | str
    role: str = ""  # "comparator", "best", "control member" (a single method of a control group), or ""

    @property
    def combo_id(self) -> int | None:
        return int(self.key) if self.kind == "metacam" else None

    @property
    def opponent_kind(self) -> str:
        """``single`` for a real CAM method; ``control`` for a null control or a member of a control group."""
        return "control" if self.kind == "control" or self.role == "control member" else self.kind


def best_combo(scores: Scores, sign: int) -> int | None:
    """combo_id with the best mean score (ties: the lowest combo_id); None without MetaCAM rows."""
    if scores.metacam.empty:
        return None
    means = scores.metacam.groupby("combo_id")["score"].mean()
    return int((sign * means).sort_index().idxmax())


def best_single(scores: Scores, sign: int) -> str | None:
    """Single method with the best mean score (ties: alphabetical); None without singles."""
    if scores.singles.empty:
        return None
    means = scores.singles.groupby("method")["score"].mean()
    return str((sign * means).sort_index().idxmax())


def control_members(groups: GroupSet) -> set[str]:
    """Members of the groups marked as controls (e.g. RandomCAM): compared as controls, not as CAMs."""
    return {m for members, control in zip(groups.members, groups.controls, strict=True) if control for m in members}


def entries(groups: GroupSet, ranking: Scores, comparator_present: bool, best: int | None) -> list[Entry]:
    """Comparator, in-sample best (if different), singles best first by ``ranking``, then controls
    (members of control groups last among the singles, marked ``control member``)."""
    found: list[Entry] = []
    if comparator_present:
        found.append(Entry(f"MetaCAM comparator: {groups.combo_name(groups.comparator)}", "metacam",
                           groups.comparator, "comparator"))
    if best is not None and (best != groups.comparator or not comparator_present):
        found.append(Entry(f"MetaCAM best in-sample: {groups.combo_name(best)}", "metacam", best, "best"))
    sign, controls = ranking.spec.sign, control_members(groups)
    for kind, frame in (("single", ranking.singles), ("control", ranking.controls)):
        means = frame.groupby("method")["score"].mean()
        ordered = [str(m) for m in (-sign * means).sort_values(kind="stable").index]
        ordered = [m for m in ordered if m not in controls] + [m for m in ordered if m in controls]
        found += [Entry(m, kind, m, "control member" if kind == "single" and m in controls else "") for m in ordered]
    return found


def entry_matrix(scores: Scores, chosen: list[Entry], n_units: int, field: str = "score") -> np.ndarray:
    """``(n_units, len(chosen))`` scores (or another field) of each entry, NaN where absent."""
    matrix = np.full((n_units, len(chosen)), np.nan)
    for kind in ("metacam", "single", "control"):
        positions = [i for i, entry in enumerate(chosen) if entry.kind == kind]
        if positions:
            matrix[:, positions] = scores.matrix(kind, [chosen[i].key for i in positions], n_units, field)
    return matrix


def metacam_vs_single(chosen: list[Entry], by_mode: dict[str, Scores | None], clusters: np.ndarray,
                      boot: ClusterBootstrap) -> pd.DataFrame:
    """Mean ± cluster-bootstrap 95% CI of each entry, for each score mode (plain, adaptive).

    Returns:
        entry, kind, combo_id, then per mode: <mode>_mean, <mode>_ci_low,
        <mode>_ci_high, <mode>_n (units); NaN where a mode is unavailable.
    """
    table = pd.DataFrame({"entry": [e.label for e in chosen],
                          "kind": [e.kind + (" (control group)" if e.role == "control member" else "") for e in chosen],
                          "combo_id": pd.array([e.combo_id for e in chosen], dtype="Int64")})
    for mode, scores in by_mode.items():
        if scores is None:
            for suffix in ("mean", "ci_low", "ci_high", "n"):
                table[f"{mode}_{suffix}"] = np.nan
            continue
        values = entry_matrix(scores, chosen, len(clusters))
        estimate = boot.means(values, clusters)
        low, high = estimate.interval()
        table[f"{mode}_mean"] = estimate.point
        table[f"{mode}_ci_low"] = low
        table[f"{mode}_ci_high"] = high
        table[f"{mode}_n"] = (~np.isnan(values)).sum(axis=0)
    return table


def comparator_comparisons(scores: Scores, groups: GroupSet, clusters: np.ndarray,
                           boot: ClusterBootstrap) -> pd.DataFrame | None:
    """The comparator against every single method and control (one Holm family); None if absent.

    Returns:
        :func:`metacam.analysis.paired.compare`'s table with ``metric``,
        ``score`` (the score's name) and ``opponent_kind`` in front.
    """
    mine = scores.column("metacam", groups.comparator, len(clusters))
    opponents = [e for e in entries(groups, scores, False, None) if e.kind in ("single", "control")]
    opponents = [e for e in opponents if e.opponent_kind == "single"] + [
        e for e in opponents if e.opponent_kind == "control"]
    if np.isnan(mine).all() or not opponents:
        return None
    theirs = entry_matrix(scores, opponents, len(clusters))
    table = compare(mine, theirs, [e.label for e in opponents], clusters, boot, scores.spec.sign)
    table.insert(0, "opponent_kind", [e.opponent_kind for e in opponents])
    table.insert(0, "score", scores.spec.short)
    table.insert(0, "metric", scores.spec.metric)
    return table


def headline(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Per metric: does the comparator beat every single CAM and every control?

    Returns:
        One row per metric: metric, score, n_units, singles, singles_beaten,
        beats_every_single (bool), closest_single (the single with the smallest
        favourable difference), closest_difference, closest_ci_low,
        closest_ci_high, closest_p_holm, controls, controls_beaten,
        beats_controls (bool, NaN without controls).
    """
    rows = []
    for metric, table in comparisons.groupby("metric", sort=False):
        singles = table[table["opponent_kind"] == "single"]
        controls = table[table["opponent_kind"] == "control"]
        sign = METRICS[str(metric)].sign
        closest = singles.loc[(sign * singles["mean_difference"]).idxmin()] if len(singles) else None
        rows.append({
            "metric": metric,
            "score": table["score"].iloc[0],
            "n_units": int(table["n_units"].max()),
            "singles": len(singles),
            "singles_beaten": int((singles["verdict"] == "better").sum()),
            "beats_every_single": bool(len(singles)) and bool((singles["verdict"] == "better").all()),
            "closest_single": None if closest is None else closest["opponent"],
            "closest_difference": np.nan if closest is None else closest["mean_difference"],
            "closest_ci_low": np.nan if closest is None else closest["ci_low"],
            "closest_ci_high": np.nan if closest is None else closest["ci_high"],
            "closest_p_holm": np.nan if closest is None else closest["p_holm"],
            "controls": len(controls),
            "controls_beaten": int((controls["verdict"] == "better").sum()),
            "beats_controls": (bool((controls["verdict"] == "better").all()) if len(controls) else np.nan),
        })
    return pd.DataFrame(rows)


def gain_split(adaptive: Scores, plain: Scores, best_single_plain: str, groups: GroupSet,
               clusters: np.ndarray, boot: ClusterBootstrap) -> pd.DataFrame | None:
    """MetaCAM's gain over the best single CAM, split into ensembling and thresholding.

    On the units that have all four scores (comparator and best single, plain
    and adaptive):

    * ensembling = comparator plain − best single plain;
    * thresholding = comparator adaptive − comparator plain;
    * total = comparator adaptive − best single plain (= ensembling + thresholding);
    * like for like = comparator adaptive − best single adaptive.

    Returns:
        component, contrast, mean, ci_low, ci_high, n_units; None if a score is missing.
    """
    n_units = len(clusters)
    values = {
        "mc_adaptive": adaptive.column("metacam", groups.comparator, n_units),
        "mc_plain": plain.column("metacam", groups.comparator, n_units),
        "single_adaptive": adaptive.column("single", best_single_plain, n_units),
        "single_plain": plain.column("single", best_single_plain, n_units),
    }
    common = np.logical_and.reduce([~np.isnan(v) for v in values.values()])
    if not common.any():
        return None
    name = groups.combo_name(groups.comparator)
    contrasts = [
        ("ensembling", f"MetaCAM {name} plain − {best_single_plain} plain", values["mc_plain"] - values["single_plain"]),
        ("thresholding", f"MetaCAM {name} adaptive − plain", values["mc_adaptive"] - values["mc_plain"]),
        ("total", f"MetaCAM {name} adaptive − {best_single_plain} plain",
         values["mc_adaptive"] - values["single_plain"]),
        ("like for like", f"MetaCAM {name} adaptive − {best_single_plain} adaptive",
         values["mc_adaptive"] - values["single_adaptive"]),
    ]
    matrix = np.column_stack([np.where(common, c, np.nan) for _, _, c in contrasts])
    estimate = boot.means(matrix, clusters)
    low, high = estimate.interval()
    return pd.DataFrame({"component": [c[0] for c in contrasts], "contrast": [c[1] for c in contrasts],
                         "mean": estimate.point, "ci_low": low, "ci_high": high,
                         "n_units": int(common.sum())})


def optimism_table(in_sample: dict[str, Scores], heldout: dict[str, Scores], groups: GroupSet,
                   clusters: np.ndarray, boot: ClusterBootstrap) -> pd.DataFrame:
    """In-sample minus held-out ROAD per entry: on the k* rows (the optimism of choosing k*
    on the same draw) and on the k = 100 rows that are not k* (no choice: the gap between
    the two draws' settings, e.g. their percentiles), and their difference per unit (the
    optimism due to the choice; units whose k* = 100 have no unchosen plain row).

    Args:
        in_sample, heldout: ``{"adaptive": Scores, "plain": Scores}`` of the same ROAD metric.

    Returns:
        One row per entry (every combination, single and control): kind, entry,
        combo_id, n_units, in_sample_mean, heldout_mean (k* rows), optimism,
        optimism_ci_low, optimism_ci_high, plain_gap, excess, excess_ci_low,
        excess_ci_high. MetaCAM rows first (comparator, then by combo_id).
    """
    n_units = len(clusters)
    everything = [Entry(groups.combo_name(c), "metacam", c,
                        "comparator" if c == groups.comparator else "")
                  for c in sorted(in_sample["adaptive"].metacam["combo_id"].unique().tolist())]
    everything.sort(key=lambda e: e.role != "comparator")
    everything += [e for e in entries(groups, in_sample["adaptive"], False, None) if e.kind != "metacam"]
    if not everything:
        return pd.DataFrame()
    inside = {mode: entry_matrix(in_sample[mode], everything, n_units) for mode in ("adaptive", "plain")}
    outside = {mode: entry_matrix(heldout[mode], everything, n_units) for mode in ("adaptive", "plain")}
    optimism = inside["adaptive"] - outside["adaptive"]
    chosen_plain = entry_matrix(in_sample["plain"], everything, n_units, "at_k_star") == 1
    gap = np.where(chosen_plain, np.nan, inside["plain"] - outside["plain"])
    excess = np.where(np.isnan(gap), np.nan, optimism - gap)
    both = boot.means(np.column_stack([optimism, excess]), clusters)
    low, high = both.interval()
    k = len(everything)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # entries without data give NaN, as intended
        plain_gap = np.nanmean(gap, axis=0) if len(gap) else np.full(k, np.nan)
        in_mean = np.nanmean(np.where(np.isnan(optimism), np.nan, inside["adaptive"]), axis=0)
        out_mean = np.nanmean(np.where(np.isnan(optimism), np.nan, outside["adaptive"]), axis=0)
    return pd.DataFrame({
        "kind": [e.kind for e in everything],
        "entry": [("MetaCAM comparator: " if e.role == "comparator" else "") + e.label for e in everything],
        "combo_id": pd.array([e.combo_id for e in everything], dtype="Int64"),
        "n_units": (~np.isnan(optimism)).sum(axis=0),
        "in_sample_mean": in_mean,
        "heldout_mean": out_mean,
        "optimism": both.point[:k],
        "optimism_ci_low": low[:k],
        "optimism_ci_high": high[:k],
        "plain_gap": plain_gap,
        "excess": both.point[k:],
        "excess_ci_low": low[k:],
        "excess_ci_high": high[k:],
    })
