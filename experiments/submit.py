"""Submitting a study to SLURM: job arrays sized to the cluster, only what is missing,
and ``--detach``.

``metacam sweep launcher=submitit_slurm ... [--detach]`` plans the study
(:mod:`metacam.experiments.plan`) and hands the plan to :func:`submit`:

1. **Preflight** (each problem is one :class:`MetaCAMError` line and nothing is
   submitted): ``sbatch``, ``squeue`` and ``srun`` on PATH; the largest array is
   ``slurm.max_array_size`` when given (at least 1), else the cluster's
   ``MaxArraySize`` from ``scontrol show config``.
2. **What to submit.** A *task* is one (model, shard, combination) of the plan. It is
   *done* when every experiment of its combination has a complete result file for
   every unit of its shard (what ``metacam status`` counts), and *in flight* when an
   earlier submission of the same study still has it in ``squeue``. Every submission
   is recorded in ``<results>/_manifest/submissions.jsonl``: one JSON line per array
   with its job id, its submitit folder and which task each array index runs. Only
   tasks that are neither done nor in flight are submitted, so rerunning the same
   command submits only what is missing (``sacct`` is not needed: slurmctld's memory,
   through ``squeue``, says what is still queued or running; a finished task is
   recognised by its result files).
3. **Splitting.** n tasks go into ``ceil(n / max)`` arrays of near-equal size (never
   more than ``max`` tasks each, so never more than ``MaxArraySize``).
4. **Concurrency.** ``hydra.launcher.array_parallelism`` (P) stays a cap on the whole
   study. With k <= P arrays, P is divided among them in proportion to their sizes,
   each at least 1 (and no more than its size), and each array carries its share as
   Slurm's own throttle (``--array=0-N%share``): all arrays are eligible at once, the
   scheduler enforces the cap, and nothing has to stay behind to enforce it (so
   ``--detach`` loses nothing). With k > P (a small P and a huge sweep) there are P
   *lanes*: each array is throttled to 1 and array j waits (``afterany``) for array
   j - P, so at most P tasks still run at once. Chaining every array one after the
   other (each with the full P) was the alternative; it was not chosen because the
   cap idles at the tail of each array while the next waits for its slowest task, and
   one stuck or requeued task holds back every later array. The cost of dividing:
   when one array finishes first its share is not handed on (near-equal sizes make
   arrays end close together; ``scontrol update JobId=<array> ArrayTaskThrottle=N``
   rebalances by hand).
5. **Detach or wait.** With ``--detach`` :func:`submit` returns right after ``sbatch``
   (each task's JobSpec is already in the plan: nothing is composed per task). Without,
   it polls the result files (and ``squeue``, for tasks that died without results) with
   a progress line, then prints the dataset and the ``metacam analyze`` command.

Each task runs :class:`SweepTask` (a ``submitit.helpers.Checkpointable``): on a
timeout or preemption submitit requeues the same task (up to
``hydra.launcher.max_num_timeout`` times), and :func:`metacam.sweep.run_job` skips the
units it already wrote.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError, JobPaths

from metacam.errors import MetaCAMError
from metacam.experiments.plan import SweepPlan
from metacam.results import Snapshot
from metacam.sweep import JobReport, JobSpec, experiments_of, manifest, model_key, run_job, validate
from metacam.sweep.design import MANIFEST_DIR, manifest_path

SUBMISSIONS = "submissions.jsonl"  # under <results>/_manifest/
REQUIRED_COMMANDS = ("sbatch", "squeue", "srun")  # srun: submitit's SlurmExecutor checks it
# squeue states of a task that will still run or is running (all else: it has ended).
ACTIVE_STATES = frozenset({
    "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED",
    "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
    "RESV_DEL_HOLD", "PREEMPTED",
})
SQUEUE_CHUNK = 100  # job ids per squeue call
POLL_SECONDS = 10.0  # waiting (no --detach): how often to look at the files and squeue
STATUS_EVERY = 60.0  # ... and at least this often recount the study (metacam status's numbers)

Runner = Callable[[list[str]], subprocess.CompletedProcess]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    except FileNotFoundError:
        raise MetaCAMError(f"{command[0]} not found on PATH: run this on a SLURM login node") from None
    except subprocess.TimeoutExpired:
        raise MetaCAMError(f"`{' '.join(command)}` did not answer in 120 s: is slurmctld up?") from None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


# ---- the task run inside each SLURM job -------------------------------------------------


class SweepTask(submitit.helpers.Checkpointable):
    """One (model, shard, combination) of a study, run inside its SLURM job.

    Checkpointable: on timeout or preemption submitit resubmits ``self(spec)`` as it was
    (the default ``checkpoint``), and :func:`run_job` skips the units already written.
    """

    def __call__(self, spec: JobSpec) -> JobReport:
        _limit_threads()
        report = run_job(spec)
        print(f"{spec.sweep_id} {spec.model.name} shard {spec.data.shard_index}/"
              f"{spec.data.shard_count} combo {spec.combo_id}: {report.line()}", flush=True)
        return report


def _limit_threads() -> None:
    """Use the CPUs SLURM gave the task, not every core of the node (a cluster without
    CPU binding would otherwise let each task start one thread per core)."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit() and int(cpus) > 0:
        import torch

        torch.set_num_threads(int(cpus))


