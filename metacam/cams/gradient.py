"""The gradient family: pure functions of the target layer's activations A and the
target score's gradients G, both (B, K, h, w). Each returns the raw layer map
(B, h, w) before ReLU/normalisation; formulas follow pytorch-grad-cam 1.5. They are
registered with the same decorator a plug-in uses (:func:`metacam.layer_member`).
"""

import torch
from torch import Tensor

from metacam.cams.registry import layer_member


def weighted_sum(weights: Tensor, activations: Tensor) -> Tensor:
    """sum_k w_k A_k. weights: (B, K); activations: (B, K, h, w) -> (B, h, w)."""
    return torch.einsum("bk,bkhw->bhw", weights, activations)


@layer_member(name="gradcam", label="Grad-CAM", paper="arXiv:1610.02391")
def gradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391): w_k = mean_ij G_kij."""
    return weighted_sum(gradients.mean(dim=(2, 3)), activations)


@layer_member(name="hirescam", label="HiResCAM", paper="arXiv:2011.08891")
def hirescam(activations: Tensor, gradients: Tensor) -> Tensor:
    """HiResCAM (Draelos & Carin, arXiv:2011.08891): sum_k G_k * A_k."""
    return (gradients * activations).sum(dim=1)


@layer_member(name="gradcam_elementwise", label="Grad-CAM element-wise", paper="pytorch-grad-cam")
def gradcam_elementwise(activations: Tensor, gradients: Tensor) -> Tensor:
    """Element-wise Grad-CAM (grad-cam's GradCAMElementWise): sum_k relu(G_k * A_k)."""
    return torch.relu(gradients * activations).sum(dim=1)


@layer_member(name="gradcampp", label="Grad-CAM++", paper="arXiv:1710.11063")
def gradcampp(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM++ (Chattopadhay et al., WACV 2018, arXiv:1710.11063), eq. 19:
    alpha = G^2 / (2 G^2 + sum_ij(A) G^3 + 1e-6), zero where G == 0;
    w_k = sum_ij relu(G) alpha."""
    grads_2 = gradients.pow(2)
    sum_acts = activations.sum(dim=(2, 3), keepdim=True)
    alpha = grads_2 / (2 * grads_2 + sum_acts * grads_2 * gradients + 1e-6)
    alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
    weights = (torch.relu(gradients) * alpha).sum(dim=(2, 3))
    return weighted_sum(weights, activations)


@layer_member(name="xgradcam", label="XGrad-CAM", paper="arXiv:2008.02312")
def xgradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """XGrad-CAM (Fu et al., BMVC 2020, arXiv:2008.02312): w_k = sum_ij G A / (sum_ij A + 1e-7)."""
    sum_acts = activations.sum(dim=(2, 3), keepdim=True)
    weights = (gradients * activations / (sum_acts + 1e-7)).sum(dim=(2, 3))
    return weighted_sum(weights, activations)


@layer_member(name="layercam", label="LayerCAM", paper="doi:10.1109/TIP.2021.3089943")
def layercam(activations: Tensor, gradients: Tensor) -> Tensor:
    """LayerCAM (Jiang et al., IEEE TIP 2021): sum_k relu(G_k) * A_k."""
    return (torch.relu(gradients) * activations).sum(dim=1)
