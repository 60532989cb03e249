"""Progress of long work: inside one image (member channels, ROAD masks), and of a
sweep job unit by unit.

Library code reports to a :class:`Progress` (a no-op by default); ``metacam explain``
passes a :class:`TqdmProgress`, which shows one bar per stage with done / total and
an ETA on stderr. A sweep job reports to a :class:`JobProgress`: one line per unit on
stdout (the job's log on SLURM, the terminal for local runs) and a small JSON record
under ``RESULTS/_progress/``, rewritten atomically after each unit, that
``metacam status`` reads (:func:`read_progress`). Needs no torch.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from metacam.atomic import write_atomically

PROGRESS_DIR = "_progress"  # under the results folder: one record per job


class Progress:
    """Receives progress; this base class ignores it."""

    def stage(self, name: str, total: int) -> None:
        """A stage of ``total`` units of work begins (e.g. "ROAD masks", 640)."""

    def advance(self, count: int = 1) -> None:
        """``count`` more units of the current stage are done."""

    def close(self) -> None:
        """No more stages."""


class TqdmProgress(Progress):
    """One tqdm bar per stage (label, done / total, rate, ETA), left on screen when done."""

    def __init__(self, prefix: str = "", *, disable: bool = False) -> None:
        self.prefix = prefix
        self.disable = disable
        self._bar = None

    def stage(self, name: str, total: int) -> None:
        from tqdm import tqdm

        self.close()
        label = f"{self.prefix}{name}" if self.prefix else name
        self._bar = tqdm(total=total, desc=label, unit="", leave=False, disable=self.disable,
                         dynamic_ncols=True, mininterval=0.5)

    def advance(self, count: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


NO_PROGRESS = Progress()


def clock(seconds: float) -> str:
    """A duration as ``42s``, ``11m22s`` or ``3h05m`` (seconds dropped above an hour)."""
    seconds = max(0, int(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class JobRecord:
    """One job's progress as ``metacam status`` reads it (``RESULTS/_progress/<key>.json``).

    images_done counts the images of finished units, skipped (already done) ones included;
    seconds_per_image is over the units this run scored; eta_seconds is the rest of the job
    at that rate (None until a unit was scored). timings: where the scoring time went
    (members, forward, imputation, held-out, deletion; seconds), for benchmarks.
    """

    key: str
    label: str
    units_total: int
    images_total: int
    units_done: int = 0
    images_done: int = 0
    images_scored: int = 0
    scoring_seconds: float = 0.0
    started: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    finished: bool = False
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def seconds_per_image(self) -> float | None:
        return self.scoring_seconds / self.images_scored if self.images_scored else None

    @property
    def eta_seconds(self) -> float | None:
        rate = self.seconds_per_image
        return None if rate is None else rate * (self.images_total - self.images_done)

    def line(self) -> str:
        """``[label] unit 3/10: 48/160 images, 6.2 s/image, job ETA 11m22s``"""
        rate, eta = self.seconds_per_image, self.eta_seconds
        speed = f"{rate:.2f} s/image" if rate is not None else "already done"
        ending = "job done" if self.finished else f"job ETA {clock(eta) if eta is not None else 'unknown'}"
        return (f"[{self.label}] unit {self.units_done}/{self.units_total}: {self.images_done}/"
                f"{self.images_total} images, {speed}, {ending}")

    @classmethod
    def from_json(cls, record: dict) -> JobRecord:
        known = {name: record[name] for name in cls.__dataclass_fields__ if name in record}
        return cls(**known)


class JobProgress:
    """Reports a sweep job's progress after each unit: a line and an atomically rewritten record.

    results_dir None: lines only (no record). emit: where lines go (stdout by default,
    flushed, so a SLURM log shows each unit as it finishes).
    """

    def __init__(self, results_dir: str | Path | None, key: str, label: str, units: int, images: int,
                 emit: Callable[[str], None] | None = None) -> None:
        self.path = Path(results_dir) / PROGRESS_DIR / f"{key}.json" if results_dir is not None else None
        self.record = JobRecord(key, label, units, images)
        self.emit = emit or _print

    def unit(self, images: int, seconds: float | None, timings: dict[str, float]) -> None:
        """A unit of ``images`` is finished: scored in ``seconds``, or None if it was already done."""
        record = self.record
        record.units_done += 1
        record.images_done += images
        if seconds is not None:
            record.images_scored += images
            record.scoring_seconds += seconds
            self._save(timings)
            self.emit(record.line())

    def finish(self, timings: dict[str, float]) -> None:
        """The job is over: the record says so (a job killed before this stays unfinished)."""
        self.record.finished = True
        self._save(timings)

    def _save(self, timings: dict[str, float]) -> None:
        self.record.updated = time.time()
        self.record.timings = dict(timings)
        if self.path is not None:
            text = json.dumps(asdict(self.record), sort_keys=True)
            write_atomically(self.path, lambda partial: partial.write_text(text))


def read_progress(results_dir: str | Path) -> list[JobRecord]:
    """Every job record under ``results_dir`` (a torn or foreign file is skipped), by key."""
    folder = Path(results_dir) / PROGRESS_DIR
    records = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            records.append(JobRecord.from_json(json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return records


def _print(line: str) -> None:
    print(line, file=sys.stdout, flush=True)
