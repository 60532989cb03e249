"""Factorial effects of the G groups: OLS with model and target-rank fixed effects and
standard errors clustered by image.

Model, over all unit × experiment rows:

    score ~ C(model) + C(target_rank) + g_1 + ... + g_G   [+ all two-way interactions g_a:g_b]

Images are the sampled units; the models and target ranks an image is scored under are
fixed conditions (fixed effects). All rows of one image — its experiments, its targets,
its models — are correlated, so standard errors are clustered by image:

* C ≥ 30 images: CR1 (the Liang-Zeger sandwich with the usual
  C/(C−1)·(N−1)/(N−p) factor, as statsmodels' ``cov_type="cluster"``), t(C−1).
* 2 ≤ C < 30: CR2 (Bell & McCaffrey 2002: each cluster's residuals are scaled by
  (I − H_gg)^{−1/2} before the sandwich) with the Bell–McCaffrey (Satterthwaite)
  degrees of freedom of each coefficient, (Σλ)²/Σλ² over the eigenvalues λ of G'G
  (Imbens & Kolesár 2016, eq. 9, with the working model of iid errors). On a balanced
  design they are C − 1 for the group effects; with missing cells (failed rows, unequal
  targets) fewer, so the test stays near its level. CR1 is biased downward with few
  clusters and its tests over-reject. The report warns whenever this branch is taken.
* C = 1: iid OLS errors (no clustering possible), flagged in the report.

Coding. Without interactions the group indicators are 0/1: on a complete,
balanced design the coefficient of g is exactly the contrast β_g = mean(on) −
mean(off). With interactions they are centred to −½/+½: each main effect is
then the average effect of switching g on, and the coefficient of g_a:g_b is
(effect of a with b on) − (effect of a with b off).

Speed. Every row's regressors depend only on its unit's model and rank and on its
experiment, so X'X, X'y and the per-cluster scores are built from the
``(units, experiments)`` score matrix without materialising the long design
(2^G × units rows): the same numbers as statsmodels' OLS with
``cov_type="cluster"`` (tests/analysis/test_factorial.py checks it), at a
fraction of the memory. :func:`fit_scores` fits a stack of score matrices that share
one design at once (the simulations of the tests). Terms the data cannot identify (a
group always on or off in a partial sweep, aliased interactions) are dropped in order
and listed. Holm's correction (:func:`metacam.analysis.multiple.holm`) is applied within
the main effects and within the interactions.
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
            std_err, df, ci_low, ci_high, p_value, p_holm (within its kind), n_clusters (images).
        intercept: predicted score of combo 0 for the first model and rank (0/1 coding),
            or the mean over experiments for them (centred coding).
        formula: the model fitted, in formula notation.
        inference: ``CR1``, ``CR2`` or ``iid``.
        n_obs, n_units, n_clusters (images), n_models, r_squared: as fitted.
        df: degrees of freedom of the t reference (the smallest over the terms for CR2).
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


@dataclass(frozen=True)
class Design:
    """The regressors of the unit × experiment rows, shared by every score matrix fitted on them.

    unit_part: ``(U, z)`` intercept and fixed-effect dummies of each unit; exp_part: ``(E, f)``
    the group terms of each experiment; present: ``(U, E)`` which rows exist; cluster: ``(U,)``
    image code 0..C−1; terms: the group terms kept; fixed: the fixed-effect terms of the formula.
    """

    unit_part: np.ndarray
    exp_part: np.ndarray
    present: np.ndarray
    cluster: np.ndarray
    n_clusters: int
    terms: list[str]
    dropped: tuple[str, ...]
    fixed: list[str]
    n_models: int
    bread: np.ndarray

    @property
    def n_obs(self) -> int:
        return int(self.present.sum())

    @property
    def n_params(self) -> int:
        return self.bread.shape[0]

    @property
    def offset(self) -> int:
        """Position of the first group term among the coefficients."""
        return self.unit_part.shape[1]


def _dummies(values: pd.Series) -> tuple[list[np.ndarray], int]:
    """Indicator columns of every level but the first (nulls are a level), and the number of levels."""
    codes, levels = pd.factorize(values.astype(object), sort=True, use_na_sentinel=False)
    return [(codes == i).astype(np.float64) for i in range(1, len(levels))], len(levels)


def build_design(present: np.ndarray, units: pd.DataFrame, combos: Sequence[int], names: Sequence[str],
                 interactions: bool) -> Design:
    """The design of units (rows of ``units``: model, optional target_rank, cluster) × experiments
    ``combos`` where ``present (U, E)`` holds."""
    model_columns, n_models = _dummies(units["model"])
    rank_columns: list[np.ndarray] = []
    if "target_rank" in units.columns:
        rank_columns, _ = _dummies(units["target_rank"])
    fixed = (["C(model)"] if model_columns else []) + (["C(target_rank)"] if rank_columns else [])
    unit_part = np.column_stack([np.ones(len(units)), *model_columns, *rank_columns])
    _, cluster = np.unique(units["cluster"].to_numpy(), return_inverse=True)
    all_terms, exp_part = group_terms(combos, names, interactions)
    n_z = unit_part.shape[1]
    weights = present.astype(np.float64)
    per_unit, per_exp = weights.sum(axis=1), weights.sum(axis=0)
    cross = unit_part.T @ (weights @ exp_part)
    gram = np.block([
        [unit_part.T @ (unit_part * per_unit[:, None]), cross],
        [cross.T, exp_part.T @ (exp_part * per_exp[:, None])],
    ])
    kept = _independent(gram, range(gram.shape[0]))
    kept_z = [i for i in kept if i < n_z]
    kept_f = [i - n_z for i in kept if i >= n_z]
    return Design(
        unit_part=unit_part[:, kept_z], exp_part=exp_part[:, kept_f], present=present,
        cluster=cluster.astype(np.int64), n_clusters=int(cluster.max()) + 1 if len(cluster) else 0,
        terms=[all_terms[i] for i in kept_f], dropped=tuple(t for i, t in enumerate(all_terms) if i not in kept_f),
        fixed=fixed, n_models=n_models, bread=np.linalg.inv(gram[np.ix_(kept, kept)]),
    )


@dataclass(frozen=True)
class StackFit:
    """Coefficients of S score matrices fitted on one :class:`Design` (all coefficients, the group
    terms from ``design.offset`` on): estimate, std_err, p_value, ci_low, ci_high ``(S, p)``, df
    ``(p,)``, r_squared ``(S,)``, inference ``CR1``/``CR2``/``iid``."""

    design: Design
    estimate: np.ndarray
    std_err: np.ndarray
    df: np.ndarray
    p_value: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    r_squared: np.ndarray
    inference: str


def fit_stack(scores: np.ndarray, design: Design, min_clusters: int = MIN_CLUSTERS, level: float = LEVEL
              ) -> StackFit:
    """OLS of each score matrix ``scores (S, U, E)`` (NaN exactly where ``design.present`` is false)."""
    present = design.present
    y = np.where(present[None], scores, 0.0)
    unit_part, exp_part, bread = design.unit_part, design.exp_part, design.bread
    moment = np.concatenate([y.sum(axis=2) @ unit_part, y.sum(axis=1) @ exp_part], axis=1)  # (S, p)
    beta = moment @ bread.T
    offset = design.offset
    fitted = (beta[:, :offset] @ unit_part.T)[:, :, None] + (beta[:, offset:] @ exp_part.T)[:, None, :]
    residual = np.where(present[None], scores - fitted, 0.0)
    n_obs, n_params, n_clusters = design.n_obs, design.n_params, design.n_clusters
    rss = (residual**2).sum(axis=(1, 2))
    mean_y = y.sum(axis=(1, 2)) / n_obs
    tss = np.where(present[None], (scores - mean_y[:, None, None]) ** 2, 0.0).sum(axis=(1, 2))
    if n_clusters >= min_clusters:
        inference = "CR1"
        per_cluster = _cluster_scores(residual, design)
        correction = n_clusters / (n_clusters - 1) * (n_obs - 1) / (n_obs - n_params)
        cov = correction * bread @ np.einsum("csp,csq->spq", per_cluster, per_cluster) @ bread
        df = np.full(n_params, float(n_clusters - 1))
    elif n_clusters >= 2:
        inference = "CR2"
        cov, df = _cr2(residual, design)
    else:
        inference = "iid"
        df = np.full(n_params, float(max(n_obs - n_params, 1)))
        cov = (rss / df[0])[:, None, None] * bread[None]
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0.0, None))
        p_values = 2 * stats.t.sf(np.abs(beta / se), df[None, :])
    half = stats.t.ppf(0.5 + level / 2, df)[None, :] * se
    with np.errstate(invalid="ignore", divide="ignore"):
        r_squared = np.where(tss > 0, 1 - rss / tss, np.nan)
    return StackFit(design, beta, se, df, p_values, beta - half, beta + half, r_squared, inference)


def fit_scores(scores: np.ndarray, units: pd.DataFrame, combos: Sequence[int], names: Sequence[str], *,
               interactions: bool = False, min_clusters: int = MIN_CLUSTERS) -> StackFit:
    """Fit S studies that share a design at once: ``scores (S, U, E)`` for the units of ``units``
    (model, optional target_rank, cluster) and the experiments ``combos`` (NaN marks a missing
    cell, the same in every study)."""
    scores = np.asarray(scores, dtype=np.float64)
    design = build_design(~np.isnan(scores[0]), units, combos, names, interactions)
    return fit_stack(scores, design, min_clusters)


def fit_factorial(metacam: pd.DataFrame, units: pd.DataFrame, names: Sequence[str], *,
                  interactions: bool = False, min_clusters: int = MIN_CLUSTERS) -> FactorialFit:
    """Fit the factorial OLS model on unit × experiment rows.

    Args:
        metacam: columns ``combo_id``, ``unit``, ``score`` (one row per unit and experiment).
        units: the dataset's unit table (index unit code; columns model, cluster = image, and
            optionally target_rank).
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
    table = units.loc[has_data]
    design = build_design(~np.isnan(scores), table, combos, names, interactions)
    fit = fit_stack(scores[None], design, min_clusters)
    offset, terms = design.offset, design.terms
    effects = pd.DataFrame({
        "term": terms,
        "label": [term_label(t) for t in terms],
        "kind": ["interaction" if ":" in t else "main" for t in terms],
        "estimate": fit.estimate[0, offset:],
        "std_err": fit.std_err[0, offset:],
        "df": fit.df[offset:],
        "ci_low": fit.ci_low[0, offset:],
        "ci_high": fit.ci_high[0, offset:],
        "p_value": fit.p_value[0, offset:],
    })
    effects["p_holm"] = holm_within(effects["p_value"], effects["kind"])
    effects["n_clusters"] = design.n_clusters
    formula = "score ~ " + " + ".join(design.fixed + terms)
    return FactorialFit(
        effects=effects, intercept=float(fit.estimate[0, 0]), formula=formula, inference=fit.inference,
        n_obs=design.n_obs, n_units=len(table), n_clusters=design.n_clusters, n_models=design.n_models,
        r_squared=float(fit.r_squared[0]), df=float(fit.df[offset:].min()) if terms else float("nan"),
        interactions=interactions, dropped=design.dropped,
    )


