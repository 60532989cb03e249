"""Reading back the results dataset's files: which units are finished.

A unit is one experiment on one chunk of images of one model. Its file is written to
a unique temporary name (a leading dot) and renamed (:func:`metacam.sweep.rows.write_unit`),
so a unit is either complete on disk or absent: a killed job loses at most the unit
it was computing, and a rerun recomputes exactly the absent ones.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from metacam.schema import REQUIRED_COLUMNS


def is_complete(path: Path) -> bool:
    """True if ``path`` is a readable Parquet file with the required columns."""
    if not path.exists():
        return False
    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowInvalid):
        return False
    return all(name in names for name in REQUIRED_COLUMNS)


def dataset_files(results_dir: str | Path) -> list[Path]:
    """placeholder until compaction lands"""
    return result_files(results_dir)


def result_files(results_dir: str | Path) -> list[Path]:
    """The finished unit files under a results folder (temporary files excluded)."""
    root = Path(results_dir)
    if not root.exists():
        return []
    return sorted(
        p for p in root.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
    )