# ---- pure pieces: array sizes, concurrency, scontrol --------------------------------------


def split_sizes(n_tasks: int, max_array_size: int) -> list[int]:
    """Sizes of the fewest arrays of at most ``max_array_size`` tasks holding ``n_tasks``,
    as equal as possible (larger first): 64 tasks, max 50 -> [32, 32]."""
    if max_array_size < 1:
        raise MetaCAMError(f"max_array_size {max_array_size} must be at least 1")
    if n_tasks <= 0:
        return []
    count = math.ceil(n_tasks / max_array_size)
    base, extra = divmod(n_tasks, count)
    return [base + 1] * extra + [base] * (count - extra)


def divide_parallelism(total: int, sizes: list[int]) -> tuple[list[int], list[int | None]]:
    """(each array's throttle, the index of the array each must wait for or None).

    k arrays <= total: total split in proportion to the sizes (largest remainders),
    each at least 1 and at most its size; no waiting. k > total: ``total`` lanes, each
    array throttled to 1, array j waits for array j - total. Either way at most
    ``total`` tasks run at once (see the module docstring for why)."""
    if total < 1:
        raise MetaCAMError(f"hydra.launcher.array_parallelism={total}: must be at least 1")
    k = len(sizes)
    if k == 0:
        return [], []
    if k > total:
        return [1] * k, [j - total if j >= total else None for j in range(k)]
    n = sum(sizes)
    exact = [total * size / n for size in sizes]
    shares = [max(1, math.floor(x)) for x in exact]
    # hand out what is left, largest remainder first (ties: the earlier array)
    order = sorted(range(k), key=lambda j: (-(exact[j] - math.floor(exact[j])), j))
    for j in order:
        if sum(shares) >= total:
            break
        shares[j] += 1
    # the minimum of 1 may overshoot: take back from the largest shares
    while sum(shares) > total:
        j = max(range(k), key=lambda i: (shares[i], -i))
        shares[j] -= 1
    return [min(share, size) for share, size in zip(shares, sizes, strict=True)], [None] * k


def parse_max_array_size(text: str) -> int:
    """``MaxArraySize`` from the output of ``scontrol show config``."""
    match = re.search(r"^\s*MaxArraySize\s*=\s*(\S+)", text, re.MULTILINE)
    if match is None:
        raise MetaCAMError("`scontrol show config` reports no MaxArraySize; "
                           "give it with slurm.max_array_size=N")
    try:
        value = int(match.group(1))
    except ValueError:
        raise MetaCAMError(f"`scontrol show config` reports MaxArraySize = {match.group(1)!r}, "
                           "not a number; give it with slurm.max_array_size=N") from None
    if value < 1:
        raise MetaCAMError(f"this cluster disables job arrays (MaxArraySize = {value}); "
                           "slurm.max_array_size=1 submits one job per task")
    return value


