"""The real thing on the one-node cluster (MaxArraySize=50, tests/slurm/conftest.py).

* Hydra's own launcher (``hydra/launcher=submitit_slurm``: one array, waited on) on the
  two-group grid (4 tasks), read back as one dataset with DESIGN §3's schema.
* ``metacam sweep launcher=submitit_slurm --detach`` on the 64-combination FAST study:
  it returns while the tasks are pending, ``metacam status`` goes from incomplete (exit 1)
  to complete (exit 0), the 64 tasks were split into 2 arrays of at most 50, every
  task's results land, and rerunning the command submits nothing, or exactly the one
  task whose files were deleted. One 64-task study serves all of these (a module
  fixture) to keep tests/slurm short on two cores.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from metacam.evaluation.registry import resolve_metrics
from metacam.groups import GroupSet, default_groups
from metacam.schema import CONTROL_METHODS, results_schema
from metacam.status import study_status
from metacam.sweep import all_experiments
from tests.experiments.conftest import FAST
from tests.slurm.conftest import REPO, SlurmCluster, job_logs

pytestmark = pytest.mark.slurm

# The launcher settings every sweep here uses: one core and 2 GB per task.
LAUNCHER = [
    "hydra.launcher.partition=debug",
    "hydra.launcher.timeout_min=30",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.array_parallelism=8",
    "members.batch_size=64",
]
TWO_GROUPS = [*(o for o in FAST if not o.startswith("groups.")), "groups=two_groups"]
COMPLETE_WITHIN_S = 3600  # a hang guard for polls, far above the few minutes it takes
POLL_S = 5


def metacam(*args: str, timeout: float = COMPLETE_WITHIN_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metacam.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)


def read_frame(results: Path):
    return ds.dataset(results, format="parquet").to_table().to_pandas()


def test_two_group_sweep_through_hydras_submitit_slurm_launcher(slurm_cluster, tmp_path):
    out = tmp_path / "sweep"
    result = metacam("sweep", *TWO_GROUPS, f"out_dir={out}", "hydra/launcher=submitit_slurm",
                     *LAUNCHER)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + job_logs(out)
    assert "Analyse it with:" in result.stdout
    (results,) = [p / "results" for p in (out / "sweeps").iterdir()]
    table = ds.dataset(results, format="parquet").to_table()
    builtin = [entry for metric in resolve_metrics() for entry in metric.entries()]  # with sparseness, complexity
    assert table.schema.equals(results_schema(["gradcam", "eigen"], metrics=builtin), check_metadata=False)
    frame = table.to_pandas()
    assert (frame["status"] == "ok").all()
    model_dir = next(p.name for p in results.iterdir() if not p.name.startswith("_"))
    folders = sorted(p.name for p in (results / model_dir).iterdir())
    assert folders == sorted([
        "metacam-combo00", "metacam-combo01", "metacam-combo02", "metacam-combo03",
        "single-gradcam", "single-hirescam", "single-gradcam_elementwise",
        "single-eigencam", "single-eigengradcam", "control-shuffled", "control-smooth_noise"])
    combos = frame[frame["kind"] == "metacam"]
    assert sorted(combos["combo_id"].unique()) == [0, 1, 2, 3]
    for combo_id, rows in combos.groupby("combo_id"):  # combo_id is the bitmask, bit 0 = gradcam
        assert (rows["g_gradcam"] == bool(int(combo_id) & 1)).all()
        assert (rows["g_eigen"] == bool(int(combo_id) & 2)).all()
    singles = frame[frame["kind"] == "single"]
    assert sorted(singles["method"].unique()) == sorted(
        ["gradcam", "hirescam", "gradcam_elementwise", "eigencam", "eigengradcam"])
    assert (singles[singles["method"] == "eigencam"]["g_eigen"]).all()
    controls = frame[frame["kind"] == "control"]
    assert sorted(controls["method"].unique()) == sorted(CONTROL_METHODS)
    assert not controls[["g_gradcam", "g_eigen"]].any().any()
    assert len(combos) == 4 * 3 and len(singles) == 5 * 3 and len(controls) == 2 * 3
    assert frame.groupby(["kind", "method", "image_id"])["is_best_k"].sum().eq(1).all()
    # the jobs really ran inside SLURM: Hydra's one array, one log per task
    assert len(list(out.rglob(".submitit/*/*_log.out"))) == 4
    assert frame["sweep_id"].nunique() == 1


# ---- one 64-task study, submitted with --detach ------------------------------------------


@dataclass
class Study:
    command: list[str]  # the sweep's arguments (without --detach)
    out: Path
    results: Path
    detach: subprocess.CompletedProcess
    detach_seconds: float
    queued_after_detach: dict[str, str]  # job id -> state, right after --detach returned
    status_before: subprocess.CompletedProcess
    status_after: subprocess.CompletedProcess
    complete_seconds: float  # from --detach returning until the study was complete
    records: list[dict]  # the submissions log after --detach


def squeue_states(job_ids: list[str]) -> dict[str, str]:
    """job id (A_i) -> state of these arrays' tasks still in squeue."""
    out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i %T"],
                         capture_output=True, text=True, check=False)
    return dict(line.split() for line in out.stdout.splitlines() if line.strip())


