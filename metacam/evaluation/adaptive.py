"""Adaptive thresholding: k* = argmax_k ROAD_combined(T_k(A)) per image (DESIGN §2).

For a single map the candidates are T_k(A); for an ensemble (a dict or stack of
member maps) they are MetaCAM_k, where the same k thresholds the members and the
consensus. :func:`choose_k` is the one implementation of the choice (the first
maximum wins, i.e. the smallest k among equal scores); :func:`score_methods`
scores the candidates of many methods in one batched ROAD call: the public
:func:`adaptive_threshold` and the evaluation engine's in-sample step
(:class:`metacam.evaluation.engine.Evaluator`, which explain and the sweep use).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metacam.config import DEFAULT_KS, RoadConfig, check_ks
from metacam.ensemble import metacam_maps, threshold_maps
from metacam.evaluation.roadscore import Probe, RoadScores, RoadStats, road_many
from metacam.progress import NO_PROGRESS, Progress


@dataclass
class AdaptiveResult:
    """Adaptive thresholding of B images over a grid of K thresholds.

    ks: the grid (K,); scores: ROAD of every candidate, fields shaped (B, K);
    candidates: (B, K, H, W) the maps scored; best_index: (B,) position of k* in
    ks; best_k: (B,) k* in percent.
    """

    ks: tuple[float, ...]
    scores: RoadScores
    candidates: Tensor
    best_index: Tensor
    best_k: Tensor

    @property
    def best_score(self) -> Tensor:
        """(B,) ROAD combined at k*."""
        return self.scores.combined.gather(1, self.best_index[:, None])[:, 0]

    @property
    def best_map(self) -> Tensor:
        """(B, H, W) the candidate at k*."""
        return self.candidates[torch.arange(self.candidates.shape[0]), self.best_index]

    def at(self, k: float) -> int:
        """Position of threshold ``k`` in the grid."""
        return self.ks.index(float(k))


def choose_k(combined: Tensor, ks: Sequence[float]) -> tuple[Tensor, Tensor]:
    """k* per image: (best_index, best_k), each (B,), from ROAD combined (B, K).

    The first maximum wins (torch's argmax), so among equal scores the smallest k.
    """
    best_index = combined.argmax(dim=1)
    grid = torch.tensor([float(k) for k in ks], device=best_index.device)
    return best_index, grid[best_index]


def candidate_maps(saliency_or_maps: Tensor | Mapping[str, Tensor], ks: Sequence[float]) -> Tensor:
    """The maps adaptive thresholding chooses among: (B, K, H, W).

    A (B, H, W) tensor is one map per image (T_k); a mapping name -> (B, H, W) or an
    (M, B, H, W) tensor is an ensemble (MetaCAM_k).
    """
    if isinstance(saliency_or_maps, Tensor) and saliency_or_maps.ndim == 3:
        return threshold_maps(saliency_or_maps, ks)
    return metacam_maps(saliency_or_maps, ks)


def score_methods(
    probe: Probe,
    candidates: Mapping[str, Tensor],
    ks: Sequence[float],
    config: RoadConfig | None = None,
    *,
    stats: RoadStats | None = None,
    progress: Progress = NO_PROGRESS,
) -> dict[str, AdaptiveResult]:
    """Adaptive thresholding of several methods with one batched ROAD call.

    candidates: method -> (B, K, H, W), its maps at each k of ``ks`` (K values).
    Returns method -> AdaptiveResult (same order).
    """
    grid = tuple(check_ks(ks))
    names = list(candidates)
    stacked = torch.cat([candidates[name] for name in names], dim=1)  # (B, N*K, H, W)
    scores = road_many(probe, stacked, config, stats=stats, progress=progress)
    results = {}
    for i, name in enumerate(names):
        view = slice(i * len(grid), (i + 1) * len(grid))
        part = scores.select(view)
        best_index, best_k = choose_k(part.combined, grid)
        results[name] = AdaptiveResult(grid, part, candidates[name], best_index, best_k)
    return results


def adaptive_threshold(
    net: nn.Module,
    x: Tensor,
    saliency_or_maps: Tensor | Mapping[str, Tensor],
    targets: Tensor | Sequence[int] | None = None,
    ks: Sequence[float] = DEFAULT_KS,
    *,
    config: RoadConfig | None = None,
    image_ids: Sequence[str] | None = None,
    seed: int = 0,
    stats: RoadStats | None = None,
) -> AdaptiveResult:
    """k* and the ROAD score at every k, per image.

    x: (B, C, H, W); saliency_or_maps: (B, H, W) one map per image, or member maps
    (name -> (B, H, W), or (M, B, H, W)) for MetaCAM. ks: thresholds in (0, 100].
    config: ROAD's settings (RoadConfig); image_ids / seed: the images' random streams.
    """
    grid = tuple(check_ks(ks))
    probe = Probe.of(net, x, targets, image_ids=image_ids, seed=seed, stats=stats)
    method = "metacam" if not (isinstance(saliency_or_maps, Tensor) and saliency_or_maps.ndim == 3) else "map"
    return score_methods(probe, {method: candidate_maps(saliency_or_maps, grid)}, grid, config,
                         stats=stats)[method]
