"""The report's first section: the held-out answer to the paper's question, in words.

It states the decision rule in one sentence, gives the intersection–union answer per
metric (or says that the images cannot make p < α attainable, and how many it needs),
the closest single CAM with its CI, p, minimum detectable difference and the images
needed, the controls, the paper's own comparison decomposed, and the out-of-sample
choice of the best combination.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from metacam.analysis.design import SINGLE
from metacam.analysis.paper import COMPONENTS
from metacam.analysis.settings import ALPHA, LEVEL, POWER
from metacam.analysis.tables import fmt_ci, fmt_p

if TYPE_CHECKING:
    from metacam.analysis.pipeline import AnalysisResult

RULE = (f"**Decision rule.** MetaCAM beats every single CAM on a metric when each of its paired comparisons "
        f"with a single CAM is *better* at α = {ALPHA} — the {LEVEL:.0%} t interval of the mean per-image "
        f"difference lies on the favourable side of 0 and the two-sided Wilcoxon signed-rank p < {ALPHA} — with "
        "no adjustment across the singles (an intersection–union test: the claim needs every comparison), "
        "while the null controls are a separate family, Holm-corrected.")


def _number(value: object, digits: int = 4) -> str:
    return "n/a" if not isinstance(value, (int, float, np.number)) or not np.isfinite(value) else f"{value:.{digits}g}"


def _images(value: object) -> str:
    return "n/a" if not isinstance(value, (int, float, np.number)) or not np.isfinite(value) else f"{int(value):,}"


def _metric_line(result: AnalysisResult, row: pd.Series) -> str:
    """One metric's answer: the rule's outcome, the closest single with its power, the controls."""
    comparisons = result.comparisons
    assert comparisons is not None
    rows = comparisons[comparisons["metric"] == row["metric"]]
    metric = result.dataset.metric(str(row["metric"]))
    mine = float(rows.loc[rows["n_clusters"].idxmax(), "mine_mean"])
    n, singles = int(row["n_clusters"]), int(row["singles"])
    head = (f"- **{row['score']}** ({'higher' if metric.sign > 0 else 'lower'} is better; MetaCAM mean "
            f"{mine:.4f} over {n} images): ")
    answer = row["answer"]
    if not singles:
        return head + "no single CAM methods to compare with." + _controls_text(rows, row)
    if answer == "yes":
        text = f"**Yes** — every one of the {singles} single CAMs is beaten (largest p = {fmt_p(row['p_iut'])})."
    elif answer == "no":
        worse = rows[(rows["opponent_kind"] == SINGLE) & (rows["verdict"] == "worse")]["opponent"]
        text = (f"**No** — {len(worse)} single CAM(s) significantly better ({', '.join(worse)}); it beats "
                f"{row['singles_beaten']} of {singles}.")
    elif answer == "unattainable":
        images = f"{n} image{'' if n == 1 else 's'}"
        text = (f"**Cannot be shown with {images}** — the exact signed-rank test's smallest two-sided p with "
                f"{images} is {fmt_p(row['p_floor'])} ≥ {ALPHA}, so no comparison can come out *better*; the "
                f"rule needs at least {int(row['images_for_rule'])} images (it beats {row['singles_beaten']} of "
                f"{singles} now).")
    else:
        text = (f"**Not shown** — it beats {row['singles_beaten']} of {singles} single CAMs and none is "
                "significantly better.")
    needed = row["closest_n_needed"]
    need_text = (f"detecting the observed difference would take about {_images(needed)} images"
                 if np.isfinite(needed) else
                 "no number of images would show MetaCAM ahead of it at the observed difference (it is not "
                 "in MetaCAM's favour)")
    detects = (f"with {n} images and this spread (sd of the per-image differences "
               f"{_number(row['closest_sd'], 3)}) the study detects a difference of {_number(row['closest_mde'], 3)} "
               f"with {POWER:.0%} power" if np.isfinite(row["closest_mde"]) else
               f"with {n} image{'' if n == 1 else 's'} no difference is detectable (the test needs at least "
               f"{int(row['images_for_rule'])})")
    text += (f" Closest single: {row['closest_single']}, MetaCAM − it = "
             f"{fmt_ci(row['closest_difference'], row['closest_ci_low'], row['closest_ci_high'], 4)}, "
             f"p = {fmt_p(row['closest_p'])}. Power: {detects}; {need_text}.")
    return head + text + _controls_text(rows, row)


def _controls_text(rows: pd.DataFrame, row: pd.Series) -> str:
    if not row["controls"]:
        return " No null controls in the dataset."
    controls = rows[rows["opponent_kind"] != SINGLE]
    listed = "; ".join(f"{c.opponent} {fmt_ci(c.mean_difference, c.ci_low, c.ci_high, 4)}, Holm p "
                       f"{fmt_p(c.p_adjusted)} ({c.verdict})" for c in controls.itertuples())
    beaten = "beats all" if row["beats_controls"] else f"beats {row['controls_beaten']}"
    return f" Against the {row['controls']} null control(s) (Holm within the controls): {beaten} — {listed}."


def paper_lines(result: AnalysisResult) -> list[str]:
    """The paper's comparison for the analysis's metric, decomposed, as a short paragraph and table."""
    table = result.paper_comparison
    if table is None:
        return []
    metric = result.spec.metric if result.spec.metric in set(table["metric"]) else str(table["metric"].iloc[0])
    rows = table[table["metric"] == metric]
    sign = result.dataset.metric(metric).sign
    holds = int((np.minimum(sign * rows["paper_ci_low"], sign * rows["paper_ci_high"]) > 0).sum())
    ahead = int((np.minimum(sign * rows["ensembling_ci_low"], sign * rows["ensembling_ci_high"]) > 0).sum())
    carried = rows["carried_by"].value_counts()
    lines = [
        f"**The paper's comparison** ({rows['score'].iloc[0]}; in-sample adaptive MetaCAM against each single CAM "
        f"plain, k = 100, as the paper scored it): MetaCAM is ahead of {holds} of {len(rows)} single CAMs with the CI "
        f"above 0. Each gap splits exactly into *optimism* (in-sample − held-out), *thresholding* (what adaptive "
        f"thresholding is worth to the single, held-out) and *ensembling* (MetaCAM − the single like for like, "
        f"adaptive vs adaptive, held-out: the comparison the decision rule uses, ahead of {ahead} of {len(rows)}). "
        "The gap is carried by: " + ", ".join(f"{name} for {count}" for name, count in carried.items()) + ".",
        "",
        "| single CAM | paper's gap | optimism | thresholding | ensembling | carried by |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows.itertuples():
        cells = [fmt_ci(r.paper_gap, r.paper_ci_low, r.paper_ci_high)] + [
            fmt_ci(getattr(r, c), getattr(r, f"{c}_ci_low"), getattr(r, f"{c}_ci_high")) for c in COMPONENTS]
        lines.append(f"| {r.single} | " + " | ".join(cells) + f" | **{r.carried_by}** |")
    return lines


def selection_lines(result: AnalysisResult) -> list[str]:
    """The out-of-sample choice: the MetaCAM you would pick against the single you would pick."""
    table = result.selection
    if table is None:
        return []
    lines = []
    for r in table.itertuples():
        lines.append(
            f"- **{r.score}** ({r.fold_rule} over {r.n_clusters} images, seed {r.fold_seed}): the combination chosen "
            f"on the other folds minus the single CAM chosen the same way = "
            f"{fmt_ci(r.mean_difference, r.ci_low, r.ci_high, 4)}, p = {fmt_p(r.p)} ({r.verdict}). Chosen "
            f"combinations: {r.combos_chosen}. Chosen singles: {r.singles_chosen}.")
    return lines


def answer_lines(result: AnalysisResult) -> list[str]:
    """The report's first section, as Markdown lines."""
    if result.headline is None or result.comparisons is None:
        return ["No answer: " + ("the pre-specified comparator is not in the dataset."
                                 if not result.comparator_present else
                                 "there are no single CAM methods or controls to compare with.")]
    spec, dataset = result.spec, result.dataset
    source = "in-sample (--in-sample: optimistic)" if not spec.heldout else "held-out"
    groups = dataset.groups
    lines = [
        f"MetaCAM = the pre-specified comparator `{groups.combo_name(groups.comparator)}` (every non-control group, "
        f"fixed before looking at the data), {spec.mode} scores, {source} where a metric has two draws. Images are "
        f"the sampled units: {dataset.n_clusters} images (clusters; the same photo under each of "
        f"{dataset.units['model'].nunique()} model(s) is one cluster), each image's differences averaged over its "
        "models and targets first. Intervals and tests are two-sided.",
        "",
        RULE,
        "",
    ]
    lines += [_metric_line(result, row) for _, row in result.headline.iterrows()]
    paper = paper_lines(result)
    if paper:
        lines += ["", *paper]
    selection = selection_lines(result)
    if selection:
        lines += ["", "**Choosing out of sample** (the practical claim \"use the best MetaCAM\"): on each fold's "
                      "images, the combination and the single CAM chosen on the other images:", *selection]
    mode = spec.mode if spec.mode in ("plain", "adaptive") else "adaptive"
    if result.best is not None and result.paper is not None:
        best = result.paper[result.paper["entry"].str.startswith("MetaCAM best in-sample")]
        if len(best):
            b = best.iloc[0]
            lines += ["", f"The best combination *chosen in-sample* is `{groups.combo_name(result.best)}` (combo "
                          f"{result.best}); on {spec.source or 'these'} {mode} scores it has "
                          f"{fmt_ci(b[f'{mode}_mean'], b[f'{mode}_ci_low'], b[f'{mode}_ci_high'], 4)} — it was "
                          "selected on the same draw that chose k*, so no answer uses it."]
    return lines