def read_log(results: Path) -> list[dict]:
    path = results / "_manifest" / "submissions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def study(slurm_cluster: SlurmCluster, tmp_path_factory) -> Study:
    out = tmp_path_factory.mktemp("study")
    command = ["sweep", *FAST, f"out_dir={out}", "launcher=submitit_slurm", *LAUNCHER]
    started = time.perf_counter()
    detach = metacam(*command, "--detach")
    detach_seconds = time.perf_counter() - started
    if detach.returncode != 0:
        pytest.fail(f"--detach failed:\n{detach.stdout}\n{detach.stderr}")
    (results,) = [p / "results" for p in (out / "sweeps").iterdir()]
    records = read_log(results)
    queued = squeue_states([r["job_id"] for r in records])
    status_before = metacam("status", str(results))
    deadline = time.monotonic() + COMPLETE_WITHIN_S
    gone_polls = 0
    while not study_status(results).complete:
        if not squeue_states([r["job_id"] for r in records]):
            gone_polls += 1  # no task left in the queue: the results should be there
            if gone_polls >= 3:
                pytest.fail(f"every task left the queue but the study is incomplete:\n"
                            f"{study_status(results).report()}\n{job_logs(out)}")
        if time.monotonic() > deadline:
            subprocess.run(["scancel", *[r["job_id"] for r in records]], check=False)
            pytest.fail(f"not complete after {COMPLETE_WITHIN_S}s:\n"
                        f"{study_status(results).report()}\n{job_logs(out)}")
        time.sleep(POLL_S)
    complete_seconds = time.perf_counter() - started - detach_seconds
    status_after = metacam("status", str(results))
    print(f"\n--detach returned in {detach_seconds:.1f}s; the 64-task study completed "
          f"{complete_seconds:.0f}s later")
    return Study(command, out, results, detach, detach_seconds, queued, status_before,
                 status_after, complete_seconds, records)


