"""Real submissions to the one-node cluster of `slurm/local-cluster.sh`.

Proves that submitit's AutoExecutor (single jobs, job arrays, a requeue of a
Checkpointable task) and Hydra's `submitit_slurm` launcher submit to it and get
their results back, each computed inside a SLURM job.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit

from tests.slurm.conftest import REQUIRED_BINARIES, SlurmCluster, slurm_skip_reason

pytestmark = pytest.mark.slurm

# The job's Python unpickles the submitted callables. By reference they would
# need `tests.slurm.test_local_cluster` importable inside the job, i.e. the
# job's working directory to be the repository root; by value they need only
# cloudpickle. (submitit runs jobs with this interpreter, sys.executable.)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# submitit parameters every job here uses: 1 core, 1 GB, a small time limit.
JOB_PARAMS = {"timeout_min": 10, "mem_gb": 1, "cpus_per_task": 1}

# The Hydra launcher overrides that work on this cluster (the lead reuses them
# for the real sweep config): see test_hydra_submitit_slurm_launcher_sweep.
HYDRA_LAUNCHER_OVERRIDES = [
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.timeout_min=10",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.tasks_per_node=1",
    "hydra.launcher.nodes=1",
    "hydra.launcher.array_parallelism=4",
]


# ---- functions run inside jobs ----------------------------------------------


def sum_of_squares(n: int) -> dict:
    """Computed inside the job, with the job's identity."""
    return {
        "value": sum(i * i for i in range(n)),
        "job_id": os.environ["SLURM_JOB_ID"],
        "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "pid": os.getpid(),
    }


def die_without_result(code: int) -> None:
    """Ends the job's process before submitit can write a result pickle."""
    os._exit(code)


class RequeueOnce(submitit.helpers.Checkpointable):
    """First run: leaves a marker and waits to be preempted (submitit then
    checkpoints it and runs `scontrol requeue`). Rerun after the requeue: sees
    the marker and returns. Idempotent, as every requeueable task must be."""

    def __call__(self, workdir: str, n: int) -> dict:
        work = Path(workdir)
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        with (work / "runs.log").open("a") as f:
            f.write(f"{os.environ['SLURM_JOB_ID']} restart={restarts}\n")
        marker = work / "first_run.marker"
        if not marker.exists():
            marker.write_text(os.environ["SLURM_JOB_ID"])
            # Waiting for the test's interrupt; bounded so a lost signal
            # cannot leave a job behind for long.
            for _ in range(600):
                time.sleep(0.5)
            raise RuntimeError("first run was never interrupted")
        return {
            "value": n * n,
            "restart_count": int(restarts),
            "job_id": os.environ["SLURM_JOB_ID"],
        }


# ---- the skip path (needs no cluster) ---------------------------------------


def test_skip_reason_when_not_root() -> None:
    reason = slurm_skip_reason(euid=1000)
    assert reason is not None and "needs root" in reason and "1000" in reason


def test_skip_reason_when_packages_missing(tmp_path: Path) -> None:
    # An empty PATH: as on a machine without slurm-wlm and munge.
    reason = slurm_skip_reason(search_path=str(tmp_path), euid=0)
    assert reason is not None
    assert "slurm/install-debian.sh" in reason
    for binary in ("slurmctld", "slurmd", "munged", "sbatch"):
        assert binary in reason


def test_skip_reason_names_only_what_is_missing(tmp_path: Path) -> None:
    for binary in REQUIRED_BINARIES:
        if binary != "munged":
            exe = tmp_path / binary
            exe.write_text("#!/bin/sh\n")
            exe.chmod(0o755)
    reason = slurm_skip_reason(search_path=str(tmp_path), euid=0)
    assert reason is not None and "(missing munged)" in reason
    (tmp_path / "munged").write_text("#!/bin/sh\n")
    (tmp_path / "munged").chmod(0o755)
    assert slurm_skip_reason(search_path=str(tmp_path), euid=0) is None


# ---- submitit ---------------------------------------------------------------


def _executor(cluster: SlurmCluster, name: str) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=cluster.new_folder(name), cluster="slurm")
    executor.update_parameters(slurm_partition=cluster.partition, **JOB_PARAMS)
    return executor


