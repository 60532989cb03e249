"""ROAD's noisy linear imputation (DESIGN §2), fast and batched.

Removing a pixel set means replacing it by the solution of a sparse linear
system: every removed pixel becomes the weighted mean of its in-bounds 8
neighbours (1/6 for the edge neighbours, 1/12 for the diagonals), all removed
pixels jointly, the kept pixels fixed; then Gaussian noise is added to the
removed pixels. The math equals ``pytorch_grad_cam.metrics.road.NoisyLinearImputer``
(whose ``mask`` is the *kept* mask; ours, ``removed``, is its complement).

* :func:`impute` — the public entry point (noise included).
* :func:`impute_masks` — noise-free imputations of all masks of one image
  (what ROAD asks for), CPU and CUDA.
* :func:`linear_impute` — the noise-free solver: multigrid-preconditioned CG,
  a fused C kernel on the CPU (compiled on first use) or torch (CUDA,
  float64, and the fallback), CPU and CUDA.
* :func:`linear_impute_reference` — a direct sparse solve per mask (SciPy,
  float64), the numerical reference.

Accuracy: solves stop at an estimated max abs error of ``DEFAULT_TOL`` = 3e-4
per mask (normalised units), estimated from the float64 residual; measured
errors stay within 1e-3 of the direct solve (at most 4.5e-4 on ROAD's masks of
a photo, below 2x the estimate on every test mask). That is 20x below the
imputation noise (std 0.01): on EfficientNet-Lite0 and a photo, ROAD combined
over the 20 thresholds moves by at most 2e-5 (mean 5e-6) against tight solves
with the same noise (``bench/impute.py`` measures it, a slow test checks it).

When every pixel is removed the system has no fixed values and is singular;
the result is defined as its minimum-norm solution, 0 (the normalisation's mean
colour), a constant image.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from metacam.errors import MetaCAMError
from metacam.evaluation import _impute_native as native
from metacam.evaluation import _multigrid as mg

__all__ = ["impute", "impute_masks", "linear_impute", "linear_impute_reference"]

DEFAULT_TOL = 3e-4  # estimated max abs error per mask; see the module docstring

# (dy, dx, weight) of the 8 neighbours
_NEIGHBOURS = [
    (dy, dx, 1.0 / 6.0 if dy == 0 or dx == 0 else 1.0 / 12.0)
    for dy in (-1, 0, 1)
    for dx in (-1, 0, 1)
    if (dy, dx) != (0, 0)
]


# ----------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------
def _as_batch(x: Tensor, removed: Tensor, who: str = "impute") -> tuple[Tensor, Tensor, bool]:
    """Validate and return x: (N, C, H, W), removed: (N, H, W) bool, was_single.

    ``who`` names the caller in the one-line error messages.
    """
    if not isinstance(x, Tensor) or not isinstance(removed, Tensor):
        raise MetaCAMError(
            f"{who}: x and removed must be torch tensors, got {type(x).__name__} "
            f"and {type(removed).__name__}"
        )
    if x.ndim not in (3, 4):
        raise MetaCAMError(
            f"{who}: x must be (C, H, W) or (N, C, H, W), got {x.ndim} dims {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise MetaCAMError(f"{who}: x must be a float tensor, got {x.dtype}")
    single = x.ndim == 3
    if (
        removed.ndim != x.ndim - 1
        or removed.shape[-2:] != x.shape[-2:]
        or (not single and removed.shape[0] != x.shape[0])
    ):
        want = "(H, W)" if single else "(N, H, W)"
        raise MetaCAMError(
            f"{who}: removed {tuple(removed.shape)} does not match x {tuple(x.shape)}; "
            f"expected {want} with the same N, H, W"
        )
    if removed.dtype != torch.bool:
        if removed.is_complex() or not bool(((removed == 0) | (removed == 1)).all()):
            raise MetaCAMError(
                f"{who}: removed must be a bool or 0/1 mask (True = removed), got "
                f"{removed.dtype} with other values"
            )
        removed = removed != 0
    if not bool(torch.isfinite(_distinct(x)).all()):
        raise MetaCAMError(f"{who}: x contains NaN or inf; imputation needs finite pixel values")
    removed = removed.to(x.device)
    if single:
        return x.unsqueeze(0), removed.unsqueeze(0), True
    return x, removed, False


def _distinct(x: Tensor) -> Tensor:
    """x without its broadcast (stride-0) copies, e.g. one image of an expanded batch."""
    for dim in range(x.ndim):
        if x.stride(dim) == 0 and x.shape[dim] > 1:
            x = x.narrow(dim, 0, 1)
    return x


def _work_dtype(x: Tensor) -> torch.dtype:
    """float64 inputs are solved in float64, everything else in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------
