"""The one-shot GPU check: every CUDA figure the README's GPU table needs, in one run of < 8 min.

    make bench-gpu                              # = python bench/gpu.py --out bench-gpu-out
    python bench/gpu.py --out "$OUT"            # on a lent GPU machine: logs and summary come back
    python bench/gpu.py --dry-run               # the same steps at tiny sizes on the CPU (checks this script)

A GPU session may be a single 15-minute slot, so each step is a subprocess with its own
time budget: a step that fails or runs over is killed, reported, and the next one runs;
what a step printed before it stopped is still parsed. The steps (budget, seconds):

1. ``tests`` (60): ``pytest -m cuda``, the CUDA tests (CPU and CUDA give the same numbers);
2. ``sweep`` (150): a 16-image default sweep on CUDA (64 combinations, baselines,
   controls, Lite0, the 10-value k grid, held-out ROAD, deletion/insertion; one unit of
   16 images per job): its wall time over its forward-pass time (goal <= 1.6x), from the
   jobs' progress records (``RESULTS/_progress/*.json``), which survive a killed sweep;
3. ``road`` (150): ``bench/road.py --device cuda --full``: adaptive ROAD of one map and
   the per-image 64 maps x 20 k x 4 p sweep (goal <= 1 s on an H200), imputation vs
   forward throughput at batch 512 (goal >= 1x), its GPU-hour projection;
4. ``impute`` (45): ``bench/impute.py`` at batch 512 on real ROAD masks: imputation / forward;
5. ``members`` (60): ``bench/members.py --device cuda``: all 12 members per image vs grad-cam.

Then a summary (``summary.md``, ``summary.json`` and every step's log under ``--out``):
the README's GPU table rows with the GPU named, and the paper-scale projection
(1,000 images x 3 models, and ImageNet's 50,000) in GPU-hours. Without CUDA it says so
in one line and exits 0. The scripts of steps 3-5 are called by their command lines,
not imported; ``--dry-run`` runs steps 1-2 for real on the CPU at tiny sizes and checks
that steps 3-5 still accept the flags used here (``--help``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Run as a script, this file's folder is first on sys.path; drop it so nothing there shadows a package.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

REPO = Path(__file__).resolve().parents[1]
PAPER_IMAGES = 1_000
IMAGENET_VAL = 50_000
# A (model, image) unit of the three-model study costs 1 : 1.47 : 2.09 for Lite0 : Lite1 : Lite2
# (29.5 / 43.3 / 61.8 s on the CPU, README's benchmark table): the projection scales Lite0's rate.
MODEL_COST = (1.0, 43.3 / 29.5, 61.8 / 29.5)


@dataclass
class StepResult:
    name: str
    status: str  # "ok", "failed (exit N)", "over budget (killed after N s)"
    seconds: float
    budget: float
    figures: dict[str, str] = field(default_factory=dict)
    tail: str = ""


@dataclass
class Step:
    """One measured command: its time budget and the figures to read from its output.

    after: more figures, from the step's whole output and the files it wrote.
    """

    name: str
    budget: float
    command: list[str]
    figures: dict[str, str] = field(default_factory=dict)  # figure -> regex (group 1), multiline
    after: Callable[[StepResult, str], None] | None = None


def run_step(step: Step, log_dir: Path) -> StepResult:
    """Run ``step`` with its budget (its whole process group killed when over), log its output,
    and read its figures from whatever it printed."""
    log = log_dir / f"{step.name}.log"
    print(f"--- {step.name} (budget {step.budget:.0f} s): {' '.join(step.command)}", flush=True)
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(step.command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=step.budget)
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status = f"over budget (killed after {step.budget:.0f} s)"
    seconds = time.perf_counter() - started
    text = log.read_text(errors="replace")
    result = StepResult(step.name, status, seconds, step.budget, tail="\n".join(text.splitlines()[-15:]))
    for figure, pattern in step.figures.items():
        match = re.search(pattern, text, re.MULTILINE)
        if match:
            result.figures[figure] = match.group(1).strip()
    if step.after is not None:
        try:
            step.after(result, text)
        except Exception as error:  # a figure lost, not the run: say why and go on
            result.figures["error"] = f"{type(error).__name__}: {error}"
    print(f"    {status} in {seconds:.0f} s; " + ("; ".join(f"{k} = {v}" for k, v in result.figures.items())
                                                  or "no figures"), flush=True)
    return result


def sweep_images(folder: Path, count: int) -> list[Path]:
    """``count`` distinct real-photo crops (the bundled photographs, two windows each)."""
    import numpy as np
    from PIL import Image

    from metacam.images import PHOTO_NAMES, sample_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = np.asarray(sample_image(PHOTO_NAMES[i % len(PHOTO_NAMES)]).image)
        side = min(pixels.shape[:2]) * 3 // 4
        offset = (i // len(PHOTO_NAMES)) * (min(pixels.shape[:2]) - side)
        path = folder / f"crop{i:02d}.png"
        Image.fromarray(pixels[offset : offset + side, offset : offset + side]).save(path)
        paths.append(path)
    return paths


def sweep_figures(out_dir: Path, images: int, hours: str = "GPU-hours") -> Callable[[StepResult, str], None]:
    """The sweep's wall / forward ratio and seconds per image, from its jobs' progress records
    (written after each unit: they survive a sweep killed at its budget)."""

    def read(result: StepResult, text: str) -> None:
        from metacam.progress import read_progress

        (results,) = list(out_dir.glob("sweeps/*/results"))
        (manifest,) = list((results / "_manifest").glob("*.shard-*.json"))
        jobs = 2 ** len(json.loads(manifest.read_text())["groups"])
        records = [r for r in read_progress(results) if r.finished]
        if not records:
            raise RuntimeError(f"no finished job under {results}")
        total = {key: sum(r.timings.get(key, 0.0) for r in records)
                 for key in ("job", "members", "forward", "impute", "heldout", "deletion")}
        forward = total["forward"] + total["deletion"]  # deletion/insertion is forward passes too
        per_image = total["job"] / len(records) * jobs / images  # every experiment of one image, Lite0
        partial = "" if len(records) == jobs else f" (over the {len(records)} of {jobs} jobs done in the budget)"
        result.figures.update({
            "jobs done": f"{len(records)} of {jobs}",
            "sweep wall / forward passes": f"{result.seconds / forward:.2f}x{partial} (goal <= 1.6)",
            "in jobs: members / forward / imputation / held-out / deletion": (
                f"{total['members']:.1f} / {total['forward']:.1f} / {total['impute']:.1f} / "
                f"{total['heldout']:.1f} / {total['deletion']:.1f} s of {total['job']:.1f} s"),
            "seconds per image, all experiments (Lite0)": f"{per_image:.2f} s",
            f"projection, {PAPER_IMAGES:,} images x 3 models":
                f"{per_image * sum(MODEL_COST) * PAPER_IMAGES / 3600:.1f} {hours}",
            f"projection, {IMAGENET_VAL:,} images x 3 models":
                f"{per_image * sum(MODEL_COST) * IMAGENET_VAL / 3600:.0f} {hours}",
        })

    return read


def accepts(flags: list[str]) -> Callable[[StepResult, str], None]:
    """Dry run: the script's --help lists every flag the real run passes."""

    def check(result: StepResult, text: str) -> None:
        missing = [flag for flag in flags if flag.startswith("--") and flag not in text]
        result.figures["flags"] = "all accepted" if not missing else f"MISSING {', '.join(missing)}"
        if missing:
            result.status = "failed (flags)"

    return check


