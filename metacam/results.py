"""The results dataset's files: which belong to the dataset, which units are finished.

A sweep job writes one Parquet file per finished unit (one experiment on one chunk of
images of one model), ``RESULTS/<model>/<experiment>/unit-<hash>.parquet``, to a unique
temporary name (a leading dot) and renames it (:func:`metacam.sweep.rows.write_unit`):
a unit is on disk whole or not at all. ``metacam compact`` (:mod:`metacam.compact`)
later merges finished unit files of a folder into ``part-<hash>.parquet`` files. A
part records, in its Parquet metadata under :data:`COMPACTED_KEY`, the units it holds
(name, rows, the unit file's mtime, its status values other than ``ok``), so that:

* a unit file whose unit a part of its folder holds is *not* part of the dataset
  (the part has its rows; the file is left over from a compaction killed before it
  deleted its inputs, and the next compaction deletes it);
* a part whose units another, larger part of its folder holds is not either (a merge
  of parts killed before it deleted the old parts);
* a unit is finished when its file is complete or a part holds it, so resume,
  ``metacam status`` and the SLURM submitter see the same units before and after.

:func:`dataset_files` is the one listing of a dataset's live files (the analysis reads
it too); :func:`is_complete` the one test of a finished unit. pyarrow and the standard
library only (no torch): the analysis imports this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from metacam.errors import MetaCAMError
from metacam.schema import REQUIRED_COLUMNS

MANIFEST_DIR = "_manifest"  # what each (model, shard) must produce; written by metacam.sweep
COMPACTED_KEY = b"metacam.compacted"  # a part's record of the units it holds
PART_PREFIX = "part-"
UNIT_PREFIX = "unit-"
OK = "ok"


@dataclass(frozen=True)
class UnitRecord:
    """A finished unit as a part records it: its file name, rows, the time its file was
    written (``metacam status`` derives its ETA from these) and its status values other
    than ``ok``, one per row (the failure reasons)."""

    name: str
    rows: int
    mtime: float
    failures: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"name": self.name, "rows": self.rows, "mtime": self.mtime, "failures": list(self.failures)}

    @classmethod
    def from_json(cls, record: dict) -> UnitRecord:
        return cls(str(record["name"]), int(record["rows"]), float(record["mtime"]),
                   tuple(str(f) for f in record.get("failures", ())))


@dataclass(frozen=True)
class Part:
    """A compacted file and the units it holds, in the order of its rows."""

    path: Path
    units: tuple[UnitRecord, ...]

    @property
    def rows(self) -> int:
        return sum(u.rows for u in self.units)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(u.name for u in self.units)


@dataclass
class Folder:
    """One folder of the dataset as readers see it (see the module docstring).

    loose: file name -> path of every Parquet file not held by a part (unit files and any
        other Parquet file a writer put there); parts: the visible parts; held: unit name ->
        its record in a visible part; stale: files hidden by the rules (safe to delete).
    """

    path: Path
    loose: dict[str, Path] = field(default_factory=dict)
    parts: list[Part] = field(default_factory=list)
    held: dict[str, UnitRecord] = field(default_factory=dict)
    stale: list[Path] = field(default_factory=list)

    def files(self) -> list[Path]:
        """The folder's live files, sorted."""
        return sorted([*self.loose.values(), *(part.path for part in self.parts)])

    def has(self, name: str) -> bool:
        """The unit file ``name`` is there, or a part holds its unit."""
        return name in self.held or name in self.loose


def read_folder(folder: str | Path) -> Folder:
    """The live and stale files of one folder (one listing; parts' footers are cached)."""
    folder = Path(folder)
    view = Folder(folder)
    parts: list[Part] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return view
    for entry in entries:
        name = entry.name
        if name.startswith(".") or not name.endswith(".parquet") or not entry.is_file():
            continue
        path = folder / name
        units = _part_units(path) if name.startswith(PART_PREFIX) else None
        if units is None:
            view.loose[name] = path
        else:
            parts.append(Part(path, units))
    # Largest first: a part all of whose units a visible part holds is superseded.
    for part in sorted(parts, key=lambda p: (-len(p.units), p.path.name)):
        if part.names and part.names <= view.held.keys():
            view.stale.append(part.path)
            continue
        view.parts.append(part)
        view.held.update((u.name, u) for u in part.units)
    view.parts.sort(key=lambda p: p.path.name)
    for name in [n for n in view.loose if n in view.held]:
        view.stale.append(view.loose.pop(name))
    return view


def dataset_files(results_dir: str | Path, exclude: Iterable[str | Path] = ()) -> list[Path]:
    """Every live Parquet file of the dataset under ``results_dir``, recursively, sorted.

    Skips temporary files (a leading dot, or ``.tmp`` at the end), folders whose name
    starts with ``.`` or ``_`` (``_manifest``, ``_progress``) or ends with ``.tmp``, the
    folders in ``exclude`` (e.g. the analysis output), and the files a compaction
    superseded (unit files a part holds, parts a larger part holds).
    """
    root = Path(results_dir)
    excluded = {Path(p).resolve() for p in exclude}
    found: list[Path] = []
    for here, dirs, files in os.walk(root):
        folder = Path(here)
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")) and not d.endswith(".tmp")
                         and (not excluded or (folder / d).resolve() not in excluded))
        if any(f.endswith(".parquet") and not f.startswith(".") for f in files):
            found.extend(read_folder(folder).files())
    return sorted(found)


