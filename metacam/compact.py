"""``metacam compact RESULTS``: merge finished unit files into a few large files per folder.

A study of 50,000 images x 3 models x 78 experiments in units of 16 images is ~730,000
small files; compaction turns each ``<model>/<experiment>/`` folder's finished unit
files into ``part-<hash>.parquet`` files of up to ``target_rows`` rows (one, for most
studies). The on-disk protocol (see :mod:`metacam.results`) makes every moment of it a
consistent dataset, so it may run while the study is still running and may be killed
at any point:

1. Under an exclusive lock (``_manifest/.compact.lock``; a second compaction waits),
   each folder is read as readers see it (:func:`metacam.results.read_folder`).
2. Files the rules already hide (unit files a part holds, parts a larger part holds:
   what a killed compaction left) are deleted first, and so are temporary files of a
   killed compaction (only a compaction writes ``.part-*``; the lock says none is live).
3. The folder's finished unit files, and its parts smaller than half the target, are
   merged: the new part records the units it holds (name, rows, the unit file's mtime,
   failure statuses) in its Parquet metadata and is written to a temporary name,
   flushed to disk, renamed, and the folder flushed — from then on it hides its
   inputs. Only then are the inputs deleted.

A unit being written (a hidden temporary file) is never touched; a unit file that is
not complete (foreign or torn) is left alone; a job that later checks a merged unit
finds it finished (:func:`metacam.results.is_complete`). Compacting again merges only
what is new: with nothing new, nothing changes. ``metacam status`` and ``metacam
analyze`` give the same answers before and after (the tests check it, kills included).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from metacam.atomic import write_atomically
from metacam.errors import MetaCAMError
from metacam.progress import PROGRESS_DIR, read_progress
from metacam.results import (
    MANIFEST_DIR,
    PART_PREFIX,
    Folder,
    Part,
    UnitRecord,
    check_results_dir,
    part_record,
    read_folder,
    unit_record,
)

DEFAULT_TARGET_ROWS = 1_000_000  # rows per part (the sweep's default: 10 k values per image and target)
ROW_GROUP_ROWS = 65_536  # rows per Parquet row group inside a part
LOCK_NAME = ".compact.lock"


@dataclass
class CompactReport:
    """What a compaction did: files before and after, units merged, leftovers deleted."""

    files_before: int = 0
    files_after: int = 0
    units_merged: int = 0
    parts_merged: int = 0
    parts_written: int = 0
    stale_deleted: int = 0
    skipped: list[str] = field(default_factory=list)  # inputs left alone, and why
    seconds: float = 0.0

    def line(self) -> str:
        return (f"compacted {self.units_merged} unit file(s) and {self.parts_merged} small part(s) into "
                f"{self.parts_written} part(s); {self.files_before} -> {self.files_after} files"
                + (f"; {self.stale_deleted} leftover(s) of an interrupted compaction deleted"
                   if self.stale_deleted else "")
                + f" ({self.seconds:.1f}s)")


def compact(results_dir: str | Path, *, target_rows: int = DEFAULT_TARGET_ROWS) -> CompactReport:
    """Compact every folder of the results dataset ``results_dir`` (see the module docstring).

    Raises MetaCAMError if ``results_dir`` is not a results dataset or target_rows < 1.
    """
    root = check_results_dir(results_dir)
    if target_rows < 1:
        raise MetaCAMError(f"target rows {target_rows} must be at least 1")
    started = time.perf_counter()
    report = CompactReport()
    with _locked(root / MANIFEST_DIR / LOCK_NAME):
        for folder in _folders(root):
            _compact_folder(folder, target_rows, report)
        _remove_finished_progress(root)
    report.seconds = time.perf_counter() - started
    return report


def _folders(root: Path) -> Iterator[Path]:
    """Folders that hold Parquet files, in sorted order (not _manifest, _progress, hidden ones)."""
    for here, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        if any(f.endswith(".parquet") for f in files):
            yield Path(here)


def _compact_folder(path: Path, target_rows: int, report: CompactReport) -> None:
    for leftover in path.glob(f".{PART_PREFIX}*"):  # a killed compaction's temporary file
        _remove(leftover)
    folder = read_folder(path)
    for stale in folder.stale:
        _remove(stale)
    report.stale_deleted += len(folder.stale)
    report.files_before += len(folder.loose) + len(folder.parts) + len(folder.stale)
    inputs = _inputs(folder, target_rows, report)
    for batch in _batches(inputs, target_rows):
        if len(batch) < 2:
            continue  # one file alone (a part, or a unit larger than half the target): nothing to merge
        _write_part(path, batch)
        for item in batch:  # the new part is durable and hides them: now they may go
            _remove(item.path if isinstance(item, Part) else item[0])
        report.parts_written += 1
        report.parts_merged += sum(isinstance(item, Part) for item in batch)
        report.units_merged += sum(not isinstance(item, Part) for item in batch)
    report.files_after += len(read_folder(path).files())


_Loose = tuple[Path, UnitRecord]  # a unit file and its record-to-be


def _inputs(folder: Folder, target_rows: int, report: CompactReport) -> list[Part | _Loose]:
    """The folder's small parts (fewer rows than half the target), then its finished unit files."""
    small = [p for p in folder.parts if p.rows < target_rows / 2]
    inputs: list[Part | _Loose] = list(small)
    schema = pq.read_schema(small[0].path).remove_metadata() if small else None
    for _, path in sorted(folder.loose.items()):
        found = unit_record(path)
        if found is None:
            report.skipped.append(f"{path}: not a complete result file")
            continue
        record, this = found
        if schema is None:
            schema = this
        elif not this.equals(schema):
            report.skipped.append(f"{path}: its columns differ from the folder's other files")
            continue
        inputs.append((path, record))
    if len(inputs) == 1 and isinstance(inputs[0], Part):
        return []
    return inputs


