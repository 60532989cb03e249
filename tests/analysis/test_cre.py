"""CRE (DESIGN §2) against values computed by hand, and its relation to the main effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metacam.analysis.cre import (
    cre,
    cre_curves,
    cre_ols_identity,
    cre_per_unit,
    experiment_summary,
    main_effect_contrasts,
)
from metacam.analysis.pipeline import analyze
from metacam.groups import GROUP_KEYS
from tests.analysis.helpers import write_hand


def long_frame(scores: dict[int, list[float]]) -> pd.DataFrame:
    """``scores[combo][unit]`` -> rows (combo_id, unit, score)."""
    return pd.DataFrame(
        [(c, u, s) for c, values in scores.items() for u, s in enumerate(values)],
        columns=["combo_id", "unit", "score"],
    )


def test_cre_by_hand_linear_scores_end_to_end(tmp_path):
    # s_e = e for e = 0..63 (two units at e - 1 and e + 1, so the mean over units is e).
    # median of 0..63 = (31 + 32) / 2 = 31.5, so r_e = e - 31.5.
    # Group i is on in the 32 combos with bit i set. Their sum of e:
    #   each contributes 2^i (32·2^i in all) and each other bit j is set in 16 of them (16·2^j),
    #   Σ e = 32·2^i + 16·(63 - 2^i) = 16·2^i + 1008.
    # CRE_i = Σ e - 32·31.5 = 16·2^i + 1008 - 1008 = 16·2^i  ->  16, 32, 64, 128, 256, 512.
    scores = {e: [e - 1.0, e + 1.0] for e in range(64)}
    write_hand(tmp_path / "data", scores)
    result = analyze(tmp_path / "data", tmp_path / "out")
    assert result.cre is not None
    np.testing.assert_allclose(result.cre.to_numpy(), [16, 32, 64, 128, 256, 512], atol=1e-4)
    table = pd.read_csv(tmp_path / "out" / "cre.csv").set_index("group")
    np.testing.assert_allclose(
        table.loc[list(GROUP_KEYS), "cre"], [16, 32, 64, 128, 256, 512], atol=1e-4
    )
    # Per unit: unit 0 has s_e = e - 1 (median 30.5), unit 1 s_e = e + 1 (median 32.5);
    # shifting all scores of a unit shifts its median too, so both units have the same CRE.
    per_unit = result.per_unit
    assert per_unit is not None
    np.testing.assert_allclose(
        per_unit[list(GROUP_KEYS)].to_numpy(), [[16, 32, 64, 128, 256, 512]] * 2, atol=1e-4
    )


def test_cre_by_hand_two_outliers():
    # s_e = 0 everywhere except s_63 = 6.4 (all groups on) and s_1 = -1 (gradcam only).
    # Sorted: -1, 0 (62 times), 6.4 -> the 32nd and 33rd values are 0 -> median 0, r_e = s_e.
    # gradcam is on in 1 and 63: CRE = -1 + 6.4 = 5.4; every other group is on only in 63: 6.4.
    means = pd.Series(0.0, index=range(64))
    means[63], means[1] = 6.4, -1.0
    np.testing.assert_allclose(cre(means).to_numpy(), [5.4, 6.4, 6.4, 6.4, 6.4, 6.4])


def test_cre_by_hand_partial_sweep():
    # Only combos 0..3 present with s_e = e: median of {0,1,2,3} = 1.5, r = -1.5, -0.5, 0.5, 1.5.
    # gradcam (bit 0) on in 1 and 3: -0.5 + 1.5 = 1.0; gradcampp (bit 1) on in 2 and 3: 0.5 + 1.5 = 2.0;
    # the other groups are on in none of them: 0.
    means = pd.Series([0.0, 1.0, 2.0, 3.0], index=[0, 1, 2, 3])
    np.testing.assert_allclose(cre(means).to_numpy(), [1.0, 2.0, 0, 0, 0, 0])


def test_per_unit_cre_uses_each_units_own_median_and_experiments():
    # Unit 0: combos 0..3 with scores 0, 1, 2, 3 -> as above: gradcam 1.0, gradcampp 2.0.
    # Unit 1: combos 0, 1, 2 only, scores 10, 10, 13 -> median 10, r = 0, 0, 3:
    #   gradcam (on in 1) 0; gradcampp (on in 2) 3.
    frame = long_frame({0: [0.0, 10.0], 1: [1.0, 10.0], 2: [2.0, 13.0]})
    frame = pd.concat([frame, pd.DataFrame({"combo_id": [3], "unit": [0], "score": [3.0]})])
    table = cre_per_unit(frame)
    np.testing.assert_allclose(table.loc[0, list(GROUP_KEYS)], [1.0, 2.0, 0, 0, 0, 0])
    np.testing.assert_allclose(table.loc[1, list(GROUP_KEYS)], [0.0, 3.0, 0, 0, 0, 0])
    assert table["n_experiments"].tolist() == [4, 3]


def test_experiment_summary_ranks_best_first_and_mean_over_units():
    frame = long_frame({0: [1.0, 3.0], 5: [4.0, 6.0], 9: [0.0, 2.0]})
    summary = experiment_summary(frame)
    assert summary["combo_id"].tolist() == [5, 0, 9]
    assert summary["mean"].tolist() == [5.0, 2.0, 1.0]
    assert summary["residual"].tolist() == [3.0, 0.0, -1.0]  # median of 5, 2, 1 is 2
    assert summary.loc[0, "method"] == "gradcam+perturbation"  # 5 = bits 0 and 2
    # Lower is better (MoRF): the order flips.
    assert experiment_summary(frame, sign=-1)["combo_id"].tolist() == [9, 0, 5]


def test_curves_end_at_cre_and_follow_the_ranking():
    rng = np.random.default_rng(0)
    means = pd.Series(rng.normal(size=64), index=range(64))
    curves = cre_curves(means)
    assert (np.diff(curves["score"]) <= 0).all()  # best first
    np.testing.assert_allclose(curves[list(GROUP_KEYS)].iloc[-1], cre(means))
    first = int(curves["combo_id"].iloc[0])
    for bit, group in enumerate(
        GROUP_KEYS
    ):  # after one step only the best experiment's groups moved
        expected = curves["residual"].iloc[0] if first >> bit & 1 else 0.0
        assert curves[group].iloc[0] == pytest.approx(expected)


def test_identity_with_main_effects_holds_on_complete_design_only():
    rng = np.random.default_rng(1)
    means = pd.Series(rng.normal(size=64), index=range(64))
    table, facts = cre_ols_identity(means)
    assert facts["complete"] is True
    beta = main_effect_contrasts(means)
    expected = 32 * (means.mean() - means.median()) + 16 * beta
    np.testing.assert_allclose(cre(means), expected, atol=1e-12)
    assert facts["max_abs_difference"] < 1e-12

    partial = means.drop([3, 17, 40, 41])
    _, facts = cre_ols_identity(partial)
    assert facts["complete"] is False
    assert facts["max_abs_difference"] > 1e-6
    # What always holds: CRE_g = n_g · (mean with g on − median).
    flags = (partial.index.to_numpy()[:, None] >> np.arange(6)) & 1
    for bit, group in enumerate(GROUP_KEYS):
        on = partial[flags[:, bit] == 1]
        assert cre(partial)[group] == pytest.approx(len(on) * (on.mean() - partial.median()))
