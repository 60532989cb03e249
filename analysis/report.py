"""Write the analysis: CSV + Markdown tables, PNG figures and report.md (the held-out
answer first), and the short summary printed on stdout.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from metacam.analysis import plots
from metacam.analysis.metrics import METRICS
from metacam.analysis.outputs import OUTPUTS
from metacam.analysis.settings import ALPHA, LEVEL, MIN_CLUSTERS
from metacam.analysis.tables import fmt, fmt_ci, fmt_p, fmt_share, id_ranges, write_table

if TYPE_CHECKING:
    from metacam.analysis.pipeline import AnalysisResult

INFERENCE_TEXT = {
    "CR1": "CR1 cluster-robust standard errors by model × image, t(C−1)",
    "CR2": f"CR2 (Bell-McCaffrey) cluster-robust standard errors by model × image, t(C−1) — fewer than "
           f"{MIN_CLUSTERS} clusters",
    "iid": "iid standard errors (one cluster: no clustering possible)",
}


def _link(result: AnalysisResult, key: str) -> str:
    path = result.files.get(key)
    return f"[{path.name}]({path.name})" if path is not None else "(not written)"


def _comparator_name(result: AnalysisResult) -> str:
    groups = result.dataset.groups
    return groups.combo_name(groups.comparator)


# ------------------------------------------------------------------ the answer


def answer_lines(result: AnalysisResult) -> list[str]:
    """The held-out answer to the paper's question, one paragraph per metric."""
    if result.headline is None or result.comparisons is None:
        return ["No answer: " + ("the pre-specified comparator is not in the dataset."
                                 if not result.comparator_present else
                                 "there are no single CAM methods or controls to compare with.")]
    source = "in-sample (--in-sample: optimistic)" if not result.spec.heldout else "held-out"
    lines = [f"MetaCAM = the pre-specified comparator `{_comparator_name(result)}` (every non-control group, "
             f"fixed before looking at the data), {result.spec.mode} scores, {source} ROAD. A method is *beaten* "
             f"when the 95% cluster-bootstrap CI of the mean paired difference excludes 0 on the favourable side "
             f"and the Holm-corrected Wilcoxon p < {ALPHA}."]
    for row in result.headline.itertuples(index=False):
        metric = METRICS[str(row.metric)]
        rows = result.comparisons[result.comparisons["metric"] == row.metric]
        mine = float(rows.loc[rows["n_units"].idxmax(), "mine_mean"])
        if row.singles:
            singles = rows[rows["opponent_kind"] == "single"]
            worse = int((singles["verdict"] == "worse").sum())
            verdict = ("**Yes**" if row.beats_every_single else
                       f"**No** ({worse} single CAM(s) significantly better)" if worse else
                       "**Not shown** (no single CAM is significantly better, but not all are beaten)")
            text = (f"- **{row.score}** ({'higher' if metric.sign > 0 else 'lower'} is better; MetaCAM mean "
                    f"{mine:.4f} over {row.n_units} units): {verdict} — it beats {row.singles_beaten} of "
                    f"{row.singles} single CAMs. Closest: {row.closest_single}, difference MetaCAM − it = "
                    f"{fmt_ci(row.closest_difference, row.closest_ci_low, row.closest_ci_high, 4)}, "
                    f"Holm p = {fmt_p(row.closest_p_holm)}.")
        else:
            text = f"- **{row.score}**: no single CAM methods to compare with."
        if row.controls:
            controls = rows[rows["opponent_kind"] == "control"]
            listed = "; ".join(f"{c.opponent} {fmt_ci(c.mean_difference, c.ci_low, c.ci_high, 4)} ({c.verdict})"
                               for c in controls.itertuples())
            text += (f" Against the {row.controls} null control(s): "
                     f"{'beats all' if row.beats_controls else f'beats {row.controls_beaten}'} — {listed}.")
        else:
            text += " No null controls in the dataset."
        lines.append(text)
    mode = result.spec.mode if result.spec.mode in ("plain", "adaptive") else "adaptive"
    if result.best is not None and result.paper is not None:
        best = result.paper[result.paper["entry"].str.startswith("MetaCAM best in-sample")]
        if len(best):
            b = best.iloc[0]
            lines.append(f"The best combination *chosen in-sample* is `{result.dataset.groups.combo_name(result.best)}` "
                         f"(combo {result.best}); on {result.spec.source or 'these'} {mode} scores it has "
                         f"{fmt_ci(b[f'{mode}_mean'], b[f'{mode}_ci_low'], b[f'{mode}_ci_high'], 4)} "
                         "— it was selected on the same draw that chose k*, so it is not used for the answer.")
        elif result.comparator_present:
            lines.append("The in-sample best combination is the comparator itself.")
    return lines


