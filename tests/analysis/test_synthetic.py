"""The synthetic dataset generator: schema and metadata for any G, planted values, held-out
rows and optimism, ROAD consistency, units of a study, atomic files."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from metacam.analysis.synthetic import (
    iter_synthetic,
    make_groups,
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
    for _, table in tables:
        assert table.schema.equals(results_schema(groups.names))  # (metadata aside)
        record = read_file_metadata(table.schema)
        assert record is not None and record["format"] == 3  # CONTRACTS §1: the "metrics" list
        assert GroupSet.from_json(record["groups"]) == groups
        assert record["provenance"]["ties"] == "random"


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
                              noise=0.0, unit_sd=0.0, cluster_sd=0.0, model_step=0.0, singles={}, controls={},
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