def resolve_max_array_size(configured: object, run: Runner = _run) -> int:
    """``slurm.max_array_size`` when set (>= 1), else the cluster's MaxArraySize."""
    if configured is not None:
        if isinstance(configured, bool) or not isinstance(configured, int) or configured < 1:
            raise MetaCAMError(f"slurm.max_array_size={configured}: give an integer of at least 1 "
                               "(or leave it unset: the cluster's MaxArraySize)")
        return configured
    result = run(["scontrol", "show", "config"])
    if result.returncode != 0:
        raise MetaCAMError(f"`scontrol show config` failed (exit {result.returncode}: "
                           f"{_first_line(result.stderr)}), so the cluster's MaxArraySize is "
                           "unknown; is slurmctld reachable? (slurm.max_array_size=N gives it)")
    return parse_max_array_size(result.stdout)


def check_commands() -> None:
    """The SLURM client commands submission needs, on PATH."""
    for command in REQUIRED_COMMANDS:
        if shutil.which(command) is None:
            raise MetaCAMError(f"{command} not found on PATH: launcher=submitit_slurm submits from a "
                               "SLURM login node (elsewhere use launcher=local or submitit_local)")


# ---- the tasks of a plan and whether they are done -----------------------------------------


@dataclass(frozen=True)
class Task:
    """One job of the study: its key in the submissions log, its spec, the files it writes."""

    key: str  # "<model dir>/shard-<i>-of-<n>/combo-<c>", unique within a results dir
    spec: JobSpec
    files: tuple[Path, ...]

    @property
    def results_dir(self) -> str:
        return self.spec.results_dir


def _absolute(spec: JobSpec) -> JobSpec:
    """Paths the job and the messages use, independent of the job's working directory."""
    cache = None if spec.cache_dir is None else os.path.abspath(spec.cache_dir)
    return replace(spec, results_dir=os.path.abspath(spec.results_dir), cache_dir=cache)


def _shard_manifest(spec: JobSpec, key: str) -> dict:
    """The (model, shard)'s manifest (write_manifests wrote it); computed if absent."""
    path = manifest_path(spec.results_dir, key, spec.data.shard_index, spec.data.shard_count)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        from metacam.sweep import load_bundle

        bundle = load_bundle(replace(spec, device="cpu"))
        return manifest(validate(spec), key, bundle.target_layer_name)


def study_tasks(plan: SweepPlan) -> list[Task]:
    """Every task of the plan (variants x combos, in the plan's order), with its files.

    Two variants that differ only in what does not change the results (say, the device)
    are one task."""
    tasks: dict[tuple[str, str], Task] = {}
    for variant in plan.variants:
        variant = _absolute(variant)
        groups = validate(variant).groups
        record = _shard_manifest(variant, model_key(variant.model))
        base = Path(variant.results_dir) / record["model_dir"]
        data = variant.data
        for combo in plan.combos:
            folders = [e.folder for e in experiments_of(groups, combo, variant.controls)]
            files = tuple(base / folder / unit for folder in folders for unit in record["units"])
            key = f"{record['model_dir']}/shard-{data.shard_index}-of-{data.shard_count}/combo-{combo}"
            tasks.setdefault((variant.results_dir, key),
                             Task(key, replace(variant, combo_id=combo), files))
    return list(tasks.values())


def task_done(task: Task, listing: Snapshot | None = None) -> bool:
    """Every result file of the task is there and complete, or merged into a compacted
    part (an empty shard is done). listing: folders listed once per check (one scandir
    per experiment folder, not one stat per file)."""
    listing = listing or Snapshot()
    return all(listing.has(p) for p in task.files) and all(listing.complete(p) for p in task.files)


# ---- the submissions log and squeue ------------------------------------------------------------


def submissions_path(results_dir: str | Path) -> Path:
    return Path(results_dir) / MANIFEST_DIR / SUBMISSIONS


