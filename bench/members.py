"""Benchmark: every member CAM per image, ours (one shared pass) versus grad-cam 1.5's
classes called one by one, on the same device, images and model; and, on the default
EfficientNet-Lite0, the 12 default members against version 0.2 in the same run.

Prints per-member seconds (min and median of several runs), the ratios to grad-cam
(all members, the gradient family against one GradCAM call, AblationCAM, ScoreCAM),
the max abs difference to grad-cam so the comparison is of equal outputs, and, for
Lite0, the same ratios of v0.2's code (bench/baseline.py: timed in a subprocess beside
this one) with the change against it. Run:

    python bench/members.py                                  # Lite0, real weights, all 16 members
    python bench/members.py --model timm/vit_tiny_patch16_224 --random   # a tiny ViT (15 members)
    python bench/members.py [--device cuda] [--images coffee,chelsea] [--no-baseline]
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.cams.oracle

from baseline import BASELINE, run_json  # noqa: E402

from metacam.cams import MEMBERS, compute_members, resolve_methods  # noqa: E402
from metacam.images import load_image  # noqa: E402
from metacam.models import load_model  # noqa: E402
from tests.cams.oracle import ablation_layer_for, oracle_map  # noqa: E402

GRADIENT_FAMILY = ["gradcam", "hirescam", "gradcam_elementwise", "gradcampp", "xgradcam", "layercam",
                   "eigengradcam", "eigencam"]
SLOW = {"scorecam", "ablationcam"}
NOT_COMPARED = {"randomcam": "random by design", "fullgrad": "differs by design on timm"}


def timed(fn, repeats: int, device: torch.device) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times, result


def fmt(times: list[float]) -> str:
    return f"{min(times):7.3f} / {statistics.median(times):7.3f}"


# The four figures the ratios are made of, for a list of member names: all of them in one
# call, the gradient family, AblationCAM and ScoreCAM alone. The same code runs here (ours)
# and, with v0.2 first on the path, in a subprocess (the baseline).
MEASURE = """
import json, sys, time, torch
from metacam.cams import compute_members
from metacam.images import load_image
from metacam.models import load_model

def measure(device, images, methods, family, repeats):
    bundle = load_model("efficientnet_lite0", device)
    net, layer = bundle.net, bundle.target_layer
    out = {"all": [], "family": [], "ablationcam": [], "scorecam": []}
    for name in images:
        x = bundle.preprocess([load_image(f"sample:{name}").image])
        compute_members(net, x, layer, methods=methods)  # warm-up
        for key, chosen in (("all", methods), ("family", family), ("ablationcam", ["ablationcam"]),
                            ("scorecam", ["scorecam"])):
            for _ in range(repeats):
                start = time.perf_counter()
                compute_members(net, x, layer, methods=chosen)
                out[key].append(time.perf_counter() - start)
    return out
