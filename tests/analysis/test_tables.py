"""Paper tables: t-intervals, win rates and the MetaCAM-vs-single table, by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from metacam.analysis.cre import experiment_summary
from metacam.analysis.summary import summarise
from metacam.analysis.tables import (
    best_combo,
    best_single,
    fmt,
    fmt_ci,
    id_ranges,
    markdown,
    metacam_vs_single,
    ranking_table,
    win_rates,
)

# Four units. MetaCAM's combo 7 and two single methods a and b.
MC = [0.5, 0.2, 0.3, 0.1]
A = [0.4, 0.3, 0.3, 0.0]  # mean 0.25
B = [0.1, 0.1, 0.35, 0.2]  # mean 0.1875


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    metacam = pd.DataFrame({"combo_id": 7, "unit": range(4), "score": MC})
    singles = pd.DataFrame(
        {"method": ["a"] * 4 + ["b"] * 4, "unit": list(range(4)) * 2, "score": A + B}
    )
    return metacam, singles


def test_t_interval_by_hand():
    # values 1, 2, 3, 4: mean 2.5, sd sqrt(5/3) = 1.290994, t(0.975, df 3) = 3.182446,
    # half-width = 3.182446 · 1.290994 / sqrt(4) = 4.108522 / 2 = 2.054261.
    table = summarise(pd.DataFrame({"g": 0, "score": [1.0, 2.0, 3.0, 4.0]}), "g")
    row = table.loc[0]
    assert row["mean"] == 2.5 and row["n"] == 4
    assert row["ci_low"] == pytest.approx(2.5 - 2.054261, abs=1e-5)
    assert row["ci_high"] == pytest.approx(2.5 + 2.054261, abs=1e-5)
    one = summarise(pd.DataFrame({"g": 0, "score": [1.0]}), "g").loc[0]
    assert math.isnan(one["ci_low"])  # no interval from one unit


def test_win_rates_by_hand():
    metacam, singles = frames()
    assert best_single(singles) == "a"
    wins = win_rates(metacam, singles, best=7).set_index("opponent")
    # vs a: differences 0.1, -0.1, 0, 0.1 -> 2 wins, 1 tie, 1 loss.
    vs_a = wins.loc["best single method (a)"]
    assert (vs_a["wins"], vs_a["ties"], vs_a["losses"], vs_a["n_units"]) == (2, 1, 1, 4)
    assert vs_a["win_rate"] == pytest.approx(0.5)
    assert vs_a["mean_difference"] == pytest.approx(0.025)
    # vs each unit's best of a and b: 0.4, 0.3, 0.35, 0.2 -> differences 0.1, -0.1, -0.05, -0.1: 1 win.
    per_unit = wins.loc["per-unit best single method"]
    assert (per_unit["wins"], per_unit["ties"], per_unit["losses"]) == (1, 0, 3)
    assert per_unit["win_rate"] == pytest.approx(0.25)


def test_win_rates_when_lower_is_better():
    metacam, singles = frames()
    assert best_single(singles, sign=-1) == "b"  # lowest mean
    wins = win_rates(metacam, singles, best=7, sign=-1).set_index("opponent")
    # vs b: differences 0.4, 0.1, -0.05, -0.1 -> lower wins on units 3 and 4.
    assert wins.loc["best single method (b)", "wins"] == 2
    # vs each unit's lowest of a, b: 0.1, 0.1, 0.3, 0.0 -> differences 0.4, 0.1, 0, 0.1: no win, one tie.
    row = wins.loc["per-unit best single method"]
    assert (row["wins"], row["ties"], row["losses"]) == (0, 1, 3)


def test_win_rates_pair_only_units_with_both_scores():
    metacam, singles = frames()
    singles = singles[~((singles["method"] == "a") & (singles["unit"] == 0))]
    wins = win_rates(metacam, singles, best=7).set_index("opponent")
    # a now has mean (0.3 + 0.3 + 0) / 3 = 0.2 > b's 0.1875, paired over units 1..3.
    assert wins.loc["best single method (a)", "n_units"] == 3


def test_metacam_vs_single_table():
    metacam, singles = frames()
    everything = pd.concat([metacam, metacam.assign(combo_id=63, score=[0.0, 0.0, 0.0, 0.4])])
    plain = (
        everything.assign(score=everything["score"] - 0.1),
        singles.assign(score=singles["score"] - 0.1),
    )
    adaptive = (everything, singles)
    assert best_combo(everything) == 7  # means: 7 -> 0.275, 63 -> 0.1
    table = metacam_vs_single(adaptive, plain, best=7)
    assert table["entry"].tolist() == [
        "MetaCAM best: gradcam+gradcampp+perturbation",
        "MetaCAM all groups: gradcam+gradcampp+perturbation+eigen+fullgrad+random",
        "a",
        "b",
    ]
    np.testing.assert_allclose(table["adaptive_mean"], [0.275, 0.1, 0.25, 0.1875])
    np.testing.assert_allclose(table["plain_mean"], [0.175, 0.0, 0.15, 0.0875], atol=1e-12)
    assert table["adaptive_n"].tolist() == [4, 4, 4, 4]
    half = table["adaptive_ci_high"] - table["adaptive_mean"]
    sd_mc = np.std(MC, ddof=1)
    assert half.iloc[0] == pytest.approx(3.182446 * sd_mc / 2, rel=1e-6)

    no_plain = metacam_vs_single(adaptive, None, best=7)
    assert no_plain["plain_mean"].isna().all() and no_plain["adaptive_mean"].notna().all()


def test_ranking_table_has_every_experiment_best_first():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        [(c, u, c / 100 + rng.normal(0, 0.01)) for c in range(64) for u in range(3)],
        columns=["combo_id", "unit", "score"],
    )
    ranking = ranking_table(experiment_summary(frame))
    assert ranking["rank"].tolist() == list(range(1, 65))
    assert sorted(ranking["combo_id"]) == list(range(64))
    assert (np.diff(ranking["mean"]) <= 0).all()
    assert (ranking["n_units"] == 3).all()
    assert (ranking["ci_low"] < ranking["mean"]).all() and (
        ranking["mean"] < ranking["ci_high"]
    ).all()
    assert ranking.loc[ranking["combo_id"] == 63, "groups_on"].item() == 6


def test_formatting_helpers():
    assert id_ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"
    assert id_ranges([]) == ""
    assert fmt(float("nan")) == "n/a" and fmt(3) == "3" and fmt(0.123456) == "0.1235"
    assert fmt_ci(0.5, 0.4, 0.6) == "0.500 ± 0.100" and fmt_ci(float("nan"), 0, 1) == "n/a"
    text = markdown(pd.DataFrame({"name": ["a|b"], "value": [1.5]}))
    assert text.splitlines() == ["| name | value |", "|---|---:|", "| a\\|b | 1.5000 |"]
