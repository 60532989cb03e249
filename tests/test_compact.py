"""`metacam compact`: fewer files, the same dataset for status, resume and analyze, idempotent,
incremental, and consistent wherever a SIGKILL lands."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metacam import compact as compaction
from metacam.analysis import analyze
from metacam.cli import main
from metacam.compact import compact
from metacam.results import PART_PREFIX, dataset_files, is_complete, read_folder
from metacam.status import study_status
from tests.layout import write_study

REPO = Path(__file__).resolve().parents[1]
# A study still running: one unit missing, and a unit whose first row failed.
MISSING = [("model_a", "metacam-combo0001", 5)]
FAILED = [("model_b", "single-group1_cam1", 1)]


@pytest.fixture
def study(tmp_path):
    """2 models x 12 images in units of 2 (6 units) x 10 experiments: 119 unit files."""
    return write_study(tmp_path / "results", 12, missing=MISSING, failed=FAILED)


def rows(root: Path) -> pd.DataFrame:
    """Every row of the dataset's live files, in a canonical order."""
    tables = [pq.read_table(f).replace_schema_metadata(None) for f in dataset_files(root)]
    frame = pa.concat_tables(tables).to_pandas()
    return frame.sort_values(["model", "kind", "method", "image_id", "target_class", "k"]).reset_index(drop=True)


def status_of(root: Path) -> tuple:
    status = study_status(root)
    return status.report().replace(str(root), "RESULTS"), status.eta_seconds, status.files_done


def units_finished(layout) -> dict[Path, bool]:
    return {layout.root / model / experiment / unit: is_complete(layout.root / model / experiment / unit)
            for model, units in layout.units.items() for experiment in layout.experiments for unit in units}


def test_compaction_keeps_status_resume_and_analyze_identical(study, tmp_path):
    root = study.root
    before_rows, before_status, before_units = rows(root), status_of(root), units_finished(study)
    assert sum(before_units.values()) == 119 and before_status[2] == 119
    analyze(root, tmp_path / "before", replicates=100)
    assert main(["compact", str(root), "--target-rows", "100"]) == 0
    files = dataset_files(root)
    assert len(files) == 20 and all(f.name.startswith(PART_PREFIX) for f in files)  # one part per folder
    assert not list(root.rglob("unit-*.parquet"))
    pd.testing.assert_frame_equal(rows(root), before_rows)
    assert status_of(root) == before_status  # counts, failure reasons and the ETA
    assert units_finished(study) == before_units  # what resume sees
    analyze(root, tmp_path / "after", replicates=100)
    outputs = sorted(p.name for p in (tmp_path / "before").glob("*.csv"))
    assert len(outputs) > 10
    for name in outputs:
        assert (tmp_path / "after" / name).read_bytes() == (tmp_path / "before" / name).read_bytes(), name


def test_a_part_records_its_units_and_keeps_the_file_metadata(study):
    folder = study.root / "model_b" / "single-group1_cam1"
    originals = {p.name: (pq.read_table(p), p.stat().st_mtime) for p in sorted(folder.glob("unit-*"))}
    compact(study.root)
    (part,) = read_folder(folder).parts
    assert [u.name for u in part.units] == sorted(originals)
    assert [u.rows for u in part.units] == [t.num_rows for t, _ in originals.values()]
    assert [u.mtime for u in part.units] == [m for _, m in originals.values()]
    expected = [tuple(s for s in t["status"].to_pylist() if s != "ok") for t, _ in originals.values()]
    assert [u.failures for u in part.units] == expected
    assert sorted(expected) == [()] * 5 + [("unreadable image: broken.png: not an image file",)]
    table = pq.read_table(part.path)
    first = next(iter(originals.values()))[0]
    assert table.schema.metadata[b"metacam"] == first.schema.metadata[b"metacam"]  # groups, provenance
    start = 0
    for unit, (original, _) in zip(part.units, originals.values(), strict=True):  # rows in unit order
        assert table.slice(start, unit.rows).equals(original)
        start += unit.rows


