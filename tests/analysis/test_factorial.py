"""Factorial OLS: equal to statsmodels' clustered OLS (model and target-rank fixed effects, clusters
= images shared across models), CR2 and its Bell-McCaffrey degrees of freedom against a dense
implementation of the formulas, planted effects recovered, interactions found, unidentifiable
terms dropped. Coverage and size by simulation: tests/analysis/test_simulation.py."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import linalg, stats

from metacam.analysis.dataset import load_dataset
from metacam.analysis.design import flag_matrix
from metacam.analysis.factorial import estimable_terms, fit_factorial
from metacam.analysis.scores import parse_score, select_scores
from tests.analysis.conftest import GROUPS, PLANTED

NAMES = list(GROUPS.names)


def unit_table(models: list[str], clusters: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"model": models, "cluster": clusters}, index=pd.Index(range(len(models)), name="unit"))


def unbalanced(seed: int = 0, n_groups: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two models, 9 clusters (two targets each), 15% of cells missing, cluster-correlated noise."""
    rng = np.random.default_rng(seed)
    units = unit_table(["m1"] * 10 + ["m2"] * 8, list(range(5)) * 2 + list(range(5, 9)) * 2)
    rows = []
    for u, (model, cluster) in enumerate(zip(units["model"], units["cluster"], strict=True)):
        shift = rng.normal(0, 0.2) if u < 9 else 0.0
        for combo in range(2**n_groups):
            if rng.random() < 0.15:
                continue
            score = (0.1 * (combo & 1) - 0.05 * (combo >> 2 & 1) + 0.3 * (model == "m2")
                     + 0.2 * np.sin(cluster) + shift + rng.normal(0, 0.1))
            rows.append((combo, u, score))
    return pd.DataFrame(rows, columns=["combo_id", "unit", "score"]), units


def long_design(metacam: pd.DataFrame, units: pd.DataFrame, names: list[str], interactions: bool) -> pd.DataFrame:
    """The long design matrix statsmodels sees: const, model dummy, group terms."""
    flags = flag_matrix(metacam["combo_id"], len(names)).astype(float) - (0.5 if interactions else 0.0)
    design = pd.DataFrame(flags, columns=[f"g_{n}" for n in names])
    if interactions:
        for i, j in itertools.combinations(range(len(names)), 2):
            design[f"g_{names[i]}:g_{names[j]}"] = flags[:, i] * flags[:, j]
    design.insert(0, "m2", (units["model"].to_numpy()[metacam["unit"]] == "m2").astype(float))
    design.insert(0, "const", 1.0)
    return design


@pytest.mark.parametrize("interactions", [False, True])
def test_cr1_equals_statsmodels_clustered_ols(interactions):
    metacam, units = unbalanced()
    names = ["a", "b", "c"]
    fit = fit_factorial(metacam, units, names, interactions=interactions, min_clusters=2)
    assert fit.inference == "CR1" and fit.n_clusters == 9 and fit.n_models == 2 and fit.df == 8
    design = long_design(metacam, units, names, interactions)
    oracle = sm.OLS(metacam["score"].to_numpy(), design).fit(
        cov_type="cluster", cov_kwds={"groups": units["cluster"].to_numpy()[metacam["unit"]]}, use_t=True)
    effects = fit.effects.set_index("term")
    for column in ("estimate", "std_err", "p_value"):
        reference = {"estimate": oracle.params, "std_err": oracle.bse, "p_value": oracle.pvalues}[column]
        np.testing.assert_allclose(effects[column], reference[effects.index], rtol=1e-9, atol=1e-12)
    assert fit.r_squared == pytest.approx(oracle.rsquared, abs=1e-12)
    assert fit.n_obs == int(oracle.nobs)


