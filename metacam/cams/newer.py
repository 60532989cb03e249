"""The newer members of pytorch-grad-cam 1.5: KPCA-CAM, FEM, ShapleyCAM and FinerCAM.

All four read the shared pass: KPCA-CAM and FEM the activations alone, ShapleyCAM the
gradients and the Hessian-vector product H·A (one more backward over the layers after
the target), FinerCAM the gradient of its contrast score (one more backward, no
forward). They are not in the default groups (DESIGN's 12 members); the shipped
``groups=extended`` adds them as a seventh group, ``recent``.
"""

import torch
from torch import Tensor

from metacam.cams.eigen import orient
from metacam.cams.gradient import weighted_sum
from metacam.cams.registry import MemberInput, layer_member, member

FEM_SIGMAS = 2.0  # grad-cam's FEM k: a pixel is a feature's response when above mean + k std
FINER_COMPARISONS = 3  # grad-cam's FinerCAM: the 3 classes whose logits are closest to the target's
FINER_ALPHA = 1.0  # ... and the comparison strength alpha
_FINER_EPS = 1e-9  # grad-cam's guard in FinerWeightedTarget's denominator


def kernel_projection(maps: Tensor) -> Tensor:
    """Each pixel's value on the first kernel principal component of the channel vectors.

    As grad-cam's ``get_2d_projection_kernel`` (scikit-learn's ``KernelPCA(n_components=1,
    kernel="sigmoid")``, its default gamma = 1/K and coef0 = 1): pixels as samples with
    channels centred, kernel tanh(<x_i, x_j>/K + 1), centred in feature space; the top
    eigenvector times the square root of its eigenvalue. The sign, which scikit-learn
    fixes by making the largest entry positive, is oriented as EigenCAM's instead
    (:func:`~metacam.cams.eigen.orient`). Computed in float64.

    maps: (B, K, h, w) -> (B, h, w).
    """
    batch, channels, height, width = maps.shape
    samples = torch.nan_to_num(maps).flatten(2).transpose(1, 2).double()  # (B, P, K)
    centred = samples - samples.mean(dim=1, keepdim=True)
    kernel = torch.tanh(centred @ centred.transpose(1, 2) / channels + 1.0)  # (B, P, P)
    kernel = (kernel - kernel.mean(dim=1, keepdim=True) - kernel.mean(dim=2, keepdim=True)
              + kernel.mean(dim=(1, 2), keepdim=True))
    values, vectors = torch.linalg.eigh(kernel)  # ascending
    projection = vectors[..., -1] * values[..., -1].clamp(min=0).sqrt()[:, None]
    return orient(projection, samples).reshape(batch, height, width).to(maps.dtype)


@layer_member(name="kpcacam", label="KPCA-CAM", paper="arXiv:2410.00267", needs_gradients=False)
def kpcacam(activations: Tensor, gradients: None) -> Tensor:
    """KPCA-CAM (Karmani et al., 2024, arXiv:2410.00267): EigenCAM with kernel PCA, the
    first sigmoid-kernel principal component of the activations."""
    return kernel_projection(activations)


@layer_member(name="fem", label="FEM", paper="hal-02963298", needs_gradients=False)
def fem(activations: Tensor, gradients: None) -> Tensor:
    """FEM, the Feature Explanation Method (Fuad et al., IPTA 2020, hal-02963298): a
    channel's weight is the share of its pixels above its mean + 2 standard deviations
    (population std), w_k = mean_ij [A_kij > mu_k + 2 sigma_k]; the map is sum_k w_k A_k.
    Mean and std in float64, so the comparisons do not hinge on float32 rounding."""
    wide = activations.double()
    mean = wide.mean(dim=(2, 3), keepdim=True)
    std = wide.std(dim=(2, 3), correction=0, keepdim=True)
    weights = (wide > mean + FEM_SIGMAS * std).to(activations.dtype).mean(dim=(2, 3))
    return weighted_sum(weights, activations)


@member(
    "shapleycam",
    label="ShapleyCAM",
    paper="arXiv:2501.06261",
    needs_gradients=True,
    needs_hessian=True,
)
def _shapleycam_member(inp: MemberInput) -> Tensor:
    shared = inp.shared
    assert shared.gradients is not None and shared.hessian_product is not None
    return shapleycam(shared.activations, shared.gradients, shared.hessian_product)


def shapleycam(activations: Tensor, gradients: Tensor, hessian_product: Tensor) -> Tensor:
    """ShapleyCAM (Cai et al., 2025, arXiv:2501.06261), as grad-cam computes it: the
    second-order Shapley estimate of each channel's contribution,
    w_k = mean_ij (G - H·A / 2)_kij, and the map sum_k w_k A_k. On a network that is
    piecewise linear after the target layer H·A = 0 and this is Grad-CAM.

    activations, gradients, hessian_product: (B, K, h, w) -> (B, h, w).
    """
    weights = (gradients - 0.5 * hessian_product).mean(dim=(2, 3))
    return weighted_sum(weights, activations)


def finer_score(logits: Tensor, targets: Tensor) -> Tensor:
    """FinerCAM's contrast score (grad-cam's ``FinerWeightedTarget`` with the classes its
    ``FinerCAM`` picks): for target c and the :data:`FINER_COMPARISONS` other classes j whose
    logits are closest to c's, sum_j p_j (s_c - alpha s_j) / (sum_j p_j + 1e-9) with p the
    softmax probabilities (differentiated too, as grad-cam does) and alpha = :data:`FINER_ALPHA`.

    logits: (B, classes); targets: (B,) -> (B,).
    """
    target_logits = logits.gather(1, targets[:, None])
    distance = (logits - target_logits).abs().detach()
    distance.scatter_(1, targets[:, None], float("inf"))  # not compared with itself
    count = min(FINER_COMPARISONS, logits.shape[1] - 1)
    similar = distance.topk(count, dim=1, largest=False).indices  # (B, count), closest first
    weights = torch.softmax(logits, dim=1).gather(1, similar)
    contrast = weights * (target_logits - FINER_ALPHA * logits.gather(1, similar))
    return contrast.sum(dim=1) / (weights.sum(dim=1) + _FINER_EPS)


@member(
    "finercam",
    label="Finer-CAM",
    paper="arXiv:2501.11309",
    scores={"finercam": finer_score},
)
def _finercam_member(inp: MemberInput) -> Tensor:
    """Finer-CAM (Zhang et al., CVPR 2025, arXiv:2501.11309) with grad-cam's default base,
    Grad-CAM: w_k = mean_ij of the contrast score's gradient, the map sum_k w_k A_k."""
    gradients = inp.shared.score_gradients["finercam"]
    return weighted_sum(gradients.mean(dim=(2, 3)), inp.shared.activations)


__all__ = ["finer_score", "kernel_projection", "shapleycam"]