@torch.no_grad()
def impute(
    x: Tensor,
    removed: Tensor,
    *,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    **solver_kw: object,
) -> Tensor:
    """Noisy linear imputation of the removed pixels.

    x: (N, C, H, W) or (C, H, W) float, in the model's normalised input space
    (may be an expanded view; it is never written to).
    removed: (N, H, W) or (H, W) bool (or 0/1), True = removed.
    noise: std of the Gaussian noise added to the imputed pixels only (0 allowed).
    generator: a seeded ``torch.Generator`` for reproducible noise; the noise is
    drawn on the generator's device, so a CPU generator gives the same noise
    for CPU and CUDA inputs.
    solver_kw: passed to :func:`linear_impute` (tol, max_iter, chunk, ...).
    Returns a new tensor shaped like x, on x's device; kept pixels equal x.
    """
    if not noise >= 0:
        raise MetaCAMError(f"impute: noise must be >= 0, got {noise}")
    _, rb, _ = _as_batch(x, removed)  # errors name impute, not linear_impute
    out = linear_impute(x, removed, **solver_kw)  # type: ignore[arg-type]
    if noise > 0:
        ob = out.view(-1, *out.shape[-3:])
        gen_dev = generator.device if generator is not None else ob.device
        eps = torch.randn(ob.shape, generator=generator, device=gen_dev, dtype=ob.dtype)
        noisy = torch.where(rb.unsqueeze(1), ob + noise * eps.to(ob.device), ob)
        out = noisy.view(out.shape)
    return out


@torch.no_grad()
def impute_masks(
    image: Tensor, removed: Tensor, *, tol: float | None = None, chunk: int | None = None
) -> Tensor:
    """Noise-free imputations of many removal masks of ONE image (ROAD's call).

    image: (C, H, W) float, one normalised image (any strides; never written to).
    removed: (M, H, W) bool (or 0/1), True = removed: all masks of that image
    (e.g. MoRF and LeRF at every p for every map and threshold) in any order;
    pass distinct masks, duplicates are solved again.
    tol: target max abs error per mask (None: ``DEFAULT_TOL``, see
    :func:`linear_impute`). chunk: masks solved together by the torch solver
    (CUDA, or CPU without the C kernel), which bounds its working memory
    (None: the device default). The C kernel works one mask per thread
    (~5 MB each for 224 x 224 x 3).
    Returns (M, C, H, W) on image's device, in image's dtype: equal to
    ``linear_impute(image.expand(M, -1, -1, -1), removed, tol=tol)``; kept
    pixels bit-identical to the image, a fully removed mask gives 0, an empty
    one the image.

    Warm starts from related masks (the nearest already-solved mask, e.g. the
    neighbouring k of the same p) were measured and rejected: even the best
    neighbour saves 0.25 of 3.7 CG iterations (~4% of the time; the
    hierarchy, the first V-cycle and the float64 check are fixed costs) and
    would need an O(M^2) search and serialise the masks. Every mask starts from
    the image itself (0.7 iterations fewer than from 0).
    """
    if not isinstance(image, Tensor) or image.ndim != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise MetaCAMError(f"impute_masks: image must be one (C, H, W) tensor, got {shape}")
    if not isinstance(removed, Tensor) or removed.ndim != 3:
        shape = tuple(removed.shape) if isinstance(removed, Tensor) else type(removed).__name__
        raise MetaCAMError(f"impute_masks: removed must be (M, H, W) masks, got {shape}")
    xb = image.expand(removed.shape[0], *image.shape)
    _as_batch(xb, removed, "impute_masks")  # the remaining checks, named after us
    return linear_impute(xb, removed, tol=DEFAULT_TOL if tol is None else tol, chunk=chunk)


