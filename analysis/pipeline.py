"""``analyze``: read the dataset, compute everything, write tables, figures and report.md.

Everything is regenerated from the Parquet dataset alone. Partial sweeps run
on the experiments present and say so; with a single experiment (or none)
the parts that need a comparison between experiments are skipped and the
report states why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from metacam.analysis.cre import (
    N_COMBOS,
    cre,
    cre_curves,
    cre_ols_identity,
    cre_per_unit,
    experiment_summary,
)
from metacam.analysis.dataset import Dataset, load_dataset
from metacam.analysis.errors import AnalysisError
from metacam.analysis.report import write_outputs
from metacam.analysis.scores import Scores, ScoreSpec, parse_score, select_scores
from metacam.analysis.stats import FactorialFit, fit_factorial
from metacam.analysis.tables import id_ranges, metacam_vs_single, win_rates
from metacam.groups import DEFAULT_GROUPS, GROUP_KEYS

# Every file analyze may write; stale ones from an earlier run are removed first
# so the folder always matches report.md.
OUTPUT_NAMES = (
    "report.md", "cre.csv", "cre.md", "cre_curves.csv", "cre_per_unit.csv", "cre_vs_ols.csv",
    "cre_vs_ols.md", "effects.csv", "effects.md", "anova.csv", "anova.md", "experiments.csv",
    "experiments.md", "metacam_vs_single.csv", "metacam_vs_single.md", "win_rate.csv",
    "win_rate.md", "failed_rows.csv", "cre_plot.png", "cre_per_unit.png", "effects.png",
)


@dataclass
class AnalysisResult:
    """Everything :func:`analyze` computed; ``None`` marks a part the data did not allow.

    ``notes`` holds the plain-language statements about degraded output
    (partial sweep, excluded rows, skipped parts) that report.md and stdout show.
    """

    out_dir: Path
    report: Path
    dataset: Dataset
    spec: ScoreSpec
    scores: Scores
    present: list[int]
    missing: list[int]
    experiments: pd.DataFrame | None = None
    cre: pd.Series | None = None
    cre_table: pd.DataFrame | None = None
    curves: pd.DataFrame | None = None
    per_unit: pd.DataFrame | None = None
    identity: pd.DataFrame | None = None
    identity_facts: dict | None = None
    fit_main: FactorialFit | None = None
    fit: FactorialFit | None = None
    best: int | None = None
    paper: pd.DataFrame | None = None
    wins: pd.DataFrame | None = None
    adaptive: Scores | None = None
    plain: Scores | None = None
    notes: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


def _other_scores(dataset: Dataset, main: Scores, mode: str, notes: list[str]) -> Scores | None:
    """The adaptive or plain score for the paper table, or None (with a note) if absent."""
    spec = main.spec.with_mode(mode)
    if spec == main.spec:
        return main
    try:
        return select_scores(dataset, spec)
    except AnalysisError as error:
        notes.append(f"The MetaCAM-vs-single table has no {mode} column: {error}.")
        return None


def compute(dataset: Dataset, spec: ScoreSpec, *, interactions: bool = False, out_dir: Path) -> AnalysisResult:
    """All numbers of the analysis (no files written)."""
    scores = select_scores(dataset, spec)
    if scores.metacam.empty and scores.singles.empty:
        raise AnalysisError(f"sweep '{dataset.sweep_id}' has no usable {spec.label} scores; "
                            "every selected row has a null score")
    present = sorted(int(c) for c in scores.metacam["combo_id"].unique())
    missing = sorted(set(range(N_COMBOS)) - set(present))
    result = AnalysisResult(out_dir=out_dir, report=out_dir / "report.md", dataset=dataset, spec=spec,
                            scores=scores, present=present, missing=missing)
    notes = result.notes
    if not present:
        notes.append("No MetaCAM experiments are in the dataset, only single CAM methods: "
                     "there is no CRE, CRE plot, factorial model or ranking of experiments.")
    elif missing:
        notes.append(f"Partial sweep: {len(present)} of {N_COMBOS} experiments present; missing combo_id "
                     f"{id_ranges(missing)}. Everything below uses the experiments present.")
    if len(dataset.failed):
        counts = dataset.failed["status"].fillna("(null)").value_counts()
        listed = "; ".join(f"{status}: {n}" for status, n in counts.items())
        units = dataset.failed[["model", "image_id", "target_class"]].drop_duplicates()
        examples = ", ".join(f"{u.model}/{u.image_id}/{u.target_class}" for u in units.head(3).itertuples())
        notes.append(f"Excluded {len(dataset.failed)} rows with status other than 'ok' ({listed}), "
                     f"from {len(units)} unit(s) (e.g. {examples}{', ...' if len(units) > 3 else ''}); "
                     "all are listed in failed_rows.csv.")
    if scores.n_null:
        notes.append(f"Excluded {scores.n_null} rows with status 'ok' but a null {spec.column}.")
    for kind, n in dataset.other_kinds.items():
        notes.append(f"Ignored {n} rows of unknown kind '{kind}'.")

    if present:
        result.experiments = experiment_summary(scores.metacam, spec.sign)
        result.best = int(result.experiments["combo_id"].iloc[0])
    if len(present) == 1:
        notes.append(f"Only one MetaCAM experiment (combo {present[0]}) is present: CRE, the CRE plots and the "
                     "factorial model need at least two experiments and are not produced.")
    if len(present) >= 2:
        assert result.experiments is not None
        means = result.experiments.set_index("combo_id")["mean"].sort_index()
        result.cre = cre(means)
        result.curves = cre_curves(means, spec.sign)
        result.per_unit = cre_per_unit(scores.metacam)
        result.identity, result.identity_facts = cre_ols_identity(means)
        result.fit_main = fit_factorial(scores.metacam, interactions=False)
        result.fit = fit_factorial(scores.metacam, interactions=True) if interactions else result.fit_main
        result.cre_table = _cre_table(result)
        if result.fit.dropped:
            notes.append("Terms the experiments present cannot identify were left out of the OLS model: "
                         + ", ".join(result.fit.dropped) + ".")
        if result.fit.effects["std_err"].isna().all():
            notes.append("The OLS standard errors are not available (too few units or a perfect fit): "
                         "estimates are shown without confidence intervals.")
        if result.fit.n_clusters < 2:
            notes.append("Only one unit: OLS standard errors assume independent rows (no clustering possible).")

    result.adaptive = _other_scores(dataset, scores, "adaptive", notes)
    result.plain = _other_scores(dataset, scores, "plain", notes)
    frames = {mode: None if s is None else (s.metacam, s.singles)
              for mode, s in (("adaptive", result.adaptive), ("plain", result.plain))}
    result.paper = metacam_vs_single(frames["adaptive"], frames["plain"], result.best, spec.sign)
    adaptive = result.adaptive
    if result.best is not None and adaptive is not None:
        if adaptive.singles.empty:
            notes.append("No single CAM methods in the dataset: no win rate of MetaCAM over single methods.")
        elif (adaptive.metacam["combo_id"] == result.best).any():
            result.wins = win_rates(adaptive.metacam, adaptive.singles, result.best, spec.sign)
    return result


def _cre_table(result: AnalysisResult) -> pd.DataFrame:
    """CRE per group with the main-effect contrast and the spread of per-unit CRE."""
    per_unit, identity = result.per_unit, result.identity
    assert per_unit is not None and identity is not None and result.cre is not None
    assert result.fit_main is not None
    sign = result.spec.sign
    ols = result.fit_main.effects.set_index("term")["estimate"]
    table = pd.DataFrame({
        "group": list(GROUP_KEYS),
        "members": [", ".join(DEFAULT_GROUPS[g]) for g in GROUP_KEYS],
        "cre": result.cre.to_numpy(),
        "rank": (-sign * result.cre).rank(method="min").astype(int).to_numpy(),
        "n_on": identity["n_on"].to_numpy(),
        "beta": identity["beta"].to_numpy(),
        "ols_main_effect": [ols.get(f"g_{g}", np.nan) for g in GROUP_KEYS],
        "unit_cre_median": per_unit[list(GROUP_KEYS)].median().to_numpy(),
        "unit_cre_q25": per_unit[list(GROUP_KEYS)].quantile(0.25).to_numpy(),
        "unit_cre_q75": per_unit[list(GROUP_KEYS)].quantile(0.75).to_numpy(),
        "unit_share_helps": (sign * per_unit[list(GROUP_KEYS)] > 0).mean().to_numpy(),
    })
    return table


def analyze(
    results_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    score: str = "adaptive",
    metric: str = "combined",
    interactions: bool = False,
    sweep_id: str | None = None,
) -> AnalysisResult:
    """Analyse the results dataset under ``results_dir`` and write everything to ``out_dir``.

    Args:
        results_dir: folder of Parquet files (nested folders are read too).
        out_dir: where tables, figures and report.md go; default
            ``results_dir/analysis`` (never read back as data).
        score: ``adaptive``, ``plain`` or ``k=K``.
        metric: ``combined``, ``morf`` or ``lerf``.
        interactions: add all two-way interactions to the OLS model.
        sweep_id: the sweep to analyse when the dataset holds several.

    Raises:
        AnalysisError: any problem with the input or the output folder.
    """
    root = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else root / "analysis"
    spec = parse_score(score, metric)
    keep_k = sorted({100.0} | ({spec.k} if spec.k is not None else set()))
    dataset = load_dataset(root, sweep_id=sweep_id, keep_k=keep_k, exclude=[out])
    result = compute(dataset, spec, interactions=interactions, out_dir=out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in OUTPUT_NAMES:
            (out / name).unlink(missing_ok=True)
        write_outputs(result)
    except OSError as error:
        raise AnalysisError(f"cannot write the analysis to '{out}' ({error.strerror or error}); "
                            "choose a writable folder with --out") from None
    return result
