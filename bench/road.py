"""Benchmark: ROAD at the speed of its forward passes.

One adaptive ROAD sweep of one map (20 thresholds x 4 percentiles, EfficientNet-Lite0
with real weights, 224 x 224), measured in one run on this machine:

* where the time goes: forward passes, imputation, the rest; goals (issue 11):
  imputation <= 0.5 x forward, ROAD total <= 1.6 x forward;
* versus grad-cam's ROADCombined called once per threshold (speed-up);
* exactness: grad-cam's tie rule at noise 0 equals grad-cam's scores; the fast solver's
  ROAD combined equals the direct sparse solve's within 1e-3 (real model);
* a projection of the paper-scale study (1,000 images x 3 models x 64 experiments x
  20 k x 4 p x MoRF/LeRF) from the measured per-image rate.

* before/after: the same road_many workload timed by this tree and by an earlier
  revision (default: version 0.2, bench/baseline.py), each in its own subprocess,
  alternating, best of ``--repeats``: their ratios side by side (goal: no ratio worse
  by more than 10%).

The workload is 20 thresholds (config.FINE_KS, DESIGN's grid), as since version 0.1,
whatever the default k grid. With --full also the per-image 64 x 20 x 4 sweep of every
MetaCAM combination (the GPU goal: <= 1 s on an H200) and imputation vs forward
throughput at batch 512.
Run: python bench/road.py [--device cuda] [--full] [--baseline REV | --no-baseline]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam.metrics import road as grad_cam_road
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

import metacam.evaluation.roadscore as roadscore
from metacam.cams import compute_members
from metacam.config import FINE_KS, RoadConfig
from metacam.ensemble import metacam_maps, threshold_maps
from metacam.evaluation.adaptive import adaptive_threshold
from metacam.evaluation.imputation import impute_masks, linear_impute_reference
from metacam.evaluation.roadscore import Probe, RoadStats, road_many
from metacam.groups import GroupSet, default_groups
from metacam.images import load_image
from metacam.models import load_model

PERCENTILES = (20.0, 40.0, 60.0, 80.0)
PAPER_SCALE = 1000 * 3 * 64 * 20 * 4 * 2  # perturbed images of the paper-scale study


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo and whether it has AVX-512 (results depend on it)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return f"{model} ({'AVX-512' if 'avx512f' in flags else 'AVX2, no AVX-512'})"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def with_grad_cam_noise(noise: float):
    """grad-cam's ROAD builds NoisyLinearImputer(noise=0.01) inside; set its noise."""
    original = grad_cam_road.NoisyLinearImputer.__init__

    def init(self, noise_=noise, weighting=grad_cam_road.neighbors_weights):
        original(self, noise, weighting)

    return original, init


def grad_cam_scores(net, x, candidates: np.ndarray, target: int, noise: float) -> np.ndarray:
    """grad-cam's way: ROADCombined on each candidate map, one call per k."""
    original, init = with_grad_cam_noise(noise)
    grad_cam_road.NoisyLinearImputer.__init__ = init
    try:
        metric = grad_cam_road.ROADCombined(percentiles=list(PERCENTILES))
        return np.array([metric(x, c[None], [ClassifierOutputSoftmaxTarget(target)], net)[0] for c in candidates])
    finally:
        grad_cam_road.NoisyLinearImputer.__init__ = original


def timed_road(probe: Probe, maps: torch.Tensor, config: RoadConfig, repeats: int) -> tuple[float, RoadStats]:
    """Best of ``repeats`` runs (after a warm-up): wall seconds and that run's split."""
    best, best_stats = float("inf"), RoadStats()
    for repeat in range(repeats + 1):
        stats = RoadStats()
        sync(probe.x.device)
        start = time.perf_counter()
        road_many(probe, maps, config, stats=stats)
        sync(probe.x.device)
        elapsed = time.perf_counter() - start
        if repeat and elapsed < best:
            best, best_stats = elapsed, stats
    return best, best_stats


