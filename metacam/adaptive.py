"""Adaptive thresholding: pick k* = argmax_k ROAD_combined(T_k(A)) per image (DESIGN §2).

For a single map the candidates are T_k(A); for an ensemble (a dict or stack of
member maps) they are MetaCAM_k, where the same k thresholds the members and
the consensus. All candidates of all images are scored by one batched ROAD call.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metacam.ensemble import DEFAULT_KS, check_ks, metacam_maps, threshold_maps
from metacam.roadscore import RoadScores, road


@dataclass
class AdaptiveResult:
    """Adaptive thresholding of B images over a grid of K thresholds.

    ks: the grid (K,); scores: ROAD of every candidate, fields shaped (B, K);
    best_index: (B,) position of k* in ks (the smallest k among equal maxima);
    best_k: (B,) k* in percent; best_map: (B, H, W) the candidate at k*.
    """

    ks: tuple[float, ...]
    scores: RoadScores
    best_index: Tensor
    best_k: Tensor
    best_map: Tensor

    @property
    def best_score(self) -> Tensor:
        """(B,) ROAD combined at k*."""
        return self.scores.combined.gather(1, self.best_index[:, None])[:, 0]


def candidate_maps(saliency_or_maps: Tensor | Mapping[str, Tensor], ks: Sequence[float]) -> Tensor:
    """The maps adaptive thresholding chooses among: (B, K, H, W).

    A (B, H, W) tensor is one map per image (T_k); a mapping name -> (B, H, W) or an
    (M, B, H, W) tensor is an ensemble (MetaCAM_k).
    """
    if isinstance(saliency_or_maps, Tensor) and saliency_or_maps.ndim == 3:
        return threshold_maps(saliency_or_maps, ks)
    return metacam_maps(saliency_or_maps, ks)


def best_of(scores: RoadScores, ks: Sequence[float]) -> tuple[Tensor, Tensor]:
    """(best_index, best_k), each (B,), from scores shaped (B, K); first maximum wins."""
    best_index = scores.combined.argmax(dim=1)  # torch returns the first maximal index
    grid = torch.tensor(list(ks), device=best_index.device)
    return best_index, grid[best_index]


def adaptive_threshold(
    net: nn.Module,
    x: Tensor,
    saliency_or_maps: Tensor | Mapping[str, Tensor],
    targets: Tensor | Sequence[int] | None = None,
    ks: Sequence[float] = DEFAULT_KS,
    **road_options,
) -> AdaptiveResult:
    """k* and the ROAD score at every k, per image.

    x: (B, C, H, W); saliency_or_maps: (B, H, W) one map per image, or member maps
    (name -> (B, H, W), or (M, B, H, W)) for MetaCAM. ks: thresholds in (0, 100].
    road_options: passed to :func:`metacam.roadscore.road` (percentiles, ties, noise,
    seed, image_seeds, batch_size, stats, ...).
    """
    grid = tuple(check_ks(ks))
    candidates = candidate_maps(saliency_or_maps, grid)
    scores = road(net, x, candidates, targets, **road_options)
    best_index, best_k = best_of(scores, grid)
    best_map = candidates[torch.arange(candidates.shape[0]), best_index]
    return AdaptiveResult(grid, scores, best_index, best_k, best_map)
