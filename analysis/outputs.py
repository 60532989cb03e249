"""Every file ``metacam analyze`` may write, with what it holds (report.md lists them).

Stale files from an earlier run (including names older versions wrote) are
removed before writing, so the folder always matches report.md.
"""

from __future__ import annotations

OUTPUTS: dict[str, str] = {
    "report.md": "the report: the held-out answer first, then every table and figure below",
    "headline.csv": "per headline metric: does the pre-specified MetaCAM comparator beat every single CAM "
                    "(intersection–union answer, images, the closest single CAM with its difference, CI, p, mde and "
                    "n_needed) and the controls (Holm)",
    "comparisons.csv": "paired comparisons (by image) of the comparator with each single CAM and control, per "
                       "metric: means, mean difference with t CI, images W/T/L, Wilcoxon p with its method and "
                       "floor, family and adjusted p, rank-biserial r, mde, n_needed, verdict",
    "paper_comparison.csv": "the paper's comparison (in-sample adaptive MetaCAM − each plain single CAM) split into "
                            "optimism, thresholding and ensembling, each with its CI, and which carries it",
    "selection.csv": "cross-validated over images: the combination chosen on the other folds minus the single CAM "
                     "chosen the same way, with CI, p, and how often each was chosen",
    "selection_folds.csv": "per fold: the combination and single chosen on the training images and their training "
                           "and test means",
    "gain_split.csv": "the comparator's gain over the best single CAM (chosen out of sample) split into ensembling "
                      "(plain vs plain) and thresholding (adaptive vs plain), per metric, with CIs",
    "optimism.csv": "in-sample minus held-out ROAD per combination, single CAM and control: at k* (optimism), "
                    "at k = 100 (plain gap) and their difference (excess), with CIs",
    "metacam_vs_single.csv": "mean ± 95% CI of the comparator, the in-sample best combination, each single CAM "
                             "and control, plain (k = 100) and adaptive (k*)",
    "cre.csv": "per group: CRE (the paper's ranking summary) with its cluster-bootstrap 95% CI and rank; whether "
               "it helps from β (on − off) and the OLS main effect with their CIs and Holm p; per-unit CRE spread",
    "cre_identity.csv": "the check of CRE_g = 2^(G-1)·(mean − median) + 2^(G-2)·β_g per group",
    "cre_curves.csv": "the CRE plot's data: experiments best first and each group's running sum",
    "cre_per_unit.csv": "CRE within each unit (model, image, target)",
    "effects.csv": "factorial OLS effects (model and target-rank fixed effects, clustered by image): estimate, SE, "
                   "df, 95% CI, p, Holm p",
    "experiments.csv": "every experiment ranked best first: mean with 95% CI, residual, 95% rank interval",
    "units_by_model.csv": "units, images and target ranks each model contributes",
    "cre_by_model.csv": "exploratory: CRE per group within each model, with CIs",
    "effects_by_model.csv": "exploratory: factorial effects within each model (clustered by image within it)",
    "cre_by_target_rank.csv": "exploratory: CRE per group within each target rank (1 = top-1 class), with CIs",
    "effects_by_target_rank.csv": "exploratory: factorial effects within each target rank",
    "failed_rows.csv": "rows with status other than 'ok', left out of every number",
    "cre_plot.png": "the CRE plot: residuals, running sums per group, on/off matrix",
    "cre_per_unit.png": "per-unit CRE per group (boxes) with the pooled CRE and its CI",
    "effects.png": "factorial effects with 95% CIs",
    "cre_by_model.png": "small multiples: the CRE running sums pooled and per model",
}
TABLES_WITH_MARKDOWN = {name.removesuffix(".csv") for name in OUTPUTS if name.endswith(".csv")} - {
    "cre_curves", "cre_per_unit", "failed_rows"}
LEGACY_NAMES = ("anova.csv", "anova.md", "win_rate.csv", "win_rate.md", "cre_vs_ols.csv", "cre_vs_ols.md")
OUTPUT_NAMES: tuple[str, ...] = (
    *OUTPUTS, *(f"{stem}.md" for stem in sorted(TABLES_WITH_MARKDOWN)), *LEGACY_NAMES,
)