def test_compacting_again_changes_nothing_and_new_units_are_merged_later(study, tmp_path):
    complete = write_study(tmp_path / "complete", 12, failed=FAILED)  # the finished study, never compacted
    root = study.root
    compact(root, target_rows=100)
    stamps = {p: p.stat().st_mtime_ns for p in dataset_files(root)}
    report = compact(root, target_rows=100)
    assert (report.parts_written, report.units_merged) == (0, 0)
    assert {p: p.stat().st_mtime_ns for p in dataset_files(root)} == stamps  # idempotent
    # the missing unit arrives (the study goes on), and is merged with the folder's part
    late = complete.root / "model_a" / "metacam-combo0001"
    (name,) = {p.name for p in late.glob("unit-*")} - {u.name for u in read_folder(root / "model_a" / "metacam-combo0001").parts[0].units}
    shutil.copy2(late / name, root / "model_a" / "metacam-combo0001" / name)
    report = compact(root, target_rows=100)
    assert (report.parts_written, report.units_merged, report.parts_merged) == (1, 1, 1)
    assert len(dataset_files(root)) == 20
    pd.testing.assert_frame_equal(rows(root), rows(complete.root))
    assert status_of(root) == status_of(complete.root)


def test_a_small_target_makes_several_parts_per_folder(study):
    before = rows(study.root)
    report = compact(study.root, target_rows=12)  # units of 6 rows: parts of 2 units, 3 per folder
    # 19 folders of 6 units: 3 parts each; the one with 5 units: 2 parts and its last unit alone
    assert report.parts_written == 19 * 3 + 2 and len(dataset_files(study.root)) == 19 * 3 + 3
    assert compact(study.root, target_rows=12).parts_written == 0  # a unit alone stays as it is
    pd.testing.assert_frame_equal(rows(study.root), before)


def test_units_in_flight_and_foreign_files_are_left_alone(study):
    folder = study.root / "model_a" / "metacam-combo0000"
    in_flight = folder / ".unit-abc.123.deadbeef.partial.parquet"  # a job writing a unit now
    in_flight.write_bytes(b"half a file")
    torn = folder / "unit-torn.parquet"
    torn.write_bytes(b"PAR1 not whole")
    report = compact(study.root)
    assert in_flight.read_bytes() == b"half a file" and torn.exists()
    assert any("unit-torn.parquet: not a complete result file" in reason for reason in report.skipped)


@pytest.mark.slow
def test_a_real_sweep_resumes_after_compaction_without_recomputing(tmp_path):
    from metacam.experiments.plan import job_spec
    from metacam.sweep import run_job
    from tests.experiments.conftest import TWO_GROUPS, composed

    with composed([*TWO_GROUPS, "combo_id=1", "data.images=[sample:coffee,sample:rocket]",
                   f"out_dir={tmp_path}"]) as cfg:
        spec = job_spec(cfg)
    first = run_job(spec, emit=lambda line: None)
    assert first.units_done == 2
    before = rows(Path(spec.results_dir))
    assert main(["compact", spec.results_dir]) == 0
    assert not list(Path(spec.results_dir).rglob("unit-*.parquet"))
    again = run_job(spec, emit=lambda line: None)
    assert (again.units_done, again.units_skipped) == (0, 2)  # merged units count as done
    pd.testing.assert_frame_equal(rows(Path(spec.results_dir)), before)
    assert study_status(spec.results_dir).files_done == 4 * 2  # 4 experiments x 2 units


