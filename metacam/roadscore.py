"""ROAD: Remove And Debias (Rong et al., ICML 2022, arXiv:2202.00449), batched.

For a saliency map A of image x with target c and removal percentages P:
MoRF_p removes the p% most relevant pixels, LeRF_p the p% least relevant, by
noisy linear imputation (:mod:`metacam.imputation`); f is the target's softmax
probability. We report

* ``morf`` = mean_p f(MoRF_p) - f(x) and ``lerf`` = mean_p f(LeRF_p) - f(x)
  (grad-cam's averagers, ``return_diff=True``),
* ``combined`` = mean_p (f(LeRF_p) - f(MoRF_p)) / 2 = (lerf - morf) / 2.

Ties (``ties="random"``, the default) are broken by one seeded permutation per
image, shared by every map of that image, so exactly round(p% * H * W) pixels go
and methods are compared on the same footing. ``ties="inclusive"`` is
pytorch-grad-cam's rule: every pixel tied with the cut-off value goes.

The noise is one seeded Gaussian field per image, also shared by all its maps,
so two maps that remove the same pixels get the same perturbed image (which we
then evaluate once). All perturbed images of all maps and percentages go through
the model in large batches; the clean image goes through once.
"""

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from metacam.ensemble import percentile_of_sorted
from metacam.errors import MetaCAMError
from metacam.imputation import linear_impute

DEFAULT_PERCENTILES: tuple[float, ...] = (20.0, 40.0, 60.0, 80.0)
TIE_RULES = ("random", "inclusive")


@dataclass
class RoadStats:
    """Where ROAD's time goes (accumulated over calls when passed in)."""

    forward_images: int = 0
    forward_passes: int = 0
    forward_seconds: float = 0.0
    impute_seconds: float = 0.0
    masks: int = 0
    unique_masks: int = 0
    total_seconds: float = 0.0

    def summary(self) -> str:
        other = self.total_seconds - self.forward_seconds - self.impute_seconds
        return (
            f"{self.masks} masks ({self.unique_masks} distinct), {self.forward_images} images in "
            f"{self.forward_passes} forward passes: forward {self.forward_seconds:.2f}s, "
            f"imputation {self.impute_seconds:.2f}s, other {other:.2f}s, "
            f"total {self.total_seconds:.2f}s"
        )


@dataclass
class RoadScores:
    """ROAD scores; leading shape (B,) for one map per image or (B, M) for M maps.

    combined, morf, lerf: (...,); morf_curve, lerf_curve: (..., P) f after removal;
    clean: (B,) f of the clean image.
    """

    combined: Tensor
    morf: Tensor
    lerf: Tensor
    morf_curve: Tensor
    lerf_curve: Tensor
    clean: Tensor
    percentiles: tuple[float, ...] = field(default=DEFAULT_PERCENTILES)


def image_seed(seed: int, image_id: str) -> int:
    """A stable per-image seed from the run seed and the image's id (not its batch slot),
    so that an image gets the same permutation and noise in every job and rerun."""
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def check_percentiles(percentiles: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(p) for p in percentiles)
    if not values:
        raise MetaCAMError("the ROAD percentile list is empty; give removal percentages in (0, 100)")
    for p in values:
        if not 0 < p < 100:
            raise MetaCAMError(f"ROAD percentile {p:g} is outside (0, 100); it is the % of pixels removed")
    return values


def _check_saliency(x: Tensor, saliency: Tensor) -> Tensor:
    """Saliency as (B, M, H, W); clear errors for shape mismatch and NaN."""
    batch, _, height, width = x.shape
    maps = saliency[:, None] if saliency.ndim == 3 else saliency
    if maps.ndim != 4 or maps.shape[0] != batch or tuple(maps.shape[-2:]) != (height, width):
        raise MetaCAMError(
            f"saliency shape {tuple(saliency.shape)} does not match the images {tuple(x.shape)}; "
            f"expected ({batch}, {height}, {width}) or ({batch}, M, {height}, {width})"
        )
    bad = torch.isnan(maps).flatten(2).any(-1)
    if bool(bad.any()):
        image, index = (int(v) for v in torch.nonzero(bad)[0])
        raise MetaCAMError(
            f"saliency map {index} of image {image} contains NaN; fix the map, it will not be scored"
        )
    return maps