# The timed workload, runnable by this tree and by the baseline's (where ROAD lived in
# metacam.roadscore): prints {"wall", "forward", "impute", "total"} of the best run as JSON.
WORKLOAD = """
import json, sys, time, torch
try:
    from metacam.evaluation.roadscore import Probe, RoadStats, road_many
except ImportError:  # version 0.2
    from metacam.roadscore import Probe, RoadStats, road_many
from metacam.cams import compute_members
from metacam.config import RoadConfig
from metacam.ensemble import threshold_maps
from metacam.images import load_image
from metacam.models import load_model
image, repeats = sys.argv[1], int(sys.argv[2])
bundle = load_model("efficientnet_lite0", "cpu")
x = bundle.preprocess([load_image("sample:" + image).image])
members = compute_members(bundle.net, x, bundle.target_layer, methods=["gradcam"], image_ids=[image])
probe = Probe.of(bundle.net, x, members.targets, image_ids=[image])
candidates = threshold_maps(members.maps["gradcam"], [float(k) for k in range(5, 101, 5)])
config = RoadConfig(percentiles=[20.0, 40.0, 60.0, 80.0])
best = None
for repeat in range(repeats + 1):
    stats = RoadStats()
    start = time.perf_counter()
    road_many(probe, candidates, config, stats=stats)
    wall = time.perf_counter() - start
    if repeat and (best is None or wall < best["wall"]):
        best = {"wall": wall, "forward": stats.forward_seconds, "impute": stats.impute_seconds,
                "total": stats.total_seconds}
print(json.dumps(best))
"""


def before_after(image: str, repeats: int, rev: str) -> None:
    """road_many's workload timed by this tree and by ``rev``, alternating subprocesses."""
    import json
    import subprocess

    from baseline import run_json

    runs: dict[str, list[dict]] = {"now": [], rev: []}
    for _ in range(2):
        runs[rev].append(run_json(f"import sys; sys.argv = ['', {image!r}, '{repeats}']\n{WORKLOAD}", rev))
        done = subprocess.run([sys.executable, "-c", WORKLOAD, image, str(repeats)], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).resolve().parents[1])
        runs["now"].append(json.loads(done.stdout.strip().splitlines()[-1]))
    best = {name: min(found, key=lambda r: r["wall"]) for name, found in runs.items()}
    print(f"\nbefore/after, road_many on 20 maps x 4 p, best of {2 * repeats} runs each "
          f"(alternating subprocesses, CPU: {cpu_name()}):")
    print(f"{'':28s} {rev:>10s} {'this tree':>10s} {'after/before':>13s}")
    for label, value in (("wall seconds", lambda r: r["wall"]),
                         ("imputation / forward", lambda r: r["impute"] / r["forward"]),
                         ("ROAD total / forward", lambda r: r["total"] / r["forward"])):
        old, new = value(best[rev]), value(best["now"])
        verdict = "ok" if new <= 1.1 * old else "REGRESSION (> 10%)"
        print(f"{label:28s} {old:10.3f} {new:10.3f} {new / old:12.2f}x  {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image", default="chelsea")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="also the 64 x 20 x 4 per-image sweep")
    parser.add_argument("--baseline", default=None, help="revision to compare with (default: version 0.2)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the before/after comparison")
    args = parser.parse_args()
    device = torch.device(args.device)
    bundle = load_model("efficientnet_lite0", device)
    net = bundle.net
    x = bundle.preprocess([load_image(f"sample:{args.image}").image])
    members = compute_members(net, x, bundle.target_layer, image_ids=[args.image])
    target = int(members.targets[0])
    saliency = members.maps["gradcam"]
    where = cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"device {device} ({where}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"capability {torch.backends.cpu.get_cpu_capability()}; {args.image}, target {target}, Grad-CAM map, "
          f"k in 5..100 (20), p in {PERCENTILES}")

    probe = Probe.of(net, x, members.targets, image_ids=[args.image])
    candidates = threshold_maps(saliency, FINE_KS)  # (1, 20, H, W)
    config = RoadConfig(percentiles=list(PERCENTILES))
    ours, stats = timed_road(probe, candidates, config, args.repeats)
    other = stats.total_seconds - stats.forward_seconds - stats.impute_seconds

    start = time.perf_counter()
    theirs = grad_cam_scores(net, x, candidates[0].cpu().numpy(), target, noise=0.01)
    theirs_time = time.perf_counter() - start
    ours_noisy = road_many(probe, candidates, config).combined[0].cpu().numpy()

    # Exactness 1: grad-cam's tie rule at noise 0 equals grad-cam (a few thresholds, to keep it short)
    ks = FINE_KS[::5]
    exact = adaptive_threshold(net, x, saliency, members.targets, ks=ks, image_ids=[args.image],
                               config=RoadConfig(ties="inclusive", noise=0, percentiles=list(PERCENTILES)))
    reference = grad_cam_scores(net, x, threshold_maps(saliency.cpu(), ks)[0].numpy(), target, noise=0.0)
    # Exactness 2: the fast solver's ROAD vs the direct sparse solve's, same masks and noise
    fast = road_many(probe, candidates, config).combined
    roadscore.impute_masks = lambda image, removed: linear_impute_reference(
        image.expand(removed.shape[0], -1, -1, -1), removed)
    try:
        direct = road_many(probe, candidates, config).combined
    finally:
        roadscore.impute_masks = impute_masks

    forward = stats.forward_seconds
    print(f"\nours, road_many on 20 maps: {ours:7.2f} s  ({stats.summary()})")
    print(f"  forward {forward:.2f} s for {stats.forward_images} images "
          f"({1000 * forward / stats.forward_images:.1f} ms each), imputation {stats.impute_seconds:.2f} s for "
          f"{stats.unique_masks} masks ({1000 * stats.impute_seconds / max(stats.unique_masks, 1):.1f} ms each), "
          f"other {other:.2f} s")
    print(f"grad-cam ROADCombined per k: {theirs_time:7.2f} s")
    ratio_impute = stats.impute_seconds / forward
    ratio_total = stats.total_seconds / forward
    print(f"\nimputation / forward              {ratio_impute:6.2f}x   goal <= 0.5   {'PASS' if ratio_impute <= 0.5 else 'FAIL'}")
    print(f"ROAD total / forward              {ratio_total:6.2f}x   goal <= 1.6   {'PASS' if ratio_total <= 1.6 else 'FAIL'}")
    print(f"speed-up over grad-cam            {theirs_time / ours:6.1f}x")
    print(f"k* at noise 0.01 (different noise draws and tie breaks): ours {FINE_KS[int(np.argmax(ours_noisy))]:g}, "
          f"grad-cam {FINE_KS[int(np.argmax(theirs))]:g}; max |score difference| {np.abs(ours_noisy - theirs).max():.3f}")
    print(f"grad-cam tie rule, noise 0: max |ours - grad-cam| over k={list(ks)}: "
          f"{np.abs(exact.scores.combined[0].cpu().numpy() - reference).max():.1e}   goal <= 1e-4")
    print(f"fast solver vs direct sparse solve: max |ROAD combined difference| over 20 k: "
          f"{(fast - direct).abs().max():.1e}   goal <= 1e-3")
    per_image = stats.total_seconds / stats.masks
    print(f"\npaper-scale projection ({PAPER_SCALE / 1e6:.1f} M perturbed images at this rate, "
          f"{1000 * per_image:.2f} ms per requested mask): {PAPER_SCALE * per_image / 3600:,.0f} "
          f"{'GPU' if device.type == 'cuda' else 'CPU'}-hours")

    if args.full:
        full(bundle, x, members, probe, config, device)
    if not args.no_baseline and device.type == "cpu":
        from baseline import BASELINE

        before_after(args.image, args.repeats, args.baseline or BASELINE)
    return 0


