"""Micro-benchmark of ROAD's linear imputation (metacam.imputation).

The workload is ROAD's adaptive thresholding on one saliency map: a smooth
7x7 CAM bilinearly upsampled to the image, thresholded at k = 5, 10, ..., 100
(T_k keeps its top k%), ranked by (value, one seeded random permutation), with
MoRF and LeRF removal of p = 20, 40, 60, 80% of the pixels; identical masks
are deduplicated. Methods, side by side:

* ``linear_impute``            — ours (multigrid PCG, batched);
* ``linear_impute_reference``  — our direct sparse solve (SciPy, float64);
* ``NoisyLinearImputer(0)``    — pytorch-grad-cam, called per mask.

Prints seconds (min / median of --repeat runs), ratios and the max abs
difference to the reference. The reference and grad-cam are slow, so they
can be timed on an even spread of the masks and extrapolated. Usage::

    python bench/impute.py [--size 224] [--copies 1] [--repeat 3]
        [--device cpu|cuda] [--chunks auto,4,16] [--ref-masks N]
        [--gradcam-masks 16] [--extra-sizes 64,448] [--no-dedupe]

e.g. on a GPU with thousands of masks per call::

    python bench/impute.py --copies 25 --ref-masks 100 --gradcam-masks 0 \\
        --chunks auto,1024 --extra-sizes 64x50,448x4
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from metacam.imputation import linear_impute, linear_impute_reference

KS = tuple(range(5, 101, 5))
PS = (20, 40, 60, 80)


def smooth_cam(size: int, *, seed: int, cam: int = 7) -> torch.Tensor:
    """A smooth saliency map (size, size) in [0, 1]: a random 7x7 CAM upsampled."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(cam), torch.arange(cam), indexing="ij")
    low = torch.zeros(cam, cam)
    for _ in range(3):  # a few blobs, like a CAM's object parts
        cy, cx = torch.rand(2, generator=g) * (cam - 1)
        s = 0.8 + 1.5 * torch.rand(1, generator=g)
        low += torch.rand(1, generator=g) * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / s**2)
    low = torch.relu(low + 0.05 * torch.randn(cam, cam, generator=g))
    a = F.interpolate(low[None, None], size=(size, size), mode="bilinear", align_corners=False)[
        0, 0
    ]
    return (a - a.min()) / (a.max() - a.min())


def ranked(value: torch.Tensor, perm_rank: torch.Tensor) -> torch.Tensor:
    """Flat pixel indices sorted by (value, perm_rank) ascending."""
    order = torch.argsort(perm_rank)
    return order[torch.argsort(value[order], stable=True)]


def adaptive_masks(a: torch.Tensor, *, seed: int = 0, dedupe: bool = True) -> torch.Tensor:
    """ROAD adaptive-thresholding removal masks of map a (H, W) -> (M, H, W) bool."""
    h, w = a.shape
    flat = a.reshape(-1)
    g = torch.Generator().manual_seed(seed)
    perm_rank = torch.empty(h * w, dtype=torch.int64)
    perm_rank[torch.randperm(h * w, generator=g)] = torch.arange(h * w)
    masks, seen = [], set()
    for k in KS:
        cut = torch.quantile(flat, 1.0 - k / 100.0)
        order = ranked(torch.where(flat >= cut, flat, 0.0), perm_rank)
        for p in PS:
            n = round(p / 100.0 * h * w)
            for idx in (order[-n:], order[:n]):  # MoRF, LeRF
                m = torch.zeros(h * w, dtype=torch.bool)
                m[idx] = True
                key = m.numpy().tobytes()
                if dedupe and key in seen:
                    continue
                seen.add(key)
                masks.append(m.view(h, w))
    return torch.stack(masks)


def timeit(fn: Callable[[], object], repeat: int, sync: Callable[[], None]) -> tuple[float, float]:
    """(min, median) seconds of fn over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def gradcam_per_mask(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's NoisyLinearImputer(noise=0), one call per mask (CPU)."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    imp = NoisyLinearImputer(noise=0.0)
    return torch.stack([imp(x, (~m).float()) for m in masks])


def image(size: int, channels: int = 3, seed: int = 1) -> torch.Tensor:
    """A smooth-plus-texture image in a normalised range, (C, size, size)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(1, channels, 8, 8, generator=g)
    x = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)[0]
    return (x + 0.3 * torch.randn(channels, size, size, generator=g)).clamp(-2.2, 2.7)


