"""Every table the analysis writes: the full-precision frame (``.csv``) and its display (``.md``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from metacam.analysis.design import METACAM
from metacam.analysis.paper import COMPONENTS
from metacam.analysis.settings import LEVEL
from metacam.analysis.tables import fmt, fmt_ci, fmt_p, fmt_share, write_table

if TYPE_CHECKING:
    from metacam.analysis.pipeline import AnalysisResult

Display = tuple[pd.DataFrame, pd.DataFrame, dict[str, Callable[[object], str]]]
CI = f"[{LEVEL:.0%} CI]"


def _cis(frame: pd.DataFrame, mean: str, low: str, high: str, digits: int = 4) -> list[str]:
    return [fmt_ci(m, a, b, digits) for m, a, b in zip(frame[mean], frame[low], frame[high], strict=True)]


def _count(value: object) -> str:
    return "" if not isinstance(value, (int, float, np.number)) or not np.isfinite(value) else f"{int(value):,}"


def _headline(h: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "metric": h["score"], "images": h["n_clusters"], "beats every single CAM": h["answer"],
        "single CAMs beaten": [f"{a} of {b}" for a, b in zip(h["singles_beaten"], h["singles"], strict=True)],
        "closest single": h["closest_single"].astype(object).fillna("n/a"),
        f"difference {CI}": _cis(h, "closest_difference", "closest_ci_low", "closest_ci_high"),
        "p": [fmt_p(p) for p in h["closest_p"]], "mde": [fmt(v, 4) for v in h["closest_mde"]],
        "n_needed": [_count(v) for v in h["closest_n_needed"]],
        "controls beaten (Holm)": [f"{a} of {b}" for a, b in zip(h["controls_beaten"], h["controls"], strict=True)],
    })


def _comparisons(c: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "metric": c["score"], "opponent": c["opponent"] + " (" + c["opponent_kind"] + ")",
        "images (units)": [f"{b} ({a})" for a, b in zip(c["n_units"], c["n_clusters"], strict=True)],
        "MetaCAM": c["mine_mean"], "opponent mean": c["theirs_mean"],
        f"difference {CI}": _cis(c, "mean_difference", "ci_low", "ci_high"),
        "images W/T/L": [f"{w}/{t}/{lo}" for w, t, lo in zip(c["wins"], c["ties"], c["losses"], strict=True)],
        "p (test)": [f"{fmt_p(p)} ({t})" for p, t in zip(c["p"], c["test"], strict=True)],
        "adjusted p": [fmt_p(p) for p in c["p_adjusted"]], "rank-biserial r": c["rank_biserial"],
        "mde": [fmt(v, 4) for v in c["mde"]], "n_needed": [_count(v) for v in c["n_needed"]],
        "verdict": c["verdict"],
    })


def _paper(p: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "metric": p["score"], "single CAM": p["single"], "images": p["n_clusters"],
        f"paper's gap {CI}": _cis(p, "paper_gap", "paper_ci_low", "paper_ci_high"),
        **{f"{c} {CI}": _cis(p, c, f"{c}_ci_low", f"{c}_ci_high") for c in COMPONENTS},
        "carried by": p["carried_by"],
    })


def _selection(s: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "metric": s["score"], "rule": s["fold_rule"] + ", seed " + s["fold_seed"].astype(str),
        "images": s["n_clusters"], "chosen combination": s["combos_chosen"], "chosen single": s["singles_chosen"],
        f"combination − single {CI}": _cis(s, "mean_difference", "ci_low", "ci_high"),
        "p (test)": [f"{fmt_p(p)} ({t})" for p, t in zip(s["p"], s["test"], strict=True)], "verdict": s["verdict"],
    })


def _cre(t: pd.DataFrame, sign: int) -> pd.DataFrame:
    return pd.DataFrame({
        "group": t["group"] + np.where(t["control"], " (control)", ""), "members": t["members"],
        f"CRE {CI} (ranking summary)": _cis(t, "cre", "ci_low", "ci_high"), "rank": t["rank"],
        f"β (on − off) {CI}": _cis(t, "beta", "beta_ci_low", "beta_ci_high"),
        f"OLS main effect {CI}": _cis(t, "ols_main_effect", "ols_ci_low", "ols_ci_high"),
        "Holm p": [fmt_p(v) for v in t["ols_p_holm"]], "effect": t["effect"],
        "per-unit CRE median [IQR]": [f"{m:.3f} [{a:.3f}, {b:.3f}]" for m, a, b in
                                      zip(t["unit_cre_median"], t["unit_cre_q25"], t["unit_cre_q75"], strict=True)],
        ("units CRE > 0" if sign > 0 else "units CRE < 0"): [fmt_share(v) for v in t["unit_share_favourable"]],
    })


def displays(result: AnalysisResult) -> dict[str, Display]:
    """stem -> (csv frame, markdown frame, formats) for every table the data allowed."""
    spec = result.spec
    out: dict[str, Display] = {}
    if result.headline is not None:
        out["headline"] = (result.headline, _headline(result.headline), {})
    if result.comparisons is not None:
        out["comparisons"] = (result.comparisons, _comparisons(result.comparisons),
                              {"rank-biserial r": lambda v: fmt(v, 3)})
    if result.paper_comparison is not None:
        out["paper_comparison"] = (result.paper_comparison, _paper(result.paper_comparison), {})
    if result.selection is not None and result.selection_folds is not None:
        out["selection"] = (result.selection, _selection(result.selection), {})
        out["selection_folds"] = (result.selection_folds, result.selection_folds, {})
    if result.gains is not None:
        g = result.gains
        out["gain_split"] = (g, pd.DataFrame({
            "metric": [result.dataset.metric(m).label for m in g["metric"]], "component": g["component"],
            "contrast": g["contrast"], "best single": g["best_single"],
            f"mean {CI}": _cis(g, "mean_difference", "ci_low", "ci_high"), "images": g["n_clusters"],
        }), {})
    if result.optimism is not None and len(result.optimism):
        o = result.optimism
        shown = o[(o["kind"] != METACAM) | o["entry"].str.startswith("MetaCAM comparator")
                  | (o["combo_id"] == (result.best if result.best is not None else -1)).fillna(False)]
        out["optimism"] = (o, pd.DataFrame({
            "entry": [f"{e} ({k})" for e, k in zip(shown["entry"], shown["kind"], strict=True)],
            "in-sample at k*": shown["in_sample_mean"], "held-out at k*": shown["heldout_mean"],
            f"optimism {CI}": _cis(shown, "optimism", "optimism_ci_low", "optimism_ci_high"),
            "gap at k = 100": shown["plain_gap"],
            f"excess {CI}": _cis(shown, "excess", "excess_ci_low", "excess_ci_high"),
            "units": shown["n_units"],
        }), {})
    if result.paper is not None:
        p = result.paper
        n = p[["plain_n", "adaptive_n"]].max(axis=1)
        out["metacam_vs_single"] = (p, pd.DataFrame({
            "method": p["entry"], "kind": p["kind"],
            f"plain (k = 100) {CI}": _cis(p, "plain_mean", "plain_ci_low", "plain_ci_high", 3),
            f"adaptive (k*) {CI}": _cis(p, "adaptive_mean", "adaptive_ci_low", "adaptive_ci_high", 3),
            "units": [fmt(int(v)) if np.isfinite(v) else "n/a" for v in n],
        }), {})
    if result.cre_table is not None:
        out["cre"] = (result.cre_table, _cre(result.cre_table, spec.sign), {})
    if result.identity is not None and result.fit_main is not None:
        identity = result.identity.reset_index()
        out["cre_identity"] = (identity, identity, {"difference": lambda v: fmt(v, 8)})
    if result.fit is not None:
        e = result.fit.effects
        out["effects"] = (e, pd.DataFrame({
            "term": e["label"], "kind": e["kind"], "estimate": e["estimate"], "std. error": e["std_err"],
            "df": e["df"], f"{LEVEL:.0%} CI": [f"[{a:+.4f}, {b:+.4f}]" for a, b in
                                            zip(e["ci_low"], e["ci_high"], strict=True)],
            "p": [fmt_p(v) for v in e["p_value"]], "Holm p": [fmt_p(v) for v in e["p_holm"]],
        }), {"df": lambda v: fmt(v, 1)})
    if result.experiments is not None:
        x = result.experiments
        out["experiments"] = (x, pd.DataFrame({
            "rank": x["rank"], "combo_id": x["combo_id"], "method": x["method"], "groups on": x["groups_on"],
            f"mean {CI}": _cis(x, "mean", "ci_low", "ci_high"),
            "rank interval": [f"{a:.0f}–{b:.0f}" if np.isfinite(a) else "n/a"
                              for a, b in zip(x["rank_low"], x["rank_high"], strict=True)],
            "units": x["n_units"], "residual": x["residual"],
        }), {})
    if result.units_by_model is not None:
        u = result.units_by_model
        out["units_by_model"] = (u, u.assign(share=[fmt_share(v) for v in u["share"]]), {})
    for dimension in ("model", "target_rank"):
        cre_by = result.study.get(f"cre_by_{dimension}")
        if cre_by is not None and len(cre_by):
            wide = cre_by.assign(cell=_cis(cre_by, "cre", "ci_low", "ci_high"))
            display = wide.pivot(index=[dimension, "n_units", "n_clusters"], columns="group", values="cell")
            display = display[list(result.dataset.groups.names)].reset_index()
            out[f"cre_by_{dimension}"] = (cre_by, display, {})
        effects_by = result.study.get(f"effects_by_{dimension}")
        if effects_by is not None and len(effects_by):
            out[f"effects_by_{dimension}"] = (effects_by, pd.DataFrame({
                dimension: effects_by[dimension], "units": effects_by["n_units"],
                "images": effects_by["n_clusters"], "inference": effects_by["inference"],
                "term": effects_by["label"],
                f"estimate {CI}": _cis(effects_by, "estimate", "ci_low", "ci_high"),
                "p": [fmt_p(v) for v in effects_by["p_value"]], "Holm p": [fmt_p(v) for v in effects_by["p_holm"]],
            }), {})
    return out


def write_tables(result: AnalysisResult) -> None:
    """Every table as CSV + Markdown, the CRE curves and per-unit CRE, and the failed rows."""
    out, files = result.out_dir, result.files
    for stem, (frame, display, formats) in displays(result).items():
        files[f"{stem}.csv"], files[f"{stem}.md"] = write_table(frame, out, stem, display=display, formats=formats)
    if result.curves is not None:
        files["cre_curves.csv"] = out / "cre_curves.csv"
        result.curves.to_csv(files["cre_curves.csv"], index=False)
    if result.per_unit is not None:
        files["cre_per_unit.csv"] = out / "cre_per_unit.csv"
        result.dataset.units.join(result.per_unit, how="inner").to_csv(files["cre_per_unit.csv"])
    if len(result.dataset.failed):
        files["failed_rows.csv"] = out / "failed_rows.csv"
        result.dataset.failed.to_csv(files["failed_rows.csv"], index=False)
