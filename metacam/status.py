"""``metacam status RESULTS_DIR``: how far a study is, from its files alone (never SLURM).

Every (model, shard) of a study has a manifest (``results/_manifest/*.json``, written
when the sweep is planned and by every job) listing the experiments and unit files it
must produce. A file present is *done*; done with ``status`` rows other than ``ok`` is
*failed* (the reasons are read from those rows); absent is *missing*. The ETA comes
from the rate at which result files appeared. Needs no torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from metacam.errors import MetaCAMError
from metacam.results import is_complete

MANIFEST_DIR = "_manifest"  # metacam.sweep.design writes it (that module needs torch)
OK = "ok"


@dataclass
class ModelStatus:
    """One model's progress. Experiments and units count over all its shards."""

    model: str
    experiments: int = 0
    experiments_done: int = 0
    experiments_failed: int = 0
    units: int = 0
    units_done: int = 0
    units_failed: int = 0
    reasons: Counter = field(default_factory=Counter)

    @property
    def experiments_missing(self) -> int:
        return self.experiments - self.experiments_done

    @property
    def units_missing(self) -> int:
        return self.units - self.units_done


@dataclass
class StudyStatus:
    root: Path
    models: list[ModelStatus]
    files_expected: int
    files_done: int
    eta_seconds: float | None

    @property
    def complete(self) -> bool:
        return self.files_done >= self.files_expected

    def eta_text(self) -> str:
        if self.complete:
            return "done"
        if self.eta_seconds is None:
            return "unknown (too few finished files)"
        minutes, seconds = divmod(int(self.eta_seconds), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"

    def report(self) -> str:
        lines = [f"{self.root}: {self.files_done}/{self.files_expected} result files"
                 + (" — complete" if self.complete else f", ETA {self.eta_text()}")]
        for m in self.models:
            lines.append(
                f"  {m.model}: experiments {m.experiments_done}/{m.experiments} done, "
                f"{m.experiments_missing} missing, {m.experiments_failed} with failures; "
                f"units {m.units_done}/{m.units} done, {m.units_missing} missing, {m.units_failed} failed"
            )
            for reason, count in m.reasons.most_common(5):
                lines.append(f"    {count} x {reason}")
        return "\n".join(lines)


def _manifests(root: Path) -> list[dict]:
    folder = root / MANIFEST_DIR
    records = []
    for path in sorted(folder.glob("*.shard-*-of-*.json")) if folder.is_dir() else []:
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            raise MetaCAMError(f"{path}: not a readable manifest; rerun the sweep command to rewrite it") from None
    return records


def _failures(path: Path) -> list[str]:
    """The status values other than "ok" in a result file (its footer statistics say
    when there are none, so clean files cost no column read)."""
    meta = pq.ParquetFile(path).metadata
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
    values = pq.read_table(path, columns=["status"]).column("status").to_pylist()
    return [v if v is not None else "(null)" for v in values if v != OK]


def study_status(results_dir: str | Path, *, read: bool = True) -> StudyStatus:
    """The progress of the study in ``results_dir``; MetaCAMError if it is not one.

    read: open every result file (a torn file is missing; failure reasons are
    collected). False only checks that the files exist — the cheap count a job's
    progress line uses (renamed files are whole by construction).
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise MetaCAMError(f"{root}: no such folder; pass the results folder a sweep printed")
    manifests = _manifests(root)
    if not manifests:
        raise MetaCAMError(
            f"{root} is not a results dataset of `metacam sweep` (no {MANIFEST_DIR}/ manifest); "
            f"pass the folder the sweep printed as 'results:'"
        )
    models: dict[str, ModelStatus] = {}
    complete: dict[str, dict[str, bool]] = {}  # model -> experiment -> every unit present
    failed: dict[str, set[str]] = {}  # model -> experiments with failures
    expected = done = 0
    times: list[float] = []
    for record in manifests:
        key = record["model_key"]
        status = models.setdefault(key, ModelStatus(key))
        experiments, units = record["experiments"], record["units"]
        base = root / record["model_dir"]
        status.experiments = len(experiments)
        status.units += len(units)
        expected += len(experiments) * len(units)
        unit_done = dict.fromkeys(units, True)
        unit_failed = dict.fromkeys(units, False)
        for experiment in experiments:
            present = complete.setdefault(key, {}).setdefault(experiment, True)
            for unit in units:
                path = base / experiment / unit
                if not (is_complete(path) if read else path.exists()):
                    unit_done[unit] = present = False
                    continue
                done += 1
                times.append(path.stat().st_mtime)
                reasons = _failures(path) if read else []
                if reasons:
                    unit_failed[unit] = True
                    failed.setdefault(key, set()).add(experiment)
                    status.reasons.update(reasons)
            complete[key][experiment] = present
        status.units_done += sum(unit_done.values())
        status.units_failed += sum(unit_failed.values())
    for key, status in models.items():
        status.experiments_done = sum(complete[key].values())
        status.experiments_failed = len(failed.get(key, ()))
    return StudyStatus(root, list(models.values()), expected, done, _eta(times, expected - done))


def _eta(times: list[float], remaining: int) -> float | None:
    """Remaining files / the rate at which the last result files appeared (up to 200).

    A job writes all experiments of a unit at once, so files come in bursts: below one
    second between the first and last file there is no rate to speak of yet (None).
    """
    if remaining <= 0:
        return 0.0
    recent = sorted(times)[-200:]
    if len(recent) < 2 or recent[-1] - recent[0] < 1.0:
        return None
    return remaining * (recent[-1] - recent[0]) / (len(recent) - 1)


def main(argv: list[str] | None = None) -> int:
    """``metacam status RESULTS_DIR``: exit 0 when complete, 1 when not, 2 when not a dataset."""
    parser = argparse.ArgumentParser(
        prog="metacam status",
        description="Progress of a study from its result files: per model, experiments and units "
        "done / missing / failed (with the reasons) and an ETA. Never queries SLURM.",
    )
    parser.add_argument("results_dir", metavar="RESULTS_DIR")
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:
        return int(done.code or 0)
    try:
        status = study_status(args.results_dir)
    except MetaCAMError as error:
        print(f"metacam status: error: {error}", file=sys.stderr)
        return 2
    print(status.report())
    return 0 if status.complete else 1
