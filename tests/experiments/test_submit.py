"""metacam.experiments.submit without a cluster: array splitting and the division of
array_parallelism (pure functions), ``scontrol show config`` parsing, the submissions log
and squeue bookkeeping (a fake squeue), bad input, and submit() end to end against fake
SLURM commands (sbatch numbers jobs and keeps their scripts; squeue says what a test
wants)."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from metacam.errors import MetaCAMError
from metacam.experiments import submit as sub
from metacam.experiments.plan import SweepPlan, plan_sweep, write_manifests
from metacam.experiments.sweep import main as sweep_main
from metacam.groups import default_groups
from metacam.schema import REQUIRED_COLUMNS
from tests.experiments.conftest import FAST

TWO_GROUPS = [*(o for o in FAST if not o.startswith("groups.")), "groups=two_groups"]
SLURM = ["launcher=submitit_slurm", "hydra.launcher.partition=debug",
         "hydra.launcher.array_parallelism=3"]

# ---- array sizes and concurrency ----------------------------------------------------------


@pytest.mark.parametrize(("n", "most", "sizes"), [
    (64, 50, [32, 32]),
    (50, 50, [50]),
    (51, 50, [26, 25]),
    (100, 50, [50, 50]),
    (101, 50, [34, 34, 33]),
    (2048, 1001, [683, 683, 682]),
    (5, 1, [1, 1, 1, 1, 1]),
    (1, 1001, [1]),
    (0, 50, []),
])
def test_split_sizes(n, most, sizes):
    assert sub.split_sizes(n, most) == sizes


def test_split_sizes_are_the_fewest_near_equal_arrays_within_the_limit():
    for most in (1, 2, 3, 7, 50, 1001):
        for n in range(0, 230, 7):
            sizes = sub.split_sizes(n, most)
            assert sum(sizes) == n and all(1 <= s <= most for s in sizes)
            assert len(sizes) == -(-n // most)
            assert max(sizes, default=0) - min(sizes, default=0) <= 1
    with pytest.raises(MetaCAMError, match="at least 1"):
        sub.split_sizes(10, 0)


@pytest.mark.parametrize(("total", "sizes", "shares", "waits"), [
    (8, [32, 32], [4, 4], [None, None]),
    (5, [32, 32], [3, 2], [None, None]),
    (64, [32, 32], [32, 32], [None, None]),
    (100, [32, 32], [32, 32], [None, None]),  # no share above its array's size
    (64, [683, 683, 682], [22, 21, 21], [None, None, None]),
    (3, [34, 34, 33], [1, 1, 1], [None, None, None]),
    (256, [7], [7], [None]),
    # fewer slots than arrays: P lanes, each array throttled to 1 after array j - P
    (2, [34, 34, 33], [1, 1, 1], [None, None, 0]),
    (1, [10, 10, 10], [1, 1, 1], [None, 0, 1]),
])
def test_divide_parallelism(total, sizes, shares, waits):
    assert sub.divide_parallelism(total, sizes) == (shares, waits)


def test_array_parallelism_stays_a_cap_on_the_whole_study():
    for total in (1, 2, 3, 5, 8, 64, 256):
        for sizes in ([1], [3, 2], [32, 32], [34, 34, 33], [5] * 7, [683, 683, 682]):
            shares, waits = sub.divide_parallelism(total, sizes)
            assert all(1 <= s <= size for s, size in zip(shares, sizes, strict=True))
            # the arrays that may run together: those waiting for nobody
            lanes = [j for j, w in enumerate(waits) if w is None]
            assert sum(shares[j] for j in lanes) <= total
            # a waiting array follows one earlier array, one per lane
            assert all(w is None or w < j for j, w in enumerate(waits))
            assert len({w for w in waits if w is not None}) == sum(w is not None for w in waits)
    with pytest.raises(MetaCAMError, match="array_parallelism=0: must be at least 1"):
        sub.divide_parallelism(0, [4])


# ---- scontrol -------------------------------------------------------------------------------

SCONTROL = """Configuration data as of 2026-11-30T12:00:00
AccountingStorageType   = accounting_storage/none
MaxArraySize            = 50
MaxJobCount             = 10000
"""


def completed(stdout: str = "", stderr: str = "", returncode: int = 0):
    return subprocess.CompletedProcess([], returncode, stdout, stderr)


def test_max_array_size_from_scontrol_show_config():
    assert sub.parse_max_array_size(SCONTROL) == 50
    assert sub.parse_max_array_size("MaxArraySize=1001\n") == 1001
    with pytest.raises(MetaCAMError, match="reports no MaxArraySize"):
        sub.parse_max_array_size("MaxJobCount = 10000\n")
    with pytest.raises(MetaCAMError, match=r"disables job arrays .*slurm.max_array_size=1"):
        sub.parse_max_array_size("MaxArraySize = 0\n")
    with pytest.raises(MetaCAMError, match="not a number"):
        sub.parse_max_array_size("MaxArraySize = lots\n")


def test_slurm_max_array_size_overrides_the_cluster_and_must_be_at_least_1():
    def no_scontrol(command):
        raise AssertionError(f"ran {command}")

    assert sub.resolve_max_array_size(7, no_scontrol) == 7
    for bad in (0, -3):
        with pytest.raises(MetaCAMError, match=rf"slurm.max_array_size={bad}: .*at least 1"):
            sub.resolve_max_array_size(bad, no_scontrol)
    calls = []
    assert sub.resolve_max_array_size(None, lambda c: calls.append(c) or completed(SCONTROL)) == 50
    assert calls == [["scontrol", "show", "config"]]
    failing = completed(stderr="slurm_load_ctl_conf error: Unable to contact slurm controller\n",
                        returncode=1)
    with pytest.raises(MetaCAMError, match=r"`scontrol show config` failed \(exit 1: "
                       r"slurm_load_ctl_conf error: Unable to contact"):
        sub.resolve_max_array_size(None, lambda c: failing)


def test_launcher_settings_map_as_hydras_submitit_launcher_maps_them():
    launcher = {"submitit_folder": "rel/.submitit/%j", "timeout_min": 60, "cpus_per_task": 4,
                "mem_gb": 16, "name": "app", "_target_": "x.SlurmLauncher", "partition": "gpu",
                "gres": "gpu:1", "max_num_timeout": 3, "array_parallelism": 64,
                "additional_parameters": {"mail-type": "END"}, "setup": ["module load cuda"]}
    folder, init, params = sub.executor_settings(launcher)
    assert folder == os.path.abspath("rel/.submitit/%j")
    assert init == {"slurm_max_num_timeout": 3}
    assert params == {"timeout_min": 60, "cpus_per_task": 4, "mem_gb": 16, "name": "app",
                      "slurm_partition": "gpu", "slurm_gres": "gpu:1",
                      "slurm_array_parallelism": 64,
                      "slurm_additional_parameters": {"mail-type": "END"},
                      "slurm_setup": ["module load cuda"]}


# ---- the submissions log and squeue ---------------------------------------------------------

RECORDS = [
    {"job_id": "12", "array": True, "script_dir": "/s/a/.submitit",
     "submitit_folder": "/s/a/.submitit/%j", "tasks": {"0": "m/shard-0-of-1/combo-0",
                                                       "1": "m/shard-0-of-1/combo-1",
                                                       "2": "m/shard-0-of-1/combo-2"}},
    {"job_id": "20", "array": False, "script_dir": "/s/b/.submitit",
     "submitit_folder": "/s/b/.submitit/%j", "tasks": {"0": "m/shard-0-of-1/combo-3"}},
]


def fake_squeue(stdout: str, returncode: int = 0, stderr: str = ""):
    calls = []

    def run(command):
        calls.append(command)
        return completed(stdout, stderr, returncode)

    run.calls = calls
    return run


def test_in_flight_maps_queued_array_tasks_back_to_their_tasks():
    run = fake_squeue(
        "12_0|RUNNING|/s/a/.submitit/.submission_file_1.sh\n"
        "12_2|PENDING|/s/a/.submitit/.submission_file_1.sh\n"
        "20|PENDING|/s/b/.submitit/.submission_file_2.sh\n")
    found = sub.in_flight(RECORDS, run)
    assert found == {"m/shard-0-of-1/combo-0": sub.Queued("12_0", "RUNNING"),
                     "m/shard-0-of-1/combo-2": sub.Queued("12_2", "PENDING"),
                     "m/shard-0-of-1/combo-3": sub.Queued("20", "PENDING")}
    assert run.calls == [["squeue", "-h", "-r", "-j", "12,20", "-o", "%i|%T|%o"]]


def test_ended_tasks_and_reused_job_ids_are_not_in_flight():
    run = fake_squeue(
        "12_0|COMPLETED|/s/a/.submitit/.submission_file_1.sh\n"
        "12_1|CANCELLED+|/s/a/.submitit/.submission_file_1.sh\n"
        # a new cluster (ids restart) gave 20 to someone else's job
        "20|RUNNING|/home/other/job.sh\n"
        "12_2|REQUEUED|/s/a/.submitit/.submission_file_1.sh\n")
    assert sub.in_flight(RECORDS, run) == {"m/shard-0-of-1/combo-2": sub.Queued("12_2", "REQUEUED")}


def test_forgotten_jobs_are_gone_and_a_failing_squeue_is_an_error():
    gone = fake_squeue("", 1, "slurm_load_jobs error: Invalid job id specified\n")
    assert sub.in_flight(RECORDS[:1], gone) == {}
    assert sub.in_flight([], gone) == {}
    assert len(gone.calls) == 1  # no records: squeue is not asked
    down = fake_squeue("", 1, "squeue: error: Unable to contact slurm controller\n")
    with pytest.raises(MetaCAMError, match=r"squeue failed \(exit 1: squeue: error: Unable to "
                       r"contact slurm controller\), so which tasks are still queued is unknown"):
        sub.in_flight(RECORDS, down)


def test_squeue_is_asked_in_chunks(monkeypatch):
    monkeypatch.setattr(sub, "SQUEUE_CHUNK", 2)
    run = fake_squeue("")
    sub.squeue_rows(["3", "1", "2", "10", "1"], run)
    assert [c[4] for c in run.calls] == ["1,2", "3,10"]


def test_log_folders_of_array_tasks_and_single_jobs():
    assert sub.log_folder(RECORDS[0], "2") == "/s/a/.submitit/12_2"
    assert sub.log_folder(RECORDS[0]) == "/s/a/.submitit/12_<index>"
    assert sub.log_folder(RECORDS[1], "0") == "/s/b/.submitit/20"


def test_submissions_log_appends_and_skips_torn_lines(tmp_path):
    assert sub.read_submissions(tmp_path) == []
    sub.record_submission(tmp_path, RECORDS[0])
    sub.record_submission(tmp_path, RECORDS[1])
    path = tmp_path / "_manifest" / "submissions.jsonl"
    with open(path, "a") as handle:  # a crash in the middle of a line
        handle.write('{"job_id": "33", "tas')
    assert sub.read_submissions(tmp_path) == RECORDS
    sub.record_submission(tmp_path, {**RECORDS[1], "job_id": "21"})  # after the torn line
    assert [r["job_id"] for r in sub.read_submissions(tmp_path)] == ["12", "20", "21"]


def _append_many(folder: str, worker: int) -> None:
    for i in range(40):
        sub.record_submission(folder, {"job_id": f"{worker}{i:03d}", "tasks": {"0": "x" * 3000}})


def test_concurrent_submitters_never_interleave_lines(tmp_path):
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_append_many, args=(str(tmp_path), w)) for w in range(1, 5)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    lines = (tmp_path / "_manifest" / "submissions.jsonl").read_text().splitlines()
    assert len(lines) == 160
    assert sorted(json.loads(line)["job_id"] for line in lines) == sorted(
        f"{w}{i:03d}" for w in range(1, 5) for i in range(40))


# ---- tasks, done or not -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_plan(tmp_path_factory) -> SweepPlan:
    out = tmp_path_factory.mktemp("plan")
    return plan_sweep([*TWO_GROUPS, *SLURM, f"out_dir={out}"])


def plan_in(base: SweepPlan, folder: Path, **changes) -> SweepPlan:
    """The plan with its results, cache and submitit folder under ``folder``, manifests written."""
    variants = [replace(v, results_dir=str(folder / "results"), cache_dir=None) for v in base.variants]
    launcher = {**base.launcher, "submitit_folder": str(folder / "multirun" / ".submitit" / "%j")}
    plan = replace(base, variants=variants, launcher=launcher, **changes)
    write_manifests(plan)
    return plan


def write_result(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({c: pa.array([], pa.string()) for c in REQUIRED_COLUMNS}), path)


def test_tasks_of_a_plan_and_when_each_is_done(base_plan, tmp_path):
    plan = plan_in(base_plan, tmp_path)
    tasks = sub.study_tasks(plan)
    model_dir = tasks[0].key.split("/")[0]
    assert [t.key for t in tasks] == [f"{model_dir}/shard-0-of-1/combo-{c}" for c in range(4)]
    assert [t.spec.combo_id for t in tasks] == [0, 1, 2, 3]
    results = tmp_path / "results" / model_dir
    # combo 1 = gradcam alone: its combination and its three members alone, on one unit
    assert sorted(p.parent.name for p in tasks[1].files) == [
        "metacam-combo01", "single-gradcam", "single-gradcam_elementwise", "single-hirescam"]
    assert all(p.parent.parent == results and p.name.startswith("unit-") for p in tasks[1].files)
    # combo 3 = every group: + the two null controls
    assert {p.parent.name for p in tasks[3].files} == {
        "metacam-combo03", "control-shuffled", "control-smooth_noise"}
    assert not any(sub.task_done(t) for t in tasks)
    for path in tasks[1].files[:-1]:
        write_result(path)
    assert not sub.task_done(tasks[1])  # one file missing
    tasks[1].files[-1].parent.mkdir(parents=True, exist_ok=True)
    tasks[1].files[-1].write_bytes(b"PAR1 torn")
    assert not sub.task_done(tasks[1])  # one file unreadable
    write_result(tasks[1].files[-1])
    assert sub.task_done(tasks[1]) and not sub.task_done(tasks[0])


def test_a_shard_without_images_is_done(base_plan, tmp_path):
    variants = [replace(v, data=replace(v.data, shard_count=2, shard_index=1)) for v in base_plan.variants]
    plan = plan_in(replace(base_plan, variants=variants), tmp_path)
    tasks = sub.study_tasks(plan)
    assert [t.key.split("/", 1)[1] for t in tasks] == [f"shard-1-of-2/combo-{c}" for c in range(4)]
    assert all(t.files == () and sub.task_done(t) for t in tasks)


# ---- submit() against fake SLURM commands ------------------------------------------------------

FAKES = {
    "sbatch": """n=$(( $(cat "$FAKE_SLURM/counter" 2>/dev/null || echo 100) + 1 ))
