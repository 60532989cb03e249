"""The evidence for the paper's question: does MetaCAM beat every single CAM, and the controls?

Every comparison here is paired by image (:mod:`metacam.analysis.paired`); the means
of single entries take their CIs from the shared cluster bootstrap (over images). The
entries:

* the pre-specified comparator: MetaCAM with every non-control group
  (``GroupSet.comparator``), fixed before looking at the data;
* the "best" combination: the one with the best *in-sample* mean, i.e. chosen on the
  draw that also chose k*; reported beside the comparator, never used for an answer
  (:mod:`metacam.analysis.selection` chooses out of sample);
* each single CAM method and each null control.

The decision rule. "MetaCAM beats every single CAM" on a metric is an
intersection–union test (Berger 1982): it holds when *each* comparison with a single
CAM is ``better`` at α (its 95% CI excludes 0 on the favourable side and its own
Wilcoxon p < α), with no adjustment across the singles: the claim needs every one of
them, so the test is valid at α as it stands, and a correction would only make it
more conservative. Its p-value is the largest of the singles' p. The null controls
are a separate question and a separate family: Holm within the controls.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from metacam.analysis.bootstrap import ClusterBootstrap
from metacam.analysis.design import CONTROL, METACAM, SINGLE
from metacam.analysis.multiple import holm
from metacam.analysis.paired import compare, image_means, summarise, verdict
from metacam.analysis.power import minimum_images
from metacam.analysis.scores import Scores
from metacam.analysis.selection import assign_folds, choose_by_fold, chosen_per_unit, stability
from metacam.analysis.settings import ALPHA, DEFAULT_FOLD_SEED, DEFAULT_FOLDS
from metacam.groups import GroupSet

FAMILIES = {SINGLE: "intersection–union: none", CONTROL: "Holm within the controls"}
"""How each family's p-values are adjusted before the verdict."""
ANSWERS = ("yes", "no", "not shown", "unattainable")
"""The headline answer: every single beaten; a single significantly better; neither; or the test
cannot reach p < α with this many images (then ``images_for_rule`` says how many it needs)."""


@dataclass(frozen=True)
class Entry:
    """A row of the evidence tables: kind ``metacam``/``single``/``control`` and its key."""

    label: str
    kind: str
    key: int | str
    role: str = ""  # "comparator", "best", "control member" (a single method of a control group), or ""

    @property
    def combo_id(self) -> int | None:
        return int(self.key) if self.kind == METACAM else None

    @property
    def opponent_kind(self) -> str:
        """``single`` for a real CAM method; ``control`` for a null control or a member of a control group."""
        return CONTROL if self.kind == CONTROL or self.role == "control member" else self.kind


def best_combo(scores: Scores, sign: int) -> int | None:
    """combo_id with the best mean score (ties: the lowest combo_id); None without MetaCAM rows."""
    if scores.metacam.empty:
        return None
    means = scores.metacam.groupby("combo_id")["score"].mean()
    return int((sign * means).sort_index().idxmax())


def control_members(groups: GroupSet) -> set[str]:
    """Members of the groups marked as controls (e.g. RandomCAM): compared as controls, not as CAMs."""
    return {m for members, control in zip(groups.members, groups.controls, strict=True) if control for m in members}


def entries(groups: GroupSet, ranking: Scores, comparator_present: bool, best: int | None) -> list[Entry]:
    """Comparator, in-sample best (if different), singles best first by ``ranking``, then controls
    (members of control groups last among the singles, marked ``control member``)."""
    found: list[Entry] = []
    if comparator_present:
        found.append(Entry(f"MetaCAM comparator: {groups.combo_name(groups.comparator)}", METACAM,
                           groups.comparator, "comparator"))
    if best is not None and (best != groups.comparator or not comparator_present):
        found.append(Entry(f"MetaCAM best in-sample: {groups.combo_name(best)}", METACAM, best, "best"))
    sign, controls = ranking.spec.sign, control_members(groups)
    for kind, frame in ((SINGLE, ranking.singles), (CONTROL, ranking.controls)):
        means = frame.groupby("method")["score"].mean()
        ordered = [str(m) for m in (-sign * means).sort_values(kind="stable").index]
        ordered = [m for m in ordered if m not in controls] + [m for m in ordered if m in controls]
        found += [Entry(m, kind, m, "control member" if kind == SINGLE and m in controls else "") for m in ordered]
    return found


def entry_matrix(scores: Scores, chosen: list[Entry], n_units: int, field: str = "score") -> np.ndarray:
    """``(n_units, len(chosen))`` scores (or another field) of each entry, NaN where absent."""
    matrix = np.full((n_units, len(chosen)), np.nan)
    for kind in (METACAM, SINGLE, CONTROL):
        positions = [i for i, entry in enumerate(chosen) if entry.kind == kind]
        if positions:
            matrix[:, positions] = scores.matrix(kind, [chosen[i].key for i in positions], n_units, field)
    return matrix