def test_cluster_status(slurm_cluster: SlurmCluster) -> None:
    out = subprocess.run(
        ["sinfo", "-h", "-p", slurm_cluster.partition, "-o", "%a %T %c %m"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    avail, state, cpus, mem_mb = out
    assert avail == "up" and state in {"idle", "mixed", "allocated"}
    assert int(cpus) == os.cpu_count() and int(mem_mb) > 1024


def test_submitit_single_job(slurm_cluster: SlurmCluster, caplog: pytest.LogCaptureFixture) -> None:
    job = _executor(slurm_cluster, "single").submit(sum_of_squares, 10)
    assert job.job_id.isdigit()
    out = slurm_cluster.result(job)
    assert out["value"] == 285  # 0² + 1² + ... + 9²
    assert out["job_id"] == job.job_id  # computed inside this SLURM job
    assert out["array_task_id"] is None
    assert out["pid"] != os.getpid()
    assert slurm_cluster.job_state(job.job_id) == "COMPLETED"
    # stdout/stderr land in the executor folder as <jobid>_0_log.{out,err}.
    assert job.paths.stdout.name == f"{job.job_id}_0_log.out"
    assert "completed successfully" in (job.stderr() or "") + (job.stdout() or "")

    # No accounting storage, so sacct fails: submitit must only warn and
    # report UNKNOWN, never raise.
    with caplog.at_level(logging.WARNING, logger="submitit"):
        job.watcher.update()
        state = job.state
    assert state == "UNKNOWN"
    assert any("sacct" in r.getMessage() for r in caplog.records)


def test_submitit_job_array(slurm_cluster: SlurmCluster) -> None:
    ns = [3, 4, 5, 6]
    jobs = _executor(slurm_cluster, "array").map_array(sum_of_squares, ns)
    assert len(jobs) == len(ns)
    array_id = jobs[0].job_id.split("_")[0]
    assert [j.job_id for j in jobs] == [f"{array_id}_{i}" for i in range(len(ns))]
    results = [slurm_cluster.result(j) for j in jobs]
    assert [r["value"] for r in results] == [sum(i * i for i in range(n)) for n in ns]
    # Every task ran in its own SLURM job, as task i of one array.
    assert [r["array_task_id"] for r in results] == [str(i) for i in range(len(ns))]
    assert len({r["job_id"] for r in results}) == len(ns)


def test_job_dying_without_result_fails_instead_of_hanging(slurm_cluster: SlurmCluster) -> None:
    # Without sacct, submitit's own job.result() would wait forever here.
    job = _executor(slurm_cluster, "dies").submit(die_without_result, 3)
    with pytest.raises(RuntimeError, match="without a result"):
        slurm_cluster.result(job, timeout_s=120)
    assert slurm_cluster.job_state(job.job_id) == "FAILED"


def test_submitit_requeue_reruns_checkpointable_task(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    job = _executor(slurm_cluster, "requeue").submit(RequeueOnce(), str(tmp_path), 7)
    marker = tmp_path / "first_run.marker"
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert time.monotonic() < deadline, f"first run never started: {job.paths.stderr}"
        time.sleep(0.5)
    time.sleep(1)  # let submitit's signal handlers be installed (they are, before the call)
    job._interrupt()  # preemption: SIGTERM, then USR2 -> checkpoint + scontrol requeue

    out = slurm_cluster.result(job, timeout_s=600)
    assert out == {"value": 49, "restart_count": 1, "job_id": job.job_id}
    runs = (tmp_path / "runs.log").read_text().splitlines()
    assert runs == [f"{job.job_id} restart=0", f"{job.job_id} restart=1"]
    log = (job.stderr() or "") + (job.stdout() or "")
    assert "Requeued job" in log or "requeue" in log.lower()


# ---- Hydra's submitit_slurm launcher ----------------------------------------

HYDRA_APP = """
import json
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig) -> None:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "a": cfg.a,
        "b": cfg.b,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
    }
    name = out / f"a={cfg.a}_b={cfg.b}.json"
    tmp = name.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.rename(name)  # whole or not at all


if __name__ == "__main__":
    main()
"""


def test_hydra_submitit_slurm_launcher_sweep(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent(HYDRA_APP))
    (tmp_path / "config.yaml").write_text("a: false\nb: false\nout_dir: ???\n")
    sweep_dir = tmp_path / "sweep"
    out_dir = tmp_path / "out"
    cmd = [
        sys.executable,
        "app.py",
        "-m",
        *HYDRA_LAUNCHER_OVERRIDES,
        f"hydra.sweep.dir={sweep_dir}",
        f"out_dir={out_dir}",
        "a=true,false",
        "b=true,false",
    ]
    # Hydra's launcher blocks on every job's result; the subprocess timeout is
    # only there so a broken cluster fails the test instead of hanging it.
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"

    records = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))]
    assert len(records) == 4
    combos = {(r["a"], r["b"]) for r in records}
    assert combos == {(True, True), (True, False), (False, True), (False, False)}
    # One job array of 4 tasks: every record from a different task of it.
    assert all(r["slurm_job_id"] for r in records)
    assert len({r["slurm_array_job_id"] for r in records}) == 1
    assert sorted(r["slurm_array_task_id"] for r in records) == ["0", "1", "2", "3"]
    array_id = records[0]["slurm_array_job_id"]
    # submitit's folder and logs: <sweep.dir>/.submitit/<array>_<task>/.
    logs = sorted((sweep_dir / ".submitit").glob(f"{array_id}_*/*_log.out"))
    assert len(logs) == 4
    for task in range(4):
        assert slurm_cluster.job_state(f"{array_id}_{task}") == "COMPLETED"
