"""Deletion and insertion AUC (Petsiuk et al., RISE, BMVC 2018, arXiv:1806.07421), batched.

A second faithfulness metric beside ROAD, over precomputed saliency maps. For an
image x (C, H, W) with P = H * W pixels, a map A, a target class c, and
f(z) = softmax(net(z))_c:

* ranks: the pixels ordered by A, most relevant first; ties (the zeros of a
  thresholded map, flat regions) broken by one seeded random permutation per
  image (:func:`metacam.evaluation.roadscore.relevance_ranks`), shared by all maps of the
  image, so exactly the scheduled number of pixels moves at every step;
* counts: n_i = round(i * P / S) for i = 0 .. S (S = ``steps``), fractions
  t_i = n_i / P, from 0 to 1;
* deletion: D_i = x with its n_i most relevant pixels set to the baseline
  (a constant in the normalised input space; default 0, the normalisation's mean
  colour, as RISE's reference code does with ``torch.zeros_like``);
* insertion: I_i = blur(x) with its n_i most relevant pixels set back to x
  (blur: Gaussian, ``blur_kernel`` x ``blur_kernel``, ``blur_sigma``, per
  channel, zero padding in the normalised space, as in RISE);
* AUC = the trapezoidal area under f over t in [0, 1]:
  sum_i (t_{i+1} - t_i) * (f_i + f_{i+1}) / 2.

Lower deletion AUC and higher insertion AUC are better. The endpoints are shared
by every map of an image: D_0 = I_S = x (its ``clean`` probability), D_S is the
constant baseline image and I_0 the blurred image. All the other perturbed images
of all images, maps and steps are built chunk by chunk and go through the model
``batch_size`` at a time, under :func:`torch.inference_mode`, on x's device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metacam.errors import MetaCAMError
from metacam.evaluation.roadscore import relevance_ranks

_DELETION, _INSERTION = 0, 1


@dataclass  # not frozen: it is also the Hydra schema of the sweep's `deletion` node
class DeletionConfig:
    """Settings of :func:`deletion_insertion`; every default is written here once.

    steps: S, the number of equal steps from 0 to all pixels (curves have S + 1
        points; RISE used 224 one-row steps). The cost grows linearly (2 * (S - 1)
        forward images per map), and in a sweep every chosen and plain map is scored,
        so the default is 8 (12.5% of the pixels per step): on real Lite0 maps its AUCs
        differ from 64 steps' by at most 0.026 (mean 0.008), Spearman ≥ 0.99
        with them (16 steps: 0.015, 0.004; bench/deletion_steps.py, 26 maps x 4 photos).
    baseline: the value removed pixels take in the *normalised* input space
        (every channel). 0 is the normalisation's mean colour (mid grey for
        mean = std = 0.5), the usual uninformative fill, and what RISE's code does.
    blur_kernel, blur_sigma: the Gaussian blur of the insertion start image
        (RISE: kernel 11, sigma 5). The kernel size must be odd.
    cpu_batch, cuda_batch: perturbed images per forward pass (the memory bound)
        when the call gives no ``batch_size``: small on CPU (cache-friendly, like
        ROAD), large on a GPU.
    """

    steps: int = 8
    baseline: float = 0.0
    blur_kernel: int = 11
    blur_sigma: float = 5.0
    cpu_batch: int = 8
    cuda_batch: int = 512

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`MetaCAMError` (one line naming the field) on a bad value.

        Run on construction and again by :func:`deletion_insertion`, since the
        class is not frozen (it doubles as a Hydra schema) and may be changed after.
        """
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise MetaCAMError(
                f"deletion steps={self.steps!r}: give an integer >= 1 (the number of equal steps)"
            )
        if not math.isfinite(self.baseline):
            raise MetaCAMError(f"deletion baseline={self.baseline!r}: give a finite number")
        if (
            isinstance(self.blur_kernel, bool)
            or not isinstance(self.blur_kernel, int)
            or self.blur_kernel < 1
            or self.blur_kernel % 2 == 0
        ):
            raise MetaCAMError(
                f"insertion blur_kernel={self.blur_kernel!r}: give an odd integer >= 1"
            )
        if not (math.isfinite(self.blur_sigma) and self.blur_sigma > 0):
            raise MetaCAMError(f"insertion blur_sigma={self.blur_sigma!r}: give a number > 0")
        for name in ("cpu_batch", "cuda_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MetaCAMError(f"deletion {name}={value!r}: give an integer >= 1")

    def batch_for(self, device: torch.device) -> int:
        """Default images per forward pass on ``device``."""
        return self.cuda_batch if device.type == "cuda" else self.cpu_batch


@dataclass
class DeletionScores:
    """Deletion and insertion results for M maps of each of B images.

    deletion_auc, insertion_auc: (B, M). deletion_curve, insertion_curve:
    (B, M, S + 1), f after removing / inserting ``fractions[i]`` of the pixels.
    fractions: (S + 1,) n_i / P, from 0 to 1. clean: (B,) f of the clean images.
    """

    deletion_auc: Tensor
    insertion_auc: Tensor
    deletion_curve: Tensor
    insertion_curve: Tensor
    fractions: Tensor
    clean: Tensor


def step_counts(steps: int, pixels: int) -> list[int]:
    """Pixels removed (or inserted) at each step: n_i = round(i * P / S), i = 0 .. S."""
    return [int(round(i * pixels / steps)) for i in range(steps + 1)]


def gaussian_kernel(size: int, sigma: float) -> Tensor:
    """The normalised 1-D Gaussian (size,): exp(-t^2 / (2 sigma^2)) / sum, t = -size//2 .. size//2."""
    t = torch.arange(size, dtype=torch.float64) - size // 2
    weights = torch.exp(-(t**2) / (2 * sigma**2))
    return (weights / weights.sum()).float()


def blur(x: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """Gaussian blur of each channel, zero padding (same size out). x: (N, C, H, W) -> (N, C, H, W).

    Separable: a (k, 1) then a (1, k) depthwise convolution with
    :func:`gaussian_kernel`; equal to one 2-D convolution with its outer product.
    """
    channels = x.shape[1]
    kernel = gaussian_kernel(kernel_size, sigma).to(x.device, x.dtype)
    pad = kernel_size // 2
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    out = nn.functional.conv2d(x, rows, padding=(pad, 0), groups=channels)
    return nn.functional.conv2d(out, cols, padding=(0, pad), groups=channels)


@torch.inference_mode()
def deletion_insertion(
    net: nn.Module,
    x: Tensor,
    maps: Tensor,
    targets: Tensor,
    *,
    config: DeletionConfig,
    seeds: Sequence[int],
    clean: Tensor | None = None,
    batch_size: int | None = None,
) -> DeletionScores:
    """Deletion and insertion AUC of every map (see the module docstring for the formulas).

    Args:
        net: the classifier (its train/eval mode is used as it is; pass it in eval mode).
        x: (B, C, H, W) normalised images, on the net's device.
        maps: (B, M, H, W) saliency maps, M per image (any real values; only
            their order matters).
        targets: (B,) integer classes whose softmax probability f is followed.
        config: steps, baseline, blur and default batch sizes.
        seeds: B integers; image b's tie-breaking permutation is
            ``torch.randperm(H * W, generator=torch.Generator().manual_seed(seeds[b]))``.
        clean: (B,) f of the clean images if already known (saves B forwards).
        batch_size: images per forward pass (default ``config.batch_for(x.device)``).

    Returns:
        :class:`DeletionScores` with (B, M) AUCs and (B, M, S + 1) curves.

    Raises:
        MetaCAMError: shapes that do not match, a NaN or infinite map or image,
            a target outside the model's classes, a wrong number of seeds.
    """
    config.validate()
    batch, channels, height, width, count_maps = _check_inputs(x, maps, targets, seeds, clean)
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise MetaCAMError(f"batch_size={batch_size!r}: give an integer >= 1")
    chunk = batch_size or config.batch_for(x.device)
    device = x.device
    pixels = height * width
    steps = config.steps
    targets = targets.to(device=device, dtype=torch.long)
    maps = maps.to(device)

    # The shared endpoints: the constant baseline image, the blurred images, the clean images.
    baseline_image = torch.full((1, channels, height, width), config.baseline, device=device)
    blurred = blur(x.float(), config.blur_kernel, config.blur_sigma).to(x.dtype)
    ends = [baseline_image.to(x.dtype), blurred] + ([x] if clean is None else [])
    end_probs = _probabilities(net, torch.cat(ends), chunk)  # (N, classes)
    classes = end_probs.shape[1]
    if int(targets.max()) >= classes:
        raise MetaCAMError(
            f"targets: class {int(targets.max())} is out of range for a model with {classes} outputs"
        )
    f_removed_all = end_probs[0, targets]  # (B,) D_S
    f_blurred = end_probs[1 : 1 + batch].gather(1, targets[:, None])[:, 0]  # (B,) I_0
    if clean is None:
        clean = end_probs[1 + batch :].gather(1, targets[:, None])[:, 0]
    clean = clean.to(device=device, dtype=torch.float32)

    ranks = torch.stack(
        [
            relevance_ranks(maps[b].flatten(1).float(), _permutation(seeds[b], pixels, device))
            for b in range(batch)
        ]
    )  # (B, M, P) int32, 0 = most relevant
    counts = step_counts(steps, pixels)
    deletion = torch.empty(batch, count_maps, steps + 1, device=device)
    insertion = torch.empty(batch, count_maps, steps + 1, device=device)
    deletion[..., 0], deletion[..., steps] = clean[:, None], f_removed_all[:, None]
    insertion[..., 0], insertion[..., steps] = f_blurred[:, None], clean[:, None]

    if steps > 1:  # the inner steps: 2 (S - 1) perturbed images per map
        inner = torch.tensor(counts[1:-1], device=device)
        grid = torch.meshgrid(
            torch.arange(batch, device=device),
            torch.arange(count_maps, device=device),
            torch.tensor([_DELETION, _INSERTION], device=device),
            torch.arange(1, steps, device=device),
            indexing="ij",
        )
        job_image, job_map, job_kind, job_step = (g.reshape(-1) for g in grid)
        probs = torch.empty(job_image.shape[0], device=device)
        baseline = baseline_image.to(x.dtype)
        for start in range(0, job_image.shape[0], chunk):
            part = slice(start, start + chunk)
            image, kind = job_image[part], job_kind[part]
            moved = ranks[image, job_map[part]] < inner[job_step[part] - 1, None]  # (n, P)
            moved = moved.view(-1, 1, height, width)
            original = x[image]
            deleted = torch.where(moved, baseline, original)
            inserted = torch.where(moved, original, blurred[image])
            perturbed = torch.where((kind == _DELETION).view(-1, 1, 1, 1), deleted, inserted)
            picked = _probabilities(net, perturbed, chunk)
            probs[part] = picked.gather(1, targets[image][:, None])[:, 0]
        probs = probs.view(batch, count_maps, 2, steps - 1)
        deletion[..., 1:steps] = probs[:, :, _DELETION]
        insertion[..., 1:steps] = probs[:, :, _INSERTION]

    fractions = torch.tensor(counts, dtype=torch.float32, device=device) / pixels
    return DeletionScores(
        deletion_auc=torch.trapezoid(deletion, fractions, dim=-1),
        insertion_auc=torch.trapezoid(insertion, fractions, dim=-1),
        deletion_curve=deletion,
        insertion_curve=insertion,
        fractions=fractions,
        clean=clean,
    )


def _permutation(seed: int, pixels: int, device: torch.device) -> Tensor:
    """Image's tie order: a seeded permutation of its pixels (drawn on the CPU, so it is
    the same on every device)."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randperm(pixels, generator=generator).to(device)


def _probabilities(net: nn.Module, images: Tensor, batch_size: int) -> Tensor:
    """Softmax over classes of ``images`` (N, C, H, W) -> (N, classes) float32, batch_size per pass."""
    parts = [
        net(images[start : start + batch_size]).float().softmax(-1)
        for start in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(parts)


def _check_inputs(
    x: Tensor, maps: Tensor, targets: Tensor, seeds: Sequence[int], clean: Tensor | None
) -> tuple[int, int, int, int, int]:
    """Validate shapes and values; return (B, C, H, W, M). One-line MetaCAMError naming the input."""
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise MetaCAMError(f"x: expected normalised images (B, C, H, W), got {shape}")
    batch, channels, height, width = x.shape
    if batch == 0:
        raise MetaCAMError("x: the batch is empty")
    if not isinstance(maps, Tensor) or maps.ndim != 4 or maps.shape[0] != batch:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise MetaCAMError(
            f"maps: shape {shape} does not match the images {tuple(x.shape)}; "
            f"expected ({batch}, M, {height}, {width})"
        )
    if tuple(maps.shape[-2:]) != (height, width) or maps.shape[1] == 0:
        raise MetaCAMError(
            f"maps: shape {tuple(maps.shape)} does not match the images {tuple(x.shape)}; "
            f"expected ({batch}, M, {height}, {width}) with M >= 1"
        )
    bad = ~torch.isfinite(maps.float()).flatten(2).all(-1)
    if bool(bad.any()):
        image, index = (int(v) for v in torch.nonzero(bad)[0])
        raise MetaCAMError(f"maps: map {index} of image {image} contains NaN or infinity")
    if not bool(torch.isfinite(x).all()):
        raise MetaCAMError("x: the images contain NaN or infinity")
    if not isinstance(targets, Tensor) or tuple(targets.shape) != (batch,):
        shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise MetaCAMError(f"targets: expected one class per image, shape ({batch},), got {shape}")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise MetaCAMError(f"targets: expected integer classes, got dtype {targets.dtype}")
    if batch and int(targets.min()) < 0:
        raise MetaCAMError(f"targets: class {int(targets.min())} is negative")
    if len(seeds) != batch:
        raise MetaCAMError(f"seeds: expected one seed per image ({batch}), got {len(seeds)}")
    if clean is not None and (not isinstance(clean, Tensor) or tuple(clean.shape) != (batch,)):
        shape = tuple(clean.shape) if isinstance(clean, Tensor) else type(clean).__name__
        raise MetaCAMError(
            f"clean: expected one probability per image, shape ({batch},), got {shape}"
        )
    return batch, channels, height, width, maps.shape[1]
