"""Progress inside a job: one line per unit (images done, seconds per image, the job's ETA),
and the record `metacam status` reads while the job runs; `compact=true` at a sweep's end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from metacam.experiments.plan import job_spec
from metacam.progress import JobRecord, clock, read_progress
from metacam.results import dataset_files
from metacam.status import study_status
from metacam.sweep import run_job
from tests.experiments.conftest import TWO_GROUPS, composed

REPO = Path(__file__).resolve().parents[2]
THREE = "data.images=[sample:coffee,sample:rocket,sample:astronaut]"
LINE = re.compile(r"^\[(\S+) combo 1 shard 0/1\] unit (\d)/(\d): (\d)/\3 images, (\d+\.\d\d) s/image, job (ETA (\S+)|done)$")
CHEAP = ["threshold.ks=[100]", "heldout.enabled=false"]  # the least scoring a job can do


def test_one_progress_line_per_unit_and_status_sees_the_running_job(tmp_path):
    with composed([*TWO_GROUPS, *CHEAP, "combo_id=1", "data.images=[sample:coffee,sample:rocket]",
                   f"out_dir={tmp_path}"]) as cfg:
        spec = job_spec(cfg)
    seen: list[tuple[str, list[JobRecord]]] = []

    def emit(line: str) -> None:  # called inside the job, after each unit
        seen.append((line, study_status(spec.results_dir).running))

    started = time.perf_counter()
    report = run_job(spec, emit=emit)
    elapsed = time.perf_counter() - started
    assert report.units_done == 2 and len(seen) == 2
    rates = []
    for n, (line, running) in enumerate(seen, start=1):
        match = LINE.match(line)
        assert match, line
        assert match.group(1) == "resnet18-random0-c10-64x64" and match.group(2) == match.group(4) == str(n)
        assert match.group(3) == "2"
        rates.append(float(match.group(5)))
        (record,) = running  # status reads the job's record while it runs
        assert (record.units_done, record.images_done, record.images_total) == (n, n, 2)
        assert record.seconds_per_image is not None and abs(record.seconds_per_image - rates[-1]) < 0.01
        assert record.line() == line
    # the rate is scoring time per image: both units took about the job's time
    assert 0.2 * elapsed / 2 < rates[-1] <= elapsed / 2 + 0.01
    first = seen[0][1][0]
    assert first.eta_seconds == first.seconds_per_image  # one image left at the first unit's rate
    assert seen[0][0].endswith(f"job ETA {clock(first.eta_seconds)}")
    assert seen[-1][0].endswith("job ETA 0s")
    (record,) = read_progress(spec.results_dir)
    assert record.finished and not study_status(spec.results_dir).running  # finished: no longer listed
    assert set(record.timings) == {"job", "members", "forward", "impute", "heldout", "deletion"}
    assert 0 < record.timings["forward"] < record.timings["job"]
    quiet: list[str] = []
    assert run_job(spec, emit=quiet.append).units_skipped == 2 and quiet == []  # nothing scored, nothing said


def test_status_lists_running_jobs_and_flags_a_stalled_one(tmp_path):
    from tests.layout import write_study

    root = write_study(tmp_path / "results", 4).root
    now = time.time()
    records = [
        JobRecord("a3", "model_a combo 3 shard 0/1", 4, 64, 1, 16, 16, 32.0, now - 40, now - 8),
        JobRecord("b5", "model_b combo 5 shard 0/1", 4, 64, 1, 16, 16, 16.0, now - 7300, now - 7200),  # killed
        JobRecord("a0", "model_a combo 0 shard 0/1", 1, 1, 1, 1, 1, 1.0, now - 9, now - 5, finished=True),
    ]
    (root / "_progress").mkdir()
    for record in records:
        (root / "_progress" / f"{record.key}.json").write_text(json.dumps(asdict(record)))
    assert [r.key for r in read_progress(root)] == ["a0", "a3", "b5"]
    lines = study_status(root).report().splitlines()
    start = lines.index("  2 job(s) in progress:")
    assert lines[start + 1].startswith("    [model_a combo 3 shard 0/1] unit 1/4: 16/64 images, 2.00 s/image, "
                                       "job ETA 1m36s (updated ")
    assert lines[start + 2].startswith("    [model_b combo 5 shard 0/1] unit 1/4: 16/64 images, 1.00 s/image, "
                                       "job ETA 48s (no update for 2h00m: stalled, or killed")
    assert len(lines) == start + 3  # the finished job is not listed


@pytest.mark.slow
def test_compact_true_compacts_at_the_end_of_a_local_sweep(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "metacam.cli", "sweep", *TWO_GROUPS, "combo_id=1", THREE, "compact=true",
         f"out_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    units = [line for line in result.stdout.splitlines() if LINE.match(line)]
    assert len(units) == 3  # one progress line per unit, on the terminal
    assert re.search(r"Compacting .*: compacted 12 unit file\(s\) and 0 small part\(s\) into 4 part\(s\); "
                     r"12 -> 4 files", result.stdout)
    (results,) = (tmp_path / "sweeps").glob("*/results")
    files = dataset_files(results)
    assert len(files) == 4 and all(f.name.startswith("part-") for f in files)
    status = study_status(results)
    assert status.files_done == 4 * 3 and not status.running  # 4 experiments x 3 units, compacted
