"""Benchmark of ROAD's linear imputation against the forward passes it feeds.

Workload: the distinct ROAD masks of one image and one map, as a sweep builds
them: a Grad-CAM map of EfficientNet-Lite0 on ``sample:chelsea`` (a synthetic
smooth map with ``--synthetic-map``, or if the CAM API is unavailable),
thresholded at k = 5, 10, ..., 100 (T_k keeps the top k%, zeros elsewhere),
ranked by value with ties broken by one seeded permutation, MoRF_p / LeRF_p =
the top / bottom round(p% * H * W) ranks for p = 20, 40, 60, 80:
20 k x 4 p x 2 = 160 masks, ~80 distinct.

Measured side by side in one run (min / median of ``--repeat`` runs, each
run timing every method once, interleaved):

* ours: ``impute_masks`` (the C kernel where a C compiler exists, else torch);
* (a) EfficientNet-Lite0 forward passes over as many images, batch 8 on CPU
  (512 on CUDA), channels-last as ``load_model`` returns it: the ratio
  imputation / forward, goal <= 0.5;
* (b) the old solver settings (torch solver, tol 1e-5, cold start from 0, as
  before this benchmark's issue), and the new settings in the torch solver;
* (c) grad-cam's ``NoisyLinearImputer`` and the SciPy direct solve on a spread
  subset (extrapolated), and every method's max abs error against a tight
  solve (tol 1e-6) of all masks (itself checked against the direct solve);
* ROAD combined per k on the real model with tight vs our solves and the
  same noise field (std 0.01): how far the relaxed tolerance moves a score.

It prints the CPU model, AVX-512 or not, torch's threads and ISA, and on the
CPU it reruns the core comparison (ours vs forward) in a child process under
``ATEN_CPU_CAPABILITY=avx2`` (torch and the C kernel both limited to AVX2), as
on AVX2-only CI machines. Usage::

    python bench/impute.py [--device cpu|cuda] [--repeat 5] [--threads N]
        [--subset 6] [--gradcam-masks 4] [--no-avx2] [--no-road] [--no-old]
        [--synthetic-map] [--copies N] [--batch N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from metacam.config import FINE_KS
from metacam.evaluation import _impute_native as native
from metacam.evaluation import imputation
from metacam.evaluation.imputation import DEFAULT_TOL, impute_masks, linear_impute_reference

KS = FINE_KS  # the 20-value grid: this benchmark's workload since version 0.1
PS = (20, 40, 60, 80)


# ----------------------------------------------------------------------------
# workload
# ----------------------------------------------------------------------------
def cpu_line() -> str:
    """CPU model, AVX-512 or not (from /proc/cpuinfo), torch threads and ISA."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    avx = (
        "AVX-512" if "avx512f" in flags else ("AVX2, no AVX-512" if "avx2" in flags else "no AVX2")
    )
    isa = torch.backends.cpu.get_cpu_capability()
    env = os.environ.get("ATEN_CPU_CAPABILITY")
    return (
        f"{model} ({avx}; {os.cpu_count()} CPUs); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, torch ISA {isa}"
        + (f" (ATEN_CPU_CAPABILITY={env})" if env else "")
    )