def _cluster_scores(residual: np.ndarray, design: Design) -> np.ndarray:
    """Per-cluster score vectors Σ_rows x_row e_row: ``(S, U, E) -> (C, S, p)``."""
    n_studies, n_units, n_exp = residual.shape
    cluster = design.cluster
    membership = sparse.csr_matrix((np.ones(n_units), (cluster, np.arange(n_units))),
                                   shape=(design.n_clusters, n_units))
    row_sums = residual.sum(axis=2).T  # (U, S)
    unit_scores = membership @ (row_sums[:, :, None] * design.unit_part[:, None, :]).reshape(n_units, -1)
    by_exp = membership @ residual.transpose(1, 0, 2).reshape(n_units, -1)  # (C, S·E)
    exp_scores = np.asarray(by_exp).reshape(-1, n_studies, n_exp) @ design.exp_part
    return np.concatenate([np.asarray(unit_scores).reshape(-1, n_studies, design.unit_part.shape[1]),
                           exp_scores], axis=2)


def _cr2(residual: np.ndarray, design: Design) -> tuple[np.ndarray, np.ndarray]:
    """Bell-McCaffrey CR2 covariance of each study ``(S, p, p)`` and the Bell-McCaffrey degrees
    of freedom of each coefficient ``(p,)``.

    The sandwich's meat is Σ_g X_g' A_g e_g e_g' A_g X_g with A_g = (I − X_g (X'X)^{-1} X_g')^{-1/2},
    applied through the thin QR of X_g (H_gg has rank ≤ p). For coefficient j the degrees of
    freedom are (Σλ)²/Σλ² over the eigenvalues of G'G, G's column g = (I − H)_{·g} a_g with
    a_g = A_g X_g (X'X)^{-1} e_j; since I − H is idempotent and clusters are disjoint,
    G'G = diag(a_g'a_g) − M'(X'X)^{-1}M with M's column g = X_g' a_g, so no N × N matrix is formed.
    """
    bread, present = design.bread, design.present
    n_params = bread.shape[0]
    meat = np.zeros((residual.shape[0], n_params, n_params))
    squares = np.zeros((design.n_clusters, n_params))  # a_g'a_g per coefficient
    moments = np.zeros((design.n_clusters, n_params, n_params))  # X_g'a_g per coefficient (columns)
    for g in range(design.n_clusters):
        units_of_g = np.flatnonzero(design.cluster == g)
        rows, cols = np.nonzero(present[units_of_g])
        x = np.column_stack([design.unit_part[units_of_g[rows]], design.exp_part[cols]])
        errors = residual[:, units_of_g[rows], cols]  # (S, n_g)
        q, r = np.linalg.qr(x)
        leverage, vectors = np.linalg.eigh(r @ bread @ r.T)
        basis = q @ vectors
        scale = 1.0 / np.sqrt(np.clip(1.0 - leverage, 1e-12, None)) - 1.0

        def adjust(values: np.ndarray, basis: np.ndarray = basis, scale: np.ndarray = scale) -> np.ndarray:
            """A_g applied to the columns of ``values (n_g, k)``."""
            return values + basis @ (scale[:, None] * (basis.T @ values))

        score = adjust(errors.T).T @ x  # (S, p)
        meat += np.einsum("sp,sq->spq", score, score)
        a = adjust(x @ bread)  # (n_g, p): column j is a_g for coefficient j
        squares[g] = (a**2).sum(axis=0)
        moments[g] = x.T @ a
    df = np.empty(n_params)
    for j in range(n_params):
        m = moments[:, :, j].T  # (p, C)
        gg = np.diag(squares[:, j]) - m.T @ bread @ m
        eigenvalues = np.linalg.eigvalsh(gg)
        df[j] = eigenvalues.sum() ** 2 / (eigenvalues**2).sum() if (eigenvalues**2).sum() > 0 else np.nan
    return bread @ meat @ bread, df