@torch.no_grad()
def linear_impute(
    x: Tensor,
    removed: Tensor,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = 100,
    chunk: int | None = None,
    max_coarse: int = 64,
) -> Tensor:
    """Noise-free linear imputation, batched (multigrid-preconditioned CG).

    x: (N, C, H, W) or (C, H, W) float; removed: (N, H, W) or (H, W) bool.
    tol: target max abs error of the imputed values per mask, in x's units,
    as estimated by the preconditioned true (float64) residual. Default
    ``DEFAULT_TOL`` = 3e-4: measured errors stay below 2x the estimate, so
    within 1e-3 of the direct solve, 20x below ROAD's noise std 0.01 (the
    module docstring has the ROAD-score measurement). The old default, 1e-5,
    costs ~1.5 more CG iterations per mask and changes no score.
    max_iter: CG iterations per mask at most (a RuntimeWarning if not enough).
    chunk: masks solved together by the torch solver; bounds the memory, about
    120 bytes per pixel and channel of a chunk. Default: 1.2 M pixel-channels
    on CPU (8 masks of 3 x 224 x 224: cache-sized batches are fastest there)
    and, on CUDA, a quarter of the free device memory up to 24 GB (~1300 such
    masks). The C kernel ignores it (one mask per thread, ~5 MB each).
    max_coarse: pixels of the coarsest grid, which is solved densely.

    Solvers: on the CPU, float32 work goes to a fused C kernel
    (:mod:`metacam.evaluation._impute_native`, compiled on first use, one mask per torch
    thread); without a C compiler, on CUDA and for float64 inputs, the torch
    solver (:mod:`metacam.evaluation._multigrid`) runs the same algorithm batched. Each
    solve starts from x itself (the removed pixels' original values), which
    saves ~0.7 of ~4.4 CG iterations over a start from 0 on ROAD masks.
    float64 inputs are solved in float64, everything else in float32.
    Returns a new tensor shaped like x, x's dtype and device; kept pixels equal x.
    """
    xb, rb, single = _as_batch(x, removed, "linear_impute")
    _check_solver_args(tol, max_iter, chunk, max_coarse)
    n, c, h, w = xb.shape
    counts = rb.sum((1, 2))
    todo = ((counts > 0) & (counts < h * w)).nonzero().squeeze(1)
    if xb.device.type == "cpu" and _work_dtype(xb) == torch.float32 and native.library():
        out = _native_solve(xb, rb, todo, tol, max_iter, max_coarse)
    else:
        out = xb.clone(memory_format=torch.contiguous_format)
        if chunk is None:
            chunk = max(1, _chunk_budget(xb.device) // (c * h * w))
        for start in range(0, todo.numel(), chunk):
            idx = todo[start : start + chunk]
            _solve_into(out, idx, xb[idx], rb[idx], None, tol, max_iter, max_coarse)
    out[counts == h * w] = 0.0  # no fixed values: the minimum-norm solution
    return out[0] if single else out


def _native_solve(
    xb: Tensor, rb: Tensor, todo: Tensor, tol: float, max_iter: int, max_coarse: int
) -> Tensor:
    """The C kernel's solve of the masks ``todo``; returns (N, C, H, W) in x's dtype."""
    x32 = xb
    if xb.dtype != torch.float32:  # convert each distinct image once
        x32 = _distinct(xb).float().expand(xb.shape)
    if x32.stride(-1) != 1:
        x32 = x32.contiguous()
    out = x32.clone(memory_format=torch.contiguous_format)
    removed = rb.contiguous().view(torch.uint8)
    iters, _ = native.solve(
        x32, removed, out, todo, tol=tol, max_iter=max_iter, max_coarse=max_coarse,
        threads=torch.get_num_threads(),
    )  # fmt: skip
    _warn_unconverged(int((iters < 0).sum()), tol, max_iter, stacklevel=4)
    return out.to(xb.dtype)


def _warn_unconverged(count: int, tol: float, max_iter: int, stacklevel: int) -> None:
    if count:
        warnings.warn(
            f"linear_impute: {count} mask(s) did not reach tol={tol} within "
            f"max_iter={max_iter} iterations",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )


def _solve_into(
    out: Tensor,
    idx: Tensor,
    x: Tensor,
    removed: Tensor,
    guess: Tensor | None,
    tol: float,
    max_iter: int,
    max_coarse: int,
) -> None:
    """Solve one chunk and write it to out[idx].

    x: (M, C, H, W) the images; removed: (M, H, W), each with >= 1 removed and
    >= 1 kept pixel; guess: (M, C, H, W) initial values of the removed pixels
    (None: x itself); out: (N, C, H, W) written at rows idx (kept pixels = x).
    """
    work = _work_dtype(x)
    h, w = x.shape[-2:]
    ys, xs = _window(removed.any(0))  # the chunk's removed pixels + 1 px
    rw, xw = removed[:, ys, xs], x[..., ys, xs]
    m = rw.unsqueeze(1)
    y0 = xw if guess is None else torch.where(m, guess[..., ys, xs], xw)
    y0 = y0.to(work, memory_format=torch.contiguous_format, copy=True)
    d12 = mg.weight_sum12(h, w, device=x.device, dtype=work)[ys, xs]
    levels = mg.build_hierarchy(rw, d12, work, max_coarse)
    res = mg.pcg(levels, y0, tol=tol, max_iter=max_iter, exact_residual=work != torch.float64)
    _warn_unconverged(int((res.iterations < 0).sum()), tol, max_iter, stacklevel=4)
    out[idx, :, ys, xs] = torch.where(m, res.y.to(out.dtype), xw)


def _check_solver_args(tol: float, max_iter: int, chunk: int | None, max_coarse: int) -> None:
    if not tol > 0:
        raise MetaCAMError(f"linear_impute: tol must be > 0, got {tol}")
    if max_iter < 0:
        raise MetaCAMError(f"linear_impute: max_iter must be >= 0, got {max_iter}")
    if chunk is not None and chunk < 1:
        raise MetaCAMError(f"linear_impute: chunk must be >= 1 or None, got {chunk}")
    if max_coarse < 1:
        raise MetaCAMError(f"linear_impute: max_coarse must be >= 1, got {max_coarse}")


_BYTES_PER_PIXEL_CHANNEL = 120  # measured peak of the solver state


def _chunk_budget(device: torch.device) -> int:
    """Pixel-channels solved together by default on ``device``."""
    if device.type != "cuda":
        return 1_200_000
    free, _ = torch.cuda.mem_get_info(device)
    return min(free // 4, 24 * 2**30) // _BYTES_PER_PIXEL_CHANNEL


def _window(any_removed: Tensor) -> tuple[slice, slice]:
    """Bounding box of the removed pixels grown by 1 px (their neighbours). (H, W) bool."""
    bounds = []
    for dim in (1, 0):
        hit = any_removed.any(dim).nonzero().squeeze(1)
        lo, hi = int(hit.min()), int(hit.max())
        bounds.append(slice(max(lo - 1, 0), min(hi + 2, any_removed.shape[1 - dim])))
    return bounds[0], bounds[1]


@torch.no_grad()
def linear_impute_reference(x: Tensor, removed: Tensor) -> Tensor:
    """Direct sparse solve per mask in float64 (SciPy), the reference.

    x: (N, C, H, W) or (C, H, W) float; removed: (N, H, W) or (H, W) bool.
    Returns a new tensor shaped like x (x's dtype and device).
    """
    xb, rb, single = _as_batch(x, removed, "linear_impute_reference")
    xs = xb.detach().double().cpu().numpy()
    rs = rb.cpu().numpy()
    out = xs.copy()
    for i in range(xs.shape[0]):
        out[i] = _reference_one(xs[i], rs[i])
    res = torch.from_numpy(out).to(device=xb.device, dtype=xb.dtype)
    return res[0] if single else res


def _reference_one(img: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """img: (C, H, W) float64; removed: (H, W) bool -> imputed (C, H, W)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import spsolve

    c, h, w = img.shape
    out = img.copy()
    n = int(removed.sum())
    if n == 0:
        return out
    if n == h * w:
        out[:] = 0.0
        return out
    flat = img.reshape(c, -1)
    ys, xs = np.nonzero(removed)
    var = np.full(h * w, -1, dtype=np.int64)
    var[ys * w + xs] = np.arange(n)
    diag = np.zeros(n)
    rhs = np.zeros((n, c))
    rows, cols, vals = [], [], []
    for dy, dx, wt in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inb = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        diag[inb] += wt
        src = np.nonzero(inb)[0]
        nb = ny[inb] * w + nx[inb]
        is_var = var[nb] >= 0
        rows.append(src[is_var])
        cols.append(var[nb[is_var]])
        vals.append(np.full(int(is_var.sum()), -wt))
        rhs[src[~is_var]] += wt * flat[:, nb[~is_var]].T  # src is unique per offset
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag)
    a = csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    sol = spsolve(a.tocsc(), rhs)
    flat_out = out.reshape(c, -1)
    flat_out[:, ys * w + xs] = np.asarray(sol).reshape(n, c).T
    return out
