"""Factorial OLS: planted effects are recovered, planted interactions found, unidentifiable terms dropped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metacam.analysis.cre import cre, experiment_summary, main_effect_contrasts
from metacam.analysis.dataset import load_dataset
from metacam.analysis.scores import parse_score, select_scores
from metacam.analysis.stats import estimable_terms, fit_factorial
from metacam.groups import GROUP_KEYS
from tests.analysis.conftest import PLANTED


@pytest.fixture(scope="module")
def planted_scores(planted_dataset):
    return select_scores(load_dataset(planted_dataset), parse_score("adaptive")).metacam


@pytest.fixture(scope="module")
def interaction_scores(interaction_dataset):
    return select_scores(load_dataset(interaction_dataset), parse_score("adaptive")).metacam


def test_ols_recovers_each_planted_effect_within_its_ci(planted_scores):
    fit = fit_factorial(planted_scores)
    effects = fit.effects.set_index("term")
    assert fit.cov_type == "cluster" and fit.n_clusters == 150 and fit.n_obs == 150 * 64
    for group, planted in PLANTED.items():
        row = effects.loc[f"g_{group}"]
        assert row["ci_low"] <= planted <= row["ci_high"], (group, row.to_dict())
        # The CI must be informative (noise 0.03 over 9,600 rows), else the check above is empty.
        assert row["ci_high"] - row["ci_low"] < 0.004
    assert fit.dropped == ()


def test_ci_coverage_is_nominal():
    # 30 independent small datasets × 6 effects = 180 intervals; about 171 should cover the truth.
    # A broken standard error (too small by a factor 2) would cover only ~65%.
    from metacam.analysis.synthetic import synthetic_results

    covered = []
    for seed in range(30):
        frame = synthetic_results(
            30,
            effects=PLANTED,
            noise=0.03,
            unit_sd=0.08,
            seed=100 + seed,
            ks=(100.0,),
            singles={},
            models=("m",),
        )
        unit = frame["image_id"].astype("category").cat.codes
        scores = pd.DataFrame(
            {
                "combo_id": frame["combo_id"].astype(int),
                "unit": unit,
                "score": frame["road_combined"].astype(float),
            }
        )
        effects = fit_factorial(scores).effects.set_index("term")
        covered += [
            effects.loc[f"g_{g}", "ci_low"] <= v <= effects.loc[f"g_{g}", "ci_high"]
            for g, v in PLANTED.items()
        ]
    assert 0.88 <= np.mean(covered) <= 1.0


def test_cre_ranks_groups_in_the_planted_order(planted_scores):
    means = experiment_summary(planted_scores).set_index("combo_id")["mean"]
    by_cre = cre(means).sort_values(ascending=False).index.tolist()
    planted_order = sorted(PLANTED, key=PLANTED.get, reverse=True)
    assert by_cre == planted_order


def test_main_effect_coefficients_equal_contrasts_on_a_balanced_design(planted_scores):
    fit = fit_factorial(planted_scores)
    means = planted_scores.groupby("combo_id")["score"].mean()
    beta = main_effect_contrasts(means)
    estimates = fit.effects.set_index("term")["estimate"]
    np.testing.assert_allclose(
        [estimates[f"g_{g}"] for g in GROUP_KEYS], beta.to_numpy(), atol=1e-10
    )


def test_interactions_finds_the_planted_interaction(interaction_scores):
    fit = fit_factorial(interaction_scores, interactions=True)
    effects = fit.effects.set_index("term")
    planted = effects.loc["g_gradcam:g_eigen"]
    assert planted["ci_low"] <= 0.04 <= planted["ci_high"]
    assert planted["p_value"] < 1e-6
    others = effects[(effects["kind"] == "interaction") & (effects.index != "g_gradcam:g_eigen")]
    assert len(others) == 14
    assert others["estimate"].abs().max() < 0.01
    # Centred coding: main effects are average effects; gradcam's averages over eigen off/on:
    # 0.05 + 0.04 / 2 = 0.07, eigen's: -0.01 + 0.02 = 0.01; the rest are as planted.
    expected = {**PLANTED, "gradcam": 0.07, "eigen": 0.01}
    for group, value in expected.items():
        row = effects.loc[f"g_{group}"]
        assert row["ci_low"] <= value <= row["ci_high"], group
    anova = fit.anova.set_index("term")
    assert anova.loc["gradcam × eigen", "p_cluster"] < 1e-6
    assert anova.loc["gradcam × eigen", "share"] > anova.loc["gradcam × perturbation", "share"]


def test_without_interactions_the_model_has_only_main_effects(interaction_scores):
    fit = fit_factorial(interaction_scores)
    assert fit.effects["kind"].eq("main").all() and len(fit.effects) == 6


def test_terms_a_partial_design_cannot_identify_are_dropped():
    # gradcam (bit 0) never on; perturbation (bit 2) always equal to gradcampp (bit 1): aliased.
    combos = np.array([0, 6, 8, 14, 16, 22, 32, 38, 40, 46, 48, 54])
    kept, dropped = estimable_terms(combos, interactions=False)
    assert dropped == ["g_gradcam", "g_perturbation"]
    assert kept == ["g_gradcampp", "g_eigen", "g_fullgrad", "g_random"]
    kept, dropped = estimable_terms(np.arange(64), interactions=True)
    assert len(kept) == 21 and dropped == []


def test_fit_on_partial_design_reports_dropped_terms():
    rng = np.random.default_rng(2)
    combos = [c for c in range(64) if not c & 1]  # gradcam never on
    frame = pd.DataFrame(
        [(c, u, 0.1 * (c >> 1 & 1) + rng.normal(0, 0.01)) for c in combos for u in range(5)],
        columns=["combo_id", "unit", "score"],
    )
    fit = fit_factorial(frame)
    assert fit.dropped == ("g_gradcam",)
    assert fit.effects.set_index("term").loc["g_gradcampp", "estimate"] == pytest.approx(
        0.1, abs=0.01
    )


def test_single_unit_falls_back_to_iid_standard_errors():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"combo_id": np.arange(64), "unit": 0, "score": rng.normal(size=64)})
    fit = fit_factorial(frame)
    assert fit.cov_type == "nonrobust" and fit.n_clusters == 1
    assert fit.effects["std_err"].notna().all()


def test_fewer_than_two_experiments_is_refused():
    with pytest.raises(ValueError, match="two experiments"):
        fit_factorial(pd.DataFrame({"combo_id": [3, 3], "unit": [0, 1], "score": [0.1, 0.2]}))