echo "$n" > "$FAKE_SLURM/counter"
cp "$1" "$FAKE_SLURM/sbatch-$n.sh"
echo "Submitted batch job $n"
""",
    "squeue": """echo "$*" >> "$FAKE_SLURM/squeue.calls"
cat "$FAKE_SLURM/squeue.out" 2>/dev/null
exit $(cat "$FAKE_SLURM/squeue.rc" 2>/dev/null || echo 0)
""",
    "scontrol": """cat "$FAKE_SLURM/scontrol.out" 2>/dev/null
echo "slurm_load_ctl_conf error: Unable to contact slurm controller (connect failure)" >&2
exit $(cat "$FAKE_SLURM/scontrol.rc" 2>/dev/null || echo 0)
""",
    "srun": "exit 0\n",
}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """A folder of fake sbatch/squeue/scontrol/srun first on PATH; their state lives in it."""
    folder = tmp_path / "fake-slurm"
    folder.mkdir()
    for name, body in FAKES.items():
        path = folder / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    (folder / "scontrol.out").write_text("MaxArraySize = 3\n")
    monkeypatch.setenv("FAKE_SLURM", str(folder))
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def scripts(fake: Path) -> list[str]:
    return [p.read_text() for p in sorted(fake.glob("sbatch-*.sh"))]


def queue_everything(fake: Path, records: list[dict], state: str = "PENDING") -> None:
    rows = [f"{r['job_id']}_{i}|{state}|{r['script_dir']}/.submission_file_x.sh"
            for r in records for i in r["tasks"]]
    (fake / "squeue.out").write_text("\n".join(rows) + "\n")


def test_submit_splits_records_and_resubmits_only_what_is_missing(base_plan, fake_slurm, tmp_path,
                                                                   capsys):
    plan = plan_in(base_plan, tmp_path / "study")
    results = Path(plan.variants[0].results_dir)
    assert sub.submit(plan, detach=True) == 0
    out = capsys.readouterr().out
    # MaxArraySize 3 (fake scontrol), 4 tasks: two arrays of 2, array_parallelism 3 -> 2 + 1
    assert "4 task(s) (model x shard x combination); 0 done, 0 still queued" in out
    assert "Submitted 4 task(s) as 2 job array(s) of at most 3 (MaxArraySize)" in out
    assert "job 101: 2 task(s), at most 2 at once" in out
    assert "job 102: 2 task(s), at most 1 at once" in out
    assert f"metacam status {results}" in out and "squeue -u $USER" in out
    first, second = scripts(fake_slurm)
    assert "#SBATCH --array=0-1%2" in first and "#SBATCH --array=0-1%1" in second
    assert "#SBATCH --partition=debug" in first
    records = sub.read_submissions(results)
    assert [(r["job_id"], r["size"], r["array_parallelism"]) for r in records] == [
        ("101", 2, 2), ("102", 2, 1)]
    model_dir = sub.study_tasks(plan)[0].key.split("/")[0]
    assert model_dir == "resnet18-random0-c10-64x64"
    assert records[0]["tasks"] == {"0": f"{model_dir}/shard-0-of-1/combo-0",
                                   "1": f"{model_dir}/shard-0-of-1/combo-1"}
    assert records[1]["tasks"] == {"0": f"{model_dir}/shard-0-of-1/combo-2",
                                   "1": f"{model_dir}/shard-0-of-1/combo-3"}
    assert records[0]["script_dir"] == str(tmp_path / "study" / "multirun" / ".submitit")
    # submitit wrote each task's pickle: the spec of its combination
    pickles = sorted((tmp_path / "study" / "multirun" / ".submitit").glob("10?_?/*_submitted.pkl"))
    assert [p.parent.name for p in pickles] == ["101_0", "101_1", "102_0", "102_1"]

    # rerun while everything is queued: nothing is submitted
    queue_everything(fake_slurm, records)
    assert sub.submit(plan, detach=True) == 0
    out = capsys.readouterr().out
    assert "0 done, 4 still queued or running from earlier submissions, 0 to submit" in out
    assert "Nothing new to submit; job(s) 101, 102 still hold the rest." in out
    assert len(scripts(fake_slurm)) == 2 and len(sub.read_submissions(results)) == 2

    # array 102 left the queue; its combo 2 wrote its results, combo 3 did not
    queue_everything(fake_slurm, records[:1], "RUNNING")
    tasks = sub.study_tasks(plan)
    for path in tasks[2].files:
        write_result(path)
    assert sub.submit(plan, detach=True) == 0
    out = capsys.readouterr().out
    assert "1 done, 2 still queued or running from earlier submissions, 1 to submit" in out
    assert "job 103: 1 task(s), at most 1 at once" in out
    (third,) = scripts(fake_slurm)[2:]
    assert "--array" not in third  # one task: a plain job
    last = sub.read_submissions(results)[-1]
    assert (last["job_id"], last["array"], last["tasks"]) == (
        "103", False, {"0": f"{model_dir}/shard-0-of-1/combo-3"})
    assert "logs " + str(tmp_path / "study" / "multirun" / ".submitit" / "103") + "/" in out


def test_waiting_ends_when_every_task_is_done_or_none_is_queued(base_plan, fake_slurm, tmp_path,
                                                                  capsys):
    plan = plan_in(base_plan, tmp_path / "study")
    results = Path(plan.variants[0].results_dir)
    # squeue shows nothing: the submitted tasks "died" without results -> exit 1, with logs
    assert sub.submit(plan, detach=False, poll_seconds=0) == 1
    out = capsys.readouterr().out
    assert "4 task(s) left the queue without their results (rerun the same command" in out
    assert f"shard-0-of-1/combo-0: logs in {tmp_path}/study/multirun/.submitit/101_0/" in out
    assert f"shard-0-of-1/combo-3: logs in {tmp_path}/study/multirun/.submitit/102_1/" in out
    # every result present: waiting ends at once with the dataset and the analyze command
    for task in sub.study_tasks(plan):
        for path in task.files:
            write_result(path)
    queue_everything(fake_slurm, sub.read_submissions(results), "RUNNING")
    assert sub.wait_for(sub.study_tasks(plan), poll_seconds=0) == 0
    out = capsys.readouterr().out
    assert "[4/4 tasks done]" in out
    assert f"Dataset: {results} (11/11 result files, complete)" in out
    assert f"metacam analyze {results}" in out
    # and a rerun has nothing to submit
    assert sub.submit(plan, detach=False) == 0
    assert "Nothing to submit: every task is done." in capsys.readouterr().out
    assert len(scripts(fake_slurm)) == 2


def test_limit_of_concurrency_below_the_number_of_arrays_chains_them(base_plan, fake_slurm,
                                                                      tmp_path, capsys):
    plan = plan_in(base_plan, tmp_path / "study", max_array_size=1)
    plan = replace(plan, launcher={**plan.launcher, "array_parallelism": 2,
                                   "additional_parameters": {"mail-type": "END"}})
    assert sub.submit(plan, detach=True) == 0
    out = capsys.readouterr().out
    assert "as 4 job array(s) of at most 1 (slurm.max_array_size)" in out
    assert "job 103: 1 task(s), at most 1 at once, after job 101 ends" in out
    assert "job 104: 1 task(s), at most 1 at once, after job 102 ends" in out
    texts = scripts(fake_slurm)
    assert ["--dependency" in t for t in texts] == [False, False, True, True]
    assert "#SBATCH --dependency=afterany:101" in texts[2]
    assert all("#SBATCH --mail-type=END" in t for t in texts)  # the user's extras are kept
    assert [r["depends_on"] for r in sub.read_submissions(plan.variants[0].results_dir)] == [
        None, None, "101", "102"]


def test_thousands_of_tasks_submit_in_seconds(base_plan, fake_slurm, tmp_path, capsys):
    """2,048 tasks (32 shards x 64 combinations): 3 arrays under MaxArraySize 1001."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(64):
        pixels = np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"p{i:02d}.png")
    (fake_slurm / "scontrol.out").write_text("MaxArraySize = 1001\n")
    base = base_plan.variants[0]
    six_groups = {**{k: list(v) for k, v in default_groups().items()}, "perturbation": ["ablationcam"]}
    variants = [replace(base, groups=six_groups,
                        data=replace(base.data, images=[str(photos)], shard_count=32, shard_index=s))
                for s in range(32)]
    plan = plan_in(replace(base_plan, variants=variants, combos=list(range(64)),
                           launcher={**base_plan.launcher, "array_parallelism": 64}), tmp_path)
    started = time.perf_counter()
    assert sub.submit(plan, detach=True) == 0
    seconds = time.perf_counter() - started
    with capsys.disabled():  # measured, never a limit
        print(f"\n2048 tasks: submit(detach=True) took {seconds:.2f}s against a fake sbatch")
    records = sub.read_submissions(plan.variants[0].results_dir)
    assert [(r["size"], r["array_parallelism"]) for r in records] == [
        (683, 22), (683, 21), (682, 21)]
    keys = [k for r in records for k in r["tasks"].values()]
    assert len(set(keys)) == 2048
    assert [t.count("#SBATCH --array=") for t in scripts(fake_slurm)] == [1, 1, 1]
    assert "#SBATCH --array=0-682%22" in scripts(fake_slurm)[0]
    assert "Submitted 2048 task(s) as 3 job array(s) of at most 1001" in capsys.readouterr().out


