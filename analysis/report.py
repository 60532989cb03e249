"""Write the analysis: CSV + Markdown tables (:mod:`metacam.analysis.displays`), PNG figures and
report.md (the held-out answer first: :mod:`metacam.analysis.answer`), and the short summary
printed on stdout.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from metacam.analysis import plots
from metacam.analysis.answer import answer_lines
from metacam.analysis.displays import write_tables
from metacam.analysis.outputs import OUTPUTS
from metacam.analysis.settings import ALPHA, LEVEL, MIN_CLUSTERS
from metacam.analysis.tables import fmt, fmt_ci, fmt_p, id_ranges

if TYPE_CHECKING:
    from metacam.analysis.pipeline import AnalysisResult

INFERENCE_TEXT = {
    "CR1": "CR1 cluster-robust standard errors clustered by image, t(C−1)",
    "CR2": f"CR2 (Bell-McCaffrey) cluster-robust standard errors clustered by image, with Bell–McCaffrey "
           f"(Satterthwaite) degrees of freedom per term (column df) — fewer than {MIN_CLUSTERS} images",
    "iid": "iid standard errors (one image: no clustering possible)",
}


def _link(result: AnalysisResult, key: str) -> str:
    path = result.files.get(key)
    return f"[{path.name}]({path.name})" if path is not None else "(not written)"


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
    metrics = ", ".join(f"`{m.key}` ({m.label}{', headline' if m.headline else ''}"
                        f"{'' if m.source == 'builtin' else ', plug-in ' + m.source})" for m in dataset.metrics)
    return [
        f"- Folder `{dataset.root}`: {len(dataset.files)} Parquet file(s), {dataset.n_rows} rows of sweep "
        f"`{dataset.sweep_id}`; k values present: {', '.join(f'{k:g}' for k in dataset.k_values)}.",
        f"- Groups ({groups.size}, from {source}): "
        + "; ".join(f"`{n}` = {', '.join(m) or '(unknown)'}{' (control)' if c else ''}"
                    for n, m, c in zip(groups.names, groups.members, groups.controls, strict=True))
        + f". Comparator: combo {groups.comparator} (`{groups.combo_name(groups.comparator)}`).",
        f"- Metrics (from {dataset.metrics_source}): {metrics}.",
        f"- ROAD tie rule: `{dataset.ties}` (from {dataset.ties_source})."
        + (f" Provenance: `{json.dumps(provenance, default=str)}`." if provenance else ""),
        f"- Units (model × image × target): {len(units)} in {dataset.n_clusters} clusters (images: the same photo "
        f"under several models is one cluster) — {models}; "
        "target ranks: " + (", ".join(f"{r}: {n}" for r, n in ranks.items()) or "not recorded") + ".",
        f"- MetaCAM experiments: {len(result.present)} of {groups.n_combos}"
        + (f"; **missing combo_id {id_ranges(result.missing)}**." if result.missing and result.present else "."),
        f"- Single CAM methods: {len(singles)}" + (f" ({', '.join(singles)})" if singles else "")
        + f"; controls: {len(controls)}" + (f" ({', '.join(controls)})." if controls else "."),
        f"- Score: {result.spec.label}, {result.spec.direction}; s_e = mean over units. Paired comparisons: per-image "
        f"means, t interval and Wilcoxon signed-rank over images. Other CIs: {LEVEL:.0%}, cluster bootstrap over "
        f"images with {result.replicates} replicates (seed {result.seed}), bootstrap SE with the "
        "t(df)·sqrt(C/(C−1)) small-sample correction, df = C − 1 or fewer (Bell–McCaffrey) for unequal images.",
    ]


def _section(title: str, *body: str) -> list[str]:
    return [f"## {title}\n", *body]


def _table_section(result: AnalysisResult, stem: str, title: str, text: str) -> list[str]:
    """A section of ``text`` and the table ``stem.md``, if the data allowed the table."""
    table = result.files.get(f"{stem}.md")
    return [] if table is None else _section(title, text, table.read_text())


def _cre_text(result: AnalysisResult) -> str:
    facts = result.identity_facts or {}
    offset = (f" Here that offset is {facts['offset']:+.4g} for every group." if facts.get("complete") else "")
    return (
        "CRE is the paper's *relative ranking summary*: r_e = s_e − median over the experiments present and "
        "CRE_g = Σ of r_e over the experiments with group g on (CI from the cluster bootstrap over images). On a "
        "complete design CRE_g = 2^{G−1}·(mean − median) + 2^{G−2}·β_g: it carries an offset common to all "
        "groups, so its sign does not say whether a group helps (a group with no effect can have a CRE whose CI "
        f"excludes 0).{offset} Whether a group helps or hurts is read from its main-effect contrast β_g (on − off, "
        "bootstrap CI) and the OLS main effect (CI clustered by image, Holm p): column *effect* says `helps` when "
        f"the OLS effect's {LEVEL:.0%} CI lies on the favourable side of 0 and its Holm p < {ALPHA}, `hurts` for "
        "the mirror case, `no evidence` otherwise. Per-unit CRE repeats CRE within each unit (its own median).\n")


def _report(result: AnalysisResult) -> str:
    files, spec = result.files, result.spec
    parts = [f"# MetaCAM analysis — sweep `{result.dataset.sweep_id}`\n",
             "Regenerated from the Parquet dataset alone by `metacam analyze`.\n"]
    parts += [f"> **Warning:** {w}\n" for w in result.warnings]
    title = "held-out" if spec.heldout else "in-sample (optimistic)"
    parts += _section(f"Answer ({title}): does MetaCAM beat every single CAM?", "\n".join(answer_lines(result)) + "\n")
    if "headline.md" in files:
        parts.append(files["headline.md"].read_text())
    parts += _table_section(
        result, "comparisons", "Paired comparisons",
        "MetaCAM comparator minus each opponent, paired by image: each image's differences averaged over its "
        "models and targets, then the t interval and the two-sided Wilcoxon signed-rank test over images (test "
        "method per row; its smallest attainable p is p_floor in the CSV). Adjusted p: none for the single "
        "CAMs (intersection–union), Holm within the controls. mde = the difference detectable with 80% power "
        "at this many images and this spread; n_needed = images needed to detect the observed difference "
        f"(blank when it is not in MetaCAM's favour). All rows: {_link(result, 'comparisons.csv')}.\n")
    parts += _table_section(
        result, "paper_comparison", "The paper's comparison, decomposed",
        "In-sample adaptive MetaCAM minus each single CAM plain (k = 100), as the paper scored it, split "
        "exactly into optimism + thresholding + ensembling (each with its CI over images); *carried by* names "
        "the component with the largest favourable mean among those whose CI excludes 0. A metric with one "
        f"draw has no optimism (0 by construction). All rows: {_link(result, 'paper_comparison.csv')}.\n")
    parts += _table_section(
        result, "selection", "Choosing the best combination out of sample",
        f"Cross-validation over images ({result.folds} folds, seed {result.fold_seed}; leave-one-out below 10 "
        "images): on the other folds' images the best combination (combo 0 excluded) and, the same way, the "
        "best single CAM are chosen; both are scored on the fold's own images; pooled, the two are compared "
        f"paired by image. Per fold: {_link(result, 'selection_folds.csv')}.\n")
    parts += _table_section(
        result, "gain_split", "Where the gain comes from: ensembling and thresholding",
        "Ensembling = MetaCAM plain − best single plain; thresholding = MetaCAM adaptive − MetaCAM plain; they "
        "add up to the total on the units that have all four scores. The best single is chosen out of sample "
        "for every metric: each image is compared with the single whose plain score is best on the other "
        "folds' images. Held-out unless --in-sample.\n")
    if "optimism.md" in files and result.optimism_spec is not None:
        parts += _section(
            "Optimism of in-sample scores",
            f"{result.optimism_spec.definition.label}, in-sample minus held-out. *Optimism*: on the k* rows, where "
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
            "Which groups help: main effects, and the Cumulative Residual Effect", _cre_text(result),
            files["cre.md"].read_text(),
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
                f"images (clusters); models and target ranks are fixed effects; {INFERENCE_TEXT[fit.inference]}; "
                f"{coding}; R² = {fit.r_squared:.3f}. Holm p: within the main effects and within the interactions. "
                "No classical ANOVA table: its iid F-tests treat the correlated rows of one image as independent "
                "and are not valid under clustering.\n")
        parts += _section("Factorial effects (OLS)", text, files["effects.md"].read_text(),
                          f"\n![Effects]({files['effects.png'].name})\n")
        if fit.interactions:
            interactions = fit.effects[fit.effects["kind"] == "interaction"]
            found = interactions[interactions["p_holm"] < ALPHA]
            listed = ", ".join(f"{r.label} ({r.estimate:+.4f}, Holm p = {fmt_p(r.p_holm)})"
                               for r in found.itertuples()) or "none"
            parts.append(f"\nInteractions with Holm-corrected p < {ALPHA}: {listed}.\n")
    if "units_by_model.md" in files:
        body = ["*Exploratory*: these slices are looked at after the fact, with no correction across them; the "
                "pooled tables above answer the questions. Each slice is clustered by image within it.\n",
                "Units each model contributes:\n", files["units_by_model.md"].read_text()]
        for dimension, heading in (("model", "per model"), ("target_rank", "per target rank (1 = top-1 class)")):
            if f"cre_by_{dimension}.md" in files:
                body += [f"\nCRE {heading}, with 95% CIs (each subset's own cluster bootstrap over its images):\n",
                         files[f"cre_by_{dimension}.md"].read_text(),
                         f"\nEffects {heading}: {_link(result, f'effects_by_{dimension}.md')}, "
                         f"{_link(result, f'effects_by_{dimension}.csv')}.\n"]
        if "cre_by_model.png" in files:
            body.append(f"\n![CRE by model]({files['cre_by_model.png'].name})\n")
        parts += _section("Study: by model and by target rank (exploratory)", *body)
    if "metacam_vs_single.md" in files:
        parts += _section("MetaCAM versus single CAMs",
                          f"Mean [95% CI] over units of {spec.source + ' ' if spec.source else ''}"
                          f"{spec.definition.label} ({spec.direction}).\n", files["metacam_vs_single.md"].read_text())
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
    write_tables(result)
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
        f"{dataset.n_clusters} clusters (images) ({per_model})",
        f"groups ({groups.size}, from {dataset.groups_source}): {', '.join(groups.names)}; "
        f"comparator {groups.combo_name(groups.comparator)}",
        f"score: {spec.label}, {spec.direction}",
    ]
    lines += [f"WARNING: {w}" for w in result.warnings]
    lines += [f"note: {note}" for note in result.notes]
    if result.headline is not None:
        lines.append("")
        for row in result.headline.itertuples(index=False):
            needed = f"{int(row.closest_n_needed)}" if np.isfinite(row.closest_n_needed) else "n/a"
            lines.append(f"{row.score}: beats every single CAM? {row.answer} ({row.singles_beaten}/{row.singles} "
                         f"beaten, {row.n_clusters} images), {row.controls_beaten}/{row.controls} controls; closest "
                         f"{row.closest_single} {fmt_ci(row.closest_difference, row.closest_ci_low, row.closest_ci_high, 4)}"
                         f" p {fmt_p(row.closest_p)}, mde {fmt(row.closest_mde, 4)}, n_needed {needed}")
    if result.selection is not None:
        for row in result.selection.itertuples(index=False):
            lines.append(f"{row.score}, chosen out of sample ({row.fold_rule}): combination − single "
                         f"{fmt_ci(row.mean_difference, row.ci_low, row.ci_high, 4)} p {fmt_p(row.p)}")
    if result.cre_table is not None:
        lines.append("")
        width = max(12, *(len(n) + 2 for n in groups.names))
        lines.append(f"{'group':<{width}}{'CRE':>10}   {'95% CI':<20}{'beta':>9}{'OLS':>9}  effect")
        for row in result.cre_table.itertuples():
            interval = (f"[{row.ci_low:+.4f}, {row.ci_high:+.4f}]" if np.isfinite(row.ci_low) else "n/a")
            lines.append(f"{row.group:<{width}}{row.cre:>+10.4f}   {interval:<20}{row.beta:>+9.4f}"
                         f"{row.ols_main_effect:>+9.4f}  {row.effect}")
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
