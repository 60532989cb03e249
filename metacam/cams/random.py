"""RandomCAM, the control: random channel weights, so the map carries no class evidence."""

from collections.abc import Sequence

import torch
from torch import Tensor

from metacam.cams.gradient import _weighted_sum


def randomcam(activations: Tensor, seeds: Sequence[int]) -> Tensor:
    """grad-cam's RandomCAM: w_k ~ U(-1, 1), from one seeded generator per image, so an
    image's map does not depend on the batch it is in.

    activations: (B, K, h, w); seeds: B integers -> (B, h, w).
    """
    batch, channels = activations.shape[:2]
    weights = torch.stack(
        [
            torch.rand(
                channels, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64
            )
            for seed in seeds
        ]
    )
    return _weighted_sum((weights * 2 - 1).to(activations), activations)
