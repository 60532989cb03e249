"""Benchmark: the default sweep (`metacam sweep` with no arguments: 64 combinations + 12
baselines, EfficientNet-Lite0, 4 photos, 10 thresholds) end to end, on this machine.

Prints its wall time (goal <= 10 minutes on 2 CPU cores), where the time goes
(member maps, ROAD forward passes, imputation, the rest) from the jobs' own
reports, and the member cache's speed-up: the member-map time every
experiment would spend recomputing its members, measured per image here, versus
the cached sweep's actual member time.
Run: python bench/sweep.py [--out DIR] [extra overrides...]
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from metacam.cams import compute_members
from metacam.groups import DEFAULT_GROUPS, combo_flags
from metacam.images import load_image
from metacam.models import load_model

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(
    r"\[(\d+)/(\d+) experiments\].*?(\d+\.\d+)s \(members (\d+\.\d+)s, ROAD forward (\d+\.\d+)s, "
    r"imputation (\d+\.\d+)s\)"
)


def member_seconds_without_cache(images: list[str]) -> tuple[float, float]:
    """(estimated seconds the 64 jobs would spend computing their own members without a
    cache, measured seconds to compute all 12 once), summed over the images.

    A job computes its members in one call: one shared forward/backward for the layer
    members, plus FullGrad, ScoreCAM, AblationCAM and RandomCAM each as measured alone
    (each alone includes a forward pass, so this slightly overestimates).
    """
    bundle = load_model("efficientnet_lite0", "cpu")
    kinds = {"layer": ["gradcam", "hirescam", "gradcam_elementwise", "gradcampp", "xgradcam",
                       "layercam", "eigencam", "eigengradcam"],
             "fullgrad": ["fullgrad"], "scorecam": ["scorecam"], "ablationcam": ["ablationcam"],
             "randomcam": ["randomcam"]}
    alone = dict.fromkeys(kinds, 0.0)
    once = 0.0
    for spec in images:
        x = bundle.preprocess([load_image(spec).image])
        start = time.perf_counter()
        compute_members(bundle.net, x, bundle.target_layer)
        once += time.perf_counter() - start
        for kind, methods in kinds.items():
            start = time.perf_counter()
            compute_members(bundle.net, x, bundle.target_layer, methods=methods)
            alone[kind] += time.perf_counter() - start
    without = 0.0
    for combo_id in range(64):
        members = {m for g, flag in combo_flags(combo_id).items() if flag for m in DEFAULT_GROUPS[g]}
        without += sum(alone[kind] for kind, methods in kinds.items() if members & set(methods))
    return without, once


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary one)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="metacam-bench-sweep-"))
    command = [sys.executable, "-m", "metacam.cli", "sweep", f"out_dir={out}", *args.overrides]
    print(f"$ {' '.join(command)}  ({torch.get_num_threads()} threads)", flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        print(result.stdout[-3000:], result.stderr[-3000:])
        return 1
    jobs = [tuple(float(v) for v in match.groups()) for match in LINE.finditer(result.stdout)]
    done, total = int(jobs[-1][0]), int(jobs[-1][1])
    job_seconds = sum(j[2] for j in jobs)
    members = sum(j[3] for j in jobs)
    forward = sum(j[4] for j in jobs)
    impute = sum(j[5] for j in jobs)
    print(f"\n{len(jobs)} jobs, {done}/{total} experiments complete")
    print(f"wall time            {wall / 60:6.2f} min   goal <= 10 min   {'PASS' if wall <= 600 else 'FAIL'}")
    print(f"  in jobs            {job_seconds:7.1f} s; outside jobs (start-up, Hydra) {wall - job_seconds:.1f} s")
    print(f"  member maps        {members:7.1f} s ({members / wall:.0%})")
    print(f"  ROAD forward       {forward:7.1f} s ({forward / wall:.0%})  <- the model's forward passes")
    print(f"  ROAD imputation    {impute:7.1f} s ({impute / wall:.0%})")
    print(f"  other              {job_seconds - members - forward - impute:7.1f} s")

    images = ["sample:coffee", "sample:chelsea", "sample:astronaut", "sample:rocket"]
    without, once = member_seconds_without_cache(images)
    print(f"\nmember cache: every job recomputing its members would take {without:.1f} s; "
          f"computing each once took {once:.1f} s here ({members:.1f} s in the sweep): "
          f"{without / max(members, once):.1f}x less member time")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
