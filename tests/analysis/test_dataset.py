"""Reading the results dataset: which files, which rows, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metacam.analysis.dataset import find_parquet_files, load_dataset
from metacam.analysis.errors import AnalysisError
from metacam.analysis.scores import parse_score, select_scores
from metacam.analysis.synthetic import synthetic_results, write_results
from tests.analysis.helpers import hand_frame


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_results(6, seed=3, singles={"gradcam": 0.1, "scorecam": 0.2})


def test_finds_nested_parquet_and_skips_hidden_tmp_and_output(tmp_path):
    table = pa.table({"x": [1]})
    for name in [
        "a.parquet",
        "sub/b.parquet",
        "sub/deeper/c.parquet",
        ".hidden.parquet",
        "x.parquet.tmp",
        ".cache/d.parquet",
        "job.tmp/e.parquet",
        "analysis/f.parquet",
        "notes.txt",
    ]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    found = [
        p.relative_to(tmp_path).as_posix()
        for p in find_parquet_files(tmp_path, [tmp_path / "analysis"])
    ]
    assert found == ["a.parquet", "sub/b.parquet", "sub/deeper/c.parquet"]


def test_reads_rows_and_units(tmp_path, frame):
    write_results(frame, tmp_path)
    dataset = load_dataset(tmp_path)
    assert dataset.sweep_id == "synthetic" and dataset.road_mode == "default"
    assert dataset.k_values == (25.0, 50.0, 75.0, 100.0)
    assert len(dataset.units) == 6 and dataset.n_rows == len(frame)
    assert len(dataset.files) == 64 + 2
    # Kept: the k* rows and the k = 100 rows (they coincide where k* = 100).
    expected = frame[frame["is_best_k"] | (frame["k"] == 100)]
    assert len(dataset.rows) == len(expected)
    scores = select_scores(dataset, parse_score("adaptive"))
    assert len(scores.metacam) == 64 * 6 and len(scores.singles) == 2 * 6


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "is empty"),
        ("text-only", "no Parquet files"),
        ("corrupt", "cannot read 'bad.parquet' as Parquet"),
    ],
)
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
    write_results(frame.drop(columns=["road_lerf", "status"]), tmp_path, schema=None)
    with pytest.raises(
        AnalysisError, match=r"lack\(s\) required column\(s\) road_lerf, status"
    ) as error:
        load_dataset(tmp_path)
    assert "and 65 other file(s)" in str(error.value)


def test_extra_columns_and_wider_types_are_accepted(tmp_path, frame):
    wider = frame.assign(
        extra="x", k=frame["k"].astype(np.float64), combo_id=frame["combo_id"].astype("Int64")
    )
    write_results(wider, tmp_path, schema=None)
    assert len(load_dataset(tmp_path).units) == 6


def test_several_sweeps_need_a_choice(tmp_path, frame):
    write_results(frame, tmp_path / "one")
    write_results(frame.assign(sweep_id="two"), tmp_path / "two")
    with pytest.raises(
        AnalysisError, match=r"holds 2 sweeps \(synthetic, two\); choose one with --sweep-id"
    ):
        load_dataset(tmp_path)
    assert load_dataset(tmp_path, sweep_id="two").sweep_id == "two"
    with pytest.raises(
        AnalysisError, match="'three' is not in the dataset; sweeps present: synthetic, two"
    ):
        load_dataset(tmp_path, sweep_id="three")


def test_mixed_road_modes_are_refused(tmp_path, frame):
    mixed = frame.copy()
    mixed.loc[mixed["combo_id"] == 5, "road_mode"] = "paper"
    write_results(mixed, tmp_path)
    with pytest.raises(AnalysisError, match="mixes ROAD modes default, paper"):
        load_dataset(tmp_path)


def test_failed_rows_are_excluded_and_kept_aside(tmp_path):
    scores = {c: [1.0, 2.0] for c in range(64)}
    frame = hand_frame(scores)
    failed = (frame["combo_id"] == 9) & (frame["image_id"] == frame["image_id"].min())
    frame.loc[failed, "status"] = "unreadable image"
    frame.loc[failed, "road_combined"] = 1000.0  # must not leak into any mean
    write_results(frame, tmp_path)
    dataset = load_dataset(tmp_path)
    assert dataset.failed["status"].tolist() == ["unreadable image"]
    metacam = select_scores(dataset, parse_score("adaptive")).metacam
    assert len(metacam) == 127
    assert metacam.loc[metacam["combo_id"] == 9, "score"].tolist() == [2.0]


def test_all_rows_failed_is_an_error(tmp_path, frame):
    write_results(frame.assign(status="out of memory"), tmp_path)
    with pytest.raises(AnalysisError, match="no rows with status 'ok'.*out of memory"):
        load_dataset(tmp_path)


def test_flags_must_match_combo_id(tmp_path, frame):
    broken = frame.copy()
    broken.loc[broken["combo_id"] == 4, "g_gradcam"] = True
    write_results(broken, tmp_path)
    with pytest.raises(AnalysisError, match="do not match their combo_id.*combo 4"):
        load_dataset(tmp_path)


def test_duplicate_results_are_refused(tmp_path, frame):
    write_results(frame, tmp_path / "a")
    write_results(frame[frame["combo_id"] == 3], tmp_path / "b")  # combo 3 written twice
    dataset = load_dataset(tmp_path)
    with pytest.raises(AnalysisError, match="more than once.*combo_id 3.*remove the duplicate"):
        select_scores(dataset, parse_score("adaptive"))


def test_score_choices(tmp_path, frame):
    write_results(frame, tmp_path)
    dataset = load_dataset(tmp_path, keep_k=(100.0, 50.0))
    plain = select_scores(dataset, parse_score("plain"))
    expected = frame[(frame["kind"] == "metacam") & (frame["k"] == 100)]["road_combined"]
    assert sorted(plain.metacam["score"]) == pytest.approx(sorted(expected.astype(float)))
    at_50 = select_scores(dataset, parse_score("k=50", "lerf"))
    expected = frame[(frame["kind"] == "metacam") & (frame["k"] == 50)]["road_lerf"]
    assert sorted(at_50.metacam["score"]) == pytest.approx(sorted(expected.astype(float)))
    with pytest.raises(
        AnalysisError, match="no rows with k = 33.*k values present: 25, 50, 75, 100"
    ):
        select_scores(load_dataset(tmp_path, keep_k=(33.0,)), parse_score("k=33"))


@pytest.mark.parametrize("text", ["best", "k=0", "k=150", "k=abc"])
def test_bad_score_options(text):
    with pytest.raises(AnalysisError, match="--score"):
        parse_score(text)
    with pytest.raises(AnalysisError, match="--metric 'auc' is unknown"):
        parse_score("adaptive", "auc")