# ---- bad input: one line, exit 2, nothing submitted ------------------------------------------


def run_sweep(args: list[str], capsys) -> tuple[int, str, str]:
    code = sweep_main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("setup", "extra", "message"), [
    ("no sbatch", [], "metacam sweep: error: sbatch not found on PATH: launcher=submitit_slurm "
                      "submits from a SLURM login node"),
    ("scontrol fails", [], "metacam sweep: error: `scontrol show config` failed (exit 1: "
                           "slurm_load_ctl_conf error: Unable to contact slurm controller"),
    ("", ["slurm.max_array_size=0"], "metacam sweep: error: slurm.max_array_size=0: give an "
                                     "integer of at least 1"),
    ("", ["hydra.launcher.array_parallelism=0"],
     "metacam sweep: error: hydra.launcher.array_parallelism=0: must be at least 1"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_submitted(fake_slurm, tmp_path, capsys,
                                                            monkeypatch, setup, extra, message):
    if setup == "no sbatch":
        (fake_slurm / "sbatch").unlink()
        monkeypatch.setenv("PATH", str(fake_slurm))  # Debian's sbatch is in /usr/bin
    if setup == "scontrol fails":
        (fake_slurm / "scontrol.rc").write_text("1")
        (fake_slurm / "scontrol.out").write_text("")
    code, out, err = run_sweep([*TWO_GROUPS, *SLURM, f"out_dir={tmp_path}", *extra, "--detach"],
                               capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(message), err
    assert scripts(fake_slurm) == []
    assert not list(tmp_path.rglob("submissions.jsonl"))


def test_detach_needs_the_slurm_launcher(tmp_path, capsys):
    code, _, err = run_sweep([*TWO_GROUPS, f"out_dir={tmp_path}", "--detach"], capsys)
    assert code == 2
    assert err.strip() == ("metacam sweep: error: --detach needs launcher=submitit_slurm "
                           "(local jobs run in this process)")


def test_compact_true_compacts_a_finished_study_and_a_rerun_submits_nothing(base_plan, fake_slurm, tmp_path,
                                                                            capsys):
    two = ["sample:coffee", "sample:rocket"]  # two units per experiment folder
    variants = [replace(v, data=replace(v.data, images=two)) for v in base_plan.variants]
    plan = plan_in(replace(base_plan, variants=variants), tmp_path / "study", compact=True)
    results = Path(plan.variants[0].results_dir)
    for task in sub.study_tasks(plan):
        for path in task.files:
            write_result(path)
    assert sub.submit(plan, detach=True) == 0
    out = capsys.readouterr().out
    assert "Nothing to submit: every task is done." in out
    assert f"Compacting {results}: compacted 22 unit file(s) and 0 small part(s) into 11 part(s); 22 -> 11 files" in out
    assert f"Dataset: {results} (22/22 result files, complete)" in out
    assert not list(results.rglob("unit-*.parquet")) and len(list(results.rglob("part-*.parquet"))) == 11
    assert all(sub.task_done(t) for t in sub.study_tasks(plan))  # merged units are done
    assert sub.submit(plan, detach=True) == 0
    assert "0 to submit" in capsys.readouterr().out and not scripts(fake_slurm)


def test_compact_true_with_detach_submits_a_compaction_job_after_the_arrays(base_plan, fake_slurm, tmp_path,
                                                                            capsys):
    plan = plan_in(base_plan, tmp_path / "study", compact=True)
    plan = replace(plan, launcher={**plan.launcher, "gres": "gpu:1"})  # the tasks take a GPU each
    results = Path(plan.variants[0].results_dir)
    assert sub.submit(plan, detach=True) == 0
    out = capsys.readouterr().out
    assert "job 103: `metacam compact` of the dataset once jobs 101, 102 have ended (compact=true)" in out
    *arrays, compaction = scripts(fake_slurm)
    assert len(arrays) == 2 and "#SBATCH --dependency=afterany:101:102" in compaction
    assert all("#SBATCH --gres=gpu:1" in a for a in arrays)
    assert "--array" not in compaction and "gpu" not in compaction.lower()  # compaction needs no GPU
    assert "#SBATCH --job-name=metacam-compact" in compaction and "#SBATCH --partition=debug" in compaction
    # the pickled call: compact_study(the results folder)
    (pickled,) = (tmp_path / "study" / "multirun" / ".submitit").glob("103/*_submitted.pkl")
    import pickle

    delayed = pickle.loads(pickled.read_bytes())
    assert delayed.function is sub.compact_study and delayed.args == ([str(results)],)
