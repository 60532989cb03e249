"""The evidence for the paper's question: planted optimism is reported, the comparator and
the in-sample best are kept apart, the gain splits into ensembling and thresholding, and
the headline answer follows the planted truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from metacam.analysis.evidence import headline
from metacam.analysis.pipeline import analyze
from metacam.analysis.synthetic import make_groups, write_synthetic
from tests.analysis.helpers import write_hand

GROUPS = make_groups(3)  # group3 is the control: comparator = combo 3 (group1+group2)
COMPARATOR = GROUPS.combo_name(GROUPS.comparator)
OPTIMISM = {"group1_cam1": 0.05, "group1_cam2": 0.0, "group2_cam1": 0.012, COMPARATOR: 0.03,
            "shuffled": 0.02, "group1": 0.5}  # "group1" = combo 1's method: a large planted optimism
# In-sample levels: combo 1 (group1 alone) 0.16 is the in-sample best, the comparator 0.155;
# held-out (level − optimism): comparator 0.125, combo 1 −0.34, best single group1_cam2 0.10.
EFFECTS = {"group1": 0.06, "group2": -0.005, "group3": -0.05}
SINGLES = {"group1_cam1": 0.12, "group1_cam2": 0.10, "group1_cam3": 0.09, "group2_cam1": 0.08,
           "group2_cam2": 0.07, "group2_cam3": 0.06, "group3_random": 0.0}


@pytest.fixture(scope="module")
def optimism_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("optimism")
    write_synthetic(root / "data", 40, groups=GROUPS, seed=2, optimism=OPTIMISM, effects=EFFECTS, singles=SINGLES)
    return analyze(root / "data", root / "out", replicates=300), root / "out"


def test_planted_optimism_is_reported_per_method(optimism_run):
    _, out = optimism_run
    table = pd.read_csv(out / "optimism.csv")
    by_entry = table.set_index("entry")["optimism"]
    # No held-out noise: in-sample minus held-out at k* is exactly the planted value (float32 rows).
    assert by_entry["group1_cam1"] == pytest.approx(0.05, abs=1e-6)
    assert by_entry["group1_cam2"] == pytest.approx(0.0, abs=1e-6)
    assert by_entry["group2_cam1"] == pytest.approx(0.012, abs=1e-6)
    assert by_entry["shuffled"] == pytest.approx(0.02, abs=1e-6)
    assert by_entry["smooth_noise"] == pytest.approx(0.0, abs=1e-6)
    assert by_entry[f"MetaCAM comparator: {COMPARATOR}"] == pytest.approx(0.03, abs=1e-6)
    assert by_entry["group1"] == pytest.approx(0.5, abs=1e-6)
    # The plain rows that are not k* carry no planted optimism: the gap is 0 and all of it is excess.
    np.testing.assert_allclose(table["plain_gap"], 0.0, atol=1e-6)
    np.testing.assert_allclose(table["excess"], table["optimism"], atol=1e-6)
    assert (table["n_units"] == 80).all() and len(table) == 8 + 7 + 2  # combos, singles, controls
    report = (out / "report.md").read_text()
    assert "## Optimism of in-sample scores" in report and "| group1_cam1 (single) |" in report


def test_planted_optimism_within_its_ci_with_heldout_noise(tmp_path):
    write_synthetic(tmp_path / "data", 40, groups=GROUPS, seed=3, optimism=OPTIMISM, heldout_noise=0.02,
                    effects=EFFECTS, singles=SINGLES)
    analyze(tmp_path / "data", tmp_path / "out", replicates=500)
    table = pd.read_csv(tmp_path / "out" / "optimism.csv").set_index("entry")
    for entry, planted in (("group1_cam1", 0.05), ("group2_cam1", 0.012), ("shuffled", 0.02)):
        row = table.loc[entry]
        assert row["optimism_ci_low"] <= planted <= row["optimism_ci_high"], entry
        assert row["optimism_ci_high"] - row["optimism_ci_low"] < 0.02


def test_best_is_chosen_in_sample_and_kept_apart_from_the_comparator(optimism_run):
    result, out = optimism_run
    # combo 1 (group1) is the best in-sample; its planted optimism of 0.5 sinks it held-out.
    assert result.best == 1 and GROUPS.comparator == 3
    paper = pd.read_csv(out / "metacam_vs_single.csv")
    assert paper["entry"].tolist()[:2] == [f"MetaCAM comparator: {COMPARATOR}", "MetaCAM best in-sample: group1"]
    report = (out / "report.md").read_text()
    assert "The best combination *chosen in-sample* is `group1` (combo 1)" in report
    # Held-out, the comparator (group1 + group2) beats it: the planted effects favour it.
    assert paper.loc[0, "adaptive_mean"] > paper.loc[1, "adaptive_mean"]


def test_gain_split_adds_up(optimism_run):
    result, _ = optimism_run
    gains = result.gains
    assert gains is not None
    assert set(gains["metric"]) == {"combined", "deletion", "insertion", "sparseness", "complexity"}
    for _, part in gains.groupby("metric"):
        mean = part.set_index("component")["mean_difference"]
        assert mean["ensembling"] + mean["thresholding"] == pytest.approx(mean["total"], abs=1e-12)
    # The best single is chosen out of sample, on the other folds' plain scores: group1_cam1 (the
    # highest plain level; its planted optimism is on the k* rows only) in each of the 5 folds.
    assert (gains["best_single"] == "chosen out of sample (group1_cam1: 5/5)").all()
    assert (gains["n_clusters"] == 40).all()


def test_comparisons_are_held_out_by_default_and_in_sample_on_request(optimism_run, tmp_path):
    result, out = optimism_run
    comparisons = pd.read_csv(out / "comparisons.csv")
    road = comparisons[comparisons["metric"] == "combined"].set_index("opponent")
    assert road["score"].iloc[0] == "held-out adaptive ROAD combined"
    held_out = road.loc["group1_cam1", "mean_difference"]
    in_sample = analyze(result.dataset.root, tmp_path / "in", in_sample=True, replicates=300)
    assert in_sample.comparisons is not None
    road_in = in_sample.comparisons[in_sample.comparisons["metric"] == "combined"].set_index("opponent")
    assert road_in["score"].iloc[0] == "in-sample adaptive ROAD combined"
    # In-sample the comparator gains its optimism (0.03) and group1_cam1 its own (0.05).
    assert road_in.loc["group1_cam1", "mean_difference"] == pytest.approx(held_out + 0.03 - 0.05, abs=1e-6)
    assert "in-sample (optimistic)" in (tmp_path / "in" / "report.md").read_text()


def test_headline_yes_when_metacam_beats_everything(optimism_run):
    result, out = optimism_run
    headline = pd.read_csv(out / "headline.csv").set_index("metric")
    assert headline.loc["combined", "beats_every_single"] and headline.loc["combined", "beats_controls"]
    # group3 is a control group: its member group3_random is compared as a control, not as a CAM.
    assert headline.loc["combined", "singles"] == 6 and headline.loc["combined", "controls"] == 3
    assert bool(headline.loc["deletion", "beats_every_single"])
    report = (out / "report.md").read_text()
    answer = report.index("## Answer (held-out): does MetaCAM beat every single CAM?")
    assert answer < report.index("## Dataset")  # the report leads with the answer
    assert "**held-out adaptive ROAD combined** (higher is better" in report
    assert "**adaptive deletion AUC** (lower is better" in report
    assert "**adaptive insertion AUC** (higher is better" in report


def test_headline_no_when_a_single_cam_is_better(tmp_path):
    singles = {"group1_cam1": 0.5, "group1_cam2": 0.1, "group2_cam1": 0.1, "group2_cam2": 0.1,
               "group3_random": 0.0}
    write_synthetic(tmp_path / "data", 30, groups=GROUPS, seed=4, singles=singles, controls={"smooth_noise": 0.2})
    result = analyze(tmp_path / "data", tmp_path / "out", replicates=300)
    assert result.headline is not None and result.comparisons is not None
    row = result.headline.set_index("metric").loc["combined"]
    assert not row["beats_every_single"] and row["closest_single"] == "group1_cam1"
    assert row["singles"] == 4 and row["singles_beaten"] == 3 and row["closest_difference"] < 0
    verdicts = result.comparisons[result.comparisons["metric"] == "combined"].set_index("opponent")["verdict"]
    assert verdicts["group1_cam1"] == "worse"
    # The comparator's level (0.1 + 0.06 + 0.01 = 0.17) is below this "control" planted at 0.2.
    assert verdicts["smooth_noise"] == "worse"
    assert not row["beats_controls"]
    assert row["answer"] == "no"
    assert "**No** — 1 single CAM(s) significantly better (group1_cam1); it beats 3 of 4." in (
        tmp_path / "out" / "report.md").read_text()


def test_headline_cannot_be_shown_with_one_image(tmp_path):
    # One unit (one image): MetaCAM scores higher than the single CAM, but nothing can be concluded.
    write_hand(tmp_path / "data", {c: [0.1 * c] for c in range(8)}, groups=GROUPS,
               singles={"group1_cam1": [0.0]})
    result = analyze(tmp_path / "data", tmp_path / "out", replicates=200)
    assert result.comparisons is not None
    assert (result.comparisons["verdict"] == "no clear difference").all()
    report = (tmp_path / "out" / "report.md").read_text()
    assert "**Cannot be shown with 1 image** — the exact signed-rank test's smallest two-sided p with 1 image " \
           "is 1.000 ≥ 0.05" in report
    assert "> **Warning:** Only one image carries the data" in report


def _planted(root, n_images: int) -> None:
    """The comparator (group1 + group2) ahead of every single CAM on every image, on every metric: the
    singles sit 0.04 below it and the per-image noise is a tenth of that."""
    singles = {m: 0.1 for m in ("group1_cam1", "group1_cam2", "group1_cam3", "group2_cam1", "group2_cam2",
                                "group2_cam3", "group3_random")}
    write_synthetic(root, n_images, groups=GROUPS, models=("a",), seed=5, singles=singles, controls={},
                    effects={"group1": 0.02, "group2": 0.02, "group3": -0.05}, entry_image_sd=0.002,
                    noise=0.002, auc_noise=0.0005)


def test_headline_says_yes_on_eight_images_beaten_every_time(tmp_path):
    _planted(tmp_path / "data", 8)
    result = analyze(tmp_path / "data", tmp_path / "out", replicates=300)
    headline = pd.read_csv(tmp_path / "out" / "headline.csv").set_index("metric")
    assert (headline["answer"] == "yes").all() and headline["beats_every_single"].all()
    assert set(headline.index) == {"combined", "deletion", "insertion", "sparseness", "complexity"}
    assert (headline["n_clusters"] == 8).all() and (headline["singles"] == 6).all()
    # Every single lost on all 8 images: exact p = 2/2^8 each; no adjustment across the singles.
    assert result.comparisons is not None
    singles = result.comparisons[result.comparisons["opponent_kind"] == "single"]
    assert (singles["wins"] == 8).all() and (singles["test"] == "exact").all()
    np.testing.assert_allclose(singles["p"], 2 / 2**8)
    np.testing.assert_allclose(singles["p_adjusted"], singles["p"])
    assert headline.loc["combined", "p_iut"] == pytest.approx(2 / 2**8)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "**Decision rule.** MetaCAM beats every single CAM on a metric when each of its paired comparisons" in report
    assert "**Yes** — every one of the 6 single CAMs is beaten" in report
    assert "the study detects a difference of" in report and "detecting the observed difference would take" in report


def test_five_images_cannot_show_it_and_the_report_says_how_many_it_needs(tmp_path):
    _planted(tmp_path / "data", 5)
    analyze(tmp_path / "data", tmp_path / "out", replicates=300)
    headline = pd.read_csv(tmp_path / "out" / "headline.csv").set_index("metric")
    row = headline.loc["combined"]
    # MetaCAM is ahead on every image, the CIs exclude 0, but 2/2^5 = 0.0625 >= 0.05.
    assert row["answer"] == "unattainable" and row["closest_ci_low"] > 0
    assert row["p_floor"] == pytest.approx(0.0625) and row["images_for_rule"] == 6
    report = (tmp_path / "out" / "report.md").read_text()
    assert ("**Cannot be shown with 5 images** — the exact signed-rank test's smallest two-sided p with 5 images "
            "is 0.062 ≥ 0.05, so no comparison can come out *better*; the rule needs at least 6 images") in report
    assert "**No**" not in report


def test_paper_comparison_decomposes_exactly(optimism_run):
    result, out = optimism_run
    paper = pd.read_csv(out / "paper_comparison.csv")
    road = paper[paper["metric"] == "combined"].set_index("single")
    assert sorted(road.index) == sorted(m for m in SINGLES if m != "group3_random")  # control members excluded
    parts = road["optimism"] + road["thresholding"] + road["ensembling"]
    np.testing.assert_allclose(road["paper_gap"], parts, atol=1e-12)
    # Optimism: the comparator's planted 0.03 at k*, minus the single's at k = 100, which is its own
    # planted optimism on the units whose k* is 100 (the plain map is then the chosen one).
    raw = pq.read_table(result.dataset.root).to_pandas()
    chosen_plain = raw[(raw["kind"] == "single") & raw["is_best_k"]].groupby("method")["k"].apply(
        lambda k: float((k == 100).mean()))
    expected = 0.03 - pd.Series({m: OPTIMISM.get(m, 0.0) for m in road.index}) * chosen_plain[road.index]
    np.testing.assert_allclose(road["optimism"], expected[road.index], atol=1e-6)
    assert road.loc["group1_cam2", "optimism"] == pytest.approx(0.03, abs=1e-6)
    # Ensembling is the headline's like-for-like comparison, held-out, adaptive against adaptive.
    comparisons = pd.read_csv(out / "comparisons.csv")
    like_for_like = comparisons[comparisons["metric"] == "combined"].set_index("opponent")["mean_difference"]
    np.testing.assert_allclose(road["ensembling"], like_for_like[road.index], atol=1e-12)
    # One-draw metrics have no optimism.
    np.testing.assert_allclose(paper.loc[paper["metric"] == "deletion", "optimism"], 0.0, atol=1e-12)
    for row in road.itertuples():
        favourable = {c: getattr(row, c) for c in ("optimism", "thresholding", "ensembling")
                      if getattr(row, f"{c}_ci_low") > 0}
        assert row.carried_by == (max(favourable, key=favourable.__getitem__) if favourable else "none")
    report = (out / "report.md").read_text()
    first = report[:report.index("## Paired comparisons")]
    assert "**The paper's comparison**" in first and "| single CAM | paper's gap | optimism |" in first


def test_headline_answers_by_hand():
    def table(verdicts, floors, ps):
        k = len(verdicts)
        return pd.DataFrame({
            "metric": "m", "score": "s", "opponent_kind": "single", "opponent": [f"cam{i}" for i in range(k)],
            "n_clusters": 8, "verdict": verdicts, "p_floor": floors, "p": ps, "mean_difference": np.arange(k) + 1.0,
            "ci_low": 0.5, "ci_high": 2.0, "sd": 1.0, "mde": 0.5, "n_needed": 9.0})

    def answer(*args):
        return headline(table(*args), {"m": 1}).iloc[0]

    assert answer(["better"] * 2, [0.008, 0.008], [0.008, 0.01])["answer"] == "yes"
    row = answer(["better", "worse"], [0.008, 0.008], [0.008, 0.01])
    assert row["answer"] == "no" and row["singles_worse"] == 1 and row["p_iut"] == 0.01
    assert answer(["better", "no clear difference"], [0.008, 0.008], [0.008, 0.3])["answer"] == "not shown"
    row = answer(["no clear difference"] * 2, [0.0625, 0.0625], [0.0625, 0.0625])
    assert row["answer"] == "unattainable" and row["images_for_rule"] == 6
    # A single equal to the comparator on every image (no non-zero difference, no p): not a sample-size matter.
    assert answer(["better", "no clear difference"], [0.008, np.nan], [0.008, np.nan])["answer"] == "not shown"
    assert answer(["better"], [0.008], [0.008])["closest_single"] == "cam0"