def steps(out: Path, dry_run: bool) -> list[Step]:
    """The steps; ``dry_run``: tiny and on the CPU (see the module docstring)."""
    python = sys.executable
    device = "cpu" if dry_run else "cuda"
    images = sweep_images(out / "images", 2 if dry_run else 16)
    tiny = ["model=tiny_random", "groups=two_groups", "threshold.ks=[50,100]", "road.percentiles=[50]",
            "heldout.percentiles=[30,70]", "deletion.steps=4"] if dry_run else []
    sweep = [python, "-m", "metacam.cli", "sweep", f"device={device}", "data=folder",
             f"data.images=[{','.join(str(p) for p in images)}]", f"data.images_per_unit={len(images)}",
             f"out_dir={out / 'sweep'}", *tiny]
    road = ["--device", device, "--full"]
    impute = ["--device", device, "--batch", "512", "--copies", "6", "--repeat", "3", "--no-old", "--no-avx2",
              "--no-road", "--gradcam-masks", "0", "--subset", "1"]
    members = ["--device", device, "--images", "coffee", "--repeats", "2", "--slow-repeats", "1"]

    def script(name: str, flags: list[str]) -> list[str]:
        return [python, f"bench/{name}.py", *(["--help"] if dry_run else flags)]

    return [
        Step("tests", 60, [python, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                           "tests/test_cuda.py" if dry_run else "tests"],
             {"cuda tests": r"^=*\s*(\d+ (?:passed|skipped|failed|deselected).*?) in [\d.]+s"}),
        Step("sweep", 150, sweep,
             after=sweep_figures(out / "sweep", len(images), "CPU-hours (tiny model)" if dry_run else "GPU-hours")),
        Step("road", 150, script("road", road), {
            "adaptive ROAD, 20 k x 4 p, one map": r"^ours, road_many on 20 maps:\s+(\S+ s)",
            "imputation / forward (one map)": r"^imputation / forward\s+(\S+)",
            "ROAD total / forward": r"^ROAD total / forward\s+(\S+)",
            "per-image 64 x 20 x 4 sweep (goal <= 1 s on an H200)": r"^per-image 64 x 20 x 4 sweep: (\S+ s)",
            "throughput at batch 512 (goal: imputation >= forward)": r"^throughput at batch \d+: (.*?) \(goal",
            "projection (road.py)": r"^paper-scale projection from the full sweep's rate: (.*)$",
        }, accepts(road) if dry_run else None),
        Step("impute", 45, script("impute", impute), {
            "imputation time / forward time at batch 512, real ROAD masks (<= 1: throughput goal met)": r"^ours:.*imputation / forward = (\S+) min",
            "forward at batch 512": r"^forward, batch \d+:\s+(\S+ s)",
        }, accepts(impute) if dry_run else None),
        Step("members", 60, script("members", members), {
            "all 12 members, per image": r"^ours, all 12 members in one call\s+(\S+ s)",
            "grad-cam, 12 classes one by one": r"^grad-cam, 12 classes one by one\s+(\S+ s)",
            "all 12: grad-cam / ours": r"all 12: grad-cam / ours\s+(\S+)",
        }, accepts(members) if dry_run else None),
    ]


