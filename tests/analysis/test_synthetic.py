"""The synthetic dataset generator: schema, planted values, ROAD consistency, atomic files."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from metacam.analysis.synthetic import iter_synthetic, synthetic_results, write_synthetic
from metacam.groups import combo_name
from metacam.schema import RESULTS_SCHEMA


def test_tables_follow_the_results_schema():
    for _, table in iter_synthetic(3, missing_combos=range(1, 64)):
        assert table.schema.equals(RESULTS_SCHEMA)


def test_planted_adaptive_scores_and_road_consistency():
    effects = {"gradcam": 0.1, "random": -0.2}
    frame = synthetic_results(
        4, effects=effects, baseline=0.0, noise=0.0, unit_sd=0.0, singles={}, ks=(10.0, 50.0, 100.0)
    )
    assert len(frame) == 64 * 4 * 3
    best = frame[frame["is_best_k"]]
    assert best.groupby(["combo_id", "image_id", "model"]).size().eq(1).all()  # one k* per unit
    # Without noise the adaptive score is exactly the planted sum of effects.
    combo = best["combo_id"].to_numpy(dtype=np.int64)
    planted = 0.1 * (combo & 1) - 0.2 * (combo >> 5 & 1)
    np.testing.assert_allclose(best["road_combined"], planted, atol=1e-6)
    # k* is the argmax over k, and ROAD combined = (LeRF - MoRF) / 2.
    top = frame.groupby(["combo_id", "image_id", "model"])["road_combined"].transform("max")
    assert (frame.loc[frame["is_best_k"], "road_combined"] == top[frame["is_best_k"]]).all()
    np.testing.assert_allclose(
        frame["road_combined"], (frame["road_lerf"] - frame["road_morf"]) / 2, atol=1e-6
    )
    assert (frame["method"] == frame["combo_id"].map(lambda c: combo_name(int(c)))).all()


def test_interaction_missing_combos_and_singles():
    frame = synthetic_results(
        2,
        effects={},
        interaction=("gradcam", "eigen", 0.5),
        baseline=0.0,
        noise=0.0,
        unit_sd=0.0,
        missing_combos=[0, 63],
        singles={"scorecam": 0.3},
        ks=(100.0,),
    )
    metacam = frame[frame["kind"] == "metacam"]
    assert set(metacam["combo_id"]) == set(range(1, 63))
    both = (
        metacam["combo_id"].to_numpy(dtype=np.int64) & 0b1001
    ) == 0b1001  # gradcam is bit 0, eigen bit 3
    np.testing.assert_allclose(metacam["road_combined"], np.where(both, 0.5, 0.0), atol=1e-6)
    single = frame[frame["kind"] == "single"]
    assert single["method"].unique().tolist() == ["scorecam"] and single["combo_id"].isna().all()
    assert single["g_perturbation"].all() and not single["g_gradcam"].any()


def test_same_seed_same_data_and_files_are_whole(tmp_path):
    paths = write_synthetic(tmp_path, 3, seed=4, singles={})
    assert len(paths) == 64 and not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
    again = synthetic_results(3, seed=4, singles={})
    first = pq.read_table(tmp_path / "metacam-combo05.parquet").to_pandas()
    np.testing.assert_array_equal(
        first["road_combined"], again[again["combo_id"] == 5]["road_combined"]
    )