def full(bundle, x, members, probe: Probe, config: RoadConfig, device: torch.device) -> None:
    """The per-image sweep of all 64 combinations x 20 k x 4 p, and throughput at batch 512."""
    groups = GroupSet.from_mapping(default_groups())
    combos = []
    for combo_id in range(groups.n_combos):
        on = groups.members_of(combo_id)
        combos.append(metacam_maps({m: members.maps[m] for m in on}, FINE_KS) if on
                      else torch.zeros(1, len(FINE_KS), *x.shape[-2:], device=device))
    candidates = torch.cat(combos, dim=1)
    stats = RoadStats()
    sync(device)
    start = time.perf_counter()
    road_many(probe, candidates, config, stats=stats)
    sync(device)
    elapsed = time.perf_counter() - start
    print(f"\nper-image 64 x 20 x 4 sweep: {elapsed:.2f} s ({candidates.shape[1]} maps)   goal <= 1 s on an H200")
    print(f"  {stats.summary()}")

    batch = 512 if device.type == "cuda" else 32
    masks = torch.rand(batch, *x.shape[-2:], generator=torch.Generator().manual_seed(0)).to(device) < 0.4
    impute_masks(x[0], masks[:8])
    sync(device)
    start = time.perf_counter()
    images = impute_masks(x[0], masks)
    sync(device)
    impute_rate = batch / (time.perf_counter() - start)
    with torch.inference_mode():
        bundle.net(images[:8])
        sync(device)
        start = time.perf_counter()
        bundle.net(images)
        sync(device)
    forward_rate = batch / (time.perf_counter() - start)
    print(f"throughput at batch {batch}: imputation {impute_rate:,.0f} masks/s, forward {forward_rate:,.0f} "
          f"images/s (goal: imputation >= forward: {'PASS' if impute_rate >= forward_rate else 'FAIL'})")
    per_image = stats.total_seconds / stats.masks
    print(f"paper-scale projection from the full sweep's rate: {PAPER_SCALE * per_image / 3600:,.1f} "
          f"{'GPU' if device.type == 'cuda' else 'CPU'}-hours")


if __name__ == "__main__":
    sys.exit(main())