@torch.inference_mode()
def target_probabilities(
    net: nn.Module, x: Tensor, targets: Tensor, *, batch_size: int, stats: RoadStats | None = None
) -> Tensor:
    """Softmax probability of each image's target. x: (N, C, H, W); targets: (N,) -> (N,)."""
    out = torch.empty(x.shape[0], device=x.device)
    start_time = time.perf_counter()
    for start in range(0, x.shape[0], batch_size):
        logits = net(x[start : start + batch_size])
        picked = targets[start : start + batch_size]
        out[start : start + batch_size] = logits.float().softmax(-1).gather(1, picked[:, None])[:, 0]
        if stats is not None:
            stats.forward_passes += 1
    if stats is not None:
        _sync(x.device)
        stats.forward_images += x.shape[0]
        stats.forward_seconds += time.perf_counter() - start_time
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def removal_counts(percentiles: Sequence[float], pixels: int) -> list[int]:
    """Pixels removed at each percentage: round(p% * H * W)."""
    return [int(round(p / 100 * pixels)) for p in percentiles]


def relevance_ranks(maps: Tensor, permutation: Tensor) -> Tensor:
    """Rank of every pixel by relevance, 0 = most relevant; ties by the permutation.

    maps: (M, P) flattened maps of one image; permutation: (P,) the image's tie order.
    Returns (M, P) int32 ranks.
    """
    shuffled = maps[:, permutation]
    # stable sort keeps the permutation's order among equal values
    order = permutation[torch.sort(shuffled, dim=1, descending=True, stable=True).indices]
    ranks = torch.empty_like(order, dtype=torch.int32)
    positions = torch.arange(maps.shape[1], device=maps.device, dtype=torch.int32)
    ranks.scatter_(1, order, positions.expand_as(order).contiguous())
    return ranks


def _random_tie_masks(maps: Tensor, permutation: Tensor, counts: list[int]) -> Tensor:
    """(M, 2P, pixels) removal masks: MoRF_p then LeRF_p for each p."""
    ranks = relevance_ranks(maps, permutation)
    pixels = maps.shape[1]
    morf = [ranks < n for n in counts]
    lerf = [ranks >= pixels - n for n in counts]
    return torch.stack(morf + lerf, dim=1)


def _inclusive_masks(maps: Tensor, percentiles: Sequence[float]) -> Tensor:
    """grad-cam's rule: MoRF removes A >= percentile(A, 100 - p), LeRF removes
    1 - A >= percentile(1 - A, 100 - p), ties included. maps: (M, P) -> (M, 2P, P)."""
    inverse = 1 - maps
    ascending, inverse_ascending = maps.sort(dim=1).values, inverse.sort(dim=1).values
    morf = [maps >= percentile_of_sorted(ascending, 100 - p)[:, None] for p in percentiles]
    lerf = [
        inverse >= percentile_of_sorted(inverse_ascending, 100 - p)[:, None] for p in percentiles
    ]
    return torch.stack(morf + lerf, dim=1)


