"""Tests of ROAD's noisy linear imputation (metacam.imputation, DESIGN §2).

Oracles: pytorch-grad-cam's NoisyLinearImputer (noise=0) and our direct
sparse solve; hand-computed weighted means for single pixels.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metacam import _multigrid as mg
from metacam.errors import MetaCAMError
from metacam.imputation import impute, linear_impute, linear_impute_reference

TOL = 1e-4  # required max abs difference to the references


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def image(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth-plus-texture image in a normalised range, (c, h, w)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(1, c, 4, 4, generator=g)
    x = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)[0]
    return (x + 0.3 * torch.randn(c, h, w, generator=g)).clamp(-2.2, 2.7)


def remove_first(key: torch.Tensor, p: float) -> torch.Tensor:
    """Remove the round(p * H * W) pixels with the smallest key. key: (H, W)."""
    h, w = key.shape
    m = torch.zeros(h * w, dtype=torch.bool)
    m[torch.argsort(key.reshape(-1), stable=True)[: round(p * h * w)]] = True
    return m.view(h, w)


def make_mask(kind: str, h: int, w: int, p: float, seed: int = 0) -> torch.Tensor:
    """random: scattered pixels; blob: the pixels nearest a point; checker: 4x4
    checkerboard cells of one colour first. Exactly round(p * h * w) removed."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(h, w, generator=g)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    if kind == "random":
        key = noise
    elif kind == "blob":
        cy, cx = 0.35 * h, 0.6 * w
        key = ((yy - cy) ** 2 + (xx - cx) ** 2).float() + 0.5 * noise
    elif kind == "checker":
        key = ((yy // 4 + xx // 4) % 2).float() + 0.5 * noise
    else:
        raise ValueError(kind)
    return remove_first(key, p)


def adaptive_masks(size: int, seed: int) -> torch.Tensor:
    """ROAD adaptive-thresholding masks of a smooth map (deduplicated), (M, size, size)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.relu(torch.randn(1, 1, 7, 7, generator=g))
    a = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    a = (a - a.min()) / (a.max() - a.min())
    n = size * size
    perm_rank = torch.empty(n, dtype=torch.int64)
    perm_rank[torch.randperm(n, generator=g)] = torch.arange(n)
    flat = a.reshape(-1)
    masks, seen = [], set()
    for k in range(5, 101, 5):
        tk = torch.where(flat >= torch.quantile(flat, 1 - k / 100), flat, 0.0)
        by_rank = torch.argsort(perm_rank)
        order = by_rank[torch.argsort(tk[by_rank], stable=True)]  # (value, perm rank)
        for p in (20, 40, 60, 80):
            cnt = round(p / 100 * n)
            for idx in (order[-cnt:], order[:cnt]):  # MoRF, LeRF
                m = torch.zeros(n, dtype=torch.bool)
                m[idx] = True
                if m.numpy().tobytes() not in seen:
                    seen.add(m.numpy().tobytes())
                    masks.append(m.view(size, size))
    return torch.stack(masks)


def gradcam_impute(x: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """grad-cam's NoisyLinearImputer(noise=0); its mask is the *kept* mask."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    return NoisyLinearImputer(noise=0.0)(x, (~removed).float())


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


# ----------------------------------------------------------------------------
# agreement with the oracles
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("h,w", [(16, 16), (37, 53), (64, 64)])
@pytest.mark.parametrize("kind", ["random", "blob", "checker"])
def test_matches_gradcam(h: int, w: int, kind: str) -> None:
    x = image(3, h, w, seed=h)
    for p in (0.2, 0.4, 0.6, 0.8):
        m = make_mask(kind, h, w, p, seed=w)
        ours = impute(x, m, noise=0.0)
        assert max_diff(ours, gradcam_impute(x, m)) <= TOL, (kind, p)
        assert torch.equal(ours[:, ~m], x[:, ~m])


def test_matches_gradcam_224() -> None:
    x = image(3, 224, 224, seed=5)
    m = make_mask("blob", 224, 224, 0.4, seed=5)
    assert max_diff(impute(x, m, noise=0.0), gradcam_impute(x, m)) <= TOL


def test_reference_matches_gradcam() -> None:
    x = image(3, 30, 41, seed=2)
    for kind, p in itertools.product(["random", "blob"], [0.3, 0.7]):
        m = make_mask(kind, 30, 41, p, seed=3)
        assert max_diff(linear_impute_reference(x, m), gradcam_impute(x, m)) <= 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_adaptive_sweep_matches_reference(seed: int) -> None:
    masks = adaptive_masks(48, seed)
    x = image(3, 48, 48, seed=seed).expand(masks.shape[0], -1, -1, -1)
    ours = linear_impute(x, masks)
    ref = linear_impute_reference(x, masks)
    assert max_diff(ours, ref) <= TOL


@pytest.mark.slow
def test_adaptive_sweep_matches_reference_224() -> None:
    masks = adaptive_masks(224, 3)
    x = image(3, 224, 224, seed=3).expand(masks.shape[0], -1, -1, -1)
    assert max_diff(linear_impute(x, masks), linear_impute_reference(x, masks)) <= TOL


@pytest.mark.parametrize(
    "h,w,kept",
    [
        (64, 64, [(40, 7)]),
        (33, 20, [(0, 0), (32, 19)]),
        (128, 128, [(60, 70)]),
        (160, 120, [(0, 0)]),  # float32 PCG alone: 5e-3 off
    ],
)
def test_nearly_singular(h: int, w: int, kept: list[tuple[int, int]]) -> None:
    # few kept pixels: condition number ~ size^2 log(size); float32 alone fails,
    # the float64 residual check and refinement must catch it
    x = image(3, h, w, seed=1)
    m = torch.ones(h, w, dtype=torch.bool)
    for yx in kept:
        m[yx] = False
    assert max_diff(linear_impute(x, m), linear_impute_reference(x, m)) <= TOL


@pytest.mark.parametrize("h,w", [(1, 1), (1, 7), (2, 2), (3, 1), (5, 4)])
def test_tiny_images(h: int, w: int) -> None:
    x = image(2, h, w, seed=h * w)
    for p in (0.3, 0.6, 1.0):
        m = make_mask("random", h, w, p, seed=1)
        ours = linear_impute(x, m)
        assert torch.isfinite(ours).all()
        assert max_diff(ours, linear_impute_reference(x, m)) <= TOL


def test_float64_input_keeps_dtype_and_is_accurate() -> None:
    x = image(3, 40, 40, seed=4).double()
    m = make_mask("blob", 40, 40, 0.7)
    out = linear_impute(x, m, tol=1e-9)
    assert out.dtype == torch.float64
    assert max_diff(out, linear_impute_reference(x, m)) <= 1e-7


# ----------------------------------------------------------------------------
# hand-computed values
# ----------------------------------------------------------------------------
def test_single_interior_pixel_is_weighted_mean() -> None:
    x = image(3, 9, 11, seed=7)
    m = torch.zeros(9, 11, dtype=torch.bool)
    m[4, 6] = True
    edges = x[:, 3, 6] + x[:, 5, 6] + x[:, 4, 5] + x[:, 4, 7]
    diagonals = x[:, 3, 5] + x[:, 3, 7] + x[:, 5, 5] + x[:, 5, 7]
    expected = edges / 6 + diagonals / 12  # weights sum to 1
    out = impute(x, m, noise=0.0)
    assert max_diff(out[:, 4, 6], expected) <= 1e-6
    assert torch.equal(out[:, ~m], x[:, ~m])


@pytest.mark.parametrize("corner", [(0, 0), (0, 10), (8, 0), (8, 10)])
def test_single_corner_pixel_is_normalised_mean(corner: tuple[int, int]) -> None:
    x = image(3, 9, 11, seed=8)
    y, c = corner
    dy, dx = (1 if y == 0 else -1), (1 if c == 0 else -1)
    m = torch.zeros(9, 11, dtype=torch.bool)
    m[y, c] = True
    num = (x[:, y + dy, c] + x[:, y, c + dx]) / 6 + x[:, y + dy, c + dx] / 12
    expected = num / (1 / 6 + 1 / 6 + 1 / 12)
    assert max_diff(impute(x, m, noise=0.0)[:, y, c], expected) <= 1e-6


def test_two_adjacent_pixels_solved_jointly() -> None:
    # u1 = (k1 + u2 / 6), u2 = (k2 + u1 / 6): coupled, not independent means
    x = image(1, 6, 6, seed=9)
    m = torch.zeros(6, 6, dtype=torch.bool)
    m[2, 2] = m[2, 3] = True
    xk = x.clone()
    xk[:, m] = 0.0
    k = mg.neighbour_sum(xk.double())[0]
    k1, k2 = float(k[2, 2]), float(k[2, 3])
    u1 = (k1 + k2 / 6) / (1 - 1 / 36)
    u2 = k2 + u1 / 6
    out = impute(x, m, noise=0.0)
    assert max_diff(out[0, 2, 2], torch.tensor(u1)) <= 1e-6
    assert max_diff(out[0, 2, 3], torch.tensor(u2)) <= 1e-6


def test_all_removed_is_zero_and_none_removed_is_identity() -> None:
    x = image(3, 12, 10, seed=3)
    full = impute(x, torch.ones(12, 10, dtype=torch.bool), noise=0.0)
    assert torch.isfinite(full).all() and torch.equal(full, torch.zeros_like(x))
    none = impute(x, torch.zeros(12, 10, dtype=torch.bool))
    assert torch.equal(none, x) and none.data_ptr() != x.data_ptr()
    # reference agrees on both
    assert torch.equal(linear_impute_reference(x, torch.ones(12, 10, dtype=torch.bool)), full)


# ----------------------------------------------------------------------------
# noise
# ----------------------------------------------------------------------------
def test_noise_is_seeded_on_removed_pixels_only_with_right_std() -> None:
    x = image(3, 64, 64, seed=1)
    m = make_mask("random", 64, 64, 0.5, seed=2)
    clean = impute(x, m, noise=0.0)
    a = impute(x, m, noise=0.05, generator=torch.Generator().manual_seed(11))
    b = impute(x, m, noise=0.05, generator=torch.Generator().manual_seed(11))
    c = impute(x, m, noise=0.05, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, ~m], x[:, ~m])  # kept pixels bit-identical
    eps = (a - clean)[:, m].double()
    n = eps.numel()  # 6144 samples: std of the std estimate ~ 0.05 / sqrt(2n)
    assert abs(float(eps.std()) - 0.05) < 0.05 * 4 / (2 * n) ** 0.5
    assert abs(float(eps.mean())) < 0.05 * 4 / n**0.5


# ----------------------------------------------------------------------------
# batching, views
# ----------------------------------------------------------------------------
def test_batched_equals_per_mask() -> None:
    h, w = 40, 36
    kinds = ["random", "blob", "checker", "blob", "random"]
    masks = torch.stack(
        [
            make_mask(k, h, w, p, seed=i)
            for i, (k, p) in enumerate(zip(kinds, [0.2, 0.4, 0.6, 0.8, 0.5], strict=True))
        ]
    )
    masks[3] = False  # nothing removed
    x = torch.stack([image(3, h, w, seed=i) for i in range(5)])
    batched = linear_impute(x, masks, chunk=2)
    for i in range(5):
        single = linear_impute(x[i], masks[i])
        # per-mask tolerance 1e-5 each, so the two agree within 2e-5
        assert max_diff(batched[i], single) <= 2e-5
        assert max_diff(batched[i], linear_impute_reference(x[i], masks[i])) <= TOL
    assert torch.equal(batched[3], x[3])


def test_expanded_input_is_not_modified() -> None:
    x = image(3, 32, 32, seed=6)
    masks = torch.stack([make_mask("blob", 32, 32, p) for p in (0.2, 0.5, 0.8)])
    xe = x.expand(3, -1, -1, -1)
    before = x.clone()
    out = impute(xe, masks, noise=0.01, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, before)
    assert out.shape == (3, 3, 32, 32) and out.stride(0) != 0
    ref = impute(xe.contiguous(), masks, noise=0.01, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, ref)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_input_keeps_dtype(dtype: torch.dtype) -> None:
    x = image(3, 24, 24, seed=2)
    m = make_mask("blob", 24, 24, 0.5)
    out = impute(x.to(dtype), m, noise=0.0)
    assert out.dtype == dtype
    ref = linear_impute_reference(x.to(dtype).float(), m)
    assert max_diff(out, ref) <= 2 * float(torch.finfo(dtype).eps) * 4  # rounding only


def test_nan_in_expanded_batch_is_found() -> None:
    x = image(3, 8, 8)
    x[0, 0, 0] = float("nan")
    with pytest.raises(MetaCAMError, match="NaN"):
        impute(x.expand(4, -1, -1, -1), torch.zeros(4, 8, 8, dtype=torch.bool))


def test_int_mask_accepted_and_single_image_shape() -> None:
    x = image(3, 20, 20)
    m = make_mask("random", 20, 20, 0.3)
    out = impute(x, m.to(torch.uint8), noise=0.0)
    assert out.shape == x.shape
    assert torch.equal(out, impute(x, m, noise=0.0))


def test_max_iter_exhausted_warns() -> None:
    x = image(3, 64, 64)
    m = make_mask("blob", 64, 64, 0.8)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        linear_impute(x, m, max_iter=1)


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "x,removed,match",
    [
        (torch.zeros(3, 8, 8), torch.zeros(8, 9, dtype=torch.bool), r"\(8, 9\).*\(3, 8, 8\)"),
        (
            torch.zeros(2, 3, 8, 8),
            torch.zeros(3, 8, 8, dtype=torch.bool),
            r"\(3, 8, 8\).*\(2, 3, 8, 8\)",
        ),
        (torch.zeros(3, 8, 8), torch.full((8, 8), 0.5), "0/1"),
        (torch.zeros(3, 8, 8), torch.full((8, 8), 2, dtype=torch.int64), "0/1"),
        (torch.full((3, 8, 8), float("nan")), torch.zeros(8, 8, dtype=torch.bool), "NaN"),
        (torch.zeros(8, 8), torch.zeros(8, 8, dtype=torch.bool), "dims"),
        (torch.zeros(1, 1, 3, 8, 8), torch.zeros(1, 1, 8, 8, dtype=torch.bool), "dims"),
        (torch.zeros(3, 8, 8, dtype=torch.int64), torch.zeros(8, 8, dtype=torch.bool), "float"),
    ],
)
def test_bad_input(x: torch.Tensor, removed: torch.Tensor, match: str) -> None:
    for fn in (impute, linear_impute, linear_impute_reference):
        with pytest.raises(MetaCAMError, match=match) as err:
            fn(x, removed)
        assert "\n" not in str(err.value)
        assert str(err.value).startswith(fn.__name__ + ":")