def smooth_map(size: int, seed: int = 0) -> torch.Tensor:
    """A smooth saliency map (size, size) in [0, 1]: a few blobs on a 7x7 grid, upsampled."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")
    low = torch.zeros(7, 7)
    for _ in range(3):
        cy, cx = torch.rand(2, generator=g) * 6
        s = 0.8 + 1.5 * torch.rand(1, generator=g)
        low += torch.rand(1, generator=g) * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / s**2)
    a = F.interpolate(low[None, None], size=(size, size), mode="bilinear", align_corners=False)
    a = a[0, 0]
    return (a - a.min()) / (a.max() - a.min())


def gradcam_map(bundle, x: torch.Tensor) -> torch.Tensor | None:  # type: ignore[no-untyped-def]
    """Grad-CAM of x (1, C, H, W) as (H, W), or None if the CAM API is unavailable."""
    try:
        from metacam.cams import member_cams

        maps = member_cams(bundle.net, x, bundle.target_layer, methods=["gradcam"])
        return maps["gradcam"][0].float()
    except Exception as err:  # the CAM API is owned elsewhere and may change
        print(f"  (Grad-CAM unavailable: {type(err).__name__}: {err}; using a synthetic map)")
        return None


def road_masks(saliency: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """ROAD's distinct masks of one map over the k grid: (M, H, W) bool."""
    h, w = saliency.shape
    n = h * w
    flat = saliency.reshape(-1)
    g = torch.Generator().manual_seed(seed)
    perm_rank = torch.empty(n, dtype=torch.int64)
    perm_rank[torch.randperm(n, generator=g)] = torch.arange(n)
    by_rank = torch.argsort(perm_rank)
    ascending = by_rank[torch.argsort(flat[by_rank], stable=True)]  # (value, permutation)
    masks, seen = [], set()
    for k in KS:
        top = flat >= torch.quantile(flat, 1 - k / 100)  # T_k: the rest becomes 0, tied
        order = torch.cat([by_rank[~top[by_rank]], ascending[top[ascending]]])
        for p in PS:
            cnt = round(p / 100 * n)
            for idx in (order[-cnt:], order[:cnt]):  # MoRF, LeRF
                m = torch.zeros(n, dtype=torch.bool)
                m[idx] = True
                key = m.numpy().tobytes()
                if key not in seen:
                    seen.add(key)
                    masks.append(m.view(h, w))
    return torch.stack(masks)


