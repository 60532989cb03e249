"""Choosing the best combination and single CAM out of sample: folds over images, a choice that
never sees its test images (a combination planted to be best on one fold's images only), the
pooled comparison and the stability of the choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metacam.analysis.pipeline import analyze
from metacam.analysis.selection import assign_folds, choose_by_fold, stability
from metacam.analysis.synthetic import (
    make_groups,
    synthetic_metrics,
    synthetic_results,
    write_results,
)

GROUPS = make_groups(3, control_last=False)  # 8 combinations, combo 0 (no group) is never a candidate
SCORES = ["road_combined", "road_heldout_combined", "deletion_auc", "insertion_auc", "sparseness", "complexity",
          "my_metric"]


def test_folds_are_seeded_near_equal_and_leave_one_out_below_ten_images():
    fold = assign_folds(23, 5, seed=4)
    assert sorted(np.bincount(fold).tolist()) == [4, 4, 5, 5, 5]
    np.testing.assert_array_equal(fold, assign_folds(23, 5, seed=4))
    assert not np.array_equal(fold, assign_folds(23, 5, seed=5))
    np.testing.assert_array_equal(assign_folds(9, 5, seed=0), np.arange(9))  # leave-one-out


def test_a_candidate_best_only_on_one_fold_is_never_chosen_for_that_fold():
    # 20 images, 4 candidates; candidate 2 is far ahead on fold 0's images and behind everywhere else.
    fold = assign_folds(20, 5, seed=0)
    by_image = np.tile([0.5, 0.4, 0.0, 0.3], (20, 1))
    by_image[fold == 0, 2] = 10.0
    picks = choose_by_fold(by_image, fold, sign=1)
    assert picks[0] == 0  # fold 0's own images (where 2 wins) are not in its training set
    assert (picks[1:] == 2).all()  # every other fold trains on them and is fooled
    assert stability(picks, ["a", "b", "planted", "d"]) == "planted: 4/5; a: 1/5"
    assert (choose_by_fold(-by_image, fold, sign=-1) == picks).all()  # lower is better, mirrored


def test_the_pipeline_never_sees_the_test_images(tmp_path):
    # A dataset where combo 5 is planted best on the images of fold 0 only (+1 on every score of those
    # images, held-out and in-sample, every metric): fold 0 must not choose it, the others do.
    n_images = 20
    frame = synthetic_results(n_images, groups=GROUPS, models=("a", "b"), seed=3, plugins={"my_metric": True})
    images = sorted(frame["image_id"].unique())  # the analysis numbers images in this order
    fold = dict(zip(images, assign_folds(n_images, 5, seed=0), strict=True))
    planted = (frame["combo_id"] == 5) & (frame["image_id"].map(fold) == 0)
    sign = {"deletion_auc": -1.0, "complexity": -1.0}  # lower is better
    for column in SCORES:
        frame.loc[planted, column] += sign.get(column, 1.0)
    # The planted combination is best elsewhere too unless it is poor there: sink it off fold 0.
    for column in SCORES:
        frame.loc[(frame["combo_id"] == 5) & ~planted, column] -= sign.get(column, 1.0) * 0.2
    write_results(frame, tmp_path / "data", GROUPS, metrics=synthetic_metrics({"my_metric": True}))
    result = analyze(tmp_path / "data", tmp_path / "out", replicates=200, metric="my_metric")
    folds = pd.read_csv(tmp_path / "out" / "selection_folds.csv")
    for metric, per_fold in folds.groupby("metric"):
        chosen = per_fold.set_index("fold")["combo_id"]
        assert chosen[0] != 5, metric
        assert (chosen.drop(0) == 5).all(), metric
        assert (per_fold["test_images"] == 4).all()
    selection = pd.read_csv(tmp_path / "out" / "selection.csv").set_index("metric")
    assert "my_metric" in selection.index  # the plug-in metric gets the same treatment
    assert selection.loc["combined", "combos_chosen"].startswith("combo 5 (group1+group3): 4/5")
    assert (selection["n_clusters"] == n_images).all() and (selection["folds"] == 5).all()
    # The pooled comparison pairs each image's chosen combination with its chosen single CAM.
    assert result.selection is not None and set(result.selection["verdict"]) <= {
        "better", "worse", "no clear difference"}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Choosing the best combination out of sample" in report and "**Choosing out of sample**" in report


@pytest.mark.parametrize("n_images", [6])
def test_leave_one_out_with_few_images(tmp_path, n_images):
    frame = synthetic_results(n_images, groups=GROUPS, models=("a",), seed=1)
    write_results(frame, tmp_path / "data", GROUPS)
    analyze(tmp_path / "data", tmp_path / "out", replicates=200)
    selection = pd.read_csv(tmp_path / "out" / "selection.csv")
    assert (selection["fold_rule"] == "leave-one-out").all() and (selection["folds"] == n_images).all()
    assert (pd.read_csv(tmp_path / "out" / "selection_folds.csv")["test_images"] == 1).all()
