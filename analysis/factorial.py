"""Factorial effects of the G groups: OLS with model fixed effects and cluster-robust errors.

Model, over all unit × experiment rows:

    score ~ C(model) + g_1 + ... + g_G   [+ all two-way interactions g_a:g_b]

Rows of one image under one model (its experiments and its targets) are
correlated, so standard errors are clustered by (model, image):

* C ≥ 30 clusters: CR1 (the Liang-Zeger sandwich with the usual
  C/(C−1)·(N−1)/(N−p) factor, as statsmodels' ``cov_type="cluster"``), t(C−1).
* 2 ≤ C < 30: CR2 (Bell & McCaffrey 2002: each cluster's residuals are scaled
  by (I − H_gg)^{−1/2} before the sandwich), t(C−1). CR1 is biased downward
  with few clusters and its tests over-reject; CR2 is unbiased when errors are
  iid and with t(C−1) keeps tests near nominal (Imbens & Kolesár 2016). The
  report warns whenever this branch is taken.
* C = 1: iid OLS errors (no clustering possible), flagged in the report.

Coding. Without interactions the group indicators are 0/1: on a complete,
balanced design the coefficient of g is exactly the contrast β_g = mean(on) −
mean(off). With interactions they are centred to −½/+½: each main effect is
then the average effect of switching g on, and the coefficient of g_a:g_b is
(effect of a with b on) − (effect of a with b off).

Speed. Every row's regressors depend only on its unit's model and its
experiment, so X'X, X'y and the per-cluster scores are built from the
``(units, experiments)`` score matrix without materialising the long design
(2^G × units rows): the same numbers as statsmodels' OLS with
``cov_type="cluster"`` (tests/analysis/test_factorial.py checks it), at a
fraction of the memory. Terms the data cannot identify (a group always on or
off in a partial sweep, aliased interactions) are dropped in order and listed.
Holm's correction (statsmodels ``multipletests``) is applied within the main
effects and within the interactions.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse, stats

from metacam.analysis.design import FLAG_PREFIX, flag_matrix
from metacam.analysis.multiple import holm_within
from metacam.analysis.scores import wide
from metacam.analysis.settings import LEVEL, MIN_CLUSTERS

_RANK_TOLERANCE = 1e-9


@dataclass(frozen=True)
class FactorialFit:
    """Result of :func:`fit_factorial`.

    Attributes:
        effects: one row per group term: term (``g_a`` or ``g_a:g_b``), label
            (``a``, ``a × b``), kind (``main``/``interaction``), estimate,
            std_err, ci_low, ci_high, p_value, p_holm (within its kind).
        intercept: predicted score of combo 0 for the first model (0/1 coding),
            or the mean over experiments for it (centred coding).
        formula: the model fitted, in formula notation.
        inference: ``CR1``, ``CR2`` or ``iid``.
        n_obs, n_units, n_clusters, n_models, r_squared: as fitted.
        df: degrees of freedom of the t reference.
        interactions: whether two-way interactions were included.
        dropped: terms that the data cannot identify.
    """

    effects: pd.DataFrame
    intercept: float
    formula: str
    inference: str
    n_obs: int
    n_units: int
    n_clusters: int
    n_models: int
    r_squared: float
    df: float
    interactions: bool
    dropped: tuple[str, ...]

    @property
    def few_clusters(self) -> bool:
        return self.n_clusters < MIN_CLUSTERS


def term_label(term: str) -> str:
    """``g_a:g_b`` -> ``a × b``."""
    return " × ".join(part.removeprefix(FLAG_PREFIX) for part in term.split(":"))


def group_terms(combo_ids: Sequence[int] | np.ndarray, names: Sequence[str], interactions: bool
                ) -> tuple[list[str], np.ndarray]:
    """Candidate group terms and their regressors per experiment: ``(E,) -> names, (E, q)``."""
    flags = flag_matrix(combo_ids, len(names)).astype(np.float64)
    columns = [f"{FLAG_PREFIX}{name}" for name in names]
    if not interactions:
        return columns, flags
    flags -= 0.5
    terms, values = list(columns), [flags[:, i] for i in range(len(names))]
    for i, j in itertools.combinations(range(len(names)), 2):
        terms.append(f"{columns[i]}:{columns[j]}")
        values.append(flags[:, i] * flags[:, j])
    return terms, np.column_stack(values)


def _independent(gram: np.ndarray, order: Sequence[int]) -> list[int]:
    """Greedy: the columns (in ``order``) that raise the rank of the Gram matrix's leading block."""
    kept: list[int] = []
    scale = max(float(np.max(np.abs(np.diag(gram)))), 1.0)
    for column in order:
        trial = [*kept, column]
        spectrum = np.linalg.eigvalsh(gram[np.ix_(trial, trial)])
        if spectrum.min() > _RANK_TOLERANCE * scale * len(trial):
            kept = trial
    return kept