def test_detach_returns_while_the_tasks_are_pending(study):
    out = study.detach.stdout
    assert study.detach.returncode == 0
    # it said how to follow the study
    assert f"metacam status {study.results}" in out
    assert "squeue -u $USER" in out
    for record in study.records:
        assert f"job {record['job_id']}: " in out
        assert f"logs {Path(record['submitit_folder']).parent}/{record['job_id']}_<index>/" in out
    # it returned while the tasks were still in the queue (2 cores, 64 tasks), most pending
    assert len(study.queued_after_detach) > 32, study.queued_after_detach
    states = set(study.queued_after_detach.values())
    assert states <= {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING"}, states
    assert "PENDING" in states
    assert study.detach_seconds > 0  # measured (printed by the fixture), never a limit


def test_status_goes_from_incomplete_to_complete(study):
    before, after = study.status_before, study.status_after
    assert before.returncode == 1, before.stdout + before.stderr
    done, expected = map(int, re.search(r"(\d+)/(\d+) result files", before.stdout).groups())
    # 64 combinations + 11 single members + 2 controls on one unit of images
    assert expected == 64 + 11 + 2 and done < expected
    assert "ETA" in before.stdout
    assert after.returncode == 0, after.stdout + after.stderr
    assert f"{expected}/{expected} result files — complete" in after.stdout
    assert "experiments 77/77 done, 0 missing, 0 with failures" in after.stdout


def test_64_tasks_are_split_into_2_arrays_and_every_result_lands(study, slurm_cluster):
    if slurm_cluster.max_array_size != 50:
        pytest.skip(f"the running cluster has MaxArraySize={slurm_cluster.max_array_size}, "
                    "not 50; stop it (slurm/local-cluster.sh stop) so the tests start their own")
    records = study.records
    assert len(records) == 2
    assert [r["size"] for r in records] == [32, 32]
    assert all(r["array"] for r in records)
    # array_parallelism=8 stays the cap of the whole study: 4 + 4
    assert [r["array_parallelism"] for r in records] == [4, 4]
    keys = [key for r in records for key in r["tasks"].values()]
    assert len(keys) == len(set(keys)) == 64
    assert sorted(int(k.rsplit("combo-", 1)[1]) for k in keys) == list(range(64))
    assert all(sorted(map(int, r["tasks"])) == list(range(32)) for r in records)
    # submitit's folders: one per array task, with its log; one sbatch script per array
    for record in records:
        folder = Path(record["submitit_folder"]).parent
        tasks = sorted(folder.glob(f"{record['job_id']}_*"))
        assert len(tasks) == 32
        assert all(list(t.glob("*_log.out")) for t in tasks)
        (script,) = list(folder.glob(f"{record['job_id']}/*_submission.sh"))
        assert "#SBATCH --array=0-31%4" in script.read_text()
    # every task's results: all 64 combinations, 11 singles and the 2 controls, all ok
    frame = read_frame(study.results)
    assert (frame["status"] == "ok").all()
    groups = GroupSet.from_mapping({**default_groups(), "perturbation": ["ablationcam"]})
    expected = {(e.kind, e.method) for e in all_experiments(groups)}
    assert set(zip(frame["kind"], frame["method"], strict=True)) == expected
    assert sorted(frame[frame["kind"] == "metacam"]["combo_id"].unique()) == list(range(64))
    assert len(frame) == len(expected) * 3  # one image, three ks
    flags = frame[frame["kind"] == "metacam"].set_index("combo_id")[[f"g_{g}" for g in groups.names]]
    for combo_id, row in flags.groupby(level=0):  # bit i = the i-th group
        assert (row.values == [bool(int(combo_id) >> i & 1) for i in range(6)]).all()
    assert frame["sweep_id"].nunique() == 1


def test_rerun_submits_nothing_then_exactly_the_task_whose_files_were_deleted(study):
    log = study.results / "_manifest" / "submissions.jsonl"
    lines = log.read_text().splitlines()
    again = metacam(*study.command, "--detach")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "64 done, 0 still queued or running from earlier submissions, 0 to submit" in again.stdout
    assert "Nothing to submit" in again.stdout
    assert log.read_text().splitlines() == lines  # nothing submitted

    # delete every result file of one task: combo 1 (gradcam alone: + its 3 singles)
    model_dir = next(p for p in study.results.iterdir() if not p.name.startswith("_"))
    task_folders = ["metacam-combo01", "single-gradcam", "single-hirescam",
                    "single-gradcam_elementwise"]
    for name in task_folders:
        shutil.rmtree(model_dir / name)
    assert metacam("status", str(study.results)).returncode == 1
    # without --detach: submits, waits, then says where the dataset is
    rerun = metacam(*study.command)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr + job_logs(study.out)
    assert "63 done, 0 still queued or running from earlier submissions, 1 to submit" in rerun.stdout
    assert "[64/64 tasks done]" in rerun.stdout
    assert f"metacam analyze {study.results}" in rerun.stdout
    new = [json.loads(line) for line in log.read_text().splitlines()[len(lines):]]
    assert len(new) == 1
    assert new[0]["tasks"] == {"0": f"{model_dir.name}/shard-0-of-1/combo-1"}
    assert new[0]["array"] is False  # one task: a plain job
    assert all(list((model_dir / name).glob("*.parquet")) for name in task_folders)
    assert metacam("status", str(study.results)).returncode == 0