def result_files(results_dir: str | Path) -> list[Path]:
    """The dataset's live files (:func:`dataset_files`); the name v0.2 gave it."""
    return dataset_files(results_dir)


def is_complete(path: str | Path) -> bool:
    """True if the unit whose file is ``path`` is finished: the file is a readable Parquet
    file with the required columns, or a part in its folder holds the unit."""
    path = Path(path)
    return _complete_file(path) or path.name in read_folder(path.parent).held


class Snapshot:
    """A dataset's folders, each listed once (status and the SLURM submitter check
    thousands of units: one listing per folder, not one per unit)."""

    def __init__(self) -> None:
        self._folders: dict[Path, Folder] = {}

    def folder(self, path: Path) -> Folder:
        if path not in self._folders:
            self._folders[path] = read_folder(path)
        return self._folders[path]

    def forget(self, path: Path) -> None:
        """List folder ``path`` again when next asked (it changed)."""
        self._folders.pop(path, None)

    def has(self, unit: Path) -> bool:
        """The unit's file is there (not opened) or a part holds the unit."""
        return self.folder(unit.parent).has(unit.name)

    def complete(self, unit: Path) -> bool:
        """The unit is finished (its file opened and checked, or a part holds it)."""
        folder = self.folder(unit.parent)
        return unit.name in folder.held or (unit.name in folder.loose and _complete_file(unit))

    def record(self, unit: Path) -> UnitRecord | None:
        """The part's record of a compacted unit, None for a unit in its own file (or absent)."""
        return self.folder(unit.parent).held.get(unit.name)


def check_results_dir(root: str | Path) -> Path:
    """``root`` as a Path if it is a results dataset of ``metacam sweep`` (it has a
    ``_manifest/`` folder); MetaCAMError (one line) if not."""
    root = Path(root)
    if not root.is_dir():
        raise MetaCAMError(f"{root}: no such folder; pass the results folder a sweep printed")
    if not (root / MANIFEST_DIR).is_dir():
        raise MetaCAMError(
            f"{root} is not a results dataset of `metacam sweep` (no {MANIFEST_DIR}/ manifest); "
            f"pass the folder the sweep printed as 'results:'"
        )
    return root


def failures(path: Path | pq.ParquetFile) -> list[str]:
    """The status values other than "ok" in a result file, one per row (its footer
    statistics say when there are none, so clean files cost no column read)."""
    parquet = path if isinstance(path, pq.ParquetFile) else pq.ParquetFile(path)
    meta = parquet.metadata
    names = meta.schema.names
    if "status" not in names:
        return []
    column = names.index("status")
    clean = True
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max or stats.min != OK or stats.max != OK or stats.null_count:
            clean = False
    if clean:
        return []
    values = parquet.read(columns=["status"]).column("status").to_pylist()
    return [v if v is not None else "(null)" for v in values if v != OK]


def unit_record(path: Path) -> tuple[UnitRecord, pa.Schema] | None:
    """A unit file's record as a part would keep it, and its schema (no metadata); None if
    the file is not complete (torn, foreign, missing columns). Opens the file once."""
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        if not set(REQUIRED_COLUMNS) <= set(schema.names):
            return None
        record = UnitRecord(path.name, parquet.metadata.num_rows, path.stat().st_mtime, tuple(failures(parquet)))
    except (OSError, pa.ArrowInvalid):
        return None
    return record, schema.remove_metadata()


def part_record(units: Iterable[UnitRecord]) -> dict[bytes, bytes]:
    """The Parquet metadata entry of a part holding ``units`` (in row order)."""
    record = {"format": 1, "units": [u.to_json() for u in units]}
    return {COMPACTED_KEY: json.dumps(record, sort_keys=True).encode()}


# --- internals -----------------------------------------------------------------------------

_PARTS: dict[Path, tuple[tuple[int, int], tuple[UnitRecord, ...] | None]] = {}


def _part_units(path: Path) -> tuple[UnitRecord, ...] | None:
    """The units a part file holds (from its footer; cached while the file is unchanged),
    or None if it is not a readable part."""
    try:
        stat = path.stat()
    except OSError:
        return None
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _PARTS.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    units: tuple[UnitRecord, ...] | None = None
    try:
        raw = (pq.read_schema(path).metadata or {}).get(COMPACTED_KEY)
        if raw is not None:
            units = tuple(UnitRecord.from_json(u) for u in json.loads(raw)["units"])
    except (OSError, pa.ArrowInvalid, ValueError, KeyError, TypeError):
        units = None
    _PARTS[path] = (stamp, units)
    return units


def _complete_file(path: Path) -> bool:
    """A readable Parquet file with the required columns."""
    if not path.exists():
        return False
    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowInvalid):
        return False
    return all(name in names for name in REQUIRED_COLUMNS)
