"""Factorial effects of the six groups: OLS with unit-clustered standard errors, and ANOVA.

Model, over all unit × experiment rows (statsmodels formula API):

    score ~ g_gradcam + g_gradcampp + g_perturbation + g_eigen + g_fullgrad + g_random
            [+ all two-way interactions g_a:g_b with ``interactions=True``]

Each unit (model × image × target) contributes up to 64 correlated rows, so
standard errors are clustered by unit (``cov_type="cluster"``).

Coding. Without interactions the indicators are 0/1: the intercept is the
predicted score of combo 0 and, on a complete balanced design, the
coefficient of g is exactly the contrast β_g = mean(on) − mean(off). With
interactions the indicators are centred to −½/+½: then each main effect is
still the average effect of switching g on (equal to the main-effects model's
on a balanced design, instead of the effect at combo 0 that 0/1 coding would
give), the intercept is the mean over experiments, and the coefficient of
g_a:g_b is (effect of a with b on) − (effect of a with b off), the same number
0/1 coding gives.

Terms the experiments present cannot identify (a group always on or always
off in a partial sweep, aliased interactions) are dropped before fitting and
reported in ``FactorialFit.dropped``.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm

from metacam.analysis.cre import flag_matrix
from metacam.analysis.summary import LEVEL
from metacam.schema import GROUP_COLUMNS


@dataclass(frozen=True)
class FactorialFit:
    """Result of :func:`fit_factorial`.

    Attributes:
        effects: one row per term (not the intercept): term, label, kind
            (``main``/``interaction``), estimate, std_err, ci_low, ci_high, p_value.
        intercept: predicted score of combo 0 (0/1 coding), or the mean over
            experiments (centred coding, with interactions).
        anova: type-II ANOVA: sum_sq, df, share (of the total sum of squares),
            F and p from the classical fit (iid errors), F_cluster and
            p_cluster from Wald tests with the unit-clustered covariance.
        formula: the formula fitted.
        cov_type: ``cluster`` (by unit) or ``nonrobust`` (a single unit).
        n_obs, n_clusters, r_squared: as fitted.
        interactions: whether two-way interactions were included.
        dropped: terms that the experiments present cannot identify.
    """

    effects: pd.DataFrame
    intercept: float
    anova: pd.DataFrame
    formula: str
    cov_type: str
    n_obs: int
    n_clusters: int
    r_squared: float
    interactions: bool
    dropped: tuple[str, ...]


def term_label(term: str) -> str:
    """``g_gradcam:g_eigen`` -> ``gradcam × eigen``."""
    return " × ".join(part.removeprefix("g_") for part in term.split(":"))


def estimable_terms(combo_ids: np.ndarray, interactions: bool) -> tuple[list[str], list[str]]:
    """Split candidate terms into those the present experiments identify and those they do not.

    Works on the experiment-level design (one row per combo present): a term
    is kept when its column raises the rank of intercept + terms kept so far.
    """
    flags = flag_matrix(np.unique(combo_ids)).astype(np.float64)
    if interactions:
        flags -= 0.5  # the coding the fit uses, so rank decisions match it
    candidates: list[tuple[str, np.ndarray]] = [(c, flags[:, i]) for i, c in enumerate(GROUP_COLUMNS)]
    if interactions:
        for i, j in itertools.combinations(range(len(GROUP_COLUMNS)), 2):
            candidates.append((f"{GROUP_COLUMNS[i]}:{GROUP_COLUMNS[j]}", flags[:, i] * flags[:, j]))
    design = np.ones((len(flags), 1))
    kept: list[str] = []
    dropped: list[str] = []
    for name, column in candidates:
        trial = np.column_stack([design, column])
        if np.linalg.matrix_rank(trial) > design.shape[1]:
            design, kept = trial, [*kept, name]
        else:
            dropped.append(name)
    return kept, dropped


def fit_factorial(metacam: pd.DataFrame, *, interactions: bool = False) -> FactorialFit:
    """Fit the factorial OLS model on unit × experiment rows.

    Args:
        metacam: columns ``combo_id``, ``unit``, ``score`` (one row per unit and experiment).
        interactions: add all two-way interactions between groups.

    Raises:
        ValueError: fewer than two experiments (nothing to compare).
    """
    combo_ids = metacam["combo_id"].to_numpy(dtype=np.int64)
    if len(np.unique(combo_ids)) < 2:
        raise ValueError("the factorial model needs at least two experiments")
    kept, dropped = estimable_terms(combo_ids, interactions)
    flags = flag_matrix(combo_ids).astype(np.float64)
    data = pd.DataFrame(flags - 0.5 if interactions else flags, columns=list(GROUP_COLUMNS))
    data["score"] = metacam["score"].to_numpy(dtype=np.float64)
    groups = metacam["unit"].to_numpy()
    n_clusters = len(np.unique(groups))
    formula = "score ~ " + " + ".join(kept)
    with warnings.catch_warnings():
        # Degenerate fits (a perfect fit, two clusters) give NaN standard errors with a
        # RuntimeWarning; the NaNs are reported as n/a, the warning would only be noise.
        warnings.simplefilter("ignore", RuntimeWarning)
        classical = smf.ols(formula, data=data).fit()
        if n_clusters >= 2:
            fitted = classical.get_robustcov_results(cov_type="cluster", groups=groups)
            cov_type = "cluster"
        else:  # one unit: no clusters to average over, fall back to iid errors
            fitted, cov_type = classical, "nonrobust"
        names = list(classical.model.exog_names)
        params = pd.Series(np.asarray(fitted.params), index=names)
        std_err = pd.Series(np.asarray(fitted.bse), index=names)
        pvalues = pd.Series(np.asarray(fitted.pvalues), index=names)
        ci = np.asarray(fitted.conf_int(alpha=1 - LEVEL))
    ci_frame = pd.DataFrame(ci, index=names, columns=["ci_low", "ci_high"])
    terms = [n for n in names if n != "Intercept"]
    effects = pd.DataFrame({
        "term": terms,
        "label": [term_label(t) for t in terms],
        "kind": ["interaction" if ":" in t else "main" for t in terms],
        "estimate": params[terms].to_numpy(),
        "std_err": std_err[terms].to_numpy(),
        "ci_low": ci_frame.loc[terms, "ci_low"].to_numpy(),
        "ci_high": ci_frame.loc[terms, "ci_high"].to_numpy(),
        "p_value": pvalues[terms].to_numpy(),
    })
    return FactorialFit(
        effects=effects,
        intercept=float(params["Intercept"]),
        anova=_anova(classical, fitted if cov_type == "cluster" else None),
        formula=formula,
        cov_type=cov_type,
        n_obs=int(classical.nobs),
        n_clusters=n_clusters,
        r_squared=float(classical.rsquared),
        interactions=interactions,
        dropped=tuple(dropped),
    )


def _anova(classical: object, clustered: object | None) -> pd.DataFrame:
    """Type-II ANOVA: classical sums of squares and F, plus cluster-robust Wald F per term."""
    with warnings.catch_warnings():
        # Saturated or tiny fits warn about zero residual df; the NaNs they give are reported as n/a.
        warnings.simplefilter("ignore", RuntimeWarning)
        table = anova_lm(classical, typ=2)
        total = float(table["sum_sq"].sum())
        table.insert(2, "share", table["sum_sq"] / total if total > 0 else np.nan)
        table = table.rename(columns={"PR(>F)": "p"})
        if clustered is not None:
            robust = anova_lm(clustered, typ=2)
            table["F_cluster"] = robust["F"]
            table["p_cluster"] = robust["PR(>F)"]
        else:
            table["F_cluster"] = np.nan
            table["p_cluster"] = np.nan
    table.index = [("Residual" if t == "Residual" else term_label(t)) for t in table.index]
    table.index.name = "term"
    return table.reset_index()