def test_inf_is_rejected() -> None:
    x = image(3, 8, 8)
    x[1, 2, 3] = float("inf")
    with pytest.raises(MetaCAMError, match="inf"):
        impute(x, torch.zeros(8, 8, dtype=torch.bool))


@pytest.mark.parametrize(
    "kw", [{"tol": 0.0}, {"max_iter": -1}, {"chunk": 0}, {"max_coarse": 0}, {"noise": -0.1}]
)
def test_bad_solver_arguments(kw: dict[str, float]) -> None:
    x = image(3, 8, 8)
    with pytest.raises(MetaCAMError) as err:
        impute(x, torch.ones(8, 8, dtype=torch.bool), **kw)
    assert "\n" not in str(err.value) and next(iter(kw)) in str(err.value)


# ----------------------------------------------------------------------------
# multigrid internals
# ----------------------------------------------------------------------------
def dense_operator(level: mg.Level, n_masks: int) -> list[torch.Tensor]:
    """The level's operator as dense (h*w, h*w) matrices, by applying it to unit vectors."""
    h, w = level.shape
    eye = torch.eye(h * w, dtype=torch.float64).view(h * w, 1, h, w)
    out = []
    for i in range(n_masks):
        lv = level.select(torch.tensor([i]))
        lv64 = mg.Level(**{f: (None if t is None else t.double()) for f, t in vars(lv).items()})
        cols = lv64.apply(eye.view(1, h * w, h, w) * lv64.mask).view(h * w, h * w)
        out.append(cols.T)  # column j = A e_j
    return out