# ------------------------------------------------------------------ tables


def _displays(result: AnalysisResult) -> dict[str, tuple[pd.DataFrame, pd.DataFrame, dict]]:
    """stem -> (csv frame, markdown frame, formats) for every table the data allowed."""
    spec = result.spec
    out: dict[str, tuple[pd.DataFrame, pd.DataFrame, dict]] = {}
    if result.headline is not None:
        h = result.headline
        out["headline"] = (h, pd.DataFrame({
            "metric": h["score"],
            "single CAMs beaten": [f"{a} of {b}" for a, b in zip(h["singles_beaten"], h["singles"], strict=True)],
            "closest single": h["closest_single"].fillna("n/a"),
            f"difference [{LEVEL:.0%} CI]": [fmt_ci(m, a, b, 4) for m, a, b in
                                            zip(h["closest_difference"], h["closest_ci_low"], h["closest_ci_high"],
                                                strict=True)],
            "Holm p": [fmt_p(p) for p in h["closest_p_holm"]],
            "controls beaten": [f"{a} of {b}" for a, b in zip(h["controls_beaten"], h["controls"], strict=True)],
            "beats every single CAM": ["yes" if v else "no" for v in h["beats_every_single"]],
        }), {})
    if result.comparisons is not None:
        c = result.comparisons
        out["comparisons"] = (c, pd.DataFrame({
            "metric": c["score"], "opponent": c["opponent"] + " (" + c["opponent_kind"] + ")",
            "units (clusters)": [f"{a} ({b})" for a, b in zip(c["n_units"], c["n_clusters"], strict=True)],
            "MetaCAM": c["mine_mean"], "opponent mean": c["theirs_mean"],
            f"difference [{LEVEL:.0%} CI]": [fmt_ci(m, a, b, 4) for m, a, b in
                                            zip(c["mean_difference"], c["ci_low"], c["ci_high"], strict=True)],
            "win rate (W/T/L)": [f"{fmt_share(r)} ({w}/{t}/{lo})" for r, w, t, lo in
                                 zip(c["win_rate"], c["wins"], c["ties"], c["losses"], strict=True)],
            "Wilcoxon p": [fmt_p(p) for p in c["wilcoxon_p"]], "Holm p": [fmt_p(p) for p in c["p_holm"]],
            "rank-biserial r": c["rank_biserial"], "verdict": c["verdict"],
        }), {"rank-biserial r": lambda v: fmt(v, 3)})
    if result.gains is not None:
        g = result.gains
        out["gain_split"] = (g, pd.DataFrame({
            "metric": [METRICS[m].name for m in g["metric"]], "component": g["component"], "contrast": g["contrast"],
            f"mean [{LEVEL:.0%} CI]": [fmt_ci(m, a, b, 4) for m, a, b in
                                      zip(g["mean"], g["ci_low"], g["ci_high"], strict=True)],
            "units": g["n_units"],
        }), {})
    if result.optimism is not None and len(result.optimism):
        o = result.optimism
        shown = o[(o["kind"] != "metacam") | o["entry"].str.startswith("MetaCAM comparator")
                  | (o["combo_id"] == (result.best if result.best is not None else -1)).fillna(False)]
        out["optimism"] = (o, pd.DataFrame({
            "entry": [f"{e} ({k})" for e, k in zip(shown["entry"], shown["kind"], strict=True)],
            "in-sample at k*": shown["in_sample_mean"], "held-out at k*": shown["heldout_mean"],
            f"optimism [{LEVEL:.0%} CI]": [fmt_ci(m, a, b, 4) for m, a, b in
                                          zip(shown["optimism"], shown["optimism_ci_low"],
                                              shown["optimism_ci_high"], strict=True)],
            "gap at k = 100": shown["plain_gap"],
            f"excess [{LEVEL:.0%} CI]": [fmt_ci(m, a, b, 4) for m, a, b in
                                        zip(shown["excess"], shown["excess_ci_low"], shown["excess_ci_high"],
                                            strict=True)],
            "units": shown["n_units"],
        }), {})
    if result.paper is not None:
        p = result.paper
        n = p[["plain_n", "adaptive_n"]].max(axis=1)
        out["metacam_vs_single"] = (p, pd.DataFrame({
            "method": p["entry"], "kind": p["kind"],
            f"plain (k = 100) [{LEVEL:.0%} CI]": [fmt_ci(m, a, b) for m, a, b in
                                                 zip(p["plain_mean"], p["plain_ci_low"], p["plain_ci_high"],
                                                     strict=True)],
            f"adaptive (k*) [{LEVEL:.0%} CI]": [fmt_ci(m, a, b) for m, a, b in
                                               zip(p["adaptive_mean"], p["adaptive_ci_low"], p["adaptive_ci_high"],
                                                   strict=True)],
            "units": [fmt(int(v)) if np.isfinite(v) else "n/a" for v in n],
        }), {})
    if result.cre_table is not None:
        t = result.cre_table
        out["cre"] = (t, pd.DataFrame({
            "group": t["group"] + np.where(t["control"], " (control)", ""), "members": t["members"],
            f"CRE [{LEVEL:.0%} CI]": [fmt_ci(m, a, b, 4) for m, a, b in zip(t["cre"], t["ci_low"], t["ci_high"],
                                                                           strict=True)],
            "rank": t["rank"], "β (on − off)": t["beta"], "OLS main effect": t["ols_main_effect"],
            "per-unit CRE median [IQR]": [f"{m:.3f} [{a:.3f}, {b:.3f}]" for m, a, b in
                                          zip(t["unit_cre_median"], t["unit_cre_q25"], t["unit_cre_q75"],
                                              strict=True)],
            ("units CRE > 0" if spec.sign > 0 else "units CRE < 0"): [fmt_share(v) for v in t["unit_share_helps"]],
        }), {})
    if result.identity is not None and result.fit_main is not None:
        identity = result.identity.reset_index()
        out["cre_identity"] = (identity, identity, {"difference": lambda v: fmt(v, 8)})
    if result.fit is not None:
        e = result.fit.effects
        out["effects"] = (e, pd.DataFrame({
            "term": e["label"], "kind": e["kind"], "estimate": e["estimate"], "std. error": e["std_err"],
            f"{LEVEL:.0%} CI": [f"[{a:+.4f}, {b:+.4f}]" for a, b in zip(e["ci_low"], e["ci_high"], strict=True)],
            "p": [fmt_p(v) for v in e["p_value"]], "Holm p": [fmt_p(v) for v in e["p_holm"]],
        }), {})
    if result.experiments is not None:
        x = result.experiments
        out["experiments"] = (x, pd.DataFrame({
            "rank": x["rank"], "combo_id": x["combo_id"], "method": x["method"], "groups on": x["groups_on"],
            f"mean [{LEVEL:.0%} CI]": [fmt_ci(m, a, b, 4) for m, a, b in zip(x["mean"], x["ci_low"], x["ci_high"],
                                                                            strict=True)],
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
            wide = cre_by.assign(cell=[fmt_ci(m, a, b, 4) for m, a, b in
                                       zip(cre_by["cre"], cre_by["ci_low"], cre_by["ci_high"], strict=True)])
            display = wide.pivot(index=[dimension, "n_units", "n_clusters"], columns="group", values="cell")
            display = display[list(result.dataset.groups.names)].reset_index()
            out[f"cre_by_{dimension}"] = (cre_by, display, {})
        effects_by = result.study.get(f"effects_by_{dimension}")
        if effects_by is not None and len(effects_by):
            out[f"effects_by_{dimension}"] = (effects_by, pd.DataFrame({
                dimension: effects_by[dimension], "units": effects_by["n_units"],
                "clusters": effects_by["n_clusters"], "inference": effects_by["inference"],
                "term": effects_by["label"],
                f"estimate [{LEVEL:.0%} CI]": [fmt_ci(m, a, b, 4) for m, a, b in
                                              zip(effects_by["estimate"], effects_by["ci_low"],
                                                  effects_by["ci_high"], strict=True)],
                "p": [fmt_p(v) for v in effects_by["p_value"]], "Holm p": [fmt_p(v) for v in effects_by["p_holm"]],
            }), {})
    return out


def _write_tables(result: AnalysisResult) -> None:
    out, files = result.out_dir, result.files
    for stem, (frame, display, formats) in _displays(result).items():
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


def _write_figures(result: AnalysisResult) -> None:
    out, files, spec = result.out_dir, result.files, result.spec
    n_units = len(result.dataset.units)
    ci = result.estimates.cre.interval() if result.estimates is not None else None
    if result.curves is not None and result.cre is not None:
        figure = plots.plot_cre(result.curves, result.cre, spec, n_units=n_units, missing=len(result.missing), ci=ci)
        files["cre_plot.png"] = plots.save(figure, out / "cre_plot.png")
    if result.per_unit is not None and result.cre is not None:
        figure = plots.plot_unit_cre(result.per_unit, result.cre, spec, ci=ci)
        files["cre_per_unit.png"] = plots.save(figure, out / "cre_per_unit.png")
    if result.fit is not None:
        figure = plots.plot_effects(result.fit, spec, result.dataset.groups.names)
        files["effects.png"] = plots.save(figure, out / "effects.png")
    if result.panels:
        figure = plots.plot_cre_by(result.panels, result.dataset.groups.names, spec)
        files["cre_by_model.png"] = plots.save(figure, out / "cre_by_model.png")


# ------------------------------------------------------------------ report.md


def relation_lines(result: AnalysisResult) -> list[str]:
    """How CRE and the OLS main effects relate on this data, with the numbers."""
    facts, identity, fit = result.identity_facts, result.identity, result.fit_main
    if facts is None or identity is None or fit is None:
        return []
    names = list(result.dataset.groups.names)
    ols = fit.effects.set_index("term")["estimate"]
    differences = [abs(float(ols.get(f"g_{g}", np.nan)) - float(identity.loc[g, "beta"]))
                   for g in names if np.isfinite(identity.loc[g, "beta"])]
    beta_vs_ols = max(differences, default=float("nan"))
    per_unit = result.per_unit
    balanced = per_unit is not None and bool((per_unit["n_experiments"] == len(result.present)).all())
    order_cre = " > ".join((-result.spec.sign * identity["cre"]).sort_values(kind="stable").index)
    beta = identity["beta"].dropna()
    order_beta = " > ".join((-result.spec.sign * beta).sort_values(kind="stable").index)
    size = int(facts["n_groups"])
    half, quarter = facts["half"], facts["quarter"]
    lines = []
    if facts["complete"]:
        lines.append(
            f"On the complete 2^{size} design CRE_g = 2^{size - 1}·(mean − median) + 2^{size - 2}·β_g "
            f"= {half:g}·(mean − median) + {quarter:g}·β_g, where β_g = mean of the {half:g} experiment scores "
            f"with g on − mean of the {half:g} with g off. Here mean = {facts['mean']:.6g}, median = "
            f"{facts['median']:.6g}, so {half:g}·(mean − median) = {facts['offset']:.6g} for every group; the "
            f"identity holds to max |difference| = {facts['max_abs_difference']:.2g} (table "
            f"{_link(result, 'cre_identity.md')})."
        )
        if balanced:
            lines.append(f"Every unit has all {2**size} experiments, so the OLS main-effect coefficients (model fixed "
                         f"effects do not change them on a balanced design) equal β_g (max |difference| = "
                         f"{beta_vs_ols:.2g}).")
        else:
            lines.append(f"Some units lack some experiments (failed rows), so the unit × experiment rows are not "
                         f"balanced and the OLS main effects differ from β_g by up to {beta_vs_ols:.2g}.")
        lines.append(
            "Consequence: on a complete design CRE is an increasing affine function of the main effect with "
            f"the same offset and slope ({quarter:g}) for all groups, so it ranks the groups exactly as the "
            "main effects do and adds no information beyond them; what OLS adds is the clustered uncertainty "
            f"and, with --interactions, the interactions. Order by CRE: {order_cre}; by β: {order_beta}."
        )
    else:
        lines.append(
            f"The design is incomplete ({facts['n_experiments']} of {2**size} experiments), so "
            f"CRE_g = 2^{size - 1}·(mean − median) + 2^{size - 2}·β_g does not hold exactly: here it is off by up to "
            f"{facts['max_abs_difference']:.3g} (table {_link(result, 'cre_identity.md')}). What always holds is "
            "CRE_g = n_g·(mean of the experiments with g on − median), n_g = experiments present with g on "
            "(column n_on), so groups present in fewer experiments get smaller |CRE|; compare groups by the "
            f"OLS main effects here. Order by CRE: {order_cre}; by β: {order_beta}."
        )
    return lines


def _dataset_lines(result: AnalysisResult) -> list[str]:
    dataset, scores = result.dataset, result.scores
    groups, units = dataset.groups, dataset.units
    models = ", ".join(f"{row.model} ({row.n_units} units, {row.n_images} images)"
                       for row in (result.units_by_model.itertuples() if result.units_by_model is not None else []))
    ranks = units["target_rank"].value_counts().sort_index()
    singles = sorted(scores.singles["method"].unique())
    controls = sorted(scores.controls["method"].unique())
    source = ("the files' metadata" if dataset.groups_source == "metadata"
              else "the g_* columns (no metadata: members from the single-method rows, no controls)")
    provenance = {k: v for k, v in dataset.provenance.items() if k in (
        "percentiles", "heldout_percentiles", "noise", "ks", "seed", "torch", "device", "metacam")}
    return [
        f"- Folder `{dataset.root}`: {len(dataset.files)} Parquet file(s), {dataset.n_rows} rows of sweep "
        f"`{dataset.sweep_id}`; k values present: {', '.join(f'{k:g}' for k in dataset.k_values)}.",
        f"- Groups ({groups.size}, from {source}): "
        + "; ".join(f"`{n}` = {', '.join(m) or '(unknown)'}{' (control)' if c else ''}"
                    for n, m, c in zip(groups.names, groups.members, groups.controls, strict=True))
        + f". Comparator: combo {groups.comparator} (`{groups.combo_name(groups.comparator)}`).",
        f"- ROAD tie rule: `{dataset.ties}` (from {dataset.ties_source})."
        + (f" Provenance: `{json.dumps(provenance, default=str)}`." if provenance else ""),
        f"- Units (model × image × target): {len(units)} in {dataset.n_clusters} clusters (model × image) — {models}; "
        "target ranks: " + (", ".join(f"{r}: {n}" for r, n in ranks.items()) or "not recorded") + ".",
        f"- MetaCAM experiments: {len(result.present)} of {groups.n_combos}"
        + (f"; **missing combo_id {id_ranges(result.missing)}**." if result.missing and result.present else "."),
        f"- Single CAM methods: {len(singles)}" + (f" ({', '.join(singles)})" if singles else "")
        + f"; controls: {len(controls)}" + (f" ({', '.join(controls)})." if controls else "."),
        f"- Score: {result.spec.label}, {result.spec.direction}; s_e = mean over units. CIs: {LEVEL:.0%}, cluster "
        f"bootstrap over (model, image) with {result.replicates} replicates (seed {result.seed}), bootstrap SE with "
        "the t(C−1)·sqrt(C/(C−1)) small-sample correction.",
    ]


def _section(title: str, *body: str) -> list[str]:
    return [f"## {title}\n", *body]


def _report(result: AnalysisResult) -> str:
    files, spec = result.files, result.spec
    parts = [f"# MetaCAM analysis — sweep `{result.dataset.sweep_id}`\n",
             "Regenerated from the Parquet dataset alone by `metacam analyze`.\n"]
    parts += [f"> **Warning:** {w}\n" for w in result.warnings]
    title = "held-out" if spec.heldout else "in-sample (optimistic)"
    parts += _section(f"Answer ({title}): does MetaCAM beat every single CAM?", "\n".join(answer_lines(result)) + "\n")
    if "headline.md" in files:
        parts.append(files["headline.md"].read_text())
    if "comparisons.md" in files:
        parts += _section(
            "Paired comparisons",
            f"MetaCAM comparator minus each opponent, paired over units; CI from the cluster bootstrap; "
            f"Wilcoxon signed-rank on the cluster means of the differences, Holm-corrected within each metric; "
            f"rank-biserial r > 0 favours MetaCAM; win rate over units. All rows: {_link(result, 'comparisons.csv')}.\n",
            files["comparisons.md"].read_text())
    if "gain_split.md" in files:
        parts += _section(
            "Where the gain comes from: ensembling and thresholding",
            "Ensembling = MetaCAM plain − best single plain (the best single chosen on in-sample plain scores); "
            "thresholding = MetaCAM adaptive − MetaCAM plain; they add up to the total on the units that have "
            "all four scores. Held-out unless --in-sample.\n", files["gain_split.md"].read_text())
    if "optimism.md" in files and result.optimism_spec is not None:
        parts += _section(
            "Optimism of in-sample scores",
            f"{result.optimism_spec.definition.name}, in-sample minus held-out. *Optimism*: on the k* rows, where "
            "k* was chosen on the in-sample draw. *Gap at k = 100*: on the plain rows, where nothing was chosen "
            "(the two draws differ in percentiles, permutation and noise). *Excess* = optimism − gap: the part "
            f"due to choosing k*."
            + (" MoRF is lower-is-better, so optimism shows as a negative difference." if
               result.optimism_spec.sign < 0 else "")
            + f" Every combination: {_link(result, 'optimism.csv')}.\n",
            files["optimism.md"].read_text())
    parts += _section("Dataset", "\n".join(_dataset_lines(result)) + "\n")
    if result.notes:
        parts += _section("Notes (degraded or partial output, stated defaults)",
                          "\n".join(f"- {n}" for n in result.notes) + "\n")
    if result.cre_table is not None:
        parts += _section(
            "Cumulative Residual Effect",
            "r_e = s_e − median over the experiments present; CRE_g = Σ of r_e over the experiments with group "
            "g on; its CI comes from the cluster bootstrap. Per-unit CRE repeats this within each unit (its own "
            "median)." + (" Lower is better here, so a negative CRE means the group helps." if spec.sign < 0 else "")
            + "\n", files["cre.md"].read_text(),
            f"\n![CRE plot]({files['cre_plot.png'].name})\n",
            f"\n![Per-unit CRE]({files['cre_per_unit.png'].name})\n",
            f"\nData: {_link(result, 'cre.csv')}, {_link(result, 'cre_curves.csv')} (the curves), "
            f"{_link(result, 'cre_per_unit.csv')} (one row per unit).\n")
        parts += _section("CRE and the OLS main effects", "\n\n".join(relation_lines(result)) + "\n")
    if result.fit is not None:
        fit = result.fit
        coding = ("indicators centred to −½/+½, so main effects are average effects and each interaction is "
                  "(effect of a with b on) − (effect of a with b off)" if fit.interactions
                  else "0/1 indicators, so each coefficient is the change in score when the group is switched on")
        text = (f"`{fit.formula}` over {fit.n_obs} unit × experiment rows, {fit.n_units} units, {fit.n_clusters} "
                f"clusters; {INFERENCE_TEXT[fit.inference]}; {coding}; R² = {fit.r_squared:.3f}. Holm p: within "
                "the main effects and within the interactions. No classical ANOVA table: its iid F-tests treat "
                "the correlated rows of one image as independent and are not valid under clustering.\n")
        parts += _section("Factorial effects (OLS)", text, files["effects.md"].read_text(),
                          f"\n![Effects]({files['effects.png'].name})\n")
        if fit.interactions:
            interactions = fit.effects[fit.effects["kind"] == "interaction"]
            found = interactions[interactions["p_holm"] < ALPHA]
            listed = ", ".join(f"{r.label} ({r.estimate:+.4f}, Holm p = {fmt_p(r.p_holm)})"
                               for r in found.itertuples()) or "none"
            parts.append(f"\nInteractions with Holm-corrected p < {ALPHA}: {listed}.\n")
    if "units_by_model.md" in files:
        body = ["Units each model contributes:\n", files["units_by_model.md"].read_text()]
        for dimension, heading in (("model", "per model"), ("target_rank", "per target rank (1 = top-1 class)")):
            if f"cre_by_{dimension}.md" in files:
                body += [f"\nCRE {heading}, with 95% CIs (each subset's own cluster bootstrap):\n",
                         files[f"cre_by_{dimension}.md"].read_text(),
                         f"\nEffects {heading}: {_link(result, f'effects_by_{dimension}.md')}, "
                         f"{_link(result, f'effects_by_{dimension}.csv')}.\n"]
        if "cre_by_model.png" in files:
            body.append(f"\n![CRE by model]({files['cre_by_model.png'].name})\n")
        parts += _section("Study: by model and by target rank", *body)
    if "metacam_vs_single.md" in files:
        parts += _section("MetaCAM versus single CAMs",
                          f"Mean [95% CI] over units of {spec.source + ' ' if spec.source else ''}"
                          f"{spec.definition.name} ({spec.direction}).\n", files["metacam_vs_single.md"].read_text())
    if result.experiments is not None:
        top = result.experiments.head(5)
        listing = "; ".join(f"{r.rank}. combo {r.combo_id} ({r.method}) {r.mean:.4f} (rank interval "
                            f"{r.rank_low:.0f}–{r.rank_high:.0f})" for r in top.itertuples())
        parts += _section("Ranking of experiments",
                          f"Best first by {spec.short}: {listing}" + (" …" if len(result.experiments) > 5 else "")
                          + f".\n\nAll {len(result.experiments)}: {_link(result, 'experiments.md')}, "
                          f"{_link(result, 'experiments.csv')}.\n")
    written = [(name, OUTPUTS[name]) for name in OUTPUTS if name in files and name != "report.md"]
    parts += _section("Files", "\n".join(f"- {_link(result, name)}: {what}" + (
        " (and .md)" if name.endswith(".csv") and name.replace(".csv", ".md") in files else "")
        for name, what in written) + "\n")
    return "\n".join(parts)


def write_outputs(result: AnalysisResult) -> None:
    """Write every table, figure and report.md into ``result.out_dir``."""
    _write_tables(result)
    _write_figures(result)
    result.report.write_text(_report(result))
    result.files["report.md"] = result.report


def summary_text(result: AnalysisResult) -> str:
    """The short summary the CLI prints on stdout."""
    spec, dataset = result.spec, result.dataset
    groups = dataset.groups
    per_model = ", ".join(f"{row.model}: {row.n_units}" for row in result.units_by_model.itertuples()) \
        if result.units_by_model is not None else ""
    lines = [
        f"sweep {dataset.sweep_id} ({dataset.ties} ties): {len(result.present)}/{groups.n_combos} MetaCAM "
        f"experiments, {result.scores.singles['method'].nunique()} single methods, "
        f"{result.scores.controls['method'].nunique()} controls, {len(dataset.units)} units in "
        f"{dataset.n_clusters} clusters ({per_model})",
        f"groups ({groups.size}, from {dataset.groups_source}): {', '.join(groups.names)}; "
        f"comparator {groups.combo_name(groups.comparator)}",
        f"score: {spec.label}, {spec.direction}",
    ]
    lines += [f"WARNING: {w}" for w in result.warnings]
    lines += [f"note: {note}" for note in result.notes]
    if result.headline is not None:
        lines.append("")
        for row in result.headline.itertuples(index=False):
            lines.append(f"{row.score}: MetaCAM beats {row.singles_beaten}/{row.singles} single CAMs"
                         f" ({'every one' if row.beats_every_single else 'not all'}), "
                         f"{row.controls_beaten}/{row.controls} controls; closest {row.closest_single} "
                         f"{fmt_ci(row.closest_difference, row.closest_ci_low, row.closest_ci_high, 4)}")
    if result.cre_table is not None:
        lines.append("")
        width = max(12, *(len(n) + 2 for n in groups.names))
        lines.append(f"{'group':<{width}}{'CRE':>10}   {'95% CI':<20}{'beta':>9}{'OLS':>9}")
        for row in result.cre_table.itertuples():
            interval = (f"[{row.ci_low:+.4f}, {row.ci_high:+.4f}]" if np.isfinite(row.ci_low) else "n/a")
            lines.append(f"{row.group:<{width}}{row.cre:>+10.4f}   {interval:<20}{row.beta:>+9.4f}"
                         f"{row.ols_main_effect:>+9.4f}")
        facts = result.identity_facts
        if facts is not None:
            g = int(facts["n_groups"])
            formula = f"CRE = 2^{g - 1}*(mean - median) + 2^{g - 2}*beta"
            lines.append(f"{formula} holds (max |diff| {facts['max_abs_difference']:.1e})" if facts["complete"]
                         else f"partial design: {formula} does not hold exactly "
                              f"(max |diff| {facts['max_abs_difference']:.3g})")
    if result.experiments is not None:
        top = result.experiments.iloc[0]
        lines.append(f"top experiment by {spec.short}: combo {int(top['combo_id'])} ({top['method']}) "
                     f"{fmt_ci(top['mean'], top['ci_low'], top['ci_high'], 4)}")
    if result.best is not None:
        lines.append(f"best combination chosen in-sample: combo {result.best} ({groups.combo_name(result.best)})")
    lines.append(f"report: {result.report}")
    return "\n".join(lines)