def _batches(inputs: list[Part | _Loose], target_rows: int) -> Iterator[list[Part | _Loose]]:
    """Consecutive inputs in batches of at most ``target_rows`` rows (one input may exceed it)."""
    batch: list[Part | _Loose] = []
    rows = 0
    for item in inputs:
        size = item.rows if isinstance(item, Part) else item[1].rows
        if batch and rows + size > target_rows:
            yield batch
            batch, rows = [], 0
        batch.append(item)
        rows += size
    if batch:
        yield batch


def _write_part(folder: Path, batch: list[Part | _Loose]) -> Path:
    """Write the batch's rows as one part (temporary name, flushed, renamed, folder flushed)."""
    units: list[UnitRecord] = []
    sources: list[Path] = []
    for item in batch:
        if isinstance(item, Part):
            units.extend(item.units)
            sources.append(item.path)
        else:
            units.append(item[1])
            sources.append(item[0])
    first = pq.read_schema(sources[0])
    metadata = {**(first.metadata or {}), **part_record(units)}
    schema = first.remove_metadata().with_metadata(metadata)
    digest = hashlib.sha1("\n".join(u.name for u in units).encode()).hexdigest()[:16]
    path = folder / f"{PART_PREFIX}{digest}.parquet"

    def write(partial: Path) -> None:
        with pq.ParquetWriter(partial, schema) as writer:
            pending: list[pa.Table] = []
            rows = 0
            for source in sources:
                table = pq.ParquetFile(source).read(use_threads=False).replace_schema_metadata(metadata)
                pending.append(table)
                rows += table.num_rows
                if rows >= ROW_GROUP_ROWS:
                    writer.write_table(pa.concat_tables(pending), row_group_size=max(rows, 1))
                    pending, rows = [], 0
            if pending:
                writer.write_table(pa.concat_tables(pending), row_group_size=max(rows, 1))

    write_atomically(path, write)
    _sync_folder(folder)
    return path


def _sync_folder(folder: Path) -> None:
    """Flush the folder's entries (the rename) to disk, so the part is durable before its
    inputs are deleted (a crash of the machine, not only of the process)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems do not sync folders; the rename is still atomic
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Delete a file that is no longer part of the dataset (another process may have first)."""
    path.unlink(missing_ok=True)


def _remove_finished_progress(root: Path) -> None:
    """Progress records of finished jobs (``metacam status`` shows only running ones)."""
    for record in read_progress(root):
        if record.finished:
            _remove(root / PROGRESS_DIR / f"{record.key}.json")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One compaction per dataset at a time: an exclusive lock held while compacting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv: list[str] | None = None, *, out: Callable[[str], None] = print) -> int:
    """``metacam compact RESULTS_DIR [--target-rows N]``: exit 0 done, 2 not a results dataset."""
    parser = argparse.ArgumentParser(
        prog="metacam compact",
        description="Merge a results dataset's finished unit files into a few large Parquet files per "
        "(model, experiment), atomically: safe while the study runs and if killed; status, resume and "
        "analyze give the same answers before and after.",
    )
    parser.add_argument("results_dir", metavar="RESULTS_DIR")
    parser.add_argument("--target-rows", type=int, default=DEFAULT_TARGET_ROWS,
                        help=f"rows per merged file (default {DEFAULT_TARGET_ROWS:,})")
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:
        return int(done.code or 0)
    try:
        report = compact(args.results_dir, target_rows=args.target_rows)
    except MetaCAMError as error:
        print(f"metacam compact: error: {error}", file=sys.stderr)
        return 2
    out(f"{args.results_dir}: {report.line()}")
    for reason in report.skipped[:10]:
        out(f"  left alone: {reason}")
    return 0
