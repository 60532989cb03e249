"""The Eigen members: the first principal component of the target layer's
activations (EigenCAM) or of gradients x activations (EigenGradCAM), with a fixed sign.
"""

import torch
from torch import Tensor

from metacam.cams.registry import layer_member


def principal_projection(maps: Tensor) -> Tensor:
    """Projection of each pixel's channel vector on the first principal component.

    As grad-cam's ``get_2d_projection`` (pixels as samples, channels centred),
    plus a fixed sign: the SVD's sign is arbitrary, so we orient the component
    to correlate positively with the channel sum of ``maps``.

    maps: (B, K, h, w) -> (B, h, w).
    """
    batch, channels, height, width = maps.shape
    samples = torch.nan_to_num(maps).flatten(2).transpose(1, 2)  # (B, hw, K)
    centred = samples - samples.mean(dim=1, keepdim=True)
    # The first right singular vector = top eigenvector of the K x K (or, cheaper
    # when hw < K, derived from the hw x hw) Gram matrix; a thin SVD does both.
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = torch.einsum("bpk,bk->bp", centred, vh[:, 0, :])
    return orient(projection, samples).reshape(batch, height, width)


def orient(projection: Tensor, samples: Tensor) -> Tensor:
    """A component's projection with DESIGN's sign: correlating positively with the
    channel sum of the decomposed maps (a principal component's sign is arbitrary).

    projection: (B, P) one value per pixel; samples: (B, P, K) the pixels' channel
    vectors -> (B, P).
    """
    channel_sum = samples.sum(dim=2)
    sign = torch.sign((projection * (channel_sum - channel_sum.mean(dim=1, keepdim=True))).sum(1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return projection * sign[:, None]


@layer_member(name="eigencam", label="EigenCAM", paper="arXiv:2008.00299", needs_gradients=False)
def eigencam(activations: Tensor, gradients: None) -> Tensor:
    """EigenCAM (Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299): first principal
    component of the activations."""
    return principal_projection(activations)


@layer_member(name="eigengradcam", label="EigenGradCAM", paper="pytorch-grad-cam")
def eigengradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """EigenGradCAM (grad-cam): first principal component of G * A."""
    return principal_projection(gradients * activations)