def summary(results: list[StepResult], device: str) -> str:
    lines = [f"# GPU check: {device}", "", "| step | status | seconds (budget) | figures |", "|---|---|---|---|"]
    for r in results:
        figures = "<br>".join(f"{k}: {v}" for k, v in r.figures.items()) or "—"
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.0f} ({r.budget:.0f}) | {figures} |")
    failed = [r for r in results if r.status != "ok"]
    for r in failed:
        lines += ["", f"## {r.name}: {r.status}", "```", r.tail, "```"]
    return "\n".join(lines)


def device_line(dry_run: bool) -> str | None:
    """The GPU's name, or None without CUDA (the CPU named in a dry run)."""
    import torch

    if dry_run:
        from metacam.device import device_name

        return f"dry run on the CPU ({device_name(torch.device('cpu'))}), tiny sizes"
    if not torch.cuda.is_available():
        return None
    return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-gpu-out", help="logs and summary")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: checks this script")
    parser.add_argument("--only", default="", help="comma-separated steps to run (default: all)")
    args = parser.parse_args(argv)
    device = device_line(args.dry_run)
    if device is None:
        print("bench/gpu.py: no CUDA device here (torch.cuda.is_available() is False); nothing measured")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"GPU check on {device}; logs in {args.out}", flush=True)
    started = time.perf_counter()
    plan = steps(args.out, args.dry_run)
    wanted = set(args.only.split(",")) - {""}
    results = [run_step(step, args.out) for step in plan if not wanted or step.name in wanted]
    text = summary(results, device)
    (args.out / "summary.md").write_text(text + "\n")
    (args.out / "summary.json").write_text(json.dumps({"device": device, "steps": [asdict(r) for r in results]},
                                                      indent=1))
    print("\n" + text)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; summary in {args.out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
