"""Reading the results dataset: which files, which rows, groups and tie rule from the data,
stated defaults, and clear errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metacam.analysis.dataset import find_parquet_files, load_dataset
from metacam.analysis.errors import AnalysisError
from metacam.analysis.metrics import BUILTIN, V02_KEYS, resolve
from metacam.analysis.scores import parse_score, select_scores
from metacam.analysis.synthetic import (
    OPTIONAL_PROVENANCE,
    make_groups,
    synthetic_results,
    write_results,
    write_synthetic,
)
from metacam.schema import METADATA_KEY, REQUIRED_COLUMNS
from tests.analysis.helpers import hand_frame

GROUPS = make_groups(3)


def builtin(key: str):
    return resolve(BUILTIN, key)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """3 groups (8 combos), 2 single methods, 2 controls; 2 models × 3 images × top-2 = 12 units."""
    return synthetic_results(3, groups=GROUPS, n_targets=2, seed=3,
                             singles={"group1_cam1": 0.1, "group2_cam1": 0.2})


def test_finds_nested_parquet_and_skips_hidden_tmp_manifest_and_output(tmp_path):
    table = pa.table({"x": [1]})
    for name in ["a.parquet", "sub/b.parquet", "sub/deeper/c.parquet", ".hidden.parquet", "x.parquet.tmp",
                 ".cache/d.parquet", "job.tmp/e.parquet", "analysis/f.parquet", "_manifest/g.parquet",
                 "notes.txt"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    found = [p.relative_to(tmp_path).as_posix() for p in find_parquet_files(tmp_path, [tmp_path / "analysis"])]
    assert found == ["a.parquet", "sub/b.parquet", "sub/deeper/c.parquet"]


def test_reads_rows_units_groups_and_provenance(tmp_path, frame):
    write_results(frame, tmp_path, GROUPS)
    (tmp_path / "_manifest").mkdir()
    (tmp_path / "_manifest" / "job.json").write_text("{}")
    dataset = load_dataset(tmp_path)
    assert dataset.sweep_id == "synthetic" and dataset.ties == "random"
    assert dataset.ties_source == "column road_ties"
    assert dataset.groups == GROUPS and dataset.groups_source == "metadata"
    assert dataset.groups.controls == (False, False, True) and dataset.groups.comparator == 3
    assert dataset.k_values == (25.0, 50.0, 75.0, 100.0)
    # 12 units, but 3 clusters: an image is one cluster under both models (its id is its content).
    assert len(dataset.units) == 12 and dataset.n_clusters == 3 and dataset.n_rows == len(frame)
    by_image = dataset.units.groupby("image_id")
    assert (by_image["cluster"].nunique() == 1).all() and (by_image["model"].nunique() == 2).all()
    assert sorted(dataset.units["target_rank"].unique()) == [1, 2]
    assert len(dataset.files) == 8 + 2 + 2
    # Kept: the k* rows and the k = 100 rows (they coincide where k* = 100).
    assert len(dataset.rows) == int((frame["is_best_k"] | (frame["k"] == 100)).sum())
    scores = select_scores(dataset, parse_score("adaptive"))
    assert len(scores.metacam) == 8 * 12 and len(scores.singles) == 2 * 12 and len(scores.controls) == 2 * 12
    expected = frame[(frame["kind"] == "metacam") & frame["is_best_k"]]["road_heldout_combined"].astype(float)
    assert sorted(scores.metacam["score"]) == pytest.approx(sorted(expected))


def test_design_columns_alone_suffice_and_defaults_are_stated(tmp_path, frame):
    # No file metadata, no road_ties/road_mode, no optional provenance, nothing beyond DESIGN §3.
    keep = [c for c in frame.columns if c in REQUIRED_COLUMNS or c.startswith("g_")]
    assert not set(OPTIONAL_PROVENANCE) & set(keep)
    write_results(frame[keep], tmp_path)
    dataset = load_dataset(tmp_path)
    assert dataset.ties == "random" and dataset.ties_source.startswith("not recorded")
    assert dataset.groups_source == "columns" and dataset.groups.names == GROUPS.names
    assert dataset.groups.controls == (False, False, False) and dataset.groups.comparator == 7
    # Members as far as the single-method rows show them.
    assert dataset.groups.members == (("group1_cam1",), ("group2_cam1",), ())
    assert dataset.provenance == {}


def test_legacy_road_mode_is_mapped(tmp_path, frame):
    legacy = frame.drop(columns=["road_ties"]).assign(road_mode="paper")
    write_results(legacy, tmp_path)
    dataset = load_dataset(tmp_path)
    assert dataset.ties == "inclusive" and "road_mode" in dataset.ties_source


def test_tie_rule_from_metadata_when_no_column(tmp_path, frame):
    provenance = {"ties": "inclusive", "ks": [25, 50, 75, 100]}
    write_results(frame.drop(columns=["road_ties"]), tmp_path, GROUPS, provenance=provenance)
    dataset = load_dataset(tmp_path)
    assert dataset.ties == "inclusive" and dataset.ties_source == "file metadata"
    assert dataset.provenance == provenance


def test_mixed_tie_rules_are_refused(tmp_path, frame):
    mixed = frame.copy()
    mixed.loc[mixed["combo_id"] == 5, "road_ties"] = "inclusive"
    write_results(mixed, tmp_path, GROUPS)
    with pytest.raises(AnalysisError, match="mixes ROAD tie rules inclusive, random"):
        load_dataset(tmp_path)


def test_mixed_legacy_and_new_columns_are_compared_after_mapping(tmp_path, frame):
    old = frame[frame["kind"] == "metacam"].drop(columns=["road_ties"]).assign(road_mode="default")
    write_results(old, tmp_path / "old")
    write_results(frame[frame["kind"] != "metacam"], tmp_path / "new")
    assert load_dataset(tmp_path).ties == "random"  # default == random: not a mix


@pytest.mark.parametrize(("setup", "message"), [
    ("missing", "does not exist"),
    ("empty", "is empty"),
    ("text-only", "no Parquet files"),
    ("corrupt", "cannot read 'bad.parquet' as Parquet"),
])
def test_bad_folders_give_clear_errors(tmp_path, setup, message):
    root = tmp_path / "results"
    if setup != "missing":
        root.mkdir()
    if setup == "text-only":
        (root / "log.txt").write_text("hello")
    if setup == "corrupt":
        (root / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(AnalysisError, match=message):
        load_dataset(root)


def test_missing_columns_are_named(tmp_path, frame):
    write_results(frame.drop(columns=["road_heldout_lerf", "status"]), tmp_path, GROUPS)
    with pytest.raises(AnalysisError, match=r"lack\(s\) required column\(s\) status, road_heldout_lerf") as error:
        load_dataset(tmp_path)
    assert "and 11 other file(s)" in str(error.value)


def test_a_file_missing_a_group_flag_is_refused(tmp_path, frame):
    write_results(frame[frame["kind"] == "metacam"], tmp_path, GROUPS)
    write_results(frame[frame["kind"] != "metacam"].drop(columns=["g_group2"]), tmp_path / "other", GROUPS)
    with pytest.raises(AnalysisError, match="required column.*g_group2"):
        load_dataset(tmp_path)


def test_extra_columns_and_wider_types_are_accepted(tmp_path, frame):
    wider = frame.assign(extra="x", k=frame["k"].astype(np.float64), combo_id=frame["combo_id"].astype("Int64"))
    write_results(wider, tmp_path, GROUPS, typed=False)
    assert len(load_dataset(tmp_path).units) == 12


def test_several_sweeps_need_a_choice(tmp_path, frame):
    write_results(frame, tmp_path / "one", GROUPS)
    write_results(frame.assign(sweep_id="two"), tmp_path / "two", GROUPS)
    with pytest.raises(AnalysisError, match=r"holds 2 sweeps \(synthetic, two\); choose one with --sweep-id"):
        load_dataset(tmp_path)
    assert load_dataset(tmp_path, sweep_id="two").sweep_id == "two"
    with pytest.raises(AnalysisError, match="'three' is not in the dataset; sweeps present: synthetic, two"):
        load_dataset(tmp_path, sweep_id="three")


def test_several_sweeps_inside_one_file(tmp_path, frame):
    # The footer statistics of each file then span two values, so the column itself is read.
    mixed = frame.assign(sweep_id=np.where(frame["model"] == "model_a", "alpha", "beta"))
    write_results(mixed, tmp_path, GROUPS)
    with pytest.raises(AnalysisError, match=r"holds 2 sweeps \(alpha, beta\)"):
        load_dataset(tmp_path)
    dataset = load_dataset(tmp_path, sweep_id="beta")
    assert set(dataset.units["model"]) == {"model_b"} and len(dataset.units) == 6


def test_sweeps_with_different_groups_can_share_a_folder(tmp_path, frame):
    write_results(frame, tmp_path / "three", GROUPS)
    six = make_groups(6)
    other = synthetic_results(2, groups=six, ks=(100.0,), sweep_id="six", singles={}, controls={})
    write_results(other, tmp_path / "six", six)
    assert load_dataset(tmp_path, sweep_id="six").groups == six
    assert load_dataset(tmp_path, sweep_id="synthetic").groups == GROUPS


def test_one_sweep_with_two_group_definitions_is_refused(tmp_path, frame):
    write_results(frame[frame["kind"] == "metacam"], tmp_path / "a", GROUPS)
    renamed = make_groups(3, sizes=(2, 2, 1))
    write_results(frame[frame["kind"] != "metacam"], tmp_path / "b", renamed)
    with pytest.raises(AnalysisError, match="record different group definitions"):
        load_dataset(tmp_path)


def test_failed_rows_are_excluded_and_kept_aside(tmp_path):
    frame = hand_frame({c: [1.0, 2.0] for c in range(64)})
    failed = (frame["combo_id"] == 9) & (frame["image_id"] == frame["image_id"].min())
    frame.loc[failed, "status"] = "plug-in mypkg:cam returned NaN"
    frame.loc[failed, ["road_combined", "road_heldout_combined"]] = 1000.0  # must not leak into any mean
    write_results(frame, tmp_path, make_groups(6))
    dataset = load_dataset(tmp_path)
    assert dataset.failed["status"].tolist() == ["plug-in mypkg:cam returned NaN"]
    metacam = select_scores(dataset, parse_score("adaptive")).metacam
    assert len(metacam) == 127
    assert metacam.loc[metacam["combo_id"] == 9, "score"].tolist() == [2.0]


def test_all_rows_failed_is_an_error(tmp_path, frame):
    write_results(frame.assign(status="out of memory in ROAD forward at batch 1"), tmp_path, GROUPS)
    with pytest.raises(AnalysisError, match="no rows with status 'ok'.*out of memory"):
        load_dataset(tmp_path)


def test_flags_must_match_combo_id(tmp_path, frame):
    broken = frame.copy()
    broken.loc[broken["combo_id"] == 4, "g_group1"] = True
    write_results(broken, tmp_path, GROUPS)
    with pytest.raises(AnalysisError, match=r"do not match their combo_id \(bit 0 = group1, ...\), e.g. combo 4"):
        load_dataset(tmp_path)


def test_combo_id_outside_the_design_is_refused(tmp_path, frame):
    broken = frame.copy()
    broken.loc[broken["combo_id"] == 7, "combo_id"] = 8  # 3 groups: 0..7
    write_results(broken, tmp_path, GROUPS)
    with pytest.raises(AnalysisError, match=r"combo_id outside 0..7 \(e.g. 8\)"):
        load_dataset(tmp_path)


def test_duplicate_results_are_refused(tmp_path, frame):
    write_results(frame, tmp_path / "a", GROUPS)
    write_results(frame[frame["combo_id"] == 3], tmp_path / "b", GROUPS)  # combo 3 written twice
    dataset = load_dataset(tmp_path)
    with pytest.raises(AnalysisError, match="more than once.*combo_id 3.*remove the duplicate"):
        select_scores(dataset, parse_score("adaptive"))


def test_score_choices(tmp_path, frame):
    write_results(frame, tmp_path, GROUPS)
    dataset = load_dataset(tmp_path, keep_k=(100.0, 50.0))
    metacam = frame["kind"] == "metacam"
    plain = select_scores(dataset, parse_score("plain"))
    expected = frame[metacam & (frame["k"] == 100)]["road_heldout_combined"]
    assert sorted(plain.metacam["score"]) == pytest.approx(sorted(expected.astype(float)))
    at_50 = select_scores(dataset, parse_score("k=50", builtin("lerf"), heldout=False))
    expected = frame[metacam & (frame["k"] == 50)]["road_lerf"]
    assert sorted(at_50.metacam["score"]) == pytest.approx(sorted(expected.astype(float)))
    deletion = select_scores(dataset, parse_score("adaptive", dataset.metric("deletion")))
    expected = frame[metacam & frame["is_best_k"]]["deletion_auc"]
    assert sorted(deletion.metacam["score"]) == pytest.approx(sorted(expected.astype(float)))
    with pytest.raises(AnalysisError, match="no rows with k = 33.*k values present: 25, 50, 75, 100"):
        select_scores(load_dataset(tmp_path, keep_k=(33.0,)), parse_score("k=33", heldout=False))


@pytest.mark.parametrize(("text", "metric", "heldout", "message"), [
    ("best", "combined", True, "--score 'best' is unknown"),
    ("k=0", "combined", True, "K must be a percentage"),
    ("k=150", "combined", True, "K must be a percentage"),
    ("k=abc", "combined", True, "K must be a percentage"),
    ("k=25", "combined", True, "held-out ROAD and the chosen-map metrics .* exist only at k\\* and k = 100"),
    ("k=25", "deletion", False, "exist only at k\\* and k = 100"),
])
def test_bad_score_options(text, metric, heldout, message):
    with pytest.raises(AnalysisError, match=message):
        parse_score(text, builtin(metric), heldout=heldout)


def test_unknown_metric_lists_the_recorded_ones():
    with pytest.raises(AnalysisError, match="--metric 'auc' is not recorded in this dataset; recorded metrics: "
                                            "combined, morf, lerf, deletion, insertion, sparseness, complexity"):
        resolve(BUILTIN, "auc")


def test_k_100_is_the_plain_score():
    assert parse_score("k=100").mode == "plain"
    spec = parse_score("adaptive", builtin("deletion"))
    assert spec.column == "deletion_auc" and spec.sign == -1 and spec.short == "adaptive deletion AUC"
    assert parse_score("plain", builtin("combined"), heldout=False).short == "in-sample plain ROAD combined"
    # A one-draw metric reads its one column either way.
    assert parse_score("adaptive", builtin("sparseness"), heldout=False).column == "sparseness"


def test_metrics_come_from_the_metadata_with_plug_ins(tmp_path):
    write_synthetic(tmp_path, 2, groups=GROUPS, plugins={"my_metric": False}, singles={})
    dataset = load_dataset(tmp_path)
    assert dataset.metrics_source == "metadata"
    assert [m.key for m in dataset.metrics] == [*(m.key for m in BUILTIN), "my_metric"]
    mine = dataset.metric("my_metric")
    assert mine.chosen_column == "my_metric" and mine.insample_column is None and mine.sign == -1
    assert mine.source == "synthetic.plugins:my_metric" and mine.headline
    assert dataset.rows["my_metric"].notna().any() and str(dataset.rows["my_metric"].dtype) == "float32"


def test_a_v02_dataset_falls_back_to_five_metrics(tmp_path):
    write_synthetic(tmp_path, 2, groups=GROUPS, record_metrics=False, singles={})
    record = json.loads(pq.read_schema(next(tmp_path.glob("*.parquet"))).metadata[METADATA_KEY])
    assert "metrics" not in record and record["format"] == 2
    dataset = load_dataset(tmp_path)
    assert [m.key for m in dataset.metrics] == list(V02_KEYS) and dataset.metrics_source == "v0.2 fallback"
    with pytest.raises(AnalysisError, match="--metric 'sparseness' is not recorded"):
        dataset.metric("sparseness")


def test_files_that_record_different_metrics_are_refused(tmp_path):
    write_synthetic(tmp_path / "a", 2, groups=GROUPS, singles={}, controls={}, missing_combos=range(1, 8))
    write_synthetic(tmp_path / "b", 2, groups=GROUPS, singles={}, controls={}, missing_combos=range(0, 7),
                    plugins={"my_metric": True})
    with pytest.raises(AnalysisError, match=r"'a/metacam-combo0000.parquet' and 'b/metacam-combo0007.parquet' "
                                            r"record different metrics .*write each list under its own sweep_id"):
        load_dataset(tmp_path)


def test_an_unusable_metrics_record_is_named(tmp_path, frame):
    paths = write_results(frame[frame["kind"] == "metacam"], tmp_path, GROUPS)
    table = pq.read_table(paths[0])
    record = json.loads(table.schema.metadata[METADATA_KEY])
    record["metrics"] = [{"key": "combined"}]
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(record).encode()}), paths[0])
    with pytest.raises(AnalysisError, match="'metacam-combo0000.parquet' records an unusable metrics list "
                                            r"\(metrics entry 'combined' lacks label"):
        load_dataset(tmp_path)