def metacam_vs_single(chosen: list[Entry], by_mode: dict[str, Scores | None], clusters: np.ndarray,
                      boot: ClusterBootstrap) -> pd.DataFrame:
    """Mean ± cluster-bootstrap 95% CI of each entry, for each score mode (plain, adaptive).

    Returns:
        entry, kind, combo_id, then per mode: <mode>_mean, <mode>_ci_low,
        <mode>_ci_high, <mode>_n (units), <mode>_n_clusters (images); NaN where a mode is unavailable.
    """
    table = pd.DataFrame({"entry": [e.label for e in chosen],
                          "kind": [e.kind + (" (control group)" if e.role == "control member" else "") for e in chosen],
                          "combo_id": pd.array([e.combo_id for e in chosen], dtype="Int64")})
    for mode, scores in by_mode.items():
        if scores is None:
            for suffix in ("mean", "ci_low", "ci_high", "n", "n_clusters"):
                table[f"{mode}_{suffix}"] = np.nan
            continue
        values = entry_matrix(scores, chosen, len(clusters))
        estimate = boot.means(values, clusters)
        low, high = estimate.interval()
        table[f"{mode}_mean"] = estimate.point
        table[f"{mode}_ci_low"] = low
        table[f"{mode}_ci_high"] = high
        table[f"{mode}_n"] = (~np.isnan(values)).sum(axis=0)
        table[f"{mode}_n_clusters"] = estimate.n_clusters
    return table


def real_singles(groups: GroupSet, scores: Scores) -> list[str]:
    """The single CAM methods the headline compares with (members of control groups excluded)."""
    controls = control_members(groups)
    return [m for m in sorted(scores.singles["method"].unique()) if m not in controls]


def comparator_comparisons(scores: Scores, groups: GroupSet, clusters: np.ndarray, n_clusters: int
                           ) -> pd.DataFrame | None:
    """The comparator against every single method and control, paired by image; None if absent.

    Returns:
        :func:`metacam.analysis.paired.compare`'s table with ``metric``, ``score`` (the score's
        name) and ``opponent_kind`` in front, and ``family``, ``p_adjusted`` (singles: the raw p,
        the intersection–union test needs no adjustment; controls: Holm within the controls) and
        ``verdict`` at the end.
    """
    mine = scores.column(METACAM, groups.comparator, len(clusters))
    opponents = [e for e in entries(groups, scores, False, None) if e.kind in (SINGLE, CONTROL)]
    opponents = [e for e in opponents if e.opponent_kind == SINGLE] + [
        e for e in opponents if e.opponent_kind == CONTROL]
    if np.isnan(mine).all() or not opponents:
        return None
    theirs = entry_matrix(scores, opponents, len(clusters))
    sign = scores.spec.sign
    table = compare(mine, theirs, [e.label for e in opponents], clusters, n_clusters, sign)
    kinds = np.array([e.opponent_kind for e in opponents])
    table.insert(0, "opponent_kind", kinds)
    table.insert(0, "score", scores.spec.short)
    table.insert(0, "metric", scores.spec.metric)
    table["family"] = [FAMILIES[k] for k in kinds]
    adjusted = table["p"].to_numpy(dtype=np.float64).copy()
    is_control = kinds == CONTROL
    adjusted[is_control] = holm(adjusted[is_control])
    table["p_adjusted"] = adjusted
    table["verdict"] = [verdict(sign, a, b, p) for a, b, p in
                        zip(table["ci_low"], table["ci_high"], table["p_adjusted"], strict=True)]
    return table


def headline(comparisons: pd.DataFrame, signs: dict[str, int], alpha: float = ALPHA) -> pd.DataFrame:
    """Per metric: the intersection–union answer to "does the comparator beat every single CAM?",
    the closest single CAM with its power, and the controls.

    Returns:
        One row per metric: metric, score, n_clusters (images), singles, singles_beaten,
        singles_worse, answer (:data:`ANSWERS`), beats_every_single (bool), p_iut (the largest
        single's p), p_floor (the largest smallest-attainable p), images_for_rule (the fewest
        images with which p < α is attainable), closest_single (the smallest favourable
        difference) with closest_difference, closest_ci_low, closest_ci_high, closest_p,
        closest_sd, closest_mde, closest_n_needed; controls, controls_beaten, beats_controls.
    """
    rows = []
    for metric, table in comparisons.groupby("metric", sort=False):
        sign = signs[str(metric)]
        singles = table[table["opponent_kind"] == SINGLE]
        controls = table[table["opponent_kind"] == CONTROL]
        beaten = int((singles["verdict"] == "better").sum())
        worse = int((singles["verdict"] == "worse").sum())
        # The largest smallest-attainable p; a single equal to the comparator on every image has none
        # (no images would separate them: that is "not shown", not a matter of sample size).
        floors = singles["p_floor"].dropna()
        floor = float(floors.max()) if len(floors) else np.nan
        if not len(singles):
            answer = ANSWERS[2]
        elif beaten == len(singles):
            answer = ANSWERS[0]
        elif worse:
            answer = ANSWERS[1]
        elif floor >= alpha:
            answer = ANSWERS[3]
        else:
            answer = ANSWERS[2]
        closest = singles.loc[(sign * singles["mean_difference"]).idxmin()] if len(singles) else None

        def pick(column: str, row: pd.Series | None = closest) -> object:
            return np.nan if row is None else row[column]

        rows.append({
            "metric": metric, "score": table["score"].iloc[0], "n_clusters": int(table["n_clusters"].max()),
            "singles": len(singles), "singles_beaten": beaten, "singles_worse": worse, "answer": answer,
            "beats_every_single": answer == ANSWERS[0],
            "p_iut": float(singles["p"].max()) if len(singles) and singles["p"].notna().all() else np.nan,
            "p_floor": floor, "images_for_rule": minimum_images(alpha),
            "closest_single": pick("opponent"), "closest_difference": pick("mean_difference"),
            "closest_ci_low": pick("ci_low"), "closest_ci_high": pick("ci_high"), "closest_p": pick("p"),
            "closest_sd": pick("sd"), "closest_mde": pick("mde"), "closest_n_needed": pick("n_needed"),
            "controls": len(controls), "controls_beaten": int((controls["verdict"] == "better").sum()),
            "beats_controls": (bool((controls["verdict"] == "better").all()) if len(controls) else np.nan),
        })
    return pd.DataFrame(rows)


