"""The synthetic dataset generator: schema and metadata for any G, planted values, held-out
rows and optimism, ROAD consistency, units of a study, atomic files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metacam.analysis.metrics import BUILTIN
from metacam.analysis.synthetic import (
    Variation,
    draw_own,
    draw_shared,
    iter_synthetic,
    make_groups,
    make_units,
    synthetic_results,
    write_synthetic,
)
from metacam.groups import GroupSet
from metacam.schema import read_file_metadata, results_schema


@pytest.mark.parametrize("n_groups", [1, 3, 10])
def test_tables_follow_the_schema_and_record_the_groups(n_groups):
    groups = make_groups(n_groups)
    tables = list(iter_synthetic(2, groups=groups, missing_combos=range(1, 2**n_groups)))
    stems = [stem for stem, _ in tables]
    assert stems[0] == "metacam-combo0000" and stems[-2:] == ["control-shuffled", "control-smooth_noise"]
    base = results_schema(groups.names)
    for _, table in tables:
        assert table.schema.names[:len(base)] == base.names  # the schema, then the metrics it lacks
        assert [(f.name, f.type) for f in table.schema][len(base):] == [
            (c, pa.float32()) for c in ("sparseness", "complexity") if c not in base.names]
        record = read_file_metadata(table.schema)
        assert record is not None and record["format"] == 3  # CONTRACTS §1: the "metrics" list
        assert GroupSet.from_json(record["groups"]) == groups
        assert record["provenance"]["ties"] == "random"
        assert [m["key"] for m in record["metrics"]] == [m.key for m in BUILTIN]


def test_make_groups():
    groups = make_groups(4)
    assert groups.names == ("group1", "group2", "group3", "group4")
    assert groups.members[0] == ("group1_cam1", "group1_cam2", "group1_cam3")
    assert groups.controls == (False, False, False, True) and groups.comparator == 0b0111
    assert make_groups(4, control_last=False).comparator == 0b1111
    assert make_groups(1).controls == (False,)


def test_planted_adaptive_scores_and_road_consistency():
    groups = make_groups(3)
    frame = synthetic_results(4, groups=groups, effects={"group1": 0.1, "group3": -0.2}, baseline=0.0,
                              noise=0.0, unit_sd=0.0, image_sd=0.0, entry_image_sd=0.0, model_step=0.0, singles={}, controls={},
                              ks=(10.0, 50.0, 100.0))
    assert len(frame) == 8 * 2 * 4 * 3  # combos × models × images × k
    key = ["combo_id", "model", "image_id", "target_class"]
    best = frame[frame["is_best_k"]]
    assert best.groupby(key).size().eq(1).all()  # one k* per unit
    combo = best["combo_id"].to_numpy(dtype=np.int64)
    np.testing.assert_allclose(best["road_combined"], 0.1 * (combo & 1) - 0.2 * (combo >> 2 & 1), atol=1e-6)
    top = frame.groupby(key)["road_combined"].transform("max")
    assert (frame.loc[frame["is_best_k"], "road_combined"] == top[frame["is_best_k"]]).all()
    np.testing.assert_allclose(frame["road_combined"], (frame["road_lerf"] - frame["road_morf"]) / 2, atol=1e-6)
    np.testing.assert_allclose(frame["road_heldout_combined"],
                               (frame["road_heldout_lerf"] - frame["road_heldout_morf"]) / 2, atol=1e-6)
    assert (frame["method"] == frame["combo_id"].map(lambda c: groups.combo_name(int(c)))).all()


def test_heldout_rows_and_planted_optimism():
    frame = synthetic_results(5, groups=make_groups(2), optimism={"group1_cam1": 0.07, "group1": 0.03},
                              ks=(25.0, 50.0, 100.0), seed=1)
    scored = frame["is_best_k"] | (frame["k"] == 100)
    for column in ("road_heldout_combined", "road_heldout_morf", "road_heldout_lerf", "deletion_auc",
                   "insertion_auc"):
        assert frame.loc[scored, column].notna().all() and frame.loc[~scored, column].isna().all(), column
    best = frame[frame["is_best_k"]]
    gap = (best["road_combined"] - best["road_heldout_combined"]).groupby(best["method"]).mean()
    assert gap["group1_cam1"] == pytest.approx(0.07, abs=1e-6) and gap["group1"] == pytest.approx(0.03, abs=1e-6)
    assert gap["group1_cam2"] == pytest.approx(0.0, abs=1e-6)
    plain = frame[(frame["k"] == 100) & ~frame["is_best_k"]]
    np.testing.assert_allclose(plain["road_heldout_combined"], plain["road_combined"], atol=1e-6)
    # the second metric moves with the held-out score: lower deletion, higher insertion
    heldout = frame.loc[scored, "road_heldout_combined"].astype(float)
    assert np.corrcoef(heldout, frame.loc[scored, "deletion_auc"].astype(float))[0, 1] < -0.9
    assert np.corrcoef(heldout, frame.loc[scored, "insertion_auc"].astype(float))[0, 1] > 0.9


def test_units_of_a_study():
    frame = synthetic_results(3, groups=make_groups(2), models=("a", "b"), n_targets=3, singles={}, controls={})
    units = frame.drop_duplicates(["model", "image_id", "target_class"])
    assert len(units) == 2 * 3 * 3
    assert sorted(units["target_rank"].unique()) == [1, 2, 3]
    assert units.groupby(["model", "image_id"]).size().eq(3).all()
    assert set(units["image_id"][units["model"] == "a"]) == set(units["image_id"][units["model"] == "b"])


def test_singles_and_controls():
    groups = make_groups(3)
    frame = synthetic_results(2, groups=groups, singles={"group2_cam1": 0.3}, ks=(100.0,))
    single = frame[frame["kind"] == "single"]
    assert single["method"].unique().tolist() == ["group2_cam1"] and single["combo_id"].isna().all()
    assert single["g_group2"].all() and not single["g_group1"].any()
    control = frame[frame["kind"] == "control"]
    assert sorted(control["method"].unique()) == ["shuffled", "smooth_noise"]
    assert not control[list(groups.columns)].any().any()


def test_without_provenance_columns_or_metadata(tmp_path):
    write_synthetic(tmp_path, 2, groups=make_groups(2), metadata=False, provenance_columns=False)
    table = pq.read_table(next(tmp_path.glob("*.parquet")))
    assert read_file_metadata(table.schema) is None
    assert not {"road_ties", "percentiles", "heldout_percentiles", "noise", "torch_version"} & set(table.column_names)


def test_same_seed_same_data_and_files_are_whole(tmp_path):
    paths = write_synthetic(tmp_path, 3, groups=make_groups(3), seed=4, singles={})
    assert len(paths) == 8 + 2 and not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
    again = synthetic_results(3, groups=make_groups(3), seed=4, singles={})
    first = pq.read_table(tmp_path / "metacam-combo0005.parquet").to_pandas()
    np.testing.assert_array_equal(first["road_combined"], again[again["combo_id"] == 5]["road_combined"])


def test_effects_are_drawn_per_image_and_shared_across_models_and_targets():
    # Only the image effects: every unit of an image gets the same value, under each model and target.
    frame = synthetic_results(4, groups=make_groups(2), models=("a", "b", "c"), n_targets=2, image_sd=0.1,
                              unit_sd=0.0, entry_image_sd=0.0, noise=0.0, model_step=0.0, rank_step=0.0,
                              singles={}, controls={}, ks=(100.0,))
    combo0 = frame[frame["combo_id"] == 0]
    assert (combo0.groupby("image_id")["road_combined"].nunique() == 1).all()
    assert combo0.groupby("image_id")["road_combined"].first().std() > 0.01
    # An entry's own image effect is shared by the image's units too, and differs between entries.
    frame = synthetic_results(4, groups=make_groups(2), models=("a", "b", "c"), n_targets=2, image_sd=0.0,
                              unit_sd=0.0, entry_image_sd=0.1, noise=0.0, model_step=0.0, rank_step=0.0,
                              singles={}, controls={}, ks=(100.0,))
    wide = frame.pivot_table(index=["model", "image_id", "target_class"], columns="combo_id",
                             values="road_combined")
    difference = (wide[1] - wide[0]).groupby(level="image_id")
    assert (difference.nunique() == 1).all() and difference.first().std() > 0.01


def test_unequal_clusters_skew_and_bounds():
    units = make_units(3, ("a", "b"), [1, 3, 2])
    assert len(units) == 2 * 6 and units.groupby(["model", "image_id"]).size().tolist() == [1, 3, 2] * 2
    assert units.groupby("image_id")["cluster"].nunique().eq(1).all()
    big = make_units(20_000, ("a",))
    skewed = draw_own(big, Variation(entry_image_sd=0.0, noise=1.0, skew=2.0), np.random.default_rng(0))[0]
    assert abs(skewed.mean()) < 0.03 and abs(skewed.std() - 1) < 0.03
    assert pd.Series(skewed).skew() == pytest.approx(2.0, abs=0.2)
    frame = synthetic_results(30, groups=make_groups(2), bounds=(-0.5, 0.5), image_sd=1.0, singles={}, controls={})
    assert frame["road_combined"].between(-0.5, 0.5).all()
    assert frame["road_heldout_combined"].dropna().between(-0.5, 0.5).all()
    shared = draw_shared(big, Variation(image_sd=0.0, unit_sd=0.0), np.random.default_rng(1), n_studies=3)
    assert shared.shape == (3, 20_000) and not shared.any()


def test_plug_in_metric_columns_and_a_v02_record(tmp_path):
    write_synthetic(tmp_path / "new", 2, groups=make_groups(2), plugins={"my_metric": True}, singles={})
    table = pq.read_table(tmp_path / "new" / "metacam-combo0001.parquet")
    record = read_file_metadata(table.schema)
    assert record is not None and record["metrics"][-1]["key"] == "my_metric"
    frame = table.to_pandas()
    scored = frame["is_best_k"] | (frame["k"] == 100)
    for column in ("sparseness", "complexity", "my_metric"):
        assert frame.loc[scored, column].notna().all() and frame.loc[~scored, column].isna().all()
    assert np.corrcoef(frame.loc[scored, "my_metric"], frame.loc[scored, "road_heldout_combined"])[0, 1] > 0.9
    write_synthetic(tmp_path / "old", 2, groups=make_groups(2), record_metrics=False, singles={})
    old = pq.read_table(tmp_path / "old" / "metacam-combo0001.parquet")
    record = read_file_metadata(old.schema)
    assert record is not None and "metrics" not in record and record["format"] == 2
    assert not {"sparseness", "complexity"} & set(old.column_names)
