"""ROAD's noisy linear imputation (DESIGN §2), fast and batched.

Removing a pixel set means replacing it by the solution of a sparse linear
system: every removed pixel becomes the weighted mean of its in-bounds 8
neighbours (1/6 for the edge neighbours, 1/12 for the diagonals), all removed
pixels jointly, the kept pixels fixed; then Gaussian noise is added to the
removed pixels. The math equals ``pytorch_grad_cam.metrics.road.NoisyLinearImputer``
(whose ``mask`` is the *kept* mask; ours, ``removed``, is its complement).

* :func:`impute` — the public entry point (noise included).
* :func:`linear_impute` — the noise-free solver: multigrid-preconditioned CG,
  batched over masks and channels, torch only, CPU and CUDA.
* :func:`linear_impute_reference` — a direct sparse solve per mask (SciPy,
  float64), the numerical reference.

When every pixel is removed the system has no fixed values and is singular;
the result is defined as its minimum-norm solution, 0 (the normalisation's mean
colour), a constant image.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from metacam import _multigrid as mg
from metacam.errors import MetaCAMError

__all__ = ["impute", "linear_impute", "linear_impute_reference"]

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
def linear_impute(
    x: Tensor,
    removed: Tensor,
    *,
    tol: float = 1e-5,
    max_iter: int = 100,
    chunk: int | None = None,
    max_coarse: int = 64,
) -> Tensor:
    """Noise-free linear imputation, batched (multigrid-preconditioned CG).

    x: (N, C, H, W) or (C, H, W) float; removed: (N, H, W) or (H, W) bool.
    tol: target max abs error of the imputed values, per mask (estimated
    from the preconditioned residual and confirmed with a float64 residual).
    max_iter: CG iterations per mask at most (a RuntimeWarning if not enough).
    chunk: masks solved together; bounds the memory, about 120 bytes per
    pixel and channel of a chunk. Default: 1.2 M pixel-channels on CPU (8 masks
    of 3 x 224 x 224: cache-sized batches are fastest there) and, on CUDA, a
    quarter of the free device memory up to 24 GB (~1300 such masks).
    max_coarse: pixels of the coarsest grid, which is solved densely.
    Returns a new tensor shaped like x, x's dtype and device; kept pixels equal x.
    """
    xb, rb, single = _as_batch(x, removed, "linear_impute")
    _check_solver_args(tol, max_iter, chunk, max_coarse)
    out = xb.clone(memory_format=torch.contiguous_format)
    n, c, h, w = xb.shape
    counts = rb.sum((1, 2))
    out[counts == h * w] = 0.0  # no fixed values: the minimum-norm solution
    todo = ((counts > 0) & (counts < h * w)).nonzero().squeeze(1)
    if chunk is None:
        chunk = max(1, _chunk_budget(xb.device) // (c * h * w))
    weights = mg.weight_sum(h, w, device=xb.device, dtype=torch.float64)
    for start in range(0, todo.numel(), chunk):
        idx = todo[start : start + chunk]
        r = rb[idx]
        ys, xs = _window(r.any(0))  # the chunk's removed pixels + 1 px
        rw, xw = r[:, ys, xs], xb[idx][..., ys, xs]
        u = _solve(xw, rw, weights[ys, xs], tol, max_iter, max_coarse)
        out[idx, :, ys, xs] = torch.where(rw.unsqueeze(1), u.to(out.dtype), xw)
    return out[0] if single else out


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


def _solve(
    x: Tensor, removed: Tensor, weights: Tensor, tol: float, max_iter: int, max_coarse: int
) -> Tensor:
    """Imputed values of one chunk. x: (M, C, h, w); removed: (M, h, w); weights: (h, w)
    float64 in-bounds weight sums of the full image. Returns (M, C, h, w) float64."""
    m = removed.unsqueeze(1)
    rhs = mg.neighbour_sum(torch.where(m, 0.0, x.to(torch.float64))) * m  # kept neighbours
    levels = mg.build_hierarchy(removed, weights, _work_dtype(x), max_coarse)
    u, iters = mg.pcg(levels, rhs, tol=tol, max_iter=max_iter)
    if bool((iters < 0).any()):
        warnings.warn(
            f"linear_impute: {int((iters < 0).sum())} mask(s) did not reach tol={tol} "
            f"within max_iter={max_iter} iterations",
            RuntimeWarning,
            stacklevel=3,
        )
    return u


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
