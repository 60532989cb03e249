"""``analyze``: read the dataset, compute everything, write tables, figures and report.md.

Everything is regenerated from the Parquet dataset alone. Partial sweeps run
on the experiments present and say so; with a single experiment (or none)
the parts that need a comparison between experiments are skipped and the
report states why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from metacam.analysis.bootstrap import ClusterBootstrap
from metacam.analysis.cre import cre_curves, cre_identity, cre_per_unit
from metacam.analysis.dataset import DEFAULT_TIES, Dataset, load_dataset
from metacam.analysis.errors import AnalysisError
from metacam.analysis.evidence import (
    best_combo,
    comparator_comparisons,
    entries,
    gain_split,
    headline,
    metacam_vs_single,
    optimism_table,
    real_singles,
)
from metacam.analysis.experiments import ExperimentEstimates, estimate_experiments, experiment_table
from metacam.analysis.factorial import FactorialFit, fit_factorial
from metacam.analysis.metrics import DEFAULT_METRIC, Metric, headline_metrics
from metacam.analysis.outputs import OUTPUT_NAMES
from metacam.analysis.paired import verdict
from metacam.analysis.paper import paper_comparison
from metacam.analysis.report import write_outputs
from metacam.analysis.scores import Scores, ScoreSpec, parse_score, select_scores
from metacam.analysis.selection import cross_validated
from metacam.analysis.settings import (
    DEFAULT_FOLD_SEED,
    DEFAULT_FOLDS,
    DEFAULT_REPLICATES,
    DEFAULT_SEED,
    MIN_CLUSTERS,
)
from metacam.analysis.study import (
    Subset,
    cre_by,
    curves_by,
    effects_by,
    few_cluster_subsets,
    subsets,
)
from metacam.analysis.tables import id_ranges


class ScoreBank:
    """Scores per ScoreSpec, selected once; None (with the reason kept) where the data lack them."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._cache: dict[ScoreSpec, tuple[Scores | None, str]] = {}

    @staticmethod
    def _key(spec: ScoreSpec) -> ScoreSpec:
        # A one-draw metric reads the same column in-sample and held-out: select it once.
        return spec if spec.definition.two_draws else spec.held_out()

    def get(self, spec: ScoreSpec) -> Scores | None:
        spec = self._key(spec)
        if spec not in self._cache:
            try:
                scores: Scores | None = select_scores(self.dataset, spec)
                reason = ""
                if scores is not None and scores.empty:
                    scores, reason = None, f"every selected row has a null {spec.column}"
            except AnalysisError as error:
                scores, reason = None, str(error)
            self._cache[spec] = (scores, reason)
        return self._cache[spec][0]

    def why(self, spec: ScoreSpec) -> str:
        self.get(spec)
        return self._cache[self._key(spec)][1]


