"""Result files: whole or absent, temporary files ignored and cleaned."""

import os
import time

import pyarrow.dataset as ds

from metacam.results import is_complete, result_files, unit_name, write_rows
from metacam.schema import RESULTS_SCHEMA


def row(**values) -> dict:
    return {**dict.fromkeys(RESULTS_SCHEMA.names), "sweep_id": "s", "kind": "single", "status": "ok", **values}


def test_write_is_atomic_and_readers_skip_temporary_files(tmp_path):
    folder = tmp_path / "single-gradcam"
    folder.mkdir()
    stale = folder / ".unit-a.123.deadbeef.partial"
    stale.write_bytes(b"half a parquet file")
    os.utime(stale, (time.time() - 60, time.time() - 60))
    fresh = folder / ".unit-a.456.cafecafe.partial"  # a live writer of the same unit
    fresh.write_bytes(b"being written")
    other = folder / ".unit-b.123.deadbeef.partial"  # another unit: not ours to clean
    other.write_bytes(b"x")
    os.utime(other, (time.time() - 60, time.time() - 60))

    path = write_rows([row(method="gradcam", k=50.0)], folder / "unit-a.parquet", stale_before=time.time() - 1)
    assert is_complete(path)
    assert not stale.exists() and fresh.exists() and other.exists()
    assert result_files(tmp_path) == [path]
    table = ds.dataset(tmp_path, format="parquet").to_table()  # pyarrow ignores dot files too
    assert table.num_rows == 1 and table.schema.equals(RESULTS_SCHEMA)


def test_is_complete_rejects_torn_and_foreign_files(tmp_path):
    torn = tmp_path / "torn.parquet"
    torn.write_bytes(b"PAR1 nope")
    assert not is_complete(torn) and not is_complete(tmp_path / "missing.parquet")


def test_unit_names_are_stable_and_specific():
    first = unit_name("m", "layer", ["a.png", "b.png"])
    assert first == unit_name("m", "layer", ["a.png", "b.png"])
    assert first != unit_name("m", "layer", ["b.png", "a.png"]) != unit_name("m2", "layer", ["a.png", "b.png"])