def road_mask_table(saliency: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """All 160 masks (k, p, MoRF/LeRF) as indices into the distinct ones: (20, 4, 2) and
    the distinct masks (M, H, W)."""
    distinct = road_masks(saliency, seed)
    h, w = saliency.shape
    n = h * w
    flat = saliency.reshape(-1)
    g = torch.Generator().manual_seed(seed)
    perm_rank = torch.empty(n, dtype=torch.int64)
    perm_rank[torch.randperm(n, generator=g)] = torch.arange(n)
    by_rank = torch.argsort(perm_rank)
    ascending = by_rank[torch.argsort(flat[by_rank], stable=True)]
    keys = {m.reshape(-1).numpy().tobytes(): i for i, m in enumerate(distinct)}
    table = torch.empty(len(KS), len(PS), 2, dtype=torch.long)
    for a, k in enumerate(KS):
        top = flat >= torch.quantile(flat, 1 - k / 100)
        order = torch.cat([by_rank[~top[by_rank]], ascending[top[ascending]]])
        for b, p in enumerate(PS):
            cnt = round(p / 100 * n)
            for c, idx in enumerate((order[-cnt:], order[:cnt])):
                m = torch.zeros(n, dtype=torch.bool)
                m[idx] = True
                table[a, b, c] = keys[m.numpy().tobytes()]
    return table, distinct


# ----------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------
def stats(times: list[float]) -> tuple[float, float]:
    return min(times), statistics.median(times)


def spread(n: int, k: int) -> torch.Tensor:
    """Up to k indices spread evenly over range(n)."""
    return torch.linspace(0, n - 1, min(k, n)).round().long().unique()


def gradcam_per_mask(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's NoisyLinearImputer(noise=0), one call per mask (CPU)."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    imp = NoisyLinearImputer(noise=0.0)
    return torch.stack([imp(x, (~m).float()) for m in masks])


def torch_solver(x: torch.Tensor, masks: torch.Tensor, tol: float, cold: bool) -> torch.Tensor:
    """The torch solver (chunks of 8 on CPU), from the image or from 0."""
    xs = x.expand(masks.shape[0], -1, -1, -1)
    out = xs.contiguous().clone()
    chunk = 8 if x.device.type == "cpu" else masks.shape[0]
    for s in range(0, masks.shape[0], chunk):
        idx = torch.arange(s, min(s + chunk, masks.shape[0]), device=x.device)
        guess = torch.zeros_like(xs[idx]) if cold else None
        imputation._solve_into(out, idx, xs[idx], masks[idx], guess, tol, 200, 64)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs (min, median)")
    ap.add_argument("--batch", type=int, default=None, help="forward batch (8 CPU, 512 CUDA)")
    ap.add_argument("--copies", type=int, default=1, help="mask sets per call (CUDA: more)")
    ap.add_argument("--subset", type=int, default=6, help="masks for the direct solve")
    ap.add_argument("--gradcam-masks", type=int, default=4, help="0 = skip grad-cam")
    ap.add_argument("--no-avx2", action="store_true", help="skip the AVX2 child run")
    ap.add_argument("--no-road", action="store_true", help="skip the ROAD-score check")
    ap.add_argument("--no-old", action="store_true", help="skip the torch-solver variants")
    ap.add_argument("--synthetic-map", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--core", action="store_true", help=argparse.SUPPRESS)  # the AVX2 child
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    batch = args.batch or (512 if dev.type == "cuda" else 8)

    from metacam.images import load_image
    from metacam.models import load_model

    print(cpu_line())
    print(f"device {dev}; solver: {native.status() if dev.type == 'cpu' else 'torch (CUDA)'}")
    bundle = load_model("efficientnet_lite0", "cpu")
    x1 = bundle.preprocess([load_image("sample:chelsea").image])
    saliency = None if args.synthetic_map else gradcam_map(bundle, x1)
    if saliency is None:
        saliency = smooth_map(x1.shape[-1])
    table, masks = road_mask_table(saliency)
    masks = masks.repeat(args.copies, 1, 1)
    x = x1[0]
    n = masks.shape[0]
    frac = masks.float().mean((1, 2))
    print(
        f"workload: {n} distinct ROAD masks ({len(KS)} k x {len(PS)} p x MoRF/LeRF"
        f"{f' x {args.copies} copies' if args.copies > 1 else ''}) of a 3 x 224 x 224 "
        f"image, removing {frac.min():.0%}..{frac.max():.0%} (mean {frac.mean():.0%})"
    )
    net = bundle.net.to(dev)
    xd, md = x.to(dev), masks.to(dev)

    def ours() -> torch.Tensor:
        return impute_masks(xd, md)

    perturbed = ours()

    def forward() -> None:
        with torch.inference_mode():
            for s in range(0, n, batch):
                net(perturbed[s : s + batch].contiguous(memory_format=torch.channels_last))

    methods: dict[str, Callable[[], object]] = {"ours": ours, "forward": forward}
    if not args.core and not args.no_old:
        methods["torch, new settings"] = lambda: torch_solver(xd, md, DEFAULT_TOL, cold=False)
        methods["torch, old settings"] = lambda: torch_solver(xd, md, 1e-5, cold=True)
    results: dict[str, object] = {}
    times: dict[str, list[float]] = {k: [] for k in methods}
    forward()  # warm-up (allocator, kernels)
    for name, fn in methods.items():
        results[name] = fn()
    for rep in range(args.repeat):
        for name, fn in methods.items():
            if name.startswith("torch") and rep >= 2:
                continue  # slow: the min of 2 runs
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    t_fwd = stats(times["forward"])
    print(
        f"forward, batch {batch}:   {t_fwd[0]:7.3f} s min {t_fwd[1]:7.3f} s median "
        f"({1e3 * t_fwd[0] / n:.2f} ms per image)"
    )
    for name in methods:
        if name == "forward":
            continue
        t = stats(times[name])
        print(
            f"{name + ':':22s} {t[0]:7.3f} s min {t[1]:7.3f} s median ({1e3 * t[0] / n:.2f} ms"
            f" per mask)  imputation / forward = {t[0] / t_fwd[0]:.2f} min,"
            f" {t[1] / t_fwd[1]:.2f} median" + ("  (goal <= 0.5)" if name == "ours" else "")
        )
    if dev.type == "cpu":  # CPU seconds on one thread: what other processes cannot inflate
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        cpu: dict[str, list[float]] = {"forward": [], "ours": []}
        for _ in range(args.repeat):
            for name in cpu:
                t0 = time.thread_time()
                methods[name]()
                cpu[name].append(time.thread_time() - t0)
        torch.set_num_threads(threads)
        f1, o1 = min(cpu["forward"]), min(cpu["ours"])
        print(
            f"one thread, CPU time:   forward {1e3 * f1 / n:.2f} ms per image, ours "
            f"{1e3 * o1 / n:.2f} ms per mask: imputation / forward = {o1 / f1:.2f}"
        )
    if args.core:
        return

    # ---- accuracy: a tight solve of every mask (tol 1e-6), checked by the direct solve
    print("accuracy (max abs error, normalised units):")
    t0 = time.perf_counter()
    tight = impute_masks(xd, md, tol=1e-6).cpu().float()
    t_tight = time.perf_counter() - t0
    sel = spread(n, args.subset)
    t0 = time.perf_counter()
    direct = linear_impute_reference(x.expand(sel.numel(), -1, -1, -1), masks[sel])
    t_direct = (time.perf_counter() - t0) * n / sel.numel()
    ours_direct = float((torch.as_tensor(results["ours"]).cpu()[sel] - direct).abs().max())
    print(
        f"  ours vs SciPy direct solve ({sel.numel()} masks): {ours_direct:.1e}; tight solve,"
        f" tol 1e-6 (all {n} masks, {t_tight:.1f} s) vs direct: "
        f"{float((tight[sel] - direct).abs().max()):.1e}"
    )
    for name, out in results.items():
        if name != "forward":
            assert isinstance(out, torch.Tensor)
            err = (out.cpu().float() - tight).abs().amax((1, 2, 3))
            print(
                f"  {name + ':':22s} max {err.max():.1e}, median {err.median():.1e} (goal <= 1e-3)"
            )
    t_ours = stats(times["ours"])[0]
    print(
        f"SciPy direct solve:      {t_direct:7.3f} s (extrapolated from {sel.numel()} masks)"
        f"  direct / ours = {t_direct / t_ours:.0f}x"
    )
    if args.gradcam_masks:
        gsel = spread(n, args.gradcam_masks)
        t0 = time.perf_counter()
        gc = gradcam_per_mask(x, masks[gsel])
        t_gc = (time.perf_counter() - t0) * n / gsel.numel()
        print(
            f"grad-cam NoisyLinearImputer: {t_gc:7.3f} s (extrapolated from {gsel.numel()} masks)"
            f"  grad-cam / ours = {t_gc / t_ours:.0f}x; max |grad-cam - tight| = "
            f"{float((gc - tight[gsel]).abs().max()):.1e}"
        )

    # ---- ROAD scores: tight vs relaxed solves, same noise
    if not args.no_road:
        noise = 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        target = int(net(x1.to(dev)).argmax())

        def scores(imputed: torch.Tensor) -> torch.Tensor:
            probs = []
            with torch.inference_mode():
                for s in range(0, n, batch):
                    noisy = (imputed[s : s + batch] + noise * masks[s : s + batch, None]).to(dev)
                    out = net(noisy.contiguous(memory_format=torch.channels_last))
                    probs.append(out.float().softmax(-1)[:, target].cpu())
            f = torch.cat(probs)[table % masks.shape[0]]  # (k, p, MoRF/LeRF)
            return ((f[..., 1] - f[..., 0]) / 2).mean(1)  # ROAD combined per k

        ours_road = scores(torch.as_tensor(results["ours"]).cpu().float())
        tight_road = scores(tight)
        diff = (ours_road - tight_road).abs()
        print(
            f"ROAD combined over the {len(KS)} thresholds: {tight_road.min():.4f}.."
            f"{tight_road.max():.4f} (tight solves); max |ours - tight| = {diff.max():.1e}, "
            f"mean {diff.mean():.1e} (noise std 0.01, same noise; goal <= 1e-3)"
        )

    # ---- the same core comparison on AVX2 only
    if dev.type == "cpu" and not args.no_avx2:
        env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2")
        cmd = [sys.executable, __file__, "--core", "--repeat", str(args.repeat)]
        if args.synthetic_map:
            cmd.append("--synthetic-map")
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        print("--- the same, ATEN_CPU_CAPABILITY=avx2 (child process) ---")
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        print(done.stdout.rstrip() or done.stderr[-2000:])


if __name__ == "__main__":
    main()