@dataclass
class AnalysisResult:
    """Everything :func:`analyze` computed; ``None`` marks a part the data did not allow.

    ``notes`` holds plain-language statements about degraded output (partial
    sweep, excluded rows, skipped parts, stated defaults); ``warnings`` the
    statements about inference that the reader must see (few clusters).
    """

    out_dir: Path
    report: Path
    dataset: Dataset
    spec: ScoreSpec
    scores: Scores
    replicates: int
    seed: int
    folds: int
    fold_seed: int
    present: list[int]
    missing: list[int]
    estimates: ExperimentEstimates | None = None
    experiments: pd.DataFrame | None = None
    cre: pd.Series | None = None
    cre_table: pd.DataFrame | None = None
    curves: pd.DataFrame | None = None
    per_unit: pd.DataFrame | None = None
    identity: pd.DataFrame | None = None
    identity_facts: dict | None = None
    fit_main: FactorialFit | None = None
    fit: FactorialFit | None = None
    comparator_present: bool = False
    best: int | None = None
    paper: pd.DataFrame | None = None
    comparisons: pd.DataFrame | None = None
    headline: pd.DataFrame | None = None
    gains: pd.DataFrame | None = None
    selection: pd.DataFrame | None = None
    selection_folds: pd.DataFrame | None = None
    paper_comparison: pd.DataFrame | None = None
    optimism: pd.DataFrame | None = None
    optimism_spec: ScoreSpec | None = None
    units_by_model: pd.DataFrame | None = None
    study: dict[str, pd.DataFrame] = field(default_factory=dict)
    panels: list[tuple[str, pd.DataFrame, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


def _dataset_notes(result: AnalysisResult) -> None:
    dataset, notes = result.dataset, result.notes
    groups = dataset.groups
    if dataset.groups_source == "columns":
        notes.append(f"The files record no group definition (Parquet metadata): groups were read from the g_* "
                     f"columns in schema order ({', '.join(groups.names)}), none treated as a control, so the "
                     f"comparator is all groups (combo {groups.comparator}).")
    if dataset.ties_source.startswith("not recorded"):
        notes.append(f"The ROAD tie rule is not recorded (no road_ties or road_mode column, no metadata): "
                     f"assumed '{DEFAULT_TIES}'.")
    if not result.present:
        notes.append("No MetaCAM experiments are in the dataset, only single CAM methods or controls: there is "
                     "no CRE, CRE plot, factorial model or ranking of experiments.")
    elif result.missing:
        notes.append(f"Partial sweep: {len(result.present)} of {groups.n_combos} experiments present; missing "
                     f"combo_id {id_ranges(result.missing)}. Everything below uses the experiments present.")
    if len(dataset.failed):
        counts = dataset.failed["status"].fillna("(null)").value_counts()
        listed = "; ".join(f"{status}: {n}" for status, n in counts.items())
        units = dataset.failed[["model", "image_id", "target_class"]].drop_duplicates()
        examples = ", ".join(f"{u.model}/{u.image_id}/{u.target_class}" for u in units.head(3).itertuples())
        notes.append(f"Excluded {len(dataset.failed)} rows with status other than 'ok' ({listed}), "
                     f"from {len(units)} unit(s) (e.g. {examples}{', ...' if len(units) > 3 else ''}); "
                     "all are listed in failed_rows.csv.")
    if result.scores.n_null:
        notes.append(f"Excluded {result.scores.n_null} rows with status 'ok' but a null {result.spec.column}.")
    for kind, n in dataset.other_kinds.items():
        notes.append(f"Ignored {n} rows of unknown kind '{kind}'.")


def _units_by_model(dataset: Dataset) -> pd.DataFrame:
    """model, n_units, n_images (the same photos under other models are the same clusters),
    target_ranks (distinct), share of all units."""
    units = dataset.units
    table = units.groupby("model", sort=True).agg(
        n_units=("cluster", "size"), n_images=("cluster", "nunique"),
        target_ranks=("target_rank", lambda r: r.nunique()))
    table["share"] = table["n_units"] / len(units)
    return table.reset_index()


def _cluster_warnings(result: AnalysisResult, parts: list[Subset]) -> None:
    n = result.dataset.n_clusters
    if n < 2:
        result.warnings.append(
            "Only one image carries the data: no confidence interval or test can account for the correlation "
            "of its rows. CIs are not available and OLS standard errors assume independent rows; add images.")
    elif n < MIN_CLUSTERS:
        result.warnings.append(
            f"Only {n} images (clusters) carry the data: with fewer than {MIN_CLUSTERS} clusters, "
            "cluster-robust inference is fragile. Paired comparisons use the t interval and the exact "
            "signed-rank test over images; CIs of means use the cluster bootstrap's standard error with the "
            "small-sample t correction (Bell–McCaffrey degrees of freedom where images hold unequal numbers of "
            "units); factorial effects use CR2 standard errors with Bell–McCaffrey degrees of freedom. Treat "
            "p-values near 0.05 as inconclusive, and add images.")
    small = few_cluster_subsets(parts)
    if small:
        listed = ", ".join(f"{p.label} ({p.n_clusters})" for p in small[:6]) + (" ..." if len(small) > 6 else "")
        result.warnings.append(f"Subsets with fewer than {MIN_CLUSTERS} clusters (CR2 / corrected bootstrap "
                               f"used there): {listed}.")


def _experiment_parts(result: AnalysisResult, boot: ClusterBootstrap, interactions: bool) -> None:
    dataset, spec, scores = result.dataset, result.spec, result.scores
    groups, clusters = dataset.groups, dataset.units["cluster"].to_numpy()
    if not result.present:
        return
    result.estimates = estimate_experiments(scores.metacam, clusters, groups, boot, spec.sign)
    result.experiments = experiment_table(result.estimates, scores.metacam, groups, spec.sign)
    if len(result.present) == 1:
        result.notes.append(f"Only one MetaCAM experiment (combo {result.present[0]}) is present: CRE, the CRE "
                            "plots and the factorial model need at least two experiments and are not produced.")
        return
    means = pd.Series(result.estimates.means.point, index=result.estimates.combos)
    result.cre = pd.Series(result.estimates.cre.point, index=pd.Index(groups.names, name="group"), name="cre")
    result.curves = cre_curves(means, groups.names, spec.sign)
    result.per_unit = cre_per_unit(scores.metacam, groups.names)
    result.identity, result.identity_facts = cre_identity(means, groups.names)
    result.fit_main = fit_factorial(scores.metacam, dataset.units, groups.names, interactions=False)
    result.fit = (fit_factorial(scores.metacam, dataset.units, groups.names, interactions=True)
                  if interactions else result.fit_main)
    result.cre_table = _cre_table(result)
    if result.fit.dropped:
        result.notes.append("Terms the data cannot identify were left out of the OLS model: "
                            + ", ".join(result.fit.dropped) + ".")


def _cre_table(result: AnalysisResult) -> pd.DataFrame:
    """CRE per group with its CI; whether the group helps, from β_g and the OLS main effect; the
    spread of per-unit CRE."""
    per_unit, identity, estimates = result.per_unit, result.identity, result.estimates
    assert per_unit is not None and identity is not None and estimates is not None
    assert result.fit_main is not None and result.cre is not None
    groups, sign = result.dataset.groups, result.spec.sign
    names = list(groups.names)
    low, high = estimates.cre.interval()
    beta_low, beta_high = estimates.beta.interval()
    ols = result.fit_main.effects.set_index("term").reindex(list(groups.columns))
    effect = {"better": "helps", "worse": "hurts"}
    return pd.DataFrame({
        "group": names,
        "members": [", ".join(m) if m else "(unknown)" for m in groups.members],
        "control": list(groups.controls),
        "n_clusters": result.dataset.n_clusters,
        "cre": result.cre.to_numpy(),
        "ci_low": low,
        "ci_high": high,
        "rank": (-sign * result.cre).rank(method="min").astype(int).to_numpy(),
        "n_on": identity["n_on"].to_numpy(),
        "beta": estimates.beta.point,
        "beta_ci_low": beta_low,
        "beta_ci_high": beta_high,
        "ols_main_effect": ols["estimate"].to_numpy(),
        "ols_ci_low": ols["ci_low"].to_numpy(),
        "ols_ci_high": ols["ci_high"].to_numpy(),
        "ols_p_holm": ols["p_holm"].to_numpy(),
        "effect": [effect.get(verdict(sign, a, b, p), "no evidence") for a, b, p in
                   zip(ols["ci_low"], ols["ci_high"], ols["p_holm"], strict=True)],
        "unit_cre_median": per_unit[names].median().to_numpy(),
        "unit_cre_q25": per_unit[names].quantile(0.25).to_numpy(),
        "unit_cre_q75": per_unit[names].quantile(0.75).to_numpy(),
        "unit_share_favourable": (sign * per_unit[names] > 0).mean().to_numpy(),
    })


def _metrics_compared(result: AnalysisResult) -> list[Metric]:
    """The analysis's own metric, then every headline metric of the dataset."""
    return list(dict.fromkeys([result.spec.definition, *headline_metrics(result.dataset.metrics)]))


def _evidence(result: AnalysisResult, bank: ScoreBank, boot: ClusterBootstrap) -> None:
    dataset, spec, notes = result.dataset, result.spec, result.notes
    groups = dataset.groups
    clusters, n_clusters = dataset.units["cluster"].to_numpy(), dataset.n_clusters
    result.comparator_present = groups.comparator in result.present
    if result.present and not result.comparator_present:
        notes.append(f"The pre-specified comparator (combo {groups.comparator}, {groups.combo_name(groups.comparator)}) "
                     "is not in the dataset: no paired comparisons, gain split, paper comparison or headline answer.")
    chooser = bank.get(spec.in_sample()) or result.scores
    result.best = best_combo(chooser, spec.sign)
    modes = {mode: bank.get(spec.with_mode(mode)) for mode in ("plain", "adaptive")}
    for mode, scores in modes.items():
        if scores is None:
            notes.append(f"The MetaCAM-vs-single table has no {mode} column: {bank.why(spec.with_mode(mode))}")
    ranking = modes.get(spec.mode) or result.scores
    chosen = entries(groups, ranking, result.comparator_present, result.best)
    if chosen:
        result.paper = metacam_vs_single(chosen, modes, clusters, boot)

    compared, gains, selections, per_fold, papers = [], [], [], [], []
    for metric in _metrics_compared(result):
        variant = spec.with_metric(metric)
        scores = bank.get(variant)
        if scores is None:
            notes.append(f"No comparisons on {variant.short}: {bank.why(variant)}")
            continue
        singles = real_singles(groups, scores)
        found = cross_validated(scores, groups, singles, clusters, n_clusters, result.folds, result.fold_seed)
        if found is not None:
            selections.append(found[0])
            per_fold.append(found[1])
        if not result.comparator_present:
            continue
        table = comparator_comparisons(scores, groups, clusters, n_clusters)
        if table is not None:
            compared.append(table)
        adaptive, plain = bank.get(variant.with_mode("adaptive")), bank.get(variant.with_mode("plain"))
        if adaptive is not None and plain is not None:
            split = gain_split(adaptive, plain, groups, clusters, n_clusters, singles, result.folds, result.fold_seed)
            if split is not None:
                split.insert(0, "metric", metric.key)
                gains.append(split)
        draws = {(mode, held): bank.get(ScoreSpec(definition=metric, heldout=held).with_mode(mode))
                 for mode in ("adaptive", "plain") for held in (True, False)}
        if all(v is not None for v in draws.values()):
            decomposed = paper_comparison(draws, groups, singles, clusters, n_clusters)  # type: ignore[arg-type]
            if decomposed is not None:
                papers.append(decomposed)
    if compared:
        result.comparisons = pd.concat(compared, ignore_index=True)
        result.headline = headline(result.comparisons, {m.key: m.sign for m in dataset.metrics})
    elif result.comparator_present:
        notes.append("No single CAM methods or controls in the dataset: no paired comparisons.")
    if gains:
        result.gains = pd.concat(gains, ignore_index=True)
    if selections:
        result.selection = pd.DataFrame(selections)
        result.selection_folds = pd.concat(per_fold, ignore_index=True)
    if papers:
        result.paper_comparison = pd.concat(papers, ignore_index=True)

    road = spec.definition if spec.definition.two_draws else next(
        (m for m in dataset.metrics if m.key == DEFAULT_METRIC and m.two_draws), None)
    if road is None:
        notes.append("No optimism table: no metric records an in-sample and a held-out draw.")
        return
    base = ScoreSpec(definition=road)
    parts = {(mode, held): bank.get(base.with_mode(mode) if held else base.with_mode(mode).in_sample())
             for mode in ("adaptive", "plain") for held in (True, False)}
    if all(v is not None for v in parts.values()):
        result.optimism_spec = base
        result.optimism = optimism_table(
            {m: parts[(m, False)] for m in ("adaptive", "plain")},  # type: ignore[misc]
            {m: parts[(m, True)] for m in ("adaptive", "plain")},  # type: ignore[misc]
            groups, clusters, boot)
    else:
        notes.append("No optimism table: it needs in-sample and held-out ROAD at k* and at k = 100 "
                     f"({bank.why(base) or bank.why(base.with_mode('plain'))}).")


def _study(result: AnalysisResult, interactions: bool) -> list[Subset]:
    dataset, spec = result.dataset, result.spec
    groups = dataset.groups
    result.units_by_model = _units_by_model(dataset)
    all_parts: list[Subset] = []
    if len(result.present) < 2:
        return all_parts
    metacam = result.scores.metacam
    for dimension in ("model", "target_rank"):
        parts = subsets(metacam, dataset.units, dimension)
        all_parts += parts
        result.study[f"cre_by_{dimension}"] = cre_by(parts, groups, spec.sign, result.replicates, result.seed)
        result.study[f"effects_by_{dimension}"] = effects_by(parts, groups, interactions)
        if dimension == "model":
            assert result.curves is not None
            result.panels = [(f"pooled, {dataset.units['model'].nunique()} model(s)", result.curves,
                              len(dataset.units))] + curves_by(parts, groups, spec.sign)
    return all_parts


def compute(dataset: Dataset, spec: ScoreSpec, *, interactions: bool = False, out_dir: Path,
            replicates: int = DEFAULT_REPLICATES, seed: int = DEFAULT_SEED, folds: int = DEFAULT_FOLDS,
            fold_seed: int = DEFAULT_FOLD_SEED) -> AnalysisResult:
    """All numbers of the analysis (no files written)."""
    bank = ScoreBank(dataset)
    scores = bank.get(spec)
    if scores is None:
        reason = bank.why(spec)
        hint = (" (the held-out columns are empty: rerun the sweep with held-out re-scoring, or analyse "
                "in-sample scores with --in-sample)" if spec.heldout and spec.definition.two_draws else "")
        raise AnalysisError(f"sweep '{dataset.sweep_id}' has no usable {spec.short} scores: {reason}{hint}")
    present = sorted(int(c) for c in scores.metacam["combo_id"].unique())
    missing = sorted(set(range(dataset.groups.n_combos)) - set(present))
    result = AnalysisResult(out_dir=out_dir, report=out_dir / "report.md", dataset=dataset, spec=spec,
                            scores=scores, replicates=replicates, seed=seed, folds=folds, fold_seed=fold_seed,
                            present=present, missing=missing)
    _dataset_notes(result)
    boot = ClusterBootstrap.draw(dataset.n_clusters, replicates, seed)
    _experiment_parts(result, boot, interactions)
    _evidence(result, bank, boot)
    parts = _study(result, interactions)
    _cluster_warnings(result, parts)
    return result


def analyze(
    results_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    score: str = "adaptive",
    metric: str = DEFAULT_METRIC,
    in_sample: bool = False,
    interactions: bool = False,
    sweep_id: str | None = None,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
    folds: int = DEFAULT_FOLDS,
    fold_seed: int = DEFAULT_FOLD_SEED,
) -> AnalysisResult:
    """Analyse the results dataset under ``results_dir`` and write everything to ``out_dir``.

    Args:
        results_dir: folder of Parquet files (nested folders are read too).
        out_dir: where tables, figures and report.md go; default
            ``results_dir/analysis`` (never read back as data).
        score: ``adaptive``, ``plain`` or ``k=K`` (``k=K`` needs ``in_sample``).
        metric: the key of a metric the dataset records (``combined``, ``deletion``, a plug-in's
            column, ...).
        in_sample: compare on in-sample ROAD (the draw that chose k*) instead of held-out.
        interactions: add all two-way interactions to the OLS model (Holm-corrected tests).
        sweep_id: the sweep to analyse when the dataset holds several.
        replicates, seed: the cluster bootstrap's size and seed.
        folds, fold_seed: the cross-validation over images that chooses the best combination and
            single CAM out of sample (leave-one-out below 10 images).

    Raises:
        AnalysisError: any problem with the input or the output folder.
    """
    if replicates < 100:
        raise AnalysisError(f"--bootstrap {replicates}: use at least 100 replicates (default {DEFAULT_REPLICATES})")
    if folds < 2:
        raise AnalysisError(f"--folds {folds}: use at least 2 folds (default {DEFAULT_FOLDS})")
    root = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else root / "analysis"
    parse_score(score, heldout=not in_sample)  # the score's own errors before any file is read
    dataset = load_dataset(root, sweep_id=sweep_id, keep_k=_keep_k(score, in_sample), exclude=[out])
    spec = parse_score(score, dataset.metric(metric), heldout=not in_sample)
    result = compute(dataset, spec, interactions=interactions, out_dir=out, replicates=replicates, seed=seed,
                     folds=folds, fold_seed=fold_seed)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in OUTPUT_NAMES:
            (out / name).unlink(missing_ok=True)
        write_outputs(result)
    except OSError as error:
        raise AnalysisError(f"cannot write the analysis to '{out}' ({error.strerror or error}); "
                            "choose a writable folder with --out") from None
    return result


def _keep_k(score: str, in_sample: bool) -> list[float]:
    """The k values whose rows the analysis keeps besides the k* rows: 100 and a requested k=K."""
    text = score.strip().lower()
    if text.startswith("k=") and in_sample:
        return sorted({100.0, float(text[2:])})
    return [100.0]
