"""CRE (DESIGN §2) for any number of groups, against values computed by hand,
and the identity CRE_g = 2^{G-1}·(mean − median) + 2^{G-2}·β_g."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from metacam.analysis.cre import (
    cre,
    cre_curves,
    cre_identity,
    cre_per_unit,
    experiment_means,
    main_effect_contrasts,
)
from metacam.analysis.pipeline import analyze
from metacam.analysis.synthetic import make_groups, write_synthetic
from tests.analysis.helpers import write_hand

SIX = list(make_groups(6).names)


def long_frame(scores: dict[int, list[float]]) -> pd.DataFrame:
    """``scores[combo][unit]`` -> rows (combo_id, unit, score)."""
    return pd.DataFrame([(c, u, s) for c, values in scores.items() for u, s in enumerate(values)],
                        columns=["combo_id", "unit", "score"])


def test_two_groups_by_hand():
    # s = (0, 0, 0, 4) for combos 0..3 (bit 0 = a, bit 1 = b). median = 0, mean = 1, r_e = s_e.
    # CRE_a = r_1 + r_3 = 4, CRE_b = r_2 + r_3 = 4.
    # Identity: 2^{G-1}·(mean − median) = 2·1 = 2; β_a = mean(s_1, s_3) − mean(s_0, s_2) = 2 − 0 = 2,
    # 2^{G-2}·β_a = 1·2 = 2; 2 + 2 = 4 = CRE_a (and likewise for b).
    means = pd.Series([0.0, 0.0, 0.0, 4.0], index=[0, 1, 2, 3])
    np.testing.assert_allclose(cre(means, ["a", "b"]), [4.0, 4.0])
    table, facts = cre_identity(means, ["a", "b"])
    assert (facts["half"], facts["quarter"], facts["offset"]) == (2.0, 1.0, 2.0)
    np.testing.assert_allclose(table["beta"], [2.0, 2.0])
    np.testing.assert_allclose(table["identity_rhs"], [4.0, 4.0])
    assert facts["complete"] is True and facts["max_abs_difference"] == 0.0


def test_one_group_by_hand():
    # G = 1: s = (1, 3): median 2, CRE = 3 − 2 = 1; identity: 1·(2 − 2) + 0.5·(3 − 1) = 1.
    table, facts = cre_identity(pd.Series([1.0, 3.0], index=[0, 1]), ["only"])
    assert table.loc["only", "cre"] == 1.0 and table.loc["only", "identity_rhs"] == 1.0
    assert facts["quarter"] == 0.5


@pytest.mark.parametrize("n_groups", [2, 3, 6])
def test_linear_scores_give_powers_of_two(n_groups):
    # s_e = e. median of 0..2^G−1 is (2^G − 1)/2. Group i is on in the 2^{G−1} combos with bit i set;
    # their sum of e is 2^{G−1}·2^i + 2^{G−2}·(2^G − 1 − 2^i), so
    # CRE_i = that − 2^{G−1}·(2^G − 1)/2 = 2^{G−2}·2^i (G = 3: 2, 4, 8; G = 6: 16, 32, ..., 512).
    combos = np.arange(2**n_groups)
    names = [f"g{i}" for i in range(n_groups)]
    values = cre(pd.Series(combos.astype(float), index=combos), names)
    np.testing.assert_allclose(values, [2.0 ** (n_groups - 2) * 2**i for i in range(n_groups)])


def test_cre_end_to_end_by_hand(tmp_path):
    # Six groups, s_e = e through the whole pipeline (two units at e − 1 and e + 1): CRE_i = 16·2^i.
    write_hand(tmp_path / "data", {e: [e - 1.0, e + 1.0] for e in range(64)})
    result = analyze(tmp_path / "data", tmp_path / "out", replicates=200)
    expected = [16, 32, 64, 128, 256, 512]
    assert result.cre is not None
    np.testing.assert_allclose(result.cre.to_numpy(), expected, atol=1e-4)
    table = pd.read_csv(tmp_path / "out" / "cre.csv").set_index("group")
    np.testing.assert_allclose(table.loc[SIX, "cre"], expected, atol=1e-4)
    # Per unit: shifting all scores of a unit shifts its median too, so both units have the same CRE.
    assert result.per_unit is not None
    np.testing.assert_allclose(result.per_unit[SIX].to_numpy(), [expected] * 2, atol=1e-4)


@pytest.mark.parametrize("n_groups", [3, 7])
def test_synthetic_sweeps_satisfy_the_identity(tmp_path, n_groups):
    groups = make_groups(n_groups)
    write_synthetic(tmp_path / "data", 12, groups=groups, models=("m",), seed=n_groups, singles={}, controls={})
    result = analyze(tmp_path / "data", tmp_path / "out", replicates=200)
    assert result.cre is not None and len(result.cre) == n_groups
    # Recomputed independently from the raw Parquet rows: held-out scores at k*.
    raw = pq.read_table(tmp_path / "data").to_pandas()
    best = raw[(raw["kind"] == "metacam") & raw["is_best_k"]]
    means = best.groupby("combo_id")["road_heldout_combined"].mean().astype(float)
    assert len(means) == 2**n_groups
    combos = means.index.to_numpy(dtype=np.int64)
    for bit, name in enumerate(groups.names):
        on = (combos >> bit & 1) == 1
        beta = means[on].mean() - means[~on].mean()
        rhs = 2 ** (n_groups - 1) * (means.mean() - means.median()) + 2 ** (n_groups - 2) * beta
        assert result.cre[name] == pytest.approx(rhs, abs=1e-9)
        assert result.cre[name] == pytest.approx((means - means.median())[on].sum(), abs=1e-9)
    table = pd.read_csv(tmp_path / "out" / "cre_identity.csv")
    assert len(table) == n_groups and table["difference"].abs().max() < 1e-12
    assert f"CRE_g = 2^{n_groups - 1}·(mean − median) + 2^{n_groups - 2}·β_g" in (
        tmp_path / "out" / "report.md").read_text()


def test_cre_by_hand_two_outliers():
    # s_e = 0 everywhere except s_63 = 6.4 (all groups on) and s_1 = −1 (first group only).
    # Sorted: −1, 0 (62 times), 6.4 -> median 0, r_e = s_e.
    # group1 is on in 1 and 63: CRE = −1 + 6.4 = 5.4; every other group only in 63: 6.4.
    means = pd.Series(0.0, index=range(64))
    means[63], means[1] = 6.4, -1.0
    np.testing.assert_allclose(cre(means, SIX).to_numpy(), [5.4, 6.4, 6.4, 6.4, 6.4, 6.4])


def test_cre_by_hand_partial_sweep():
    # Only combos 0..3 present with s_e = e: median 1.5, r = −1.5, −0.5, 0.5, 1.5.
    # group1 (bit 0) on in 1 and 3: 1.0; group2 (bit 1) on in 2 and 3: 2.0; the others in none: 0.
    means = pd.Series([0.0, 1.0, 2.0, 3.0], index=[0, 1, 2, 3])
    np.testing.assert_allclose(cre(means, SIX).to_numpy(), [1.0, 2.0, 0, 0, 0, 0])
    _, facts = cre_identity(means, SIX)
    assert facts["complete"] is False


def test_per_unit_cre_uses_each_units_own_median_and_experiments():
    # Unit 0: combos 0..3 with scores 0, 1, 2, 3 -> group1 1.0, group2 2.0 (as above).
    # Unit 1: combos 0, 1, 2 only, scores 10, 10, 13 -> median 10, r = 0, 0, 3: group1 0, group2 3.
    frame = long_frame({0: [0.0, 10.0], 1: [1.0, 10.0], 2: [2.0, 13.0]})
    frame = pd.concat([frame, pd.DataFrame({"combo_id": [3], "unit": [0], "score": [3.0]})])
    table = cre_per_unit(frame, SIX)
    np.testing.assert_allclose(table.loc[0, SIX], [1.0, 2.0, 0, 0, 0, 0])
    np.testing.assert_allclose(table.loc[1, SIX], [0.0, 3.0, 0, 0, 0, 0])
    assert table["n_experiments"].tolist() == [4, 3]


def test_curves_end_at_cre_and_follow_the_ranking():
    rng = np.random.default_rng(0)
    means = pd.Series(rng.normal(size=64), index=range(64))
    curves = cre_curves(means, SIX)
    assert (np.diff(curves["score"]) <= 0).all()  # best first
    np.testing.assert_allclose(curves[SIX].iloc[-1], cre(means, SIX))
    first = int(curves["combo_id"].iloc[0])
    for bit, group in enumerate(SIX):  # after one step only the best experiment's groups moved
        expected = curves["residual"].iloc[0] if first >> bit & 1 else 0.0
        assert curves[group].iloc[0] == pytest.approx(expected)
    # Lower is better: the order flips.
    assert (np.diff(cre_curves(means, SIX, sign=-1)["score"]) >= 0).all()


def test_identity_holds_on_complete_designs_only():
    rng = np.random.default_rng(1)
    for n_groups in (1, 4, 10):
        names = [f"g{i}" for i in range(n_groups)]
        means = pd.Series(rng.normal(size=2**n_groups), index=range(2**n_groups))
        expected = (2 ** (n_groups - 1) * (means.mean() - means.median())
                    + 2 ** (n_groups - 2) * main_effect_contrasts(means, names))
        np.testing.assert_allclose(cre(means, names), expected, atol=1e-9)
    means = pd.Series(rng.normal(size=64), index=range(64))
    partial = means.drop([3, 17, 40, 41])
    _, facts = cre_identity(partial, SIX)
    assert facts["complete"] is False and facts["max_abs_difference"] > 1e-6
    # What always holds: CRE_g = n_g · (mean with g on − median).
    flags = (partial.index.to_numpy()[:, None] >> np.arange(6)) & 1
    for bit, group in enumerate(SIX):
        on = partial[flags[:, bit] == 1]
        assert cre(partial, SIX)[group] == pytest.approx(len(on) * (on.mean() - partial.median()))


def test_experiment_means():
    frame = long_frame({0: [1.0, 3.0], 5: [4.0, 6.0]})
    assert experiment_means(frame).to_dict() == {0: 2.0, 5: 5.0}


def test_a_null_group_has_a_cre_but_no_effect(tmp_path):
    # group3 does nothing; group1 and group2 interact (+0.08 together), which makes the experiment
    # scores skewed: mean − median = 0.02, so every group's CRE carries 2^2·0.02 = +0.08. group3's CRE
    # is +0.08 with a CI far from 0, while β and the OLS effect say what it is: no evidence of an effect.
    groups = make_groups(3, control_last=False)
    write_synthetic(tmp_path / "data", 40, groups=groups, models=("a", "b", "c"), seed=2, singles={}, controls={},
                    effects={"group1": 0.02, "group2": 0.02, "group3": 0.0}, interaction=("group1", "group2", 0.08),
                    image_sd=0.05, entry_image_sd=0.005, noise=0.005, unit_sd=0.01)
    result = analyze(tmp_path / "data", tmp_path / "out", replicates=400)
    table = pd.read_csv(tmp_path / "out" / "cre.csv").set_index("group")
    null = table.loc["group3"]
    assert null["cre"] == pytest.approx(0.08, abs=0.01) and null["ci_low"] > 0.05
    assert null["beta_ci_low"] < 0 < null["beta_ci_high"] and null["ols_ci_low"] < 0 < null["ols_ci_high"]
    assert null["effect"] == "no evidence" and null["n_clusters"] == 40
    # The groups that do something are read from their main effects (0.02 + 0.08/2 = 0.06 each).
    assert table.loc[["group1", "group2"], "effect"].tolist() == ["helps", "helps"]
    np.testing.assert_allclose(table.loc[["group1", "group2"], "beta"], 0.06, atol=0.005)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "its sign does not say whether a group helps" in report
    assert "means the group helps" not in report and "negative CRE" not in report
    assert result.identity_facts is not None and result.identity_facts["offset"] == pytest.approx(0.08, abs=0.01)