def estimable_terms(combo_ids: np.ndarray, names: Sequence[str], interactions: bool) -> tuple[list[str], list[str]]:
    """Split the group terms into those the experiments present identify and those they do not."""
    experiments = np.unique(np.asarray(combo_ids, dtype=np.int64))
    terms, values = group_terms(experiments, names, interactions)
    design = np.column_stack([np.ones(len(experiments)), values])
    kept = _independent(design.T @ design, range(design.shape[1]))
    return [terms[i - 1] for i in kept if i > 0], [t for i, t in enumerate(terms) if i + 1 not in kept]


def fit_factorial(metacam: pd.DataFrame, units: pd.DataFrame, names: Sequence[str], *,
                  interactions: bool = False, min_clusters: int = MIN_CLUSTERS) -> FactorialFit:
    """Fit the factorial OLS model on unit × experiment rows.

    Args:
        metacam: columns ``combo_id``, ``unit``, ``score`` (one row per unit and experiment).
        units: the dataset's unit table (index unit code; columns model, cluster).
        names: the group names in bit order.
        interactions: add all two-way interactions between groups.
        min_clusters: below it CR2 replaces CR1.

    Raises:
        ValueError: fewer than two experiments (nothing to compare).
    """
    combos, scores = wide(metacam, "combo_id", len(units))
    if len(combos) < 2:
        raise ValueError("the factorial model needs at least two experiments")
    has_data = ~np.isnan(scores).all(axis=1)
    scores = scores[has_data]
    present = ~np.isnan(scores)
    y = np.where(present, scores, 0.0)
    table = units.loc[has_data]
    models = sorted(table["model"].unique())
    model_code = table["model"].map({m: i for i, m in enumerate(models)}).to_numpy(dtype=np.int64)
    _, cluster = np.unique(table["cluster"].to_numpy(), return_inverse=True)
    n_clusters = int(cluster.max()) + 1

    # Regressors: z_u (intercept + model dummies) per unit, f_e (group terms) per experiment.
    unit_part = np.column_stack([np.ones(len(table)), *(model_code == i for i in range(1, len(models)))])
    all_terms, exp_part = group_terms(combos, names, interactions)
    n_z = unit_part.shape[1]
    per_unit = present.sum(axis=1).astype(np.float64)
    per_exp = present.sum(axis=0).astype(np.float64)
    gram = np.block([
        [unit_part.T @ (unit_part * per_unit[:, None]), unit_part.T @ (present @ exp_part)],
        [(present @ exp_part).T @ unit_part, exp_part.T @ (exp_part * per_exp[:, None])],
    ])
    kept = _independent(gram, range(gram.shape[0]))
    kept_z = [i for i in kept if i < n_z]
    kept_f = [i - n_z for i in kept if i >= n_z]
    dropped = tuple(t for i, t in enumerate(all_terms) if i not in kept_f)
    unit_part, exp_part = unit_part[:, kept_z], exp_part[:, kept_f]
    terms = [all_terms[i] for i in kept_f]
    gram = gram[np.ix_(kept, kept)]
    moment = np.concatenate([unit_part.T @ y.sum(axis=1), exp_part.T @ y.sum(axis=0)])
    bread = np.linalg.inv(gram)
    beta = bread @ moment
    fitted = (unit_part @ beta[:len(kept_z)])[:, None] + (exp_part @ beta[len(kept_z):])[None, :]
    residual = np.where(present, scores - fitted, 0.0)
    n_obs, n_params = int(present.sum()), len(beta)
    rss = float((residual**2).sum())
    mean_y = y.sum() / n_obs
    tss = float(np.where(present, (scores - mean_y) ** 2, 0.0).sum())

    if n_clusters >= min_clusters:
        inference = "CR1"
        membership = sparse.csr_matrix((np.ones(len(cluster)), (cluster, np.arange(len(cluster)))),
                                       shape=(n_clusters, len(cluster)))
        score_z = membership @ (unit_part * residual.sum(axis=1)[:, None])
        score_f = (membership @ residual) @ exp_part
        per_cluster = np.column_stack([np.asarray(score_z), np.asarray(score_f)])
        correction = n_clusters / (n_clusters - 1) * (n_obs - 1) / (n_obs - n_params)
        cov = correction * bread @ (per_cluster.T @ per_cluster) @ bread
        df = float(n_clusters - 1)
    elif n_clusters >= 2:
        inference = "CR2"
        cov = _cr2(unit_part, exp_part, present, residual, cluster, n_clusters, bread)
        df = float(n_clusters - 1)
    else:
        inference = "iid"
        df = float(max(n_obs - n_params, 1))
        cov = rss / df * bread
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        t_values = beta / se
        p_values = 2 * stats.t.sf(np.abs(t_values), df)
    half = stats.t.ppf(0.5 + LEVEL / 2, df) * se
    offset = len(kept_z)
    effects = pd.DataFrame({
        "term": terms,
        "label": [term_label(t) for t in terms],
        "kind": ["interaction" if ":" in t else "main" for t in terms],
        "estimate": beta[offset:],
        "std_err": se[offset:],
        "ci_low": beta[offset:] - half[offset:],
        "ci_high": beta[offset:] + half[offset:],
        "p_value": p_values[offset:],
    })
    effects["p_holm"] = holm_within(effects["p_value"], effects["kind"])
    formula = "score ~ " + " + ".join((["C(model)"] if len(models) > 1 else []) + terms)
    return FactorialFit(
        effects=effects, intercept=float(beta[0]), formula=formula, inference=inference, n_obs=n_obs,
        n_units=len(table), n_clusters=n_clusters, n_models=len(models),
        r_squared=1 - rss / tss if tss > 0 else float("nan"), df=df, interactions=interactions, dropped=dropped,
    )


def _cr2(unit_part: np.ndarray, exp_part: np.ndarray, present: np.ndarray, residual: np.ndarray,
         cluster: np.ndarray, n_clusters: int, bread: np.ndarray) -> np.ndarray:
    """Bell-McCaffrey CR2 covariance: Σ_g X_g' A_g e_g e_g' A_g X_g in the sandwich,
    A_g = (I − X_g (X'X)^{-1} X_g')^{-1/2}, through the thin QR of X_g (H_gg has rank ≤ p)."""
    meat = np.zeros_like(bread)
    for g in range(n_clusters):
        rows, cols = np.nonzero(present[cluster == g])
        units_of_g = np.flatnonzero(cluster == g)
        design = np.column_stack([unit_part[units_of_g[rows]], exp_part[cols]])
        errors = residual[units_of_g[rows], cols]
        q, r = np.linalg.qr(design)
        leverage, vectors = np.linalg.eigh(r @ bread @ r.T)
        basis = q @ vectors
        scale = 1.0 / np.sqrt(np.clip(1.0 - leverage, 1e-12, None)) - 1.0
        adjusted = errors + basis @ (scale * (basis.T @ errors))
        score = design.T @ adjusted
        meat += np.outer(score, score)
    return bread @ meat @ bread

