"""RandomCAM, the control: random channel weights, so the map carries no class evidence."""

import torch
from torch import Tensor

from metacam.cams.gradient import _weighted_sum


def randomcam(activations: Tensor, generator: torch.Generator) -> Tensor:
    """grad-cam's RandomCAM: w_k ~ U(-1, 1), seeded. activations: (B, K, h, w) -> (B, h, w)."""
    batch, channels = activations.shape[:2]
    weights = torch.rand(batch, channels, generator=generator, dtype=torch.float64) * 2 - 1
    return _weighted_sum(weights.to(activations), activations)
