"""Benchmark: the default sweep (`metacam sweep` with no arguments: 64 combinations, 12
baselines and 2 controls, EfficientNet-Lite0, 4 photos, 10 thresholds, held-out ROAD and
deletion/insertion AUC) end to end on this machine, and with --study the three-model study.

Prints the wall time and where it goes, from the jobs' own reports: member maps, the
forward passes (in-sample ROAD, held-out ROAD, deletion/insertion), imputation and the
rest; the goals: wall <= 1.6 x the forward-pass seconds (issue 11), and held-out
re-scoring plus the second metric <= 30% of the rest (issue 12). Also the member cache's
speed-up: what every job recomputing its own members would cost.
Before/after: ``--baseline [--baseline-rev REV]`` runs the same sweep with an earlier
revision (default: version 0.2, bench/baseline.py) in a subprocess beside this tree's, one after the other
on separate output folders (so neither reuses the other's member cache), and prints the
wall and CPU times side by side, best of ``--rounds`` alternating runs (goal: no more than
10% slower) and what the metrics without a forward pass (sparseness, complexity) cost
(goal: under 1% of the sweep). On a shared machine forward passes at 2 threads vary
several-fold with the load; ``OMP_NUM_THREADS=1`` makes both trees' times steadier. Give it a
reduced workload, e.g. ``data.images=[sample:coffee]`` (64 jobs on one photo).
Run: python bench/sweep.py [--study [--compare]] [--baseline [--baseline-rev REV]] [--out DIR] [overrides...]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from road import cpu_name  # noqa: E402

LINE = re.compile(
    r"\[(\d+)/(\d+) result files\] (\S+) .*?: \d+ unit\(s\) scored, \d+ already done(?:, \d+ failed)?, "
    r"(\d+\.\d+)s \(members (\d+\.\d+)s, ROAD forward (\d+\.\d+)s, imputation (\d+\.\d+)s, "
    r"held-out (\d+\.\d+)s, deletion/insertion (\d+\.\d+)s(?:, other metrics (\d+\.\d+)s)?\)"
)  # "other metrics" (sparseness, complexity, plug-ins) is absent from version 0.2's lines
MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def run_sweep(out: Path, overrides: list[str], rev: str | None = None) -> tuple[float, list[dict]]:
    """Run `metacam sweep` (of revision ``rev`` when given, see bench/baseline.py);
    (wall seconds, one dict per job line)."""
    arguments = ["sweep", f"out_dir={out}", *overrides]
    print(f"$ metacam {' '.join(arguments)}  ({rev or 'this tree'}, {torch.get_num_threads()} threads)", flush=True)
    start = time.perf_counter()
    if rev is None:
        result = subprocess.run([sys.executable, "-m", "metacam.cli", *arguments], cwd=REPO, capture_output=True,
                                text=True, check=False)
        if result.returncode != 0:
            print(result.stdout[-3000:], result.stderr[-3000:])
            raise SystemExit(1)
        stdout = result.stdout
    else:
        from baseline import run_python

        stdout = run_python(f"import sys; from metacam.cli import main; sys.exit(main({arguments!r}))", rev)
    wall = time.perf_counter() - start
    keys = ("done", "expected", "model", "job", "members", "forward", "impute", "heldout", "deletion", "metrics")
    jobs = []
    for match in LINE.finditer(stdout):
        values = [v if v is not None else "0" for v in match.groups()]
        jobs.append({k: (v if k == "model" else float(v)) for k, v in zip(keys, values, strict=True)})
    return wall, jobs


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def split(wall: float, jobs: list[dict], label: str) -> dict:
    """Print where the time went; return the totals."""
    total = {k: sum(j[k] for j in jobs) for k in ("job", "members", "forward", "impute", "heldout", "deletion",
                                                  "metrics")}
    # Held-out ROAD's own forward and imputation are inside "forward"/"impute" and "heldout";
    # deletion/insertion is forward passes (and building the perturbed images).
    forward = total["forward"] + total["deletion"]
    print(f"\n{label}: {len(jobs)} jobs, {int(jobs[-1]['done'])}/{int(jobs[-1]['expected'])} result files")
    print(f"wall time              {wall / 60:6.2f} min ({wall:.0f} s)")
    print(f"  in jobs              {total['job']:7.1f} s; outside jobs (start-up, Hydra, planning) {wall - total['job']:.1f} s")
    print(f"  member maps          {total['members']:7.1f} s ({total['members'] / wall:.0%})")
    print(f"  forward passes       {forward:7.1f} s ({forward / wall:.0%})  <- ROAD (in-sample + held-out) {total['forward']:.1f} s, "
          f"deletion/insertion {total['deletion']:.1f} s")
    print(f"  imputation           {total['impute']:7.1f} s ({total['impute'] / wall:.0%})")
    other = total["job"] - total["members"] - total["forward"] - total["impute"] - total["deletion"]
    print(f"  other in jobs        {other:7.1f} s")
    ratio = wall / forward
    print(f"wall / forward passes  {ratio:6.2f}x   goal <= 1.6   {'PASS' if ratio <= 1.6 else 'FAIL'}")
    extra = total["heldout"] + total["deletion"]
    overhead = extra / (wall - extra)
    print(f"held-out + deletion/insertion: {extra:.1f} s, {overhead:.0%} on top of the rest   goal <= 30%   "
          f"{'PASS' if overhead <= 0.3 else 'FAIL'}")
    rest = wall - extra
    print(f"  held-out ROAD alone {total['heldout']:.1f} s ({total['heldout'] / rest:.0%}), "
          f"deletion/insertion alone {total['deletion']:.1f} s ({total['deletion'] / rest:.0%})")
    print(f"metrics without a forward pass (sparseness, complexity, map plug-ins): {total['metrics']:.2f} s, "
          f"{total['metrics'] / wall:.2%} of the wall time   goal < 1%   "
          f"{'PASS' if total['metrics'] < 0.01 * wall else 'FAIL'}")
    return total


def member_seconds_without_cache(images: list[str]) -> tuple[float, float]:
    """(estimated seconds the 64 jobs would spend computing their own members without a
    cache, measured seconds to compute all 12 once), summed over the images."""
    from metacam.cams import compute_members
    from metacam.groups import GroupSet, default_groups
    from metacam.images import load_image
    from metacam.models import load_model

    bundle = load_model("efficientnet_lite0", "cpu")
    groups = GroupSet.from_mapping(default_groups())
    kinds = {"layer": ["gradcam", "hirescam", "gradcam_elementwise", "gradcampp", "xgradcam", "layercam",
                       "eigencam", "eigengradcam"], "fullgrad": ["fullgrad"], "scorecam": ["scorecam"],
             "ablationcam": ["ablationcam"], "randomcam": ["randomcam"]}
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
    for combo_id in range(groups.n_combos):
        members = set(groups.members_of(combo_id))
        without += sum(alone[kind] for kind, methods in kinds.items() if members & set(methods))
    return without, once


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary one)")
    parser.add_argument("--study", action="store_true", help="3 models x the sample photos x top-1")
    parser.add_argument("--compare", action="store_true", help="with --study: also each model alone")
    parser.add_argument("--baseline", action="store_true",
                        help="also run an earlier revision (--baseline-rev) on the same workload, before this tree")
    parser.add_argument("--baseline-rev", default=None, metavar="REV", help="default: version 0.2")
    parser.add_argument("--rounds", type=int, default=1, help="with --baseline: alternating runs of each")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="metacam-bench-sweep-"))
    print(f"CPU: {cpu_name()}, torch {torch.__version__}", flush=True)
    if args.study:
        wall, jobs = run_sweep(out / "study", [f"model={','.join(MODELS)}", *args.overrides])
        split(wall, jobs, "study (3 models)")
        per_model: dict[str, float] = defaultdict(float)
        for job in jobs:
            per_model[job["model"]] += job["job"]
        images = 4
        for model, seconds in per_model.items():
            print(f"  {model:20s} {seconds:7.1f} s in jobs, {seconds / images:.1f} s per (model, image) unit")
        if args.compare:
            alone = 0.0
            for model in MODELS:
                model_wall, _ = run_sweep(out / model, [f"model={model}", *args.overrides])
                alone += model_wall
            print(f"\nstudy {wall:.0f} s vs the three single-model sweeps {alone:.0f} s: "
                  f"{wall / alone:.2f}x (goal <= 1: adding models costs no more than the sum)")
    elif args.baseline:
        from baseline import BASELINE

        rev = args.baseline_rev or BASELINE
        runs: dict[str, list[tuple[float, float, list[dict]]]] = {rev: [], "this tree": []}
        for round_ in range(args.rounds):  # alternating, so a change in the machine's load hits both
            for name in runs:
                folder = out / f"{'baseline' if name == rev else 'now'}-{round_}"  # a cold member cache each
                cpu = _children_cpu()
                wall, jobs = run_sweep(folder, list(args.overrides), rev if name == rev else None)
                runs[name].append((wall, _children_cpu() - cpu, jobs))
        best = {name: min(found, key=lambda run: run[0]) for name, found in runs.items()}
        totals = {name: split(wall, jobs, name) for name, (wall, _, jobs) in best.items()}
        old, new = totals[rev], totals["this tree"]
        cpu_old, cpu_new = (min(run[1] for run in runs[name]) for name in runs)
        print(f"\nbefore/after on the same workload ({' '.join(args.overrides) or 'the default sweep'}), best of "
              f"{args.rounds} alternating run(s) each, {torch.get_num_threads()} threads, CPU: {cpu_name()}:")
        for label, before, after in (("wall time", best[rev][0], best["this tree"][0]),
                                     ("CPU time of the sweep process", cpu_old, cpu_new),
                                     ("in jobs", old["job"], new["job"]),
                                     ("member maps", old["members"], new["members"]),
                                     ("held-out + deletion/insertion", old["heldout"] + old["deletion"],
                                      new["heldout"] + new["deletion"])):
            verdict = "ok" if after <= 1.1 * before else "REGRESSION (> 10%)"
            print(f"  {label:30s} {before:8.1f} s -> {after:8.1f} s  {after / before:5.2f}x  {verdict}")
    else:
        wall, jobs = run_sweep(out / "default", list(args.overrides))
        total = split(wall, jobs, "default sweep")
        images = ["sample:coffee", "sample:chelsea", "sample:astronaut", "sample:rocket"]
        without, once = member_seconds_without_cache(images)
        print(f"\nmember cache: every job recomputing its members would take {without:.1f} s; computing each "
              f"once took {once:.1f} s here ({total['members']:.1f} s in the sweep): "
              f"{without / max(total['members'], once):.1f}x less member time")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
