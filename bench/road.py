"""Benchmark: an adaptive ROAD sweep (20 thresholds x 4 percentiles) of one map, ours
versus grad-cam's ROADCombined called once per threshold, on the same image, map and
model (EfficientNet-Lite0, real weights, 224x224).

Prints wall times and their ratio, our forward count / forward seconds / imputation
seconds and the share of our time outside the model's forward passes, and checks that
in grad-cam's tie mode at noise 0 both give the same scores. With --full it also times
the per-image 64 x 20 x 4 sweep (all 64 MetaCAM combinations), the GPU goal.
Run: python bench/road.py [--device cuda] [--full]
"""

import argparse
import sys
import time

import numpy as np
import torch
from pytorch_grad_cam.metrics import road as grad_cam_road
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

from metacam.adaptive import adaptive_threshold
from metacam.cams import compute_members
from metacam.ensemble import DEFAULT_KS, metacam_maps, threshold_maps
from metacam.groups import DEFAULT_GROUPS, combo_flags
from metacam.images import load_image
from metacam.models import load_model
from metacam.roadscore import RoadStats, road

PERCENTILES = (20, 40, 60, 80)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def grad_cam_sweep(net, x, saliency: np.ndarray, target: int, noise: float) -> np.ndarray:
    """grad-cam's way: ROADCombined on T_k(A), one call per k."""
    original = grad_cam_road.NoisyLinearImputer.__init__

    def with_noise(self, noise_=noise, weighting=grad_cam_road.neighbors_weights):
        original(self, noise, weighting)

    grad_cam_road.NoisyLinearImputer.__init__ = with_noise
    try:
        metric = grad_cam_road.ROADCombined(percentiles=list(PERCENTILES))
        candidates = threshold_maps(torch.from_numpy(saliency)[None], DEFAULT_KS)[0].numpy()
        return np.array([
            metric(x, candidates[i][None], [ClassifierOutputSoftmaxTarget(target)], net)[0]
            for i in range(len(DEFAULT_KS))
        ])
    finally:
        grad_cam_road.NoisyLinearImputer.__init__ = original


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image", default="chelsea")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="also the 64 x 20 x 4 per-image sweep")
    args = parser.parse_args()
    device = torch.device(args.device)
    bundle = load_model("efficientnet_lite0", device)
    net = bundle.net
    x = bundle.preprocess([load_image(f"sample:{args.image}").image])
    members = compute_members(net, x, bundle.target_layer)
    target = int(members.targets[0])
    saliency = members.maps["gradcam"]
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.image}, target {target}, Grad-CAM map, k in 5..100 (20), p in {PERCENTILES}")

    ours_times, stats = [], RoadStats()
    for repeat in range(args.repeats + 1):
        run_stats = RoadStats()
        sync(device)
        start = time.perf_counter()
        adaptive_threshold(net, x, saliency, members.targets, ks=DEFAULT_KS, percentiles=PERCENTILES,
                           stats=run_stats)
        sync(device)
        if repeat:  # the first run warms up
            ours_times.append(time.perf_counter() - start)
            stats = run_stats if not stats.masks or run_stats.total_seconds < stats.total_seconds else stats

    start = time.perf_counter()
    theirs = grad_cam_sweep(net, x, saliency[0].cpu().numpy(), target, noise=0.01)
    theirs_time = time.perf_counter() - start
    theirs_forwards = len(DEFAULT_KS) * len(PERCENTILES) * 2 * 2  # clean + perturbed, MoRF + LeRF

    # Same numbers: grad-cam's tie rule at noise 0 (on a few thresholds, to keep it short)
    ks = DEFAULT_KS[::5]
    exact = adaptive_threshold(net, x, saliency, members.targets, ks=ks, percentiles=PERCENTILES,
                               ties="inclusive", noise=0).scores.combined[0].cpu().numpy()
    candidates = threshold_maps(saliency.cpu(), ks)[0].numpy()
    original = grad_cam_road.NoisyLinearImputer.__init__
    grad_cam_road.NoisyLinearImputer.__init__ = lambda self, noise=0, weighting=None: original(self, 0.0)
    try:
        metric = grad_cam_road.ROADCombined(percentiles=list(PERCENTILES))
        reference = np.array([metric(x, c[None], [ClassifierOutputSoftmaxTarget(target)], net)[0]
                              for c in candidates])
    finally:
        grad_cam_road.NoisyLinearImputer.__init__ = original

    ours = min(ours_times)
    outside = stats.total_seconds - stats.forward_seconds
    print(f"\ngrad-cam ROADCombined per k : {theirs_time:8.2f} s, {theirs_forwards} forward passes of 1 image")
    print(f"ours (adaptive_threshold)   : {ours:8.2f} s (runs: {', '.join(f'{t:.2f}' for t in ours_times)})")
    print(f"  {stats.summary()}")
    print(f"  forward passes {stats.forward_passes}, forward images {stats.forward_images}, "
          f"forward {stats.forward_seconds:.2f} s, imputation {stats.impute_seconds:.2f} s")
    print(f"\nspeed-up grad-cam / ours          {theirs_time / ours:6.1f}x   goal >= 10x   "
          f"{'PASS' if theirs_time / ours >= 10 else 'FAIL'}")
    share = outside / stats.total_seconds
    print(f"time outside forward passes       {share:6.1%}    goal <= 50%   {'PASS' if share <= 0.5 else 'FAIL'}")
    print(f"grad-cam tie rule, noise 0: max |ours - grad-cam| over k={list(ks)}: "
          f"{np.abs(exact - reference).max():.1e}")
    print(f"k* ours (default ties, noise .01) {DEFAULT_KS[int(np.argmax(theirs))]:g} by grad-cam's "
          f"scores; best ROAD grad-cam {theirs.max():+.3f}")

    if args.full:
        names = list(members.maps)
        stacked = torch.stack([members.maps[n] for n in names])
        combos = []
        for combo_id in range(64):
            on = [m for g, flag in combo_flags(combo_id).items() if flag for m in DEFAULT_GROUPS[g]]
            combos.append(metacam_maps(stacked[[names.index(m) for m in on]], DEFAULT_KS) if on
                          else torch.zeros(1, len(DEFAULT_KS), *x.shape[-2:], device=device))
        candidates = torch.cat(combos, dim=1)
        full_stats = RoadStats()
        sync(device)
        start = time.perf_counter()
        road(net, x, candidates, members.targets, PERCENTILES, stats=full_stats)
        sync(device)
        elapsed = time.perf_counter() - start
        print(f"\nper-image 64 x 20 x 4 sweep: {elapsed:.2f} s ({candidates.shape[1]} maps)   goal <= 1 s on an H200")
        print(f"  {full_stats.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
