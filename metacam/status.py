"""``metacam status RESULTS_DIR``: how far a study is, from its files alone (never SLURM).

Every (model, shard) of a study has a manifest (``results/_manifest/*.shard-*.json``,
written when the sweep is planned and by every job) listing the experiments and unit
files it must produce. A unit whose file is there, or which a compacted part holds
(:mod:`metacam.results`), is *done*; done with ``status`` rows other than ``ok`` is
*failed* (the reasons are read from those rows, or from the part's record); absent is
*missing*. The ETA comes from the rate at which result files appeared (a part records
its units' times, so compaction changes nothing here). Jobs still running are listed
from their progress records (:mod:`metacam.progress`): images done, seconds per image,
their ETA. Needs no torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from metacam.errors import MetaCAMError
from metacam.progress import JobRecord, clock, read_progress
from metacam.results import MANIFEST_DIR, Snapshot, check_results_dir, failures

STALLED_AFTER = 600.0  # seconds without a progress update (and 3 units' time) before a job looks stalled


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
    running: list[JobRecord] = field(default_factory=list)  # unfinished jobs' progress records

    @property
    def complete(self) -> bool:
        return self.files_done >= self.files_expected

    def eta_text(self) -> str:
        if self.complete:
            return "done"
        if self.eta_seconds is None:
            return "unknown (too few finished files)"
        return clock(self.eta_seconds)

    def running_lines(self, now: float | None = None) -> list[str]:
        """One line per job still running (from its progress record), the longest ago updated last."""
        now = time.time() if now is None else now
        lines = []
        for record in sorted(self.running, key=lambda r: -r.updated):
            quiet = now - record.updated
            unit = (record.seconds_per_image or 0.0) * record.images_total / max(record.units_total, 1)
            note = f"updated {clock(quiet)} ago"
            if quiet > max(STALLED_AFTER, 3 * unit):
                note = f"no update for {clock(quiet)}: stalled, or killed (rerun the sweep to resume it)"
            lines.append(f"    {record.line()} ({note}, {record.host} pid {record.pid})")
        return lines

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
        running = self.running_lines()
        if running:
            lines.append(f"  {len(running)} job(s) in progress:")
            lines.extend(running)
        return "\n".join(lines)


def _manifests(root: Path) -> list[dict]:
    folder = root / MANIFEST_DIR
    records = []
    for path in sorted(folder.glob("*.shard-*-of-*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            raise MetaCAMError(f"{path}: not a readable manifest; rerun the sweep command to rewrite it") from None
    return records


def _unit(snapshot: Snapshot, path: Path, read: bool) -> tuple[float, list[str]] | None:
    """(when the unit was written, its failure statuses) if it is done, else None.

    read: open a unit's own file (a torn file is missing; failures are read); False only
    checks that it is there. A compacted unit's record in its part says both."""
    for _ in range(2):
        record = snapshot.record(path)
        if record is not None:
            return record.mtime, list(record.failures) if read else []
        if not (snapshot.complete(path) if read else snapshot.has(path)):
            return None
        try:
            return path.stat().st_mtime, failures(path) if read else []
        except FileNotFoundError:  # merged by a compaction since the folder was listed: look again
            snapshot.forget(path.parent)
    return None


def study_status(results_dir: str | Path, *, read: bool = True) -> StudyStatus:
    """The progress of the study in ``results_dir``; MetaCAMError if it is not one.

    read: open every result file (a torn file is missing; failure reasons are
    collected). False only checks that the files exist — the cheap count a job's
    progress line uses (renamed files are whole by construction).
    """
    root = check_results_dir(results_dir)
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
    snapshot = Snapshot()
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
                found = _unit(snapshot, base / experiment / unit, read)
                if found is None:
                    unit_done[unit] = present = False
                    continue
                done += 1
                mtime, reasons = found
                times.append(mtime)
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
    running = [r for r in read_progress(root) if not r.finished]
    return StudyStatus(root, list(models.values()), expected, done, _eta(times, expected - done), running)


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