def test_not_a_results_dataset_is_exit_2(tmp_path, capsys):
    assert main(["compact", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metacam compact: error: ") and "no _manifest/" in err and err.count("\n") == 1


# --- kills -----------------------------------------------------------------------------------


def _compact_and_die(root: str, hook: str, after: int) -> None:
    """In a forked child: compact, and SIGKILL this process at the ``after``-th call of ``hook``."""
    calls = Counter()

    def deadly(name, original):
        def call(*args, **kwargs):
            calls[name] += 1
            if calls[name] == after:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)
        return call

    if hook == "write":  # while the part's rows are written (a temporary file, not renamed)
        compaction.pq.ParquetWriter.write_table = deadly(hook, compaction.pq.ParquetWriter.write_table)
    elif hook == "rename":  # the part written whole, before it is renamed into place
        os.replace = deadly(hook, os.replace)
    else:  # "remove": the part is durable; deleting its inputs (call 1: right after the rename)
        compaction._remove = deadly(hook, compaction._remove)
    compact(root, target_rows=20)
    os._exit(0)


KILL_POINTS = [("write", 1), ("rename", 1), ("rename", 4), ("remove", 1), ("remove", 2), ("remove", 25)]


@pytest.mark.parametrize(("hook", "after"), KILL_POINTS)
def test_a_compaction_killed_anywhere_leaves_a_consistent_dataset(tmp_path, hook, after):
    """SIGKILL at chosen points (mid-write, before a rename, right after it, among the
    deletions): the dataset has exactly its rows (none lost, none twice), status and resume
    are unchanged; compacting again finishes the job and leaves no temporary file."""
    small = {"missing": [("model_a", "metacam-combo0001", 3)], "failed": FAILED}  # 8 images: 4 units
    study = write_study(tmp_path / "results", 8, **small)
    reference = write_study(tmp_path / "reference", 8, **small)
    compact(reference.root, target_rows=20)
    before_rows, before_status, before_units = rows(study.root), status_of(study.root), units_finished(study)
    child = multiprocessing.get_context("fork").Process(target=_compact_and_die,
                                                        args=(str(study.root), hook, after))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL  # it died where we wanted:
    folders = {p.parent for p in study.root.rglob("*.parquet")}
    if hook in ("write", "rename"):  # a part being written, not yet in place
        assert list(study.root.rglob(f".{PART_PREFIX}*"))
    else:  # a part in place, some of its units not yet deleted (hidden by it)
        assert any(read_folder(folder).stale for folder in folders)
    pd.testing.assert_frame_equal(rows(study.root), before_rows)
    assert status_of(study.root) == before_status and units_finished(study) == before_units
    assert compact(study.root, target_rows=20).stale_deleted >= 0
    pd.testing.assert_frame_equal(rows(study.root), before_rows)
    assert status_of(study.root) == before_status and units_finished(study) == before_units
    names = sorted(p.relative_to(study.root) for p in dataset_files(study.root))
    assert names == sorted(p.relative_to(reference.root) for p in dataset_files(reference.root))
    assert not [p for p in study.root.rglob(".*") if p.name != ".compact.lock"]
    assert not any(read_folder(folder).stale for folder in folders)  # the leftovers are gone


@pytest.mark.slow
def test_compact_killed_from_outside_at_random_moments(tmp_path):
    """`metacam compact` in a subprocess, SIGKILLed after 0.1 .. 1.5 s, five times over the
    same dataset: after each kill the dataset is whole; then it completes."""
    study = write_study(tmp_path / "results", 40, models=("model_a", "model_b", "model_c"), n_groups=3,
                        missing=MISSING, failed=FAILED)
    before_rows, before_status = rows(study.root), status_of(study.root)
    for delay in (0.1, 0.4, 0.7, 1.0, 1.5):
        worker = subprocess.Popen([sys.executable, "-m", "metacam.cli", "compact", str(study.root),
                                   "--target-rows", "50"], cwd=REPO, stdout=subprocess.DEVNULL)
        time.sleep(delay)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        pd.testing.assert_frame_equal(rows(study.root), before_rows)
        assert status_of(study.root) == before_status
    compact(study.root, target_rows=50)
    pd.testing.assert_frame_equal(rows(study.root), before_rows)
    assert not list(study.root.rglob("unit-*.parquet"))