def gain_split(adaptive: Scores, plain: Scores, groups: GroupSet, clusters: np.ndarray, n_clusters: int,
               singles: list[str], folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_FOLD_SEED
               ) -> pd.DataFrame | None:
    """MetaCAM's gain over the best single CAM, split into ensembling and thresholding.

    The best single is chosen *out of sample*: with the cross-validation folds of
    :mod:`metacam.analysis.selection`, each image is compared with the single CAM whose plain
    score is best on the other folds' images (so the choice never sees the image it is scored
    on, for every metric alike). On the units that have all four scores:

    * ensembling = comparator plain − chosen single plain;
    * thresholding = comparator adaptive − comparator plain;
    * total = comparator adaptive − chosen single plain (= ensembling + thresholding);
    * like for like = comparator adaptive − chosen single adaptive.

    Returns:
        component, contrast, best_single (how often each single was chosen), then
        :func:`metacam.analysis.paired.summarise`'s columns per contrast; None if a score is missing.
    """
    if not singles:
        return None
    n_units = len(clusters)
    sign = plain.spec.sign
    plain_singles = plain.matrix(SINGLE, singles, n_units)
    fold = assign_folds(n_clusters, folds, seed)
    picks = choose_by_fold(image_means(plain_singles, clusters, n_clusters), fold, sign)
    values = {
        "mc_adaptive": adaptive.column(METACAM, groups.comparator, n_units),
        "mc_plain": plain.column(METACAM, groups.comparator, n_units),
        "single_adaptive": chosen_per_unit(adaptive.matrix(SINGLE, singles, n_units), picks, fold, clusters),
        "single_plain": chosen_per_unit(plain_singles, picks, fold, clusters),
    }
    common = np.logical_and.reduce([~np.isnan(v) for v in values.values()])
    if not common.any():
        return None
    name = groups.combo_name(groups.comparator)
    contrasts = [
        ("ensembling", f"MetaCAM {name} plain − best single plain", values["mc_plain"] - values["single_plain"]),
        ("thresholding", f"MetaCAM {name} adaptive − plain", values["mc_adaptive"] - values["mc_plain"]),
        ("total", f"MetaCAM {name} adaptive − best single plain", values["mc_adaptive"] - values["single_plain"]),
        ("like for like", f"MetaCAM {name} adaptive − best single adaptive",
         values["mc_adaptive"] - values["single_adaptive"]),
    ]
    matrix = np.column_stack([np.where(common, c, np.nan) for _, _, c in contrasts])
    table = summarise(image_means(matrix, clusters, n_clusters), sign, power=None)
    table.insert(0, "n_units", int(common.sum()))
    table.insert(0, "best_single", f"chosen out of sample ({stability(picks, singles)})")
    table.insert(0, "contrast", [c[1] for c in contrasts])
    table.insert(0, "component", [c[0] for c in contrasts])
    return table.drop(columns=["mde", "n_needed"])


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
        combo_id, n_units, n_clusters (images), in_sample_mean, heldout_mean (k* rows), optimism,
        optimism_ci_low, optimism_ci_high, plain_gap, excess, excess_ci_low,
        excess_ci_high. MetaCAM rows first (comparator, then by combo_id).
    """
    n_units = len(clusters)
    everything = [Entry(groups.combo_name(c), METACAM, c,
                        "comparator" if c == groups.comparator else "")
                  for c in sorted(in_sample["adaptive"].metacam["combo_id"].unique().tolist())]
    everything.sort(key=lambda e: e.role != "comparator")
    everything += [e for e in entries(groups, in_sample["adaptive"], False, None) if e.kind != METACAM]
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
        "n_clusters": both.n_clusters[:k],
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
