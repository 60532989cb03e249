"""The gradient family and the Eigen members: pure functions of the target layer's
activations A and gradients G, both (B, K, h, w). Each returns the raw layer map
(B, h, w) before ReLU/normalisation; formulas follow pytorch-grad-cam 1.5.
"""

import torch
from torch import Tensor

from metacam.cams.capture import SharedPass


def _weighted_sum(weights: Tensor, activations: Tensor) -> Tensor:
    """sum_k w_k A_k. weights: (B, K); activations: (B, K, h, w) -> (B, h, w)."""
    return torch.einsum("bk,bkhw->bhw", weights, activations)


def gradcam(p: SharedPass) -> Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391): w_k = mean_ij G_kij."""
    assert p.gradients is not None
    return _weighted_sum(p.gradients.mean(dim=(2, 3)), p.activations)


def hirescam(p: SharedPass) -> Tensor:
    """HiResCAM (Draelos & Carin, arXiv:2011.08891): sum_k G_k * A_k."""
    assert p.gradients is not None
    return (p.gradients * p.activations).sum(dim=1)


def gradcam_elementwise(p: SharedPass) -> Tensor:
    """Element-wise Grad-CAM (grad-cam's GradCAMElementWise): sum_k relu(G_k * A_k)."""
    assert p.gradients is not None
    return torch.relu(p.gradients * p.activations).sum(dim=1)


def gradcampp(p: SharedPass) -> Tensor:
    """Grad-CAM++ (Chattopadhay et al., WACV 2018, arXiv:1710.11063), eq. 19:
    alpha = G^2 / (2 G^2 + sum_ij(A) G^3 + 1e-6), zero where G == 0;
    w_k = sum_ij relu(G) alpha."""
    grads, acts = p.gradients, p.activations
    assert grads is not None
    grads_2 = grads.pow(2)
    sum_acts = acts.sum(dim=(2, 3), keepdim=True)
    alpha = grads_2 / (2 * grads_2 + sum_acts * grads_2 * grads + 1e-6)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    weights = (torch.relu(grads) * alpha).sum(dim=(2, 3))
    return _weighted_sum(weights, acts)


def xgradcam(p: SharedPass) -> Tensor:
    """XGrad-CAM (Fu et al., BMVC 2020, arXiv:2008.02312): w_k = sum_ij G A / (sum_ij A + 1e-7)."""
    grads, acts = p.gradients, p.activations
    assert grads is not None
    sum_acts = acts.sum(dim=(2, 3), keepdim=True)
    weights = (grads * acts / (sum_acts + 1e-7)).sum(dim=(2, 3))
    return _weighted_sum(weights, acts)


def layercam(p: SharedPass) -> Tensor:
    """LayerCAM (Jiang et al., IEEE TIP 2021): sum_k relu(G_k) * A_k."""
    assert p.gradients is not None
    return (torch.relu(p.gradients) * p.activations).sum(dim=1)


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
    channel_sum = samples.sum(dim=2)
    sign = torch.sign((projection * (channel_sum - channel_sum.mean(dim=1, keepdim=True))).sum(1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (projection * sign[:, None]).reshape(batch, height, width)


def eigencam(p: SharedPass) -> Tensor:
    """EigenCAM (Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299): first principal
    component of the activations."""
    return principal_projection(p.activations)


def eigengradcam(p: SharedPass) -> Tensor:
    """EigenGradCAM (grad-cam): first principal component of G * A."""
    assert p.gradients is not None
    return principal_projection(p.gradients * p.activations)