def read_submissions(results_dir: str | Path) -> list[dict]:
    """The recorded submissions of the study (a torn or foreign line is skipped)."""
    path = submissions_path(results_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and {"job_id", "tasks"} <= set(record):
            records.append(record)
    return records


def record_submission(results_dir: str | Path, record: dict) -> None:
    """Append one JSON line under a lock, in one write, flushed to disk: concurrent
    submitters never interleave, and a crash leaves at worst a torn last line (skipped
    by readers, and ended before the next record)."""
    path = submissions_path(results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    with open(path.with_name("." + SUBMISSIONS + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn last line: end it
                line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


def squeue_rows(job_ids: Iterable[str], run: Runner = _run) -> list[tuple[str, str, str]]:
    """(job id as ``A_i`` or ``J``, state, command) of these jobs still in slurmctld's queue.

    ``squeue -h -r -j ids``: -r lists every array element. A job slurmctld has forgotten
    is simply absent (squeue's "Invalid job id" for a lone unknown id included)."""
    ids = sorted(set(job_ids), key=lambda i: (len(i), i))
    rows: list[tuple[str, str, str]] = []
    for start in range(0, len(ids), SQUEUE_CHUNK):
        chunk = ids[start : start + SQUEUE_CHUNK]
        result = run(["squeue", "-h", "-r", "-j", ",".join(chunk), "-o", "%i|%T|%o"])
        if result.returncode != 0:
            if "invalid job id" in (result.stderr or "").lower():
                continue
            raise MetaCAMError(f"squeue failed (exit {result.returncode}: "
                               f"{_first_line(result.stderr)}), so which tasks are still queued "
                               "is unknown; is slurmctld reachable?")
        for line in result.stdout.splitlines():
            parts = line.split("|", 2)
            if len(parts) == 3:
                rows.append((parts[0].strip(), parts[1].strip(), parts[2].strip()))
    return rows


@dataclass(frozen=True)
class Queued:
    """A task that an earlier (or this) submission still has in squeue."""

    job_id: str
    state: str


def in_flight(records: list[dict], run: Runner = _run) -> dict[str, Queued]:
    """task key -> its queued job, over these submission records.

    A row counts only if its command (the sbatch script) lies in the record's submitit
    folder: after a cluster's job ids restart, an old id may name someone else's job."""
    if not records:
        return {}
    by_id = {str(r["job_id"]): r for r in records}
    found: dict[str, Queued] = {}
    for job_id, state, command in squeue_rows(by_id, run):
        if state.split()[0].rstrip("+") not in ACTIVE_STATES:
            continue
        base, _, index = job_id.partition("_")
        record = by_id.get(base)
        if record is None:
            continue
        script_dir = record.get("script_dir")
        if script_dir and not command.startswith(script_dir.rstrip("/") + "/"):
            continue
        key = record["tasks"].get(index or "0")
        if key is not None:
            found[key] = Queued(job_id, state)
    return found


def log_folder(record: dict, index: str = "<index>") -> str:
    """The submitit folder (logs, pickles) of array index ``index`` of a recorded submission."""
    job_id = record["job_id"] if not record.get("array", True) else f"{record['job_id']}_{index}"
    try:
        return str(JobPaths(record["submitit_folder"], job_id=job_id).folder)
    except ValueError:  # %a in the folder of a single job
        return str(record["submitit_folder"]).replace("%j", job_id)


# ---- submission ------------------------------------------------------------------------------


def executor_settings(launcher: dict) -> tuple[str, dict, dict]:
    """(folder, AutoExecutor init keywords, update_parameters keywords) from the composed
    ``hydra.launcher``, mapped as hydra_submitit_launcher's BaseSubmititLauncher.launch
    maps them: its base queue keys as they are, the rest prefixed ``slurm_``,
    ``max_num_timeout`` (requeues on timeout/preemption) at init."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    base = {f.name for f in fields(BaseQueueConf)}
    folder = os.path.abspath(str(launcher["submitit_folder"]))
    init = {"slurm_max_num_timeout": int(launcher.get("max_num_timeout") or 0)}
    skip = {"submitit_folder", "max_num_timeout", "_target_"}
    params = {key if key in base else f"slurm_{key}": value
              for key, value in launcher.items() if key not in skip}
    return folder, init, params


def _submit_arrays(tasks: list[Task], launcher: dict, max_array_size: int) -> list[dict]:
    """Submit the tasks as arrays (see the module docstring); record each as it goes."""
    folder, init, params = executor_settings(launcher)
    total = params.pop("slurm_array_parallelism", None)
    total = 256 if total is None else int(total)  # hydra_submitit_launcher's default
    sizes = split_sizes(len(tasks), max_array_size)
    shares, waits = divide_parallelism(total, sizes)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", **init)
    executor.update_parameters(**params)
    user_extra = dict(params.get("slurm_additional_parameters") or {})
    script_dir = str(JobPaths.get_first_id_independent_folder(folder))
    submitted: list[dict] = []
    start = 0
    for number, (size, share, wait) in enumerate(zip(sizes, shares, waits, strict=True), 1):
        chunk = tasks[start : start + size]
        start += size
        extra = dict(user_extra)
        depends_on = None if wait is None else submitted[wait]["job_id"]
        if depends_on is not None:
            mine = f"afterany:{depends_on}"
            extra["dependency"] = f"{extra['dependency']},{mine}" if extra.get("dependency") else mine
        executor.update_parameters(slurm_array_parallelism=share,
                                   slurm_additional_parameters=extra)
        try:
            jobs = executor.map_array(SweepTask(), [task.spec for task in chunk])
        except (FailedJobError, FailedSubmissionError, OSError, ValueError) as error:
            done = ", ".join(r["job_id"] for r in submitted)
            raise MetaCAMError(
                f"sbatch refused array {number} of {len(sizes)} ({size} tasks): "
                f"{_first_line(str(error))}"
                + (f"; arrays {done} were submitted and recorded, rerun the same command to "
                   "submit the rest" if submitted else "")
            ) from None
        job_id = jobs[0].job_id.partition("_")[0]
        record = {
            "format": 1,
            "submitted_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "job_id": job_id,
            "array": len(chunk) > 1,
            "array_parallelism": share,
            "depends_on": depends_on,
            "submitit_folder": folder,
            "script_dir": script_dir,
            "size": len(chunk),
        }
        for results_dir in dict.fromkeys(task.results_dir for task in chunk):
            mine_only = {str(i): t.key for i, t in enumerate(chunk) if t.results_dir == results_dir}
            record_submission(results_dir, {**record, "sweep_id": chunk[0].spec.sweep_id,
                                            "tasks": mine_only})
        submitted.append(record)
    return submitted


COMPACT_TIMEOUT_MIN = 120
# Launcher settings a compaction job does not take over from the study's tasks: it needs no GPU.
_GPU_SETTINGS = ("gpus_per_node", "slurm_gres", "slurm_gpus_per_task", "slurm_cpus_per_gpu", "slurm_mem_per_gpu",
                 "slurm_array_parallelism")


def compact_study(results_dirs: list[str]) -> list[str]:
    """Run inside the compaction job: ``metacam compact`` of each results folder."""
    from metacam.compact import compact

    lines = [f"{d}: {compact(d).line()}" for d in results_dirs]
    print("\n".join(lines), flush=True)
    return lines


def _submit_compaction(results_dirs: list[str], job_ids: list[str], launcher: dict) -> str:
    """One CPU job that compacts the dataset once the given jobs have all ended (afterany):
    ``compact=true`` with ``--detach``."""
    folder, _, params = executor_settings(launcher)
    for key in _GPU_SETTINGS:
        params.pop(key, None)
    extra = dict(params.get("slurm_additional_parameters") or {})
    mine = "afterany:" + ":".join(sorted(set(job_ids), key=int))
    extra["dependency"] = f"{extra['dependency']},{mine}" if extra.get("dependency") else mine
    params.update(timeout_min=COMPACT_TIMEOUT_MIN, name="metacam-compact", slurm_additional_parameters=extra)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(**params)
    try:
        job = executor.submit(compact_study, results_dirs)
    except (FailedJobError, FailedSubmissionError, OSError, ValueError) as error:
        raise MetaCAMError(f"sbatch refused the compaction job: {_first_line(str(error))}; the study's jobs "
                           "are submitted: run `metacam compact RESULTS` when they are done") from None
    return str(job.job_id)


def _records(tasks: list[Task]) -> list[dict]:
    return [r for d in dict.fromkeys(t.results_dir for t in tasks) for r in read_submissions(d)]


def submit(plan: SweepPlan, detach: bool, *, run: Runner = _run,
           poll_seconds: float = POLL_SECONDS) -> int:
    """Submit the plan's missing tasks to SLURM; with ``detach`` return at once, else wait.

    Returns the exit status: 0 submitted (detach) or complete (waiting), 1 when waiting
    ends with tasks that left the queue without their results. Raises MetaCAMError (one
    line; nothing submitted) on bad input: no sbatch, scontrol failing, a
    max_array_size below 1."""
    check_commands()
    max_size = resolve_max_array_size(plan.max_array_size, run)
    total = plan.launcher.get("array_parallelism")
    divide_parallelism(256 if total is None else int(total), [1])  # refuse P < 1 now
    started = time.perf_counter()
    tasks = study_tasks(plan)
    listing = Snapshot()
    done = {(t.results_dir, t.key) for t in tasks if task_done(t, listing)}
    queued = {}
    for results_dir in dict.fromkeys(t.results_dir for t in tasks):
        for key, job in in_flight(read_submissions(results_dir), run).items():
            queued[(results_dir, key)] = job
    skip = done | set(queued)
    todo = [t for t in tasks if (t.results_dir, t.key) not in skip]
    results = list(dict.fromkeys(t.results_dir for t in tasks))
    sweep_ids = ", ".join(dict.fromkeys(t.spec.sweep_id for t in tasks))
    skipped = sum(1 for t in tasks if (t.results_dir, t.key) in done)
    waiting = sum(1 for t in tasks if (t.results_dir, t.key) in queued
                  and (t.results_dir, t.key) not in done)
    print(f"MetaCAM study {sweep_ids}: {len(tasks)} task(s) (model x shard x combination); "
          f"{skipped} done, {waiting} still queued or running from earlier submissions, "
          f"{len(todo)} to submit.", flush=True)
    if todo:
        arrays = _submit_arrays(todo, plan.launcher, max_size)
        source = "slurm.max_array_size" if plan.max_array_size is not None else "MaxArraySize"
        print(f"Submitted {len(todo)} task(s) as {len(arrays)} job array(s) of at most {max_size} "
              f"({source}) in {time.perf_counter() - started:.1f}s:")
        for record in arrays:
            after = f", after job {record['depends_on']} ends" if record["depends_on"] else ""
            print(f"  job {record['job_id']}: {record['size']} task(s), at most "
                  f"{record['array_parallelism']} at once{after}; logs {log_folder(record)}/")
        if plan.compact and detach:
            ids = [r["job_id"] for r in arrays] + [q.job_id.partition("_")[0] for q in queued.values()]
            job = _submit_compaction(results, ids, plan.launcher)
            print(f"  job {job}: `metacam compact` of the dataset once jobs {', '.join(sorted(set(ids), key=int))} "
                  "have ended (compact=true)")
    elif not waiting:
        print("Nothing to submit: every task is done.")
        _print_dataset(results, plan.compact)
        return 0
    else:
        jobs = sorted({job.job_id.partition("_")[0] for job in queued.values()}, key=int)
        print(f"Nothing new to submit; waiting on job(s) {', '.join(jobs)}." if not detach
              else f"Nothing new to submit; job(s) {', '.join(jobs)} still hold the rest.")
    print("Follow it (closing this terminal loses nothing):")
    for results_dir in results:
        print(f"  metacam status {results_dir}")
    print("  squeue -u $USER")
    print("Rerun the same command to submit only what is missing"
          + (" (and, once every task is done, to compact the dataset)." if plan.compact else "."), flush=True)
    if detach:
        return 0
    return wait_for(tasks, run=run, poll_seconds=poll_seconds, compact=plan.compact)


def _print_dataset(results: list[str], compact: bool = False) -> None:
    """Where the dataset is (compacted first with ``compact``) and how to analyse it."""
    from metacam.status import study_status

    if compact:
        from metacam.compact import compact as compact_dataset

        for results_dir in results:
            print(f"Compacting {results_dir}: {compact_dataset(results_dir).line()}", flush=True)
    for results_dir in results:
        status = study_status(results_dir)
        print(f"Dataset: {results_dir} ({status.files_done}/{status.files_expected} result files"
              + (", complete)" if status.complete else ")"))
        failed = sum(m.units_failed for m in status.models)
        if failed:
            print(f"  {failed} unit(s) have failure rows: `metacam status {results_dir}` lists why")
    print("Analyse it with:")
    for results_dir in results:
        print(f"  metacam analyze {results_dir}", flush=True)


def _study_line(results: list[str]) -> str:
    from metacam.status import study_status

    statuses = [study_status(d, read=False) for d in results]  # polled: count files, do not open them
    done = sum(s.files_done for s in statuses)
    expected = sum(s.files_expected for s in statuses)
    etas = [s.eta_text() for s in statuses if not s.complete]
    return f"{done}/{expected} result files, ETA {etas[0] if len(etas) == 1 else ' / '.join(etas) or 'done'}"


def wait_for(tasks: list[Task], *, run: Runner = _run, poll_seconds: float = POLL_SECONDS,
             compact: bool = False) -> int:
    """Wait until every task is done (0; the dataset is then compacted with ``compact``) or
    none is done and queued any more (1)."""
    results = list(dict.fromkeys(t.results_dir for t in tasks))
    remaining = {(t.results_dir, t.key): t for t in tasks}
    reported: set[tuple[str, str]] = set()
    last_counts, last_print = "", 0.0
    try:
        while True:
            queued = {(d, key): job for d in results
                      for key, job in in_flight(read_submissions(d), run).items()}
            listing = Snapshot()
            for key in [k for k, t in remaining.items() if task_done(t, listing)]:
                del remaining[key]
            if not remaining:
                break
            lost = [k for k in remaining if k not in queued]
            if len(lost) == len(remaining):  # nothing left will run: one last look
                listing = Snapshot()
                lost = [k for k in lost if not task_done(remaining[k], listing)]
                if not lost:
                    break
                _report_lost(lost, tasks)
                return 1
            for key in lost:
                if key not in reported:
                    reported.add(key)
                    print(f"  task {key[1]} left the queue without its results", flush=True)
            now = time.monotonic()
            running = sum(1 for k in remaining if k in queued and queued[k].state == "RUNNING")
            counts = (f"[{len(tasks) - len(remaining)}/{len(tasks)} tasks done] {running} running, "
                      f"{sum(1 for k in remaining if k in queued) - running} queued")
            if counts != last_counts or now - last_print >= STATUS_EVERY:
                print(f"{counts}; {_study_line(results)}", flush=True)
                last_counts, last_print = counts, now
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        print("\nStopped waiting; the jobs keep running. Follow them with:", file=sys.stderr)
        for results_dir in results:
            print(f"  metacam status {results_dir}", file=sys.stderr)
        return 130
    print(f"[{len(tasks)}/{len(tasks)} tasks done]")
    _print_dataset(results, compact)
    return 0


def _report_lost(lost: list[tuple[str, str]], tasks: list[Task]) -> None:
    """Which tasks ended without their results, and where their logs are."""
    print(f"{len(lost)} task(s) left the queue without their results "
          "(rerun the same command to resubmit them):", flush=True)
    for results_dir, key in lost[:20]:
        where = ""
        for record in reversed(read_submissions(results_dir)):
            index = next((i for i, k in record["tasks"].items() if k == key), None)
            if index is not None:
                where = f": logs in {log_folder(record, index)}/"
                break
        print(f"  {key}{where}", flush=True)
    if len(lost) > 20:
        print(f"  ... and {len(lost) - 20} more", flush=True)
    _print_dataset(list(dict.fromkeys(t.results_dir for t in tasks)))
