"""ROAD: Remove And Debias (Rong et al., ICML 2022, arXiv:2202.00449), batched.

For a saliency map A of image x with target c and removal percentages P:
MoRF_p removes the p% most relevant pixels, LeRF_p the p% least relevant, by
noisy linear imputation (:mod:`metacam.evaluation.imputation`); f is the target's softmax
probability. We report

* ``morf`` = mean_p f(MoRF_p) - f(x) and ``lerf`` = mean_p f(LeRF_p) - f(x)
  (grad-cam's averagers, ``return_diff=True``),
* ``combined`` = mean_p (f(LeRF_p) - f(MoRF_p)) / 2 = (lerf - morf) / 2.

Ties (``ties="random"``, the default) are broken by one seeded permutation per
image, shared by every map of that image, so exactly round(p% * H * W) pixels go
and methods are compared on the same footing. ``ties="inclusive"`` is
pytorch-grad-cam's rule: every pixel tied with the cut-off value goes.

The noise is one seeded Gaussian field per image, also shared by all its maps, so
two maps that remove the same pixels get the same image (which we then evaluate
once). Permutation and noise come from their own seed streams
(``<stream>.permutation``, ``<stream>.noise`` of the run seed and the image id;
:mod:`metacam.seeds`). All perturbed images of all maps and percentages go through
the model in large batches; the clean image goes through once (:class:`Probe`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from metacam.batching import Batches
from metacam.config import RoadConfig, check_percentiles
from metacam.ensemble import percentile_of_sorted
from metacam.errors import MetaCAMError
from metacam.evaluation.imputation import impute_masks
from metacam.progress import NO_PROGRESS, Progress
from metacam.seeds import check_ids, stream_seed


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

    def add(self, other: RoadStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class RoadScores:
    """ROAD scores of M maps per image.

    combined, morf, lerf: (B, M); morf_curve, lerf_curve: (B, M, P) f after
    removal at each percentage; clean: (B,) f of the clean image.
    """

    combined: Tensor
    morf: Tensor
    lerf: Tensor
    morf_curve: Tensor
    lerf_curve: Tensor
    clean: Tensor
    percentiles: tuple[float, ...] = field(default=(20.0, 40.0, 60.0, 80.0))

    def map(self, index: int) -> RoadScores:
        """The scores of map ``index`` alone: fields (B,) and (B, P)."""
        return RoadScores(self.combined[:, index], self.morf[:, index], self.lerf[:, index],
                          self.morf_curve[:, index], self.lerf_curve[:, index], self.clean,
                          self.percentiles)

    def select(self, columns: Tensor | slice) -> RoadScores:
        """The scores of some maps: fields (B, M') and (B, M', P)."""
        return RoadScores(self.combined[:, columns], self.morf[:, columns], self.lerf[:, columns],
                          self.morf_curve[:, columns], self.lerf_curve[:, columns], self.clean,
                          self.percentiles)


def default_batch_size(device: torch.device) -> int:
    """Perturbed images per forward pass (the memory bound)."""
    return 512 if device.type == "cuda" else 8


def default_impute_batch(device: torch.device) -> int:
    """Distinct masks imputed (and held as images) at once per image."""
    return 4096 if device.type == "cuda" else 256


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def target_probabilities(
    net: nn.Module, x: Tensor, targets: Tensor, *, batch_size: int, stats: RoadStats | None = None,
    batches: Batches | None = None,
) -> Tensor:
    """Softmax probability of each image's target. x: (N, C, H, W); targets: (N,) -> (N,).

    Runs ``batch_size`` images per pass (halved on CUDA out-of-memory, see metacam.batching).
    """
    out = torch.empty(x.shape[0], device=x.device)
    started = time.perf_counter()
    batches = batches or Batches(batch_size, "ROAD forward")
    passes = 0

    def forward(start: int, stop: int) -> None:
        nonlocal passes
        logits = net(x[start:stop])
        out[start:stop] = logits.float().softmax(-1).gather(1, targets[start:stop, None])[:, 0]
        passes += 1

    batches.run(x.shape[0], forward)
    if stats is not None:
        _sync(x.device)
        stats.forward_passes += passes
        stats.forward_images += x.shape[0]
        stats.forward_seconds += time.perf_counter() - started
    return out


@dataclass(frozen=True)
class Probe:
    """The model and the images every score is measured against: one batch of B items.

    This is also what a plug-in metric (``@metacam.model_metric``) is given.

    net: the classifier (eval mode); x: (B, C, H, W) normalised images (``images``);
    targets: (B,) long, the classes explained; clean: (B,) softmax probability of each
    target on its clean image; image_ids: one id per item (seeds its random streams);
    seed: the run seed; batch_size: images per forward pass of :meth:`probabilities`
    (None: 8 on CPU, 512 on CUDA); noise: the std of :meth:`impute`'s noise (ROAD's).
    """

    net: nn.Module
    x: Tensor
    targets: Tensor
    clean: Tensor
    image_ids: tuple[str, ...]
    seed: int = 0
    batch_size: int | None = None
    noise: float = RoadConfig.noise

    @classmethod
    def of(
        cls,
        net: nn.Module,
        x: Tensor,
        targets: Tensor | Sequence[int] | None = None,
        *,
        image_ids: Sequence[str] | None = None,
        seed: int = 0,
        stats: RoadStats | None = None,
    ) -> Probe:
        """Targets (None: each image's top-1) and their clean probabilities, from one pass."""
        if not isinstance(x, Tensor) or x.ndim != 4:
            raise MetaCAMError(f"expected images (B, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
        ids = check_ids(image_ids, x.shape[0])
        started = time.perf_counter()
        with torch.inference_mode():
            probs = net(x).float().softmax(-1)
        if stats is not None:
            _sync(x.device)
            stats.forward_seconds += time.perf_counter() - started
            stats.forward_passes += 1
            stats.forward_images += x.shape[0]
        if targets is None:
            chosen = probs.argmax(1)
        else:
            chosen = torch.as_tensor(targets, device=x.device, dtype=torch.long).reshape(-1)
            if chosen.numel() != x.shape[0]:
                raise MetaCAMError(f"got {chosen.numel()} targets for {x.shape[0]} images; give one per image")
            if bool(((chosen < 0) | (chosen >= probs.shape[1])).any()):
                raise MetaCAMError(f"target classes must lie in 0..{probs.shape[1] - 1}, got {chosen.tolist()}")
        clean = probs.gather(1, chosen[:, None])[:, 0]
        return cls(net, x, chosen, clean, ids, seed)

    @property
    def images(self) -> Tensor:
        """(B, C, H, W) the normalised images (the same tensor as ``x``)."""
        return self.x

    def subset(self, indices: Sequence[int]) -> Probe:
        """The probe of items ``indices`` (in that order, repeats allowed)."""
        index = list(indices)
        return replace(self, x=self.x[index], targets=self.targets[index], clean=self.clean[index],
                       image_ids=tuple(self.image_ids[i] for i in index))

    def seeds(self, stream: str) -> list[int]:
        """One seed per image for ``stream`` (metacam.seeds.stream_seed)."""
        return [stream_seed(self.seed, stream, i) for i in self.image_ids]

    def probabilities(self, images: Tensor, *, stats: RoadStats | None = None) -> Tensor:
        """Softmax probability of each item's target on other versions of its image.

        images: (B, C, H, W), or (B, S, C, H, W) for S versions of each image ->
        (B,) or (B, S). Runs ``batch_size`` images per forward pass, under
        :func:`torch.inference_mode`; on CUDA out-of-memory the batch halves and the
        pass is retried (metacam.batching), down to 1.
        """
        if not isinstance(images, Tensor) or images.ndim not in (4, 5) or images.shape[0] != self.x.shape[0] \
                or tuple(images.shape[-3:]) != tuple(self.x.shape[1:]):
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise MetaCAMError(f"Probe.probabilities: images {shape} do not match the probe's "
                               f"{tuple(self.x.shape)}; give (B, C, H, W) or (B, S, C, H, W)")
        leading = tuple(images.shape[:-3])
        flat = images.reshape(-1, *images.shape[-3:]).to(self.x.device)
        targets = self.targets.repeat_interleave(flat.shape[0] // self.x.shape[0])
        out = target_probabilities(self.net, flat, targets,
                                   batch_size=self.batch_size or default_batch_size(self.x.device), stats=stats)
        return out.view(leading)

    def impute(self, removed: Tensor) -> Tensor:
        """ROAD's noisy linear imputation of each item's image (DESIGN §2).

        removed: (B, H, W) or (B, S, H, W) bool, True = removed -> (B, C, H, W) or
        (B, S, C, H, W). The removed pixels are solved from their neighbours, then
        Gaussian noise of std ``noise`` is added to them: one field per image from its
        stream ``metric.noise`` (shared by the image's S masks, as in ROAD).
        """
        if not isinstance(removed, Tensor) or removed.ndim not in (3, 4) or removed.shape[0] != self.x.shape[0] \
                or tuple(removed.shape[-2:]) != tuple(self.x.shape[-2:]):
            shape = tuple(removed.shape) if isinstance(removed, Tensor) else type(removed).__name__
            raise MetaCAMError(f"Probe.impute: removed {shape} does not match the probe's images "
                               f"{tuple(self.x.shape)}; give (B, H, W) or (B, S, H, W) masks")
        masks = (removed if removed.ndim == 4 else removed[:, None]).to(self.x.device, torch.bool)
        out = []
        for b, seed in enumerate(self.seeds("metric.noise")):
            filled = impute_masks(self.x[b], masks[b])
            if self.noise > 0:
                field = torch.randn(self.x.shape[1:], generator=torch.Generator().manual_seed(seed))
                filled = filled + (field * self.noise).to(filled.device) * masks[b][:, None]
            out.append(filled)
        stacked = torch.stack(out)
        return stacked if removed.ndim == 4 else stacked[:, 0]


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
    """Distinct rows of a (N, P) bool tensor in order of first occurrence (related masks
    stay neighbours, which the imputation's warm starts use) and, per row, the index
    of its distinct row."""
    pixels = masks.shape[1]
    padded = torch.nn.functional.pad(masks, (0, (-pixels) % 8)).view(masks.shape[0], -1, 8)
    bits = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=masks.device)
    packed = (padded.to(torch.uint8) * bits).sum(-1, dtype=torch.uint8)
    _, inverse = torch.unique(packed, dim=0, return_inverse=True)
    n_distinct = int(inverse.max()) + 1
    first = torch.full((n_distinct,), masks.shape[0], device=masks.device)
    first.scatter_reduce_(0, inverse, torch.arange(masks.shape[0], device=masks.device), "amin")
    order = torch.argsort(first)  # distinct rows by first occurrence
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n_distinct, device=masks.device)
    return masks[first[order]], rank[inverse]


def _check_maps(probe: Probe, maps: Tensor) -> Tensor:
    """maps as (B, M, H, W) float; one-line errors for a shape mismatch or NaN."""
    batch, _, height, width = probe.x.shape
    if not isinstance(maps, Tensor) or maps.ndim != 4 or maps.shape[0] != batch or tuple(maps.shape[-2:]) != (height, width):
        raise MetaCAMError(
            f"saliency maps of shape {tuple(getattr(maps, 'shape', ()))} do not match the images "
            f"{tuple(probe.x.shape)}; expected ({batch}, M, {height}, {width})"
        )
    bad = torch.isnan(maps).flatten(2).any(-1)
    if bool(bad.any()):
        image, index = (int(v) for v in torch.nonzero(bad)[0])
        raise MetaCAMError(
            f"saliency map {index} of image {image} contains NaN; fix the map, it will not be scored"
        )
    return maps.to(probe.x.device)


def road_many(
    probe: Probe,
    maps: Tensor,
    config: RoadConfig | None = None,
    *,
    stats: RoadStats | None = None,
    progress: Progress = NO_PROGRESS,
) -> RoadScores:
    """ROAD combined, MoRF and LeRF of M maps per image: maps (B, M, H, W) -> fields (B, M).

    config: tie rule, percentiles, noise, seed streams and forward batch (RoadConfig).
    stats: a RoadStats to accumulate timings into; progress: reports ROAD masks done.
    """
    config = (config or RoadConfig()).checked()
    maps = _check_maps(probe, maps)
    started = time.perf_counter()
    stats = stats if stats is not None else RoadStats()
    x = probe.x
    batch, channels, height, width = x.shape
    count_maps, pixels = maps.shape[1], height * width
    device = x.device
    steps = len(config.percentiles)
    counts = removal_counts(config.percentiles, pixels)
    forward = Batches(config.batch_size or default_batch_size(device), "ROAD forward")
    chunks = Batches(default_impute_batch(device), "imputation")
    permutation_seeds = probe.seeds(f"{config.stream}.permutation")
    noise_seeds = probe.seeds(f"{config.stream}.noise")
    after = torch.empty(batch, count_maps, 2 * steps, device=device)
    progress.stage("ROAD masks", batch * count_maps * 2 * steps)

    for b in range(batch):
        permutation = torch.randperm(pixels, generator=torch.Generator().manual_seed(permutation_seeds[b]))
        noise_field = torch.randn(channels, height, width, generator=torch.Generator().manual_seed(noise_seeds[b]))
        noise_field = (noise_field * config.noise).to(device)
        flat = maps[b].flatten(1).float()
        masks = (
            _random_tie_masks(flat, permutation.to(device), counts)
            if config.ties == "random"
            else _inclusive_masks(flat, config.percentiles)
        ).reshape(-1, pixels)
        distinct, inverse = _distinct(masks)
        stats.masks += masks.shape[0]
        stats.unique_masks += distinct.shape[0]
        requested = torch.bincount(inverse, minlength=distinct.shape[0]).cpu()

        def done(start: int, stop: int, requested: Tensor = requested) -> None:
            progress.advance(int(requested[start:stop].sum()))  # the masks these stood for

        probs = _perturbed_probabilities(probe, b, distinct, noise_field, config.noise, forward, chunks,
                                         stats, done)
        after[b] = probs[inverse].view(count_maps, -1)

    morf_curve, lerf_curve = after[..., :steps], after[..., steps:]
    stats.total_seconds += time.perf_counter() - started
    return RoadScores(
        combined=(lerf_curve - morf_curve).mean(-1) / 2,
        morf=morf_curve.mean(-1) - probe.clean[:, None],
        lerf=lerf_curve.mean(-1) - probe.clean[:, None],
        morf_curve=morf_curve,
        lerf_curve=lerf_curve,
        clean=probe.clean,
        percentiles=tuple(config.percentiles),
    )


def _perturbed_probabilities(
    probe: Probe, b: int, distinct: Tensor, noise_field: Tensor, noise: float, forward: Batches,
    chunks: Batches, stats: RoadStats, done: Callable[[int, int], None],
) -> Tensor:
    """f of image b with each distinct mask (N, H*W) removed: imputed, noise added on the
    removed pixels, evaluated in batches. Returns (N,); ``done(start, stop)`` per chunk."""
    x = probe.x[b]
    height, width = x.shape[-2:]
    probs = torch.empty(distinct.shape[0], device=x.device)

    def score(start: int, stop: int) -> None:
        removed = distinct[start:stop].view(-1, height, width)
        tick = time.perf_counter()
        perturbed = impute_masks(x, removed)
        if noise > 0:
            perturbed += noise_field * removed[:, None]
        _sync(x.device)
        stats.impute_seconds += time.perf_counter() - tick
        target = probe.targets[b].expand(removed.shape[0])
        probs[start:stop] = target_probabilities(probe.net, perturbed, target, batch_size=forward.size,
                                                 stats=stats, batches=forward)
        done(start, stop)

    chunks.run(distinct.shape[0], score)
    return probs


def road(
    net: nn.Module,
    x: Tensor,
    saliency: Tensor,
    targets: Tensor | Sequence[int] | None = None,
    percentiles: Sequence[float] | None = None,
    *,
    config: RoadConfig | None = None,
    image_ids: Sequence[str] | None = None,
    seed: int = 0,
    stats: RoadStats | None = None,
) -> RoadScores:
    """ROAD of one map per image: saliency (B, H, W) -> combined, morf, lerf (B,).

    x: (B, C, H, W) normalised images; targets: (B,) classes (None: top-1);
    percentiles: removal percentages in (0, 100) (default: config's, 20/40/60/80);
    config: the rest of ROAD's settings (RoadConfig: ties, noise, streams, batch);
    image_ids / seed: image b's permutation and noise come from the streams of
    (seed, image_ids[b]) (default ids "0", "1", ...).
    """
    config = config or RoadConfig()
    if percentiles is not None:
        config = RoadConfig(**{**config.__dict__, "percentiles": list(check_percentiles(percentiles))})
    if not isinstance(saliency, Tensor) or saliency.ndim != 3:
        raise MetaCAMError(
            f"road: saliency must be one map per image, (B, H, W), got shape "
            f"{tuple(getattr(saliency, 'shape', ()))}; for several maps per image use road_many"
        )
    probe = Probe.of(net, x, targets, image_ids=image_ids, seed=seed, stats=stats)
    return road_many(probe, saliency[:, None], config, stats=stats).map(0)


__all__ = ["Probe", "RoadScores", "RoadStats", "relevance_ranks", "road", "road_many"]