"""


def measure_ours(args: argparse.Namespace, methods: list[str]) -> dict[str, list[float]]:
    """MEASURE on this tree, in a subprocess too, so both sides pay the same (a fresh process)."""
    done = subprocess.run([sys.executable, "-c", MEASURE + _call(args, methods)], stdout=subprocess.PIPE,
                          text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_baseline(args: argparse.Namespace, methods: list[str]) -> dict[str, list[float]]:
    return run_json(MEASURE + _call(args, methods), args.baseline)  # type: ignore[return-value]


def _call(args: argparse.Namespace, methods: list[str]) -> str:
    return (f"print(json.dumps(measure({args.device!r}, {args.images.split(',')!r}, {methods!r}, "
            f"{GRADIENT_FAMILY!r}, 1)))")


def ratios(ours: dict[str, list[float]], theirs: dict[str, list[float]], members: list[str]) -> dict[str, float]:
    """grad-cam / ours for all ``members``, AblationCAM and ScoreCAM; the gradient family /
    one GradCAM call (lower is better there)."""
    total = sum(min(theirs[m]) for m in members)
    return {
        "all": total / min(ours["all"]),
        "family": min(ours["family"]) / min(theirs["gradcam"]),
        "ablationcam": min(theirs["ablationcam"]) / min(ours["ablationcam"]),
        "scorecam": min(theirs["scorecam"]) / min(ours["scorecam"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0", help="any load_model name (timm/NAME, ...)")
    parser.add_argument("--random", action="store_true", help="seeded random weights (pretrained=False)")
    parser.add_argument("--kwargs", default="{}", help="JSON: keyword arguments of the architecture")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", default="coffee,chelsea")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the fast members")
    parser.add_argument("--slow-repeats", type=int, default=1, help="runs of grad-cam's ScoreCAM/AblationCAM")
    parser.add_argument("--baseline", default=BASELINE, help="the revision to compare with (Lite0 only)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="alternating baseline/ours rounds")
    parser.add_argument("--baseline-only", action="store_true",
                        help="only the comparison with the baseline (no grad-cam timings)")
    args = parser.parse_args()

    device = torch.device(args.device)
    model = load_model(args.model, device, pretrained=not args.random, kwargs=json.loads(args.kwargs))
    net = model.net
    members = [name for name in MEMBERS if not MEMBERS[name].plugin]
    if not model.reshape.is_identity:
        members.remove("fullgrad")  # not defined on transformers (a one-line error)
    defaults = resolve_methods(None)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line), "?")
    print(f"device {device} ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{model.name} at {model.input_size[0]}x{model.input_size[1]}, target layer "
          f"{model.target_layer_name}, reshape {model.reshape.name}, {len(members)} members")

    if args.baseline_only:
        compare_with_baseline(args, defaults, None)
        return 0
    ours_all, ours_family, ours_ablation, ours_score = [], [], [], []
    theirs: dict[str, list[float]] = {name: [] for name in members}
    worst: dict[str, float] = {}
    for name in args.images.split(","):
        x = model.preprocess([load_image(f"sample:{name}").image])
        targets = net(x).argmax(1)

        def theirs_call(member: str, x=x, targets=targets):
            # grad-cam's Eigen and KPCA signs are arbitrary: oriented as ours (_Patch); its
            # AblationCAM at its default batch of 32 copies
            return oracle_map(member, net, list(model.target_layers), x, targets, _Patch(),
                              reshape=None if model.reshape.is_identity else model.reshape,
                              ablation_layer=ablation_layer_for(model.reshape), ablation_batch=32)

        compute_members(model, x, methods=members)  # warm-up
        times, result = timed(lambda x=x: compute_members(model, x, methods=members), args.repeats, device)
        ours_all += times
        for store, chosen in ((ours_family, GRADIENT_FAMILY), (ours_ablation, ["ablationcam"]),
                              (ours_score, ["scorecam"])):
            store += timed(lambda x=x, c=chosen: compute_members(model, x, methods=c), args.repeats, device)[0]
        for member in members:
            repeats = args.slow_repeats if member in SLOW else args.repeats
            member_times, reference = timed(lambda m=member: theirs_call(m), repeats, device)
            theirs[member] += member_times
            if member not in NOT_COMPARED:
                diff = float(np.abs(result.maps[member].cpu().numpy() - reference).max())
                worst[member] = max(worst.get(member, 0.0), diff)
        print(f"  {name}: done", flush=True)

    print("\nper image, seconds (min / median)")
    print(f"{'member':22s} {'grad-cam':>17s}   max|ours - grad-cam|")
    for member in members:
        diff = f"{worst[member]:.1e}" if member in worst else f"({NOT_COMPARED[member]})"
        print(f"{member:22s} {fmt(theirs[member])}   {diff}")
    total_theirs = sum(min(theirs[m]) for m in members)
    print(f"\n{f'grad-cam, {len(members)} classes one by one':40s} {total_theirs:8.3f} s")
    print(f"{f'ours, all {len(members)} members in one call':40s} {min(ours_all):8.3f} s  "
          f"(median {statistics.median(ours_all):.3f})")
    print(f"{'ours, gradient family + EigenCAM':40s} {min(ours_family):8.3f} s")
    print(f"{'ours, AblationCAM alone':40s} {min(ours_ablation):8.3f} s")
    print(f"{'ours, ScoreCAM alone':40s} {min(ours_score):8.3f} s")

    now = ratios({"all": ours_all, "family": ours_family, "ablationcam": ours_ablation, "scorecam": ours_score},
                 theirs, members)
    # v0.2's goals were set for the default Lite0; elsewhere the ratios are for information
    lite0 = args.model == "efficientnet_lite0" and not args.random

    def verdict(met: bool) -> str:
        return ("PASS" if met else "FAIL") if lite0 else ""

    print("\nratios (min times)" + ("" if lite0 else "; v0.2's goals are for Lite0"))
    print(f"  all {len(members)}: grad-cam / ours          {now['all']:7.1f}x   goal >= 3x     "
          f"{verdict(now['all'] >= 3)}")
    print(f"  gradient family / grad-cam GradCAM {now['family']:5.2f}x   goal <= 1.5x   "
          f"{verdict(now['family'] <= 1.5)}")
    print(f"  AblationCAM: grad-cam / ours     {now['ablationcam']:7.1f}x   goal >= 10x    "
          f"{verdict(now['ablationcam'] >= 10)}")
    print(f"  ScoreCAM: grad-cam / ours        {now['scorecam']:7.1f}x")

    if lite0 and not args.no_baseline:
        compare_with_baseline(args, defaults, theirs)
    return 0


def compare_with_baseline(args, defaults, theirs) -> None:
    """The 12 default members: v0.2 (a subprocess) against us, in alternating rounds so
    that a change of the machine's load hits both sides (each side keeps its minimum).
    The change of a ratio to grad-cam is the ratio of the two times (grad-cam cancels)."""
    print(f"\nthe 12 default members against {args.baseline} (v0.2), timed in a subprocess in this "
          f"run, {args.rounds} alternating rounds")
    old: dict[str, list[float]] = {}
    ours: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for side, measure in ((old, measure_baseline), (ours, measure_ours)):
            for key, values in measure(args, defaults).items():
                side.setdefault(key, []).extend(values)
    print(f"{'(min times)':40s} {'v0.2':>8s} {'now':>8s}   change (v0.2 time / now)")
    for key, label in (("all", "all 12: grad-cam / ours"), ("family", "gradient family / grad-cam GradCAM"),
                       ("ablationcam", "AblationCAM: grad-cam / ours"), ("scorecam", "ScoreCAM: grad-cam / ours")):
        # a ratio to grad-cam changes by the ratio of our two times: grad-cam's cancels
        change = min(old[key]) / min(ours[key])
        verdict = "ok" if change >= 0.9 else "REGRESSION (> 10%)"
        if theirs is None:
            print(f"  {key:38s} {min(old[key]):8.3f} {min(ours[key]):8.3f}   {change:5.2f}x  {verdict}")
        else:
            before, after = ratios(old, theirs, defaults)[key], ratios(ours, theirs, defaults)[key]
            print(f"  {label:38s} {before:8.2f} {after:8.2f}   {change:5.2f}x  {verdict}")
    for key in ("all", "family", "ablationcam", "scorecam"):
        print(f"  seconds, {key:12s} v0.2 {min(old[key]):7.3f} (median {statistics.median(old[key]):7.3f})"
              f"   now {min(ours[key]):7.3f} (median {statistics.median(ours[key]):7.3f})")


class _Patch:
    """monkeypatch.setattr for a script: sets module attributes by dotted path."""

    def setattr(self, target: str, value) -> None:
        module_name, _, attribute = target.rpartition(".")
        module = sys.modules.get(module_name) or __import__(module_name, fromlist=[attribute])
        setattr(module, attribute, value)


if __name__ == "__main__":
    sys.exit(main())
