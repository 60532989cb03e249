"""Fixtures for tests that submit real jobs to a one-node SLURM cluster.

The cluster is the one `slurm/local-cluster.sh` runs (DESIGN.md §4). The tests
need root and Debian's slurm-wlm + munge; anywhere else they skip, with the
reason `slurm_skip_reason()` gives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "slurm" / "local-cluster.sh"
DEFAULT_STATE_DIR = "/tmp/metacam-slurm"
PARTITION = "debug"
# The cluster the tests start (and .ci/run) has MaxArraySize=50, so a sweep of more
# than 50 tasks must be split into several job arrays.
MAX_ARRAY_SIZE = 50

# Every binary the cluster script and the tests call.
REQUIRED_BINARIES = (
    "slurmctld",
    "slurmd",
    "sinfo",
    "squeue",
    "sbatch",
    "scontrol",
    "scancel",
    "srun",
    "munged",
    "munge",
    "unmunge",
)
# Debian installs the daemons in /usr/sbin, which a non-login root PATH may lack;
# the cluster script adds these too.
SBIN_DIRS = ("/usr/sbin", "/sbin")


def slurm_skip_reason(search_path: str | None = None, euid: int | None = None) -> str | None:
    """Why the slurm tests cannot run on this machine, or None when they can.

    `search_path` (default: $PATH plus /usr/sbin:/sbin) and `euid` (default:
    this process's) exist so tests can simulate other machines.
    """
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return f"needs root to run slurmctld/slurmd (euid is {euid})"
    if search_path is None:
        search_path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    missing = [b for b in REQUIRED_BINARIES if shutil.which(b, path=search_path) is None]
    if missing:
        return (
            f"slurm-wlm/munge not installed (missing {', '.join(missing)}); "
            "run slurm/install-debian.sh as root"
        )
    return None


@dataclass(frozen=True)
class SlurmCluster:
    """What a test needs to know about the running cluster."""

    partition: str
    state_dir: Path
    conf: Path
    started_here: bool  # this session started it, so this session stops it
    new_folder: Callable[[str], Path]  # fresh folder for a submitit executor
    max_array_size: int | None  # MaxArraySize from `scontrol show config` (None: unreadable)

    def job_state(self, job_id: str) -> str | None:
        """Slurm's state of a job (`12`, or array task `12_3`) from slurmctld's
        memory; it stands in for `sacct`, which needs the accounting storage
        this cluster has not got. None once slurmctld has forgotten the job
        (MinJobAge=300 s after it ends)."""
        out = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
            capture_output=True,
            text=True,
            check=False,
        )
        state = out.stdout.strip()
        return state if out.returncode == 0 and state else None

    def result(self, job, timeout_s: float = 300.0):
        """`job.result()` that cannot hang.

        Without sacct, submitit's watcher only ever sees state UNKNOWN, so for
        a job that died before writing its result pickle `job.result()` waits
        forever. Here: poll for the pickle; fail with the job's stderr when the
        job has ended without one, or cancel it after `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        while not job.paths.result_pickle.exists():
            state = self.job_state(job.job_id)
            if state in _ENDED:
                time.sleep(5)  # the pickle is written before the job ends; be lenient
                if job.paths.result_pickle.exists():
                    break
                raise RuntimeError(
                    f"job {job.job_id} ended ({state}) without a result; "
                    f"stdout {job.paths.stdout}\nstderr:\n{job.stderr()}"
                )
            if time.monotonic() > deadline:
                job.cancel(check=False)
                raise TimeoutError(
                    f"job {job.job_id} not done after {timeout_s}s (state {state}); "
                    f"stdout {job.paths.stdout}\nstderr:\n{job.stderr()}"
                )
            time.sleep(0.5)
        return job.result()


# Slurm states after which no result will come; None: slurmctld forgot the job.
# REQUEUED/PENDING/RUNNING/PREEMPTED (on the way to a requeue) are not here.
_ENDED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    None,
}


def read_max_array_size() -> int | None:
    """The running cluster's MaxArraySize (`scontrol show config`), None if unreadable."""
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value.strip())
    return None


def job_logs(folder: Path, limit: int = 4, chars: int = 3000) -> str:
    """For failure messages: the stdout and stderr tails of the submitit tasks under
    ``folder`` that did not complete successfully (else of the newest tasks)."""
    outs = sorted(Path(folder).rglob("*_log.out"), key=lambda p: p.stat().st_mtime)
    failed = [p for p in outs if "completed successfully" not in p.read_text(errors="replace")]
    parts = [f"{len(failed)} of {len(outs)} submitit task(s) under {folder} did not complete"]
    for out in (failed or outs)[-limit:]:
        for log in (out, out.with_name(out.name.replace("_log.out", "_log.err"))):
            if log.exists():
                parts.append(f"== {log}\n{log.read_text(errors='replace')[-chars:]}")
    return "\n".join(parts)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A running one-node cluster with partition `debug`.

    Reuses a cluster that is already running in the state dir
    ($METACAM_SLURM_DIR, else /tmp/metacam-slurm) and then leaves it running;
    otherwise starts one with MaxArraySize=50 (`--max-array-size 50`) and stops
    it at the end of the session. A reused cluster may have another MaxArraySize
    (`max_array_size`); the array-splitting test then skips and says so.
    """
    reason = slurm_skip_reason()
    if reason:
        pytest.skip(reason)
    state_dir = Path(os.environ.get("METACAM_SLURM_DIR", DEFAULT_STATE_DIR)).resolve()
    script = ["bash", str(CLUSTER_SCRIPT)]
    args = ["--state-dir", str(state_dir)]
    running = (
        subprocess.run(
            [*script, "status", *args], capture_output=True, text=True, check=False
        ).returncode
        == 0
    )
    if not running:
        start = subprocess.run(
            [*script, "start", *args, "--max-array-size", str(MAX_ARRAY_SIZE)],
            capture_output=True,
            text=True,
        )
        if start.returncode != 0:
            pytest.fail(f"local-cluster.sh start failed:\n{start.stdout}\n{start.stderr}")

    def new_folder(name: str) -> Path:
        return tmp_path_factory.mktemp(name)

    conf = state_dir / "slurm.conf"
    # sbatch/squeue (ours, submitit's, Hydra's, and scontrol inside jobs, which
    # inherit this environment) must find this cluster's config even where
    # /etc/slurm/slurm.conf is someone else's.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(conf))
        mp.setenv("PATH", os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS]))
        try:
            max_array = read_max_array_size()
            yield SlurmCluster(PARTITION, state_dir, conf, not running, new_folder, max_array)
        finally:
            if not running:
                subprocess.run([*script, "stop", *args], capture_output=True, check=False)