def _distinct(masks: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct rows of a (N, P) bool tensor and, per row, the index of its distinct row."""
    pixels = masks.shape[1]
    padded = torch.nn.functional.pad(masks, (0, (-pixels) % 8)).view(masks.shape[0], -1, 8)
    bits = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=masks.device)
    packed = (padded.to(torch.uint8) * bits).sum(-1, dtype=torch.uint8)
    _, inverse = torch.unique(packed, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), masks.shape[0], device=masks.device)
    first.scatter_reduce_(0, inverse, torch.arange(masks.shape[0], device=masks.device), "amin")
    return masks[first], inverse


def default_batch_size(device: torch.device) -> int:
    """Perturbed images per forward pass (the memory bound)."""
    return 512 if device.type == "cuda" else 8


def road(
    net: nn.Module,
    x: Tensor,
    saliency: Tensor,
    targets: Tensor | Sequence[int] | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    *,
    ties: str = "random",
    noise: float = 0.01,
    seed: int = 0,
    image_seeds: Sequence[int] | None = None,
    batch_size: int | None = None,
    impute_batch: int | None = None,
    clean: Tensor | None = None,
    stats: RoadStats | None = None,
) -> RoadScores:
    """ROAD combined, MoRF and LeRF of every map.

    x: (B, C, H, W) normalised images; saliency: (B, H, W) one map per image, or
    (B, M, H, W) M maps per image (scores then (B, M)). targets: (B,) classes
    (None: top-1). percentiles: removal percentages in (0, 100).
    ties: "random" (seeded permutation, exact counts) or "inclusive" (grad-cam).
    noise: std of the imputation noise (0 allowed). seed / image_seeds: the
    permutation and noise of image b come from image_seeds[b] (default seed + b).
    batch_size: images per forward pass; impute_batch: masks imputed at once
    (both bound memory). clean: (B,) clean probabilities if already known.
    stats: a RoadStats to accumulate timings into.
    """
    if ties not in TIE_RULES:
        raise MetaCAMError(f"ties={ties!r} is not a tie rule; use one of {', '.join(TIE_RULES)}")
    percentiles = check_percentiles(percentiles)
    maps = _check_saliency(x, saliency)
    started = time.perf_counter()
    stats = stats if stats is not None else RoadStats()
    batch, channels, height, width = x.shape
    count_maps, pixels = maps.shape[1], height * width
    device = x.device
    batch_size = batch_size or default_batch_size(device)
    impute_batch = impute_batch or (4096 if device.type == "cuda" else 256)
    seeds = list(image_seeds) if image_seeds is not None else [seed + b for b in range(batch)]

    if targets is None:
        tick = time.perf_counter()
        with torch.inference_mode():  # top-1 and its probability from one clean pass
            probs = net(x).float().softmax(-1)
        _sync(device)
        stats.forward_seconds += time.perf_counter() - tick
        stats.forward_passes += 1
        stats.forward_images += batch
        chosen = probs.argmax(1)
        clean = probs.gather(1, chosen[:, None])[:, 0] if clean is None else clean
    else:
        chosen = torch.as_tensor(targets, device=device, dtype=torch.long).reshape(batch)
    if clean is None:
        clean = target_probabilities(net, x, chosen, batch_size=batch_size, stats=stats)
    counts = removal_counts(percentiles, pixels)
    after = torch.empty(batch, count_maps, 2 * len(percentiles), device=device)

    for b in range(batch):
        generator = torch.Generator().manual_seed(seeds[b])
        permutation = torch.randperm(pixels, generator=generator).to(device)
        noise_field = (torch.randn(channels, height, width, generator=generator) * noise).to(device)
        flat = maps[b].flatten(1).float()
        masks = (
            _random_tie_masks(flat, permutation, counts)
            if ties == "random"
            else _inclusive_masks(flat, percentiles)
        ).reshape(-1, pixels)
        distinct, inverse = _distinct(masks)
        stats.masks += masks.shape[0]
        stats.unique_masks += distinct.shape[0]
        probs = torch.empty(distinct.shape[0], device=device)
        for start in range(0, distinct.shape[0], impute_batch):
            removed = distinct[start : start + impute_batch].view(-1, height, width)
            tick = time.perf_counter()
            perturbed = linear_impute(x[b].expand(removed.shape[0], -1, -1, -1), removed)
            if noise > 0:
                perturbed += noise_field * removed[:, None]
            _sync(device)
            stats.impute_seconds += time.perf_counter() - tick
            target = chosen[b].expand(removed.shape[0])
            probs[start : start + removed.shape[0]] = target_probabilities(
                net, perturbed, target, batch_size=batch_size, stats=stats
            )
        after[b] = probs[inverse].view(count_maps, -1)

    steps = len(percentiles)
    morf_curve, lerf_curve = after[..., :steps], after[..., steps:]
    morf = morf_curve.mean(-1) - clean[:, None]
    lerf = lerf_curve.mean(-1) - clean[:, None]
    combined = (lerf_curve - morf_curve).mean(-1) / 2
    stats.total_seconds += time.perf_counter() - started
    squeeze = saliency.ndim == 3
    return RoadScores(
        combined=combined[:, 0] if squeeze else combined,
        morf=morf[:, 0] if squeeze else morf,
        lerf=lerf[:, 0] if squeeze else lerf,
        morf_curve=morf_curve[:, 0] if squeeze else morf_curve,
        lerf_curve=lerf_curve[:, 0] if squeeze else lerf_curve,
        clean=clean,
        percentiles=percentiles,
    )
