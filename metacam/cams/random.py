"""RandomCAM, the control: random channel weights, so the map carries no class evidence."""

from collections.abc import Sequence

import torch
from torch import Tensor

from metacam.cams.gradient import weighted_sum
from metacam.cams.registry import MemberInput, member


def randomcam(activations: Tensor, seeds: Sequence[int]) -> Tensor:
    """grad-cam's RandomCAM: w_k ~ U(-1, 1), from one seeded generator per image, so an
    image's map does not depend on the batch it is in.

    activations: (B, K, h, w); seeds: B integers -> (B, h, w).
    """
    channels = activations.shape[1]
    weights = torch.stack(
        [
            torch.rand(
                channels, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64
            )
            for seed in seeds
        ]
    )
    return weighted_sum((weights * 2 - 1).to(activations), activations)


@member(
    "randomcam",
    label="RandomCAM",
    paper="control: U(-1,1) channel weights",
    seeded=True,
    control=True,
)
def _randomcam_member(inp: MemberInput) -> Tensor:
    return randomcam(inp.shared.activations, inp.seeds)
