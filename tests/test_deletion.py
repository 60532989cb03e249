"""Tests of metacam.evaluation.deletion: deletion and insertion AUC (RISE) over precomputed maps."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.ndimage
import torch
from torch import nn

from metacam.errors import MetaCAMError
from metacam.evaluation.deletion import (
    DeletionConfig,
    blur,
    deletion_insertion,
    gaussian_kernel,
    step_counts,
)

# float32 unit roundoff: the counting model below computes its probabilities with
# one sum of at most 100 exact 0/1 terms, a division and a softmax of two logits,
# so each curve value is within a few ulps of the exact fraction; the AUC is a
# convex combination of curve values (trapezoid weights sum to 1): same bound.
U32 = 2.0**-24
EXACT = 16 * U32  # ~1e-6

# Batch-size independence on a small CNN: only the order of float32 reductions
# can change with the batch (GEMM blocking). A length-K dot product's rounding
# error is ~sqrt(K)*u*sum|terms| in practice (worst case K*u*sum|terms|); with
# K <= 72, |terms| sums O(10) per layer and three layers, logits move < 1e-5,
# and softmax probabilities (Lipschitz 1 in the max norm) and the AUCs with them.
REORDER = 1e-5


class PixelCounter(nn.Module):
    """A hand-built "classifier" whose class-0 probability is known exactly.

    p = (weighted) fraction of pixels whose channel 0 still equals ``pattern``
    (a ±1 checkerboard): a removed pixel (baseline 0) or a blurred one (|value|
    far below 1) does not count. Logits (log p, log(1 - p)) make softmax give
    exactly (p, 1 - p) up to rounding.
    """

    pattern: torch.Tensor
    weights: torch.Tensor

    def __init__(self, pattern: torch.Tensor, weights: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("pattern", pattern)
        self.register_buffer("weights", weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        present = (x[:, 0] * self.pattern > 0.99).float()
        p = (present * self.weights).flatten(1).sum(1) / self.weights.sum()
        return torch.stack([p.clamp_min(1e-30).log(), (1 - p).clamp_min(1e-30).log()], dim=1)


def checkerboard(size: int) -> torch.Tensor:
    i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ((-1.0) ** (i + j)).float()


def checker_images(batch: int, size: int) -> torch.Tensor:
    """(batch, 3, size, size): channel 0 the checkerboard, the others 0."""
    x = torch.zeros(batch, 3, size, size)
    x[:, 0] = checkerboard(size)
    return x


def tiny_cnn(seed: int = 0, classes: int = 10) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, classes),
        )
    return net.eval()


def thresholded_maps(batch: int, count: int, size: int, seed: int) -> torch.Tensor:
    """(batch, count, size, size) random maps with their lower 70% zeroed (many ties)."""
    maps = torch.rand(batch, count, size, size, generator=torch.Generator().manual_seed(seed))
    cut = maps.flatten(2).quantile(0.7, dim=-1)[..., None, None]
    return torch.where(maps >= cut, maps, torch.zeros_like(maps))


# --- known curves ----------------------------------------------------------------------


def test_known_curves_of_a_hand_built_model() -> None:
    """8x8 image, 16 marked pixels (rows 0-1), f = fraction of marked pixels left, S = 4.

    perfect map (marked first):      deletion 1, 0, 0, 0, 0 -> 1/8; insertion 0, 1, 1, 1, 1 -> 7/8
    reversed map (marked last):      deletion 1, 1, 1, 1, 0 -> 7/8; insertion 0, 0, 0, 0, 1 -> 1/8
    graded: 8 marked, 16 unmarked, 8 marked, rest: deletion 1, 1/2, 0, 0, 0 -> 1/4;
                                     insertion 0, 1/2, 1, 1, 1 -> 3/4
    (trapezoids of width 1/4; removed fractions 0, 16/64, ..., 64/64).
    """
    size = 8
    weights = torch.zeros(size, size)
    weights[:2] = 1  # the 16 marked pixels
    net = PixelCounter(checkerboard(size), weights).eval()
    perfect = weights.clone()
    reversed_ = 1 - weights
    graded = torch.ones(size, size)
    graded[0] = 4  # 8 marked pixels: most relevant
    graded[2:4] = 3  # 16 unmarked pixels
    graded[1] = 2  # the other 8 marked pixels
    maps = torch.stack([perfect, reversed_, graded])[None].expand(2, -1, -1, -1)
    x = checker_images(2, size)
    scores = deletion_insertion(
        net, x, maps, torch.zeros(2, dtype=torch.long), config=DeletionConfig(steps=4), seeds=[0, 1]
    )

    expected_deletion = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 1, 1, 0], [1, 0.5, 0, 0, 0]], dtype=torch.float32
    )
    expected_insertion = torch.tensor(
        [[0, 1, 1, 1, 1], [0, 0, 0, 0, 1], [0, 0.5, 1, 1, 1]], dtype=torch.float32
    )
    for b in range(2):
        torch.testing.assert_close(scores.deletion_curve[b], expected_deletion, atol=EXACT, rtol=0)
        torch.testing.assert_close(
            scores.insertion_curve[b], expected_insertion, atol=EXACT, rtol=0
        )
        torch.testing.assert_close(
            scores.deletion_auc[b], torch.tensor([1 / 8, 7 / 8, 1 / 4]), atol=EXACT, rtol=0
        )
        torch.testing.assert_close(
            scores.insertion_auc[b], torch.tensor([7 / 8, 1 / 8, 3 / 4]), atol=EXACT, rtol=0
        )
    assert scores.deletion_auc.shape == scores.insertion_auc.shape == (2, 3)
    assert scores.deletion_curve.shape == scores.insertion_curve.shape == (2, 3, 5)
    torch.testing.assert_close(scores.fractions, torch.tensor([0, 0.25, 0.5, 0.75, 1]))
    torch.testing.assert_close(scores.clean, torch.ones(2), atol=EXACT, rtol=0)


def test_ties_are_broken_so_exactly_the_scheduled_count_moves() -> None:
    """f = fraction of all pixels left, so the curves read off the number moved at each step."""
    size, steps = 10, 8
    counts = step_counts(steps, size * size)
    assert counts == [0, 12, 25, 38, 50, 62, 75, 88, 100]  # round half to even
    net = PixelCounter(checkerboard(size), torch.ones(size, size)).eval()
    constant = torch.zeros(size, size)  # all ties
    sparse = thresholded_maps(1, 1, size, seed=3)[0, 0]  # 70% zeros
    plateau = torch.ones(size, size)
    plateau[3:7, 3:7] = 2  # 16 tied on top, 84 tied below
    maps = torch.stack([constant, sparse, plateau])[None]
    scores = deletion_insertion(
        net,
        checker_images(1, size),
        maps,
        torch.tensor([0]),
        config=DeletionConfig(steps=steps),
        seeds=[7],
    )
    fraction = torch.tensor(counts, dtype=torch.float32) / 100
    torch.testing.assert_close(scores.fractions, fraction)
    for m in range(3):
        torch.testing.assert_close(scores.deletion_curve[0, m], 1 - fraction, atol=EXACT, rtol=0)
        torch.testing.assert_close(scores.insertion_curve[0, m], fraction, atol=EXACT, rtol=0)
    auc = torch.trapezoid(1 - fraction, fraction).item()
    assert scores.deletion_auc[0].tolist() == pytest.approx([auc] * 3, abs=EXACT)
    assert scores.insertion_auc[0].tolist() == pytest.approx([1 - auc] * 3, abs=EXACT)


def test_ties_follow_the_seeded_permutation() -> None:
    """On a constant map pixel perm[j] has rank j: step i removes perm[:n_i]."""
    size, steps, seed = 6, 4, 11
    marked = torch.zeros(size * size)
    marked[torch.randperm(size * size, generator=torch.Generator().manual_seed(99))[:12]] = 1
    net = PixelCounter(checkerboard(size), marked.view(size, size)).eval()
    x = checker_images(1, size)
    flat = torch.zeros(1, 2, size, size)  # two identical all-tie maps

    def run(seeds: list[int]) -> torch.Tensor:
        return deletion_insertion(
            net, x, flat, torch.tensor([0]), config=DeletionConfig(steps=steps), seeds=seeds
        ).deletion_curve[0]

    perm = torch.randperm(size * size, generator=torch.Generator().manual_seed(seed))
    expected = torch.tensor(
        [1 - marked[perm[:n]].sum().item() / 12 for n in step_counts(steps, size * size)]
    )
    curves = run([seed])
    torch.testing.assert_close(curves[0], expected, atol=EXACT, rtol=0)
    assert torch.equal(curves[0], curves[1])  # one permutation shared by the maps of an image
    assert torch.equal(run([seed]), curves)  # same seed, same result
    assert not torch.equal(run([seed + 1]), curves)  # another draw breaks the ties differently


def test_single_step_uses_only_the_endpoints() -> None:
    """S = 1: deletion AUC = (f(x) + f(baseline image)) / 2, insertion = (f(blur x) + f(x)) / 2."""
    net = tiny_cnn()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([3, 5])
    config = DeletionConfig(steps=1, baseline=0.25)
    scores = deletion_insertion(
        net, x, torch.rand(2, 3, 12, 12), targets, config=config, seeds=[0, 1]
    )
    with torch.no_grad():
        clean = net(x).softmax(1)[[0, 1], targets]
        gone = net(torch.full((1, 3, 12, 12), 0.25)).softmax(1)[0, targets]
        blurred = net(blur(x, 11, 5.0)).softmax(1)[[0, 1], targets]
    torch.testing.assert_close(scores.clean, clean)
    torch.testing.assert_close(scores.deletion_auc, ((clean + gone) / 2)[:, None].expand(2, 3))
    torch.testing.assert_close(scores.insertion_auc, ((blurred + clean) / 2)[:, None].expand(2, 3))


# --- randomness, batching, devices ------------------------------------------------------


@pytest.fixture(scope="module")
def cnn_case() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    net = tiny_cnn()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    maps = thresholded_maps(3, 2, 16, seed=2)
    with torch.no_grad():
        targets = net(x).argmax(1)
    return net, x, maps, targets


def test_same_seed_same_scores_and_batch_size_independence(cnn_case) -> None:
    net, x, maps, targets = cnn_case
    config = DeletionConfig(steps=6)
    seeds = [10, 20, 30]
    first = deletion_insertion(net, x, maps, targets, config=config, seeds=seeds, batch_size=4)
    again = deletion_insertion(net, x, maps, targets, config=config, seeds=seeds, batch_size=4)
    for field in ("deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve"):
        assert torch.equal(getattr(first, field), getattr(again, field)), field
    rng_before = torch.get_rng_state()
    for batch_size in (1, 7, 10_000, None):
        other = deletion_insertion(
            net, x, maps, targets, config=config, seeds=seeds, batch_size=batch_size
        )
        for field in ("deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve"):
            torch.testing.assert_close(
                getattr(other, field), getattr(first, field), atol=REORDER, rtol=0
            )
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is never used
    # Each image is scored on its own: alone with its seed it gets the same scores.
    alone = deletion_insertion(
        net, x[1:2], maps[1:2], targets[1:2], config=config, seeds=[20], batch_size=4
    )
    torch.testing.assert_close(
        alone.deletion_curve[0], first.deletion_curve[1], atol=REORDER, rtol=0
    )
    torch.testing.assert_close(
        alone.insertion_curve[0], first.insertion_curve[1], atol=REORDER, rtol=0
    )
    changed = deletion_insertion(net, x, maps, targets, config=config, seeds=[11, 21, 31])
    assert not torch.equal(changed.deletion_curve, first.deletion_curve)  # ties differ


def test_endpoints_and_given_clean(cnn_case) -> None:
    net, x, maps, targets = cnn_case
    config = DeletionConfig(steps=3)
    scores = deletion_insertion(net, x, maps, targets, config=config, seeds=[0, 1, 2])
    rows = torch.arange(3)
    with torch.no_grad():
        clean = net(x).softmax(1)[rows, targets]
        gone = net(torch.zeros(1, 3, 16, 16)).softmax(1)[0, targets]
        blurred = net(blur(x, 11, 5.0)).softmax(1)[rows, targets]
    torch.testing.assert_close(scores.deletion_curve[..., 0], clean[:, None].expand(3, 2))
    torch.testing.assert_close(scores.deletion_curve[..., -1], gone[:, None].expand(3, 2))
    torch.testing.assert_close(scores.insertion_curve[..., 0], blurred[:, None].expand(3, 2))
    torch.testing.assert_close(scores.insertion_curve[..., -1], clean[:, None].expand(3, 2))
    given = torch.full((3,), 0.5)  # used as is: no clean forward pass
    with_clean = deletion_insertion(
        net, x, maps, targets, config=config, seeds=[0, 1, 2], clean=given
    )
    assert torch.all(with_clean.deletion_curve[..., 0] == 0.5)
    assert torch.all(with_clean.insertion_curve[..., -1] == 0.5)
    torch.testing.assert_close(
        with_clean.deletion_curve[..., 1:-1], scores.deletion_curve[..., 1:-1]
    )


def test_blur_is_a_zero_padded_gaussian() -> None:
    kernel = gaussian_kernel(11, 5.0)
    assert kernel.shape == (11,) and kernel.sum().item() == pytest.approx(1, abs=EXACT)
    assert kernel.argmax().item() == 5 and torch.equal(kernel, kernel.flip(0))
    t = np.arange(11) - 5
    expected_kernel = np.exp(-(t**2) / 50.0)
    np.testing.assert_allclose(kernel.numpy(), expected_kernel / expected_kernel.sum(), rtol=1e-6)
    x = torch.randn(2, 3, 20, 17, generator=torch.Generator().manual_seed(0))
    out = blur(x, 11, 5.0)
    two_d = np.outer(expected_kernel, expected_kernel) / expected_kernel.sum() ** 2
    for b in range(2):
        for c in range(3):
            reference = scipy.ndimage.correlate(
                x[b, c].double().numpy(), two_d, mode="constant", cval=0.0
            )
            # float32 sums of 11 + 11 terms of |x| <= ~4: a few 1e-7 at most
            np.testing.assert_allclose(out[b, c].numpy(), reference, atol=1e-5, rtol=0)
    flat = torch.ones(1, 1, 30, 30)
    assert torch.allclose(blur(flat, 11, 5.0)[..., 5:-5, 5:-5], flat[..., 5:-5, 5:-5], atol=EXACT)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(cnn_case) -> None:
    net, x, maps, targets = cnn_case
    config = DeletionConfig(steps=6)
    cpu = deletion_insertion(net, x, maps, targets, config=config, seeds=[1, 2, 3])
    gpu_net = tiny_cnn().cuda()
    gpu = deletion_insertion(
        gpu_net, x.cuda(), maps.cuda(), targets.cuda(), config=config, seeds=[1, 2, 3]
    )
    assert gpu.deletion_auc.is_cuda
    # Same ranks (the permutation is drawn on the CPU); probabilities differ by the
    # GPU's convolution arithmetic (TF32 when enabled: 2^-11 relative rounding).
    for field in ("deletion_curve", "insertion_curve", "deletion_auc", "insertion_auc"):
        torch.testing.assert_close(
            getattr(gpu, field).cpu(), getattr(cpu, field), atol=2e-3, rtol=0
        )


# --- bad input ---------------------------------------------------------------------------


def _call(**changes: Any) -> object:
    net = tiny_cnn()
    args: dict[str, Any] = {
        "x": torch.randn(2, 3, 8, 8),
        "maps": torch.rand(2, 3, 8, 8),
        "targets": torch.tensor([1, 2]),
        "seeds": [0, 1],
        "config": DeletionConfig(steps=2),
    }
    args.update(changes)
    return deletion_insertion(net, **args)


def _nan_map() -> torch.Tensor:
    maps = torch.rand(2, 3, 8, 8)
    maps[0, 1, 2, 2] = float("nan")
    return maps


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"maps": torch.rand(2, 3, 8, 9)}, "maps: shape (2, 3, 8, 9) does not match the images"),
        ({"maps": torch.rand(2, 8, 8)}, "maps: shape (2, 8, 8) does not match the images"),
        ({"maps": torch.rand(3, 1, 8, 8)}, "maps: shape (3, 1, 8, 8) does not match"),
        ({"maps": _nan_map()}, "maps: map 1 of image 0 contains NaN or infinity"),
        ({"x": torch.randn(2, 8, 8)}, "x: expected normalised images (B, C, H, W), got (2, 8, 8)"),
        ({"targets": torch.tensor([1, 2, 3])}, "targets: expected one class per image, shape (2,)"),
        ({"targets": torch.tensor([1.0, 2.0])}, "targets: expected integer classes"),
        (
            {"targets": torch.tensor([1, 10])},
            "targets: class 10 is out of range for a model with 10",
        ),
        ({"targets": torch.tensor([-1, 0])}, "targets: class -1 is negative"),
        ({"seeds": [0]}, "seeds: expected one seed per image (2), got 1"),
        ({"clean": torch.ones(3)}, "clean: expected one probability per image"),
        ({"batch_size": 0}, "batch_size=0: give an integer >= 1"),
    ],
)
def test_bad_input_is_one_line_naming_it(changes: dict, message: str) -> None:
    with pytest.raises(MetaCAMError) as error:
        _call(**changes)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": 0}, "deletion steps=0: give an integer >= 1"),
        ({"steps": -3}, "deletion steps=-3"),
        ({"steps": 2.5}, "deletion steps=2.5"),
        ({"blur_kernel": 4}, "insertion blur_kernel=4: give an odd integer >= 1"),
        ({"blur_sigma": 0.0}, "insertion blur_sigma=0.0: give a number > 0"),
        ({"baseline": float("nan")}, "deletion baseline=nan"),
        ({"cpu_batch": 0}, "deletion cpu_batch=0"),
    ],
)
def test_bad_config_is_one_line(options: dict, message: str) -> None:
    with pytest.raises(MetaCAMError) as error:
        DeletionConfig(**options)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_config_defaults_are_written_once() -> None:
    config = DeletionConfig()
    assert (config.steps, config.baseline, config.blur_kernel, config.blur_sigma) == (
        8,
        0.0,
        11,
        5.0,
    )
    assert config.batch_for(torch.device("cpu")) == 8
    assert config.batch_for(torch.device("cuda")) == 512
    config.steps = 0  # not frozen (it is also a Hydra schema): checked again on use
    with pytest.raises(MetaCAMError, match="^deletion steps=0: give an integer >= 1"):
        _call(config=config)
