"""Result files: whole or absent, temporary files ignored and cleaned; stable unit names."""

import os
import time

import pyarrow.dataset as ds

from metacam.results import is_complete, result_files
from metacam.schema import read_file_metadata, results_schema
from metacam.sweep.design import unit_name
from metacam.sweep.rows import write_unit
from metacam.sweep.targets import TargetRule

SCHEMA = results_schema(["gradcam", "eigen"], {b"metacam": b'{"format": 2, "groups": []}'})


def row(**values) -> dict:
    return {**dict.fromkeys(SCHEMA.names), "sweep_id": "s", "kind": "single", "status": "ok", **values}


def test_write_is_atomic_and_readers_skip_temporary_files(tmp_path):
    folder = tmp_path / "m" / "single-gradcam"
    folder.mkdir(parents=True)
    stale = folder / ".unit-a.123.deadbeef.partial.parquet"
    stale.write_bytes(b"half a parquet file")
    os.utime(stale, (time.time() - 60, time.time() - 60))
    fresh = folder / ".unit-a.456.cafecafe.partial.parquet"  # a live writer of the same unit
    fresh.write_bytes(b"being written")
    other = folder / ".unit-b.123.deadbeef.partial.parquet"  # another unit: not ours to clean
    other.write_bytes(b"x")
    os.utime(other, (time.time() - 60, time.time() - 60))
    (tmp_path / "_manifest").mkdir()
    (tmp_path / "_manifest" / "not-a-result.parquet").write_bytes(b"x")

    path = write_unit([row(method="gradcam", k=50.0)], folder / "unit-a.parquet", SCHEMA,
                      stale_before=time.time() - 1)
    assert is_complete(path)
    assert not stale.exists() and fresh.exists() and other.exists()
    assert result_files(tmp_path) == [path]
    table = ds.dataset(path, format="parquet").to_table()
    assert table.num_rows == 1 and table.schema.equals(SCHEMA, check_metadata=False)
    assert read_file_metadata(table.schema) == {"format": 2, "groups": []}


def test_is_complete_rejects_torn_and_foreign_files(tmp_path):
    torn = tmp_path / "torn.parquet"
    torn.write_bytes(b"PAR1 nope")
    assert not is_complete(torn) and not is_complete(tmp_path / "missing.parquet")


def test_unit_names_are_stable_and_specific():
    top1 = TargetRule.parse("top1")
    first = unit_name("m", "layer", ["a.png", "b.png"], top1)
    assert first == unit_name("m", "layer", ["a.png", "b.png"], top1)
    others = [unit_name("m", "layer", ["b.png", "a.png"], top1), unit_name("m2", "layer", ["a.png", "b.png"], top1),
              unit_name("m", "layer", ["a.png", "b.png"], TargetRule.parse("top2"))]
    assert len({first, *others}) == 4