def prolong_matrix(hc: int, wc: int, h: int, w: int) -> torch.Tensor:
    eye = torch.eye(hc * wc, dtype=torch.float64).view(hc * wc, hc, wc)
    return mg.prolong(eye, h, w).reshape(hc * wc, h * w).T  # (fine, coarse)


@pytest.mark.parametrize("h,w", [(9, 8), (10, 13)])
def test_galerkin_operator_equals_rap(h: int, w: int) -> None:
    g = torch.Generator().manual_seed(h)
    removed = torch.rand(2, h, w, generator=g) < 0.7
    weights = mg.weight_sum(h, w, device="cpu", dtype=torch.float64)
    fine = mg.fine_level(removed, weights, torch.float64)
    coarse = mg.galerkin(fine)
    hc, wc = coarse.shape
    p = prolong_matrix(hc, wc, h, w)
    for i, (a_f, a_c) in enumerate(
        zip(dense_operator(fine, 2), dense_operator(coarse, 2), strict=True)
    ):
        mf = fine.mask[i].reshape(-1).double()
        mc = coarse.mask[i].reshape(-1).double()
        pm = mf[:, None] * p * mc[None, :]
        rap = pm.T @ a_f @ pm
        assert torch.allclose(a_c, rap, atol=1e-12)
        # the fine operator is the ROAD system on the removed pixels, SPD
        assert torch.allclose(a_f, a_f.T)


