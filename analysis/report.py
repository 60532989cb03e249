"""Write the analysis: CSV + Markdown tables, PNG figures and a one-page report.md,
and the short summary printed on stdout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from metacam.analysis import plots
from metacam.analysis.cre import N_COMBOS
from metacam.analysis.tables import fmt, fmt_ci, fmt_p, id_ranges, ranking_table, write_table
from metacam.groups import GROUP_KEYS

if TYPE_CHECKING:
    from metacam.analysis.pipeline import AnalysisResult


def _link(result: AnalysisResult, key: str) -> str:
    path = result.files.get(key)
    return f"[{path.name}]({path.name})" if path is not None else "(not written)"


def relation_lines(result: AnalysisResult) -> list[str]:
    """How CRE and the OLS main effects relate on this data, with the numbers."""
    facts, identity, fit = result.identity_facts, result.identity, result.fit_main
    if facts is None or identity is None or fit is None:
        return []
    ols = fit.effects.set_index("term")["estimate"]
    beta_vs_ols = max(abs(float(ols.get(f"g_{g}", np.nan)) - float(identity.loc[g, "beta"]))
                      for g in GROUP_KEYS if np.isfinite(identity.loc[g, "beta"]))
    per_unit = result.per_unit
    balanced = per_unit is not None and bool((per_unit["n_experiments"] == len(result.present)).all())
    order_cre = " > ".join((-result.spec.sign * identity["cre"]).sort_values(kind="stable").index)
    beta = identity["beta"].dropna()
    order_beta = " > ".join((-result.spec.sign * beta).sort_values(kind="stable").index)
    lines = []
    if facts["complete"]:
        lines.append(
            f"On the complete 2^6 design CRE_g = 32·(mean − median) + 16·β_g, where β_g = mean of the 32 "
            f"experiment scores with g on − mean of the 32 with g off. Here mean = {facts['mean']:.6g}, "
            f"median = {facts['median']:.6g}, so 32·(mean − median) = {facts['offset']:.6g} for every group; "
            f"the identity holds to max |difference| = {facts['max_abs_difference']:.2g} (table "
            f"{_link(result, 'cre_vs_ols.md')})."
        )
        if balanced:
            lines.append(f"Every unit has all 64 experiments, so the OLS main-effect coefficients equal β_g "
                         f"(max |difference| = {beta_vs_ols:.2g}).")
        else:
            lines.append(f"Some units lack some experiments (failed rows), so the unit × experiment rows are not "
                         f"balanced and the OLS main effects differ from β_g by up to {beta_vs_ols:.2g}.")
        lines.append(
            "Consequence: on a complete design CRE is an increasing affine function of the main effect with "
            "the same offset and slope (16) for all groups, so it ranks the groups exactly as the OLS main "
            "effects do and adds no information beyond them; what OLS adds is the uncertainty "
            f"(clustered CIs) and, with --interactions, the interactions. Order by CRE: {order_cre}; "
            f"by β: {order_beta}."
        )
    else:
        lines.append(
            f"The design is incomplete ({facts['n_experiments']} of {N_COMBOS} experiments), so "
            "CRE_g = 32·(mean − median) + 16·β_g does not hold exactly: here it is off by up to "
            f"{facts['max_abs_difference']:.3g} (table {_link(result, 'cre_vs_ols.md')}). What always holds is "
            "CRE_g = n_g·(mean of the experiments with g on − median), n_g = experiments present with g on "
            "(column n_on), so groups present in fewer experiments get smaller |CRE|; compare groups by the "
            f"OLS main effects here. Order by CRE: {order_cre}; by β: {order_beta}."
        )
    return lines


def _write_tables(result: AnalysisResult) -> None:
    out, files = result.out_dir, result.files
    spec = result.spec
    if result.cre_table is not None:
        table = result.cre_table
        display = pd.DataFrame({
            "group": table["group"],
            "members": table["members"],
            "CRE": table["cre"],
            "rank": table["rank"],
            "β (on − off)": table["beta"],
            "OLS main effect": table["ols_main_effect"],
            "per-unit CRE median [IQR]": [f"{m:.3f} [{a:.3f}, {b:.3f}]" for m, a, b in
                                          zip(table["unit_cre_median"], table["unit_cre_q25"],
                                              table["unit_cre_q75"], strict=True)],
            ("units CRE > 0" if spec.sign > 0 else "units CRE < 0"):
                [f"{v:.0%}" for v in table["unit_share_helps"]],
        })
        files["cre.csv"], files["cre.md"] = write_table(table, out, "cre", display=display)
    if result.curves is not None:
        files["cre_curves.csv"] = out / "cre_curves.csv"
        result.curves.to_csv(files["cre_curves.csv"], index=False)
    if result.per_unit is not None:
        files["cre_per_unit.csv"] = out / "cre_per_unit.csv"
        result.dataset.units.join(result.per_unit, how="inner").to_csv(files["cre_per_unit.csv"])
    if result.identity is not None and result.fit_main is not None:
        identity = result.identity.copy()
        ols = result.fit_main.effects.set_index("term")["estimate"]
        identity["ols_main_effect"] = [ols.get(f"g_{g}", np.nan) for g in identity.index]
        identity = identity.reset_index()
        files["cre_vs_ols.csv"], files["cre_vs_ols.md"] = write_table(
            identity, out, "cre_vs_ols", formats={"difference": lambda v: fmt(v, 8)})
    if result.fit is not None:
        effects = result.fit.effects
        display = pd.DataFrame({
            "term": effects["label"], "kind": effects["kind"], "estimate": effects["estimate"],
            "std. error": effects["std_err"],
            "95% CI": [f"[{a:.4f}, {b:.4f}]" for a, b in zip(effects["ci_low"], effects["ci_high"], strict=True)],
            "p": effects["p_value"],
        })
        files["effects.csv"], files["effects.md"] = write_table(effects, out, "effects", display=display,
                                                                formats={"p": fmt_p})
        anova = result.fit.anova
        files["anova.csv"], files["anova.md"] = write_table(
            anova, out, "anova", formats={"p": fmt_p, "p_cluster": fmt_p, "df": lambda v: fmt(v, 0)})
    if result.experiments is not None:
        ranking = ranking_table(result.experiments)
        display = pd.DataFrame({
            "rank": ranking["rank"], "combo_id": ranking["combo_id"], "method": ranking["method"],
            "groups on": ranking["groups_on"],
            "mean ± 95% CI": [fmt_ci(m, a, b, 4) for m, a, b in
                              zip(ranking["mean"], ranking["ci_low"], ranking["ci_high"], strict=True)],
            "n units": ranking["n_units"], "residual": ranking["residual"],
        })
        files["experiments.csv"], files["experiments.md"] = write_table(ranking, out, "experiments", display=display)
    if result.paper is not None and len(result.paper):
        files["metacam_vs_single.csv"], files["metacam_vs_single.md"] = write_table(
            result.paper, out, "metacam_vs_single", display=_paper_display(result))
    if result.wins is not None:
        wins = result.wins
        display = pd.DataFrame({
            "MetaCAM best vs": wins["opponent"], "units": wins["n_units"], "wins": wins["wins"],
            "ties": wins["ties"], "losses": wins["losses"],
            "win rate": [f"{v:.1%}" for v in wins["win_rate"]],
            "mean difference ± 95% CI": [fmt_ci(m, a, b, 4) for m, a, b in
                                         zip(wins["mean_difference"], wins["diff_ci_low"],
                                             wins["diff_ci_high"], strict=True)],
        })
        files["win_rate.csv"], files["win_rate.md"] = write_table(wins, out, "win_rate", display=display)
    if len(result.dataset.failed):
        files["failed_rows.csv"] = out / "failed_rows.csv"
        result.dataset.failed.to_csv(files["failed_rows.csv"], index=False)


def _paper_display(result: AnalysisResult) -> pd.DataFrame:
    paper = result.paper
    assert paper is not None
    n = paper[["plain_n", "adaptive_n"]].max(axis=1)
    return pd.DataFrame({
        "method": paper["entry"],
        "plain ROAD (k = 100)": [fmt_ci(m, a, b) for m, a, b in
                                 zip(paper["plain_mean"], paper["plain_ci_low"], paper["plain_ci_high"], strict=True)],
        "adaptive ROAD (k*)": [fmt_ci(m, a, b) for m, a, b in
                               zip(paper["adaptive_mean"], paper["adaptive_ci_low"], paper["adaptive_ci_high"],
                                   strict=True)],
        "n units": [fmt(int(v)) if np.isfinite(v) else "n/a" for v in n],
    })


def _write_figures(result: AnalysisResult) -> None:
    out, files, spec = result.out_dir, result.files, result.spec
    n_units = len(result.dataset.units)
    if result.curves is not None and result.cre is not None:
        figure = plots.plot_cre(result.curves, result.cre, spec, n_units=n_units, missing=len(result.missing))
        files["cre_plot.png"] = plots.save(figure, out / "cre_plot.png")
    if result.per_unit is not None and result.cre is not None:
        figure = plots.plot_unit_cre(result.per_unit, result.cre, spec)
        files["cre_per_unit.png"] = plots.save(figure, out / "cre_per_unit.png")
    if result.fit is not None:
        files["effects.png"] = plots.save(plots.plot_effects(result.fit, spec), out / "effects.png")


def _dataset_lines(result: AnalysisResult) -> list[str]:
    dataset, scores = result.dataset, result.scores
    units = dataset.units
    models = ", ".join(f"{m} ({n})" for m, n in units["model"].value_counts().sort_index().items())
    singles = sorted(scores.singles["method"].unique())
    lines = [
        f"- Folder `{dataset.root}`: {len(dataset.files)} Parquet file(s), {dataset.n_rows} rows of sweep "
        f"`{dataset.sweep_id}`, ROAD mode `{dataset.road_mode}`; k values present: "
        f"{', '.join(f'{k:g}' for k in dataset.k_values)}.",
        f"- Units (model × image × target): {len(units)} — {models}.",
        f"- MetaCAM experiments: {len(result.present)} of {N_COMBOS}"
        + (f"; **missing combo_id {id_ranges(result.missing)}**." if result.missing and result.present
           else "."),
        f"- Single CAM methods: {len(singles)}" + (f" ({', '.join(singles)})." if singles else "."),
        f"- Score: {result.spec.label}, {result.spec.direction}; the score of an experiment, s_e, is its mean "
        "over units; 95% CIs are t-intervals over units.",
    ]
    return lines


def _report(result: AnalysisResult) -> str:
    files, spec = result.files, result.spec
    parts = [f"# MetaCAM analysis — sweep `{result.dataset.sweep_id}`\n",
             "Regenerated from the Parquet dataset alone by `metacam analyze`.\n",
             "## Dataset\n", "\n".join(_dataset_lines(result)) + "\n"]
    if result.notes:
        parts += ["## Notes (degraded or partial output)\n", "\n".join(f"- {n}" for n in result.notes) + "\n"]

    if result.cre_table is not None:
        parts += ["## Cumulative Residual Effect\n",
                  "r_e = s_e − median over the experiments present; CRE_g = Σ of r_e over the experiments "
                  "with group g on. Per-unit CRE repeats this within each unit (its own median)."
                  + (" For MoRF lower is better, so a negative CRE means the group helps." if spec.sign < 0 else "")
                  + "\n",
                  files["cre.md"].read_text(),
                  f"\n![CRE plot]({files['cre_plot.png'].name})\n",
                  f"\n![Per-unit CRE]({files['cre_per_unit.png'].name})\n",
                  f"\nData: {_link(result, 'cre.csv')}, {_link(result, 'cre_curves.csv')} (the curves), "
                  f"{_link(result, 'cre_per_unit.csv')} (one row per unit).\n",
                  "## CRE and the OLS main effects\n", "\n\n".join(relation_lines(result)) + "\n"]

    if result.fit is not None:
        fit = result.fit
        cov = ("standard errors clustered by unit" if fit.cov_type == "cluster"
               else "iid standard errors (one unit: no clustering)")
        coding = ("indicators centred to −½/+½, so main effects are average effects and each interaction is "
                  "(effect of a with b on) − (effect of a with b off)" if fit.interactions
                  else "0/1 indicators, so each coefficient is the change in score when the group is switched on")
        parts += ["## Factorial effects (OLS)\n",
                  f"`{fit.formula}` over {fit.n_obs} unit × experiment rows, {fit.n_clusters} units; {cov}; "
                  f"{coding}; 95% CIs; R² = {fit.r_squared:.3f}.\n",
                  files["effects.md"].read_text(),
                  f"\n![Effects]({files['effects.png'].name})\n",
                  f"\nANOVA (type II; sums of squares, F and p from the classical fit, F_cluster and p_cluster "
                  f"from Wald tests with the unit-clustered covariance): {_link(result, 'anova.md')}, "
                  f"{_link(result, 'anova.csv')}; effects: {_link(result, 'effects.csv')}.\n"]
        if fit.interactions:
            effects = fit.effects[fit.effects["kind"] == "interaction"]
            significant = effects[effects["p_value"] < 0.05]
            found = (", ".join(f"{r.label} ({r.estimate:+.4f}, p = {fmt_p(r.p_value)})"
                               for r in significant.itertuples()) or "none")
            parts.append(f"\nInteractions with clustered p < 0.05: {found}.\n")

    if result.paper is not None and len(result.paper):
        parts += ["## MetaCAM versus single CAMs\n",
                  f"Mean ± 95% CI over units of {spec.column} ({spec.direction})"
                  + (f"; MetaCAM best = the combination with the best mean {spec.short}" if result.best is not None
                     else "") + ".\n",
                  files["metacam_vs_single.md"].read_text()]
        if result.wins is not None:
            parts += ["\nPer-unit win rate of MetaCAM's best combination (adaptive) over single methods "
                      "(adaptive), paired over units:\n", files["win_rate.md"].read_text(),
                      "\nThe best combination is chosen on these same units, so its advantage is an "
                      "optimistic (in-sample) estimate.\n"]
        written = [_link(result, key) for key in ("metacam_vs_single.csv", "win_rate.csv") if key in files]
        parts.append(f"\nFiles: {', '.join(written)}.\n")

    if result.experiments is not None:
        top = result.experiments.head(5)
        listing = "; ".join(f"{r.rank}. combo {r.combo_id} ({r.method}) {r.mean:.4f}" for r in top.itertuples())
        parts += ["## Ranking of experiments\n",
                  f"Best first by {spec.short}: {listing}"
                  + (" …" if len(result.experiments) > 5 else "") + ".\n",
                  f"\nAll {len(result.experiments)}: {_link(result, 'experiments.md')}, "
                  f"{_link(result, 'experiments.csv')}.\n"]
    if "failed_rows.csv" in files:
        parts.append(f"\nExcluded rows: {_link(result, 'failed_rows.csv')}.\n")
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
    lines = [
        f"sweep {dataset.sweep_id} ({dataset.road_mode} ROAD): {len(result.present)}/{N_COMBOS} MetaCAM "
        f"experiments, {result.scores.singles['method'].nunique()} single methods, {len(dataset.units)} units",
        f"score: {spec.label}, {spec.direction}",
    ]
    lines += [f"note: {note}" for note in result.notes]
    if result.cre_table is not None:
        lines.append("")
        lines.append(f"{'group':<14}{'CRE':>10}{'beta':>10}{'OLS':>10}   95% CI")
        effects = result.fit_main.effects.set_index("term") if result.fit_main is not None else None
        for row in result.cre_table.itertuples():
            ci = "n/a"
            if effects is not None and f"g_{row.group}" in effects.index:
                e = effects.loc[f"g_{row.group}"]
                ci = f"[{e['ci_low']:+.4f}, {e['ci_high']:+.4f}]"
            lines.append(f"{row.group:<14}{row.cre:>+10.4f}{row.beta:>+10.4f}{row.ols_main_effect:>+10.4f}   {ci}")
        if result.identity_facts is not None:
            facts = result.identity_facts
            if facts["complete"]:
                lines.append(f"CRE = 32*(mean - median) + 16*beta holds (max |diff| {facts['max_abs_difference']:.1e})")
            else:
                lines.append("partial design: CRE = 32*(mean - median) + 16*beta does not hold exactly "
                             f"(max |diff| {facts['max_abs_difference']:.3g})")
    if result.experiments is not None:
        best = result.experiments.iloc[0]
        lines.append(f"best combination: combo {int(best['combo_id'])} ({best['method']}) "
                     f"{fmt_ci(best['mean'], best['ci_low'], best['ci_high'], 4)}")
    if result.wins is not None:
        for row in result.wins.itertuples():
            lines.append(f"win rate vs {row.opponent}: {row.win_rate:.1%} of {row.n_units} units")
    lines.append(f"report: {result.report}")
    return "\n".join(lines)
