"""Top-k% thresholding and the MetaCAM ensemble (DESIGN §2).

T_k(A) keeps the pixels of A at or above its (100 - k)th percentile and zeros
the rest; MetaCAM_k = normalise(T_k(sum_m T_k(A_m))). Percentiles use linear
interpolation exactly as ``numpy.percentile`` does, so hand computations and
NumPy agree with us to the bit.
"""

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from metacam.cams.postprocess import normalise
from metacam.config import check_ks
from metacam.errors import MetaCAMError


def percentile_of_sorted(ascending: Tensor, q: float) -> Tensor:
    """``numpy.percentile(values, q)`` (method 'linear') of rows sorted ascending.

    ascending: (N, P) sorted along the last axis -> (N,) in its dtype. Reproduces
    NumPy's index arithmetic (float64) and its two-sided lerp, so a threshold that
    should equal a data value does, bit for bit.
    """
    count = ascending.shape[-1]
    quantile = q / 100
    virtual = count * quantile + (1 - quantile) - 1  # numpy's 'linear': alpha = beta = 1
    below = min(max(int(virtual // 1), 0), count - 1)
    above = min(below + 1, count - 1)
    gamma = virtual - below
    low, high = ascending[..., below], ascending[..., above]
    diff = high - low
    if gamma >= 0.5:
        return high - diff * (1 - gamma)
    return low + diff * gamma


def top_k_mask(maps: Tensor, k: float) -> Tensor:
    """T_k: keep each map's pixels at or above its (100 - k)th percentile, zero the rest.

    maps: (..., H, W) -> (..., H, W), same dtype. k in (0, 100]; k = 100 keeps all.
    """
    (k,) = check_ks(k)
    flat = maps.flatten(-2)
    threshold = percentile_of_sorted(flat.sort(dim=-1).values, 100 - k)
    kept = flat >= threshold[..., None]
    return torch.where(kept, flat, torch.zeros_like(flat)).reshape(maps.shape)


def _stack(maps: Mapping[str, Tensor] | Sequence[Tensor] | Tensor) -> Tensor:
    """Member maps as one (M, B, H, W) tensor."""
    if isinstance(maps, Tensor):
        if maps.ndim != 4:
            raise MetaCAMError(f"expected member maps (M, B, H, W), got shape {tuple(maps.shape)}")
        return maps
    members = list(maps.values()) if isinstance(maps, Mapping) else list(maps)
    if not members:
        raise MetaCAMError("MetaCAM needs member maps; for the empty ensemble use zeros")
    shapes = {tuple(m.shape) for m in members}
    if len(shapes) != 1:
        raise MetaCAMError(f"member maps differ in shape: {sorted(shapes)}")
    return torch.stack(members)


def metacam_map(maps: Mapping[str, Tensor] | Sequence[Tensor] | Tensor, k: float) -> Tensor:
    """MetaCAM_k = normalise(T_k(sum_m T_k(A_m))).

    maps: name -> (B, H, W), a sequence of (B, H, W), or (M, B, H, W); k in (0, 100].
    Returns (B, H, W) in [0, 1]. Pixels many members rank in their top k% dominate;
    an isolated highlight of one member is cut by the outer T_k.
    """
    stacked = _stack(maps)
    consensus = top_k_mask(stacked, k).sum(dim=0)
    return normalise(top_k_mask(consensus, k))


def metacam_maps(maps: Mapping[str, Tensor] | Sequence[Tensor] | Tensor, ks: Sequence[float]) -> Tensor:
    """MetaCAM at every k of a grid. Returns (B, K, H, W)."""
    return torch.stack([metacam_map(maps, k) for k in check_ks(ks)], dim=1)


def threshold_maps(saliency: Tensor, ks: Sequence[float]) -> Tensor:
    """T_k of one map per image at every k. saliency: (B, H, W) -> (B, K, H, W)."""
    return torch.stack([top_k_mask(saliency, k) for k in check_ks(ks)], dim=1)
