"""Writing the results dataset: one Parquet file per finished unit of work.

A unit is one experiment (a MetaCAM combination or a single method) on one
chunk of images. Its file is written to a unique temporary name and renamed,
so a unit is either complete on disk or absent: a killed job loses at most
the unit it was computing, and a rerun recomputes exactly the absent ones.
"""

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from metacam.atomic import write_atomically
from metacam.schema import RESULTS_SCHEMA


def unit_name(model_key: str, layer: str, entries: Sequence[str], extra: str = "") -> str:
    """A stable file stem for a unit: the images it covers (and anything else that would
    change its rows, in ``extra``) hashed, so a rerun finds the same name."""
    digest = hashlib.sha1("\n".join([model_key, layer, extra, *entries]).encode()).hexdigest()[:16]
    return f"unit-{digest}"


def is_complete(path: Path) -> bool:
    """True if ``path`` is a readable Parquet file with our columns."""
    if not path.exists():
        return False
    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowInvalid):
        return False
    return all(name in names for name in RESULTS_SCHEMA.names)


def write_rows(rows: list[dict], path: Path, *, stale_before: float | None = None) -> Path:
    """Write rows (dicts with the schema's columns) as one Parquet file, atomically.

    stale_before: a time.time() at which this unit's computation started; leftover
    temporary files of the same unit older than that come from a killed writer and
    are removed (a live writer's would be newer). Readers ignore them either way.
    """
    table = pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA)
    write_atomically(path, lambda partial: pq.write_table(table, partial))
    if stale_before is not None:
        for leftover in path.parent.glob(f".{path.stem}.*.partial*"):
            try:
                if leftover.stat().st_mtime < stale_before:
                    leftover.unlink()
            except FileNotFoundError:
                pass  # another job cleaned it first
    return path


def result_files(results_dir: Path) -> list[Path]:
    """The finished unit files under a results folder (temporary files excluded)."""
    if not results_dir.exists():
        return []
    return sorted(p for p in results_dir.rglob("*.parquet") if not p.name.startswith("."))