def spread(n: int, k: int | None) -> torch.Tensor:
    """Up to k indices spread evenly over range(n) (all when k is None or >= n)."""
    if k is None or k >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, k).round().long().unique()


def run_size(size: int, copies: int, args: argparse.Namespace, *, gradcam: int) -> None:
    """Time ours vs the reference (and grad-cam) on the adaptive masks of ``copies`` maps."""
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    maps = [smooth_cam(size, seed=s) for s in range(copies)]
    masks = torch.cat(
        [adaptive_masks(a, seed=s, dedupe=not args.no_dedupe) for s, a in enumerate(maps)]
    )
    x = image(size)
    xs = x.expand(masks.shape[0], -1, -1, -1)  # stride-0 batch, as ROAD uses it
    n = masks.shape[0]
    frac = masks.float().mean((1, 2))
    print(
        f"{size}x{size}x3: {n} masks from {copies} map(s), removed "
        f"{frac.min():.0%}..{frac.max():.0%} (mean {frac.mean():.0%})"
    )
    xd, md = xs.to(dev), masks.to(dev)
    ours, t_ours = None, float("inf")
    for chunk in args.chunks:
        fn = functools.partial(linear_impute, xd, md, chunk=chunk)
        ours = fn()  # warm-up (and the result checked below)
        t_min, t_med = timeit(fn, args.repeat, sync)
        print(
            f"  ours (chunk={chunk}) {t_min:8.3f} s min {t_med:8.3f} s median"
            f"  ({1e3 * t_min / n:.2f} ms/mask, {args.repeat} runs)"
        )
        t_ours = min(t_ours, t_min)
    assert ours is not None  # ratios below use the best chunk's min
    sel = spread(n, args.ref_masks)
    t0 = time.perf_counter()
    ref = linear_impute_reference(xs[sel], masks[sel])
    t_ref = (time.perf_counter() - t0) * n / sel.numel()
    err = (ours.cpu()[sel] - ref).abs().amax((1, 2, 3))
    note = "" if sel.numel() == n else f", extrapolated from {sel.numel()} masks"
    print(f"  reference  {t_ref:8.3f} s (1 run{note})  ref/ours {t_ref / t_ours:6.1f}x")
    print(f"  max |ours - reference| = {err.max():.2e} over {sel.numel()} masks")
    if gradcam:
        gsel = spread(n, gradcam)
        times = []
        for _ in range(max(1, args.gradcam_repeat)):
            t0 = time.perf_counter()
            gc = gradcam_per_mask(x, masks[gsel])
            times.append(time.perf_counter() - t0)
        t_gc = min(times) * n / gsel.numel()
        ref_g = linear_impute_reference(xs[gsel], masks[gsel])
        print(
            f"  grad-cam   {t_gc:8.3f} s (min of {len(times)}, extrapolated from {gsel.numel()}"
            f" masks)  grad-cam/ours {t_gc / t_ours:6.1f}x;"
            f" max |grad-cam - reference| = {(gc - ref_g).abs().max():.2e}"
        )
        for p in PS:
            one = masks[(frac - p / 100).abs() < 0.01][:1]
            if one.numel():
                t1 = timeit(functools.partial(gradcam_per_mask, x, one), 3, lambda: None)[0]
                t2 = timeit(functools.partial(linear_impute, x, one[0]), 3, lambda: None)[0]
                print(f"    one mask at {p}% removal: grad-cam {t1:.3f} s, ours (CPU) {t2:.4f} s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--copies", type=int, default=1, help="maps per call (~80 masks each)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of ours (min, median)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--chunks", default="auto", help="comma list of chunk sizes, 'auto' = default")
    ap.add_argument("--ref-masks", type=int, default=None, help="reference on this many (all)")
    ap.add_argument("--gradcam-masks", type=int, default=16, help="0 = skip grad-cam")
    ap.add_argument("--gradcam-repeat", type=int, default=2)
    ap.add_argument("--extra-sizes", default="64,448", help="SIZE[xCOPIES],...")
    ap.add_argument("--no-dedupe", action="store_true", help="keep the 160 masks per map")
    args = ap.parse_args(argv)
    args.chunks = [None if c == "auto" else int(c) for c in args.chunks.split(",")]
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    run_size(args.size, args.copies, args, gradcam=args.gradcam_masks)
    for spec in filter(None, args.extra_sizes.split(",")):
        size, _, copies = spec.partition("x")
        run_size(int(size), int(copies or 1), args, gradcam=0)


if __name__ == "__main__":
    main()