def test_vcycle_is_symmetric_positive_definite() -> None:
    # PCG needs an SPD preconditioner
    h, w = 23, 18
    removed = make_mask("checker", h, w, 0.7).unsqueeze(0)
    weights = mg.weight_sum(h, w, device="cpu", dtype=torch.float64)
    levels = mg.build_hierarchy(removed, weights, torch.float64, max_coarse=16)
    assert len(levels) >= 3
    n = h * w
    eye = torch.eye(n, dtype=torch.float64).view(1, n, h, w) * levels[0].mask
    mat = mg.vcycle(levels, eye).view(n, n)
    idx = removed[0].reshape(-1).nonzero().squeeze(1)
    sub = mat[idx][:, idx]
    assert torch.allclose(sub, sub.T, atol=1e-10)
    assert float(torch.linalg.eigvalsh(0.5 * (sub + sub.T)).min()) > 0


# ----------------------------------------------------------------------------
# CUDA
# ----------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    masks = adaptive_masks(64, 4)
    x = image(3, 64, 64, seed=4).expand(masks.shape[0], -1, -1, -1)
    cpu = linear_impute(x, masks)
    gpu = linear_impute(x.cuda(), masks.cuda())
    assert gpu.is_cuda
    assert max_diff(gpu.cpu(), cpu) <= 2e-5
    assert max_diff(gpu.cpu(), linear_impute_reference(x, masks)) <= TOL
    g = torch.Generator(device="cuda").manual_seed(0)
    noisy = impute(x.cuda(), masks.cuda(), generator=g)
    assert torch.equal(noisy.cpu()[:, :, ~masks[0]][0], x[0][:, ~masks[0]])


def test_gradcam_oracle_is_exercised() -> None:
    # guard: the oracle really differs from the identity and from a naive fill
    x = image(3, 16, 16)
    m = make_mask("blob", 16, 16, 0.4)
    g = gradcam_impute(x, m)
    assert max_diff(g, x) > 0.01
    assert np.isfinite(g.numpy()).all()