def dense_cr2(design: np.ndarray, residual: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CR2 and the Bell-McCaffrey degrees of freedom the slow, obvious way: A_g = (I − H_gg)^{-1/2} by a
    dense matrix square root; df_j = (Σλ)²/Σλ² over the eigenvalues of G'G, G's column g =
    (I − H)[:, g] A_g X_g (X'X)^{-1} e_j (Imbens & Kolesár 2016, eq. 9)."""
    bread = np.linalg.inv(design.T @ design)
    residual_maker = np.eye(len(design)) - design @ bread @ design.T
    meat = np.zeros_like(bread)
    columns: list[list[np.ndarray]] = [[] for _ in range(design.shape[1])]
    for g in np.unique(clusters):
        rows = clusters == g
        x = design[rows]
        adjust = linalg.inv(linalg.sqrtm(np.eye(rows.sum()) - x @ bread @ x.T)).real
        score = x.T @ adjust @ residual[rows]
        meat += np.outer(score, score)
        for j in range(design.shape[1]):
            padded = np.zeros(len(design))
            padded[rows] = adjust @ x @ bread[:, j]
            columns[j].append(residual_maker @ padded)
    df = []
    for j in range(design.shape[1]):
        eigenvalues = np.linalg.eigvalsh(np.column_stack(columns[j]).T @ np.column_stack(columns[j]))
        df.append(eigenvalues.sum() ** 2 / (eigenvalues**2).sum())
    return bread @ meat @ bread, np.array(df)


def test_cr2_and_its_degrees_of_freedom_equal_a_dense_implementation():
    metacam, units = unbalanced(seed=3)  # 15% of cells missing
    names = ["a", "b", "c"]
    fit = fit_factorial(metacam, units, names)  # 9 clusters < 30: CR2
    assert fit.inference == "CR2" and fit.few_clusters
    design = long_design(metacam, units, names, interactions=False).to_numpy()
    y = metacam["score"].to_numpy()
    beta = np.linalg.lstsq(design, y, rcond=None)[0]
    cov, df = dense_cr2(design, y - design @ beta, units["cluster"].to_numpy()[metacam["unit"]])
    np.testing.assert_allclose(fit.effects["std_err"], np.sqrt(np.diag(cov))[2:], rtol=1e-8)
    np.testing.assert_allclose(fit.effects["df"], df[2:], rtol=1e-8)
    # Missing cells: fewer than the C − 1 = 8 a balanced design would have.
    assert (fit.effects["df"] < 8).all() and (fit.effects["df"] > 6).all()
    t = fit.effects["estimate"] / fit.effects["std_err"]
    np.testing.assert_allclose(fit.effects["p_value"], 2 * stats.t.sf(np.abs(t), df[2:]), rtol=1e-10)


def test_model_and_rank_fixed_effects_clustered_by_image_equal_statsmodels():
    # 3 models × 8 images × 2 target ranks: an image is one cluster under every model.
    rng = np.random.default_rng(5)
    units = pd.DataFrame({"model": np.repeat(["m1", "m2", "m3"], 16), "target_rank": np.tile([1, 2], 24),
                          "cluster": np.tile(np.repeat(np.arange(8), 2), 3)},
                         index=pd.Index(range(48), name="unit"))
    image = rng.normal(0, 0.2, 8)
    rows = [(c, u, 0.1 * (c & 1) + 0.05 * (units.loc[u, "model"] == "m3") - 0.03 * (units.loc[u, "target_rank"] == 2)
             + image[units.loc[u, "cluster"]] + rng.normal(0, 0.05))
            for u in range(48) for c in range(4) if rng.random() > 0.1]
    metacam = pd.DataFrame(rows, columns=["combo_id", "unit", "score"])
    fit = fit_factorial(metacam, units, ["a", "b"], min_clusters=2)
    assert fit.formula == "score ~ C(model) + C(target_rank) + g_a + g_b" and fit.n_clusters == 8
    flags = flag_matrix(metacam["combo_id"], 2).astype(float)
    model = units["model"].to_numpy()[metacam["unit"]]
    design = pd.DataFrame({"const": 1.0, "m2": (model == "m2") * 1.0, "m3": (model == "m3") * 1.0,
                           "rank2": (units["target_rank"].to_numpy()[metacam["unit"]] == 2) * 1.0,
                           "g_a": flags[:, 0], "g_b": flags[:, 1]})
    oracle = sm.OLS(metacam["score"].to_numpy(), design).fit(
        cov_type="cluster", cov_kwds={"groups": units["cluster"].to_numpy()[metacam["unit"]]}, use_t=True)
    effects = fit.effects.set_index("term")
    np.testing.assert_allclose(effects["estimate"], oracle.params[["g_a", "g_b"]], rtol=1e-9)
    np.testing.assert_allclose(effects["std_err"], oracle.bse[["g_a", "g_b"]], rtol=1e-9)
    assert (effects["df"] == 7).all()


def test_cr2_for_a_balanced_mean_is_the_t_test_over_cluster_means():
    # One group, balanced: every cluster holds one unit with both experiments. The effect is the mean
    # of the per-cluster differences d_c, and CR2 gives exactly the paired t-test's SE s_d / sqrt(C).
    rng = np.random.default_rng(4)
    n = 8
    off, on = rng.normal(0, 1, n), rng.normal(0.3, 1, n)
    metacam = pd.DataFrame({"combo_id": [0] * n + [1] * n, "unit": list(range(n)) * 2,
                            "score": np.r_[off, on]})
    fit = fit_factorial(metacam, unit_table(["m"] * n, list(range(n))), ["only"])
    d = on - off
    row = fit.effects.iloc[0]
    assert row["estimate"] == pytest.approx(d.mean())
    assert row["std_err"] == pytest.approx(d.std(ddof=1) / np.sqrt(n), rel=1e-10)
    assert row["p_value"] == pytest.approx(stats.ttest_1samp(d, 0).pvalue, rel=1e-8)


@pytest.fixture(scope="module")
def planted_fit(planted_dataset):
    dataset = load_dataset(planted_dataset)
    return fit_factorial(select_scores(dataset, parse_score("adaptive")).metacam, dataset.units, NAMES)


def test_ols_recovers_each_planted_effect_within_its_ci(planted_fit):
    fit = planted_fit
    effects = fit.effects.set_index("term")
    assert fit.inference == "CR1" and fit.n_clusters == 150 and fit.n_obs == 150 * 64
    for group, planted in PLANTED.items():
        row = effects.loc[f"g_{group}"]
        assert row["ci_low"] <= planted <= row["ci_high"], (group, row.to_dict())
        assert row["ci_high"] - row["ci_low"] < 0.004  # informative, else the check above is empty
    assert fit.dropped == ()
    assert (effects["p_holm"] >= effects["p_value"]).all()


def test_main_effect_coefficients_equal_contrasts_on_a_balanced_design(planted_dataset, planted_fit):
    dataset = load_dataset(planted_dataset)
    metacam = select_scores(dataset, parse_score("adaptive")).metacam
    means = metacam.groupby("combo_id")["score"].mean()
    flags = flag_matrix(means.index, 6).astype(bool)
    beta = [means[flags[:, i]].mean() - means[~flags[:, i]].mean() for i in range(6)]
    np.testing.assert_allclose(planted_fit.effects["estimate"], beta, atol=1e-10)


def test_interactions_find_the_planted_interaction_with_holm(interaction_dataset):
    dataset = load_dataset(interaction_dataset)
    metacam = select_scores(dataset, parse_score("adaptive")).metacam
    fit = fit_factorial(metacam, dataset.units, NAMES, interactions=True)
    effects = fit.effects.set_index("term")
    planted = effects.loc["g_group1:g_group4"]
    assert planted["ci_low"] <= 0.04 <= planted["ci_high"] and planted["p_holm"] < 1e-6
    others = effects[(effects["kind"] == "interaction") & (effects.index != "g_group1:g_group4")]
    assert len(others) == 14 and others["estimate"].abs().max() < 0.01
    assert (others["p_holm"] > 0.05).sum() >= 13
    # Holm within the interaction family: 15 tests; the smallest p is multiplied by 15.
    interactions = effects[effects["kind"] == "interaction"]
    smallest = interactions["p_value"].idxmin()
    assert interactions.loc[smallest, "p_holm"] == pytest.approx(min(1.0, 15 * interactions["p_value"].min()))
    # Centred coding: main effects are average effects: group1 0.05 + 0.04/2, group4 −0.01 + 0.02.
    expected = {**PLANTED, "group1": 0.07, "group4": 0.01}
    for group, value in expected.items():
        row = effects.loc[f"g_{group}"]
        assert row["ci_low"] <= value <= row["ci_high"], group


def test_terms_a_partial_design_cannot_identify_are_dropped():
    # group1 (bit 0) never on; group3 (bit 2) always equal to group2 (bit 1): aliased.
    combos = np.array([0, 6, 8, 14, 16, 22, 32, 38, 40, 46, 48, 54])
    kept, dropped = estimable_terms(combos, NAMES, interactions=False)
    assert dropped == ["g_group1", "g_group3"]
    assert kept == ["g_group2", "g_group4", "g_group5", "g_group6"]
    kept, dropped = estimable_terms(np.arange(64), NAMES, interactions=True)
    assert len(kept) == 21 and dropped == []


def test_fit_on_partial_design_reports_dropped_terms():
    rng = np.random.default_rng(2)
    combos = [c for c in range(64) if not c & 1]  # group1 never on
    frame = pd.DataFrame([(c, u, 0.1 * (c >> 1 & 1) + rng.normal(0, 0.01)) for c in combos for u in range(5)],
                         columns=["combo_id", "unit", "score"])
    fit = fit_factorial(frame, unit_table(["m"] * 5, list(range(5))), NAMES)
    assert fit.dropped == ("g_group1",)
    assert fit.effects.set_index("term").loc["g_group2", "estimate"] == pytest.approx(0.1, abs=0.01)


def test_single_cluster_falls_back_to_iid_standard_errors():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"combo_id": np.arange(64), "unit": 0, "score": rng.normal(size=64)})
    fit = fit_factorial(frame, unit_table(["m"], [0]), NAMES)
    assert fit.inference == "iid" and fit.n_clusters == 1
    assert fit.effects["std_err"].notna().all()


def test_fewer_than_two_experiments_is_refused():
    with pytest.raises(ValueError, match="two experiments"):
        fit_factorial(pd.DataFrame({"combo_id": [3, 3], "unit": [0, 1], "score": [0.1, 0.2]}),
                      unit_table(["m", "m"], [0, 1]), NAMES)
