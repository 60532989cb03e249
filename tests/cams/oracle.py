"""grad-cam 1.5 as the oracle: the same net, layer(s), reshape, input and targets through its classes."""

from contextlib import nullcontext

import numpy as np
import pytorch_grad_cam as pgc
import torch
from pytorch_grad_cam.ablation_layer import AblationLayerVit
from pytorch_grad_cam.utils.find_layers import replace_layer_recursive
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection, get_2d_projection_kernel
from torch.nn.attention import SDPBackend, sdpa_kernel


class ShapleyCAMReshaped(pgc.ShapleyCAM):
    """grad-cam 1.5.7's ShapleyCAM with two bugs fixed, and its math unchanged.

    ShapleyCAM keeps the graph (``detach=False``), so the activations it stores are the
    layer's raw output, and ``BaseCAM.get_cam_image`` weights those *un-reshaped*
    activations: with any ``reshape_transform`` it fails (ValueError on ViT tokens, a
    broadcast error on Swin). Here the weights come from grad-cam's own
    ``get_cam_weights`` and the activations they weight are reshaped first. And its
    Hessian-vector product frees the graph (``retain_graph=False``), so with several
    target layers the second layer's fails wherever the network is not piecewise
    linear after them; here the graph is kept until the call ends.
    """

    def get_cam_weights(self, input_tensor, target_layer, target_category, activations, grads):
        grad = torch.autograd.grad
        try:  # grad-cam's own code, with the graph retained
            torch.autograd.grad = lambda *a, **k: grad(*a, **{**k, "retain_graph": True})
            return super().get_cam_weights(input_tensor, target_layer, target_category, activations, grads)
        finally:
            torch.autograd.grad = grad

    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth):
        weights = self.get_cam_weights(input_tensor, target_layer, targets, activations, grads)
        if self.reshape_transform is not None:
            activations = self.reshape_transform(activations)
        return (weights[:, :, None, None] * activations.detach().cpu().numpy()).sum(axis=1)


ORACLE_CLASSES = {
    "gradcam": pgc.GradCAM,
    "hirescam": pgc.HiResCAM,
    "gradcam_elementwise": pgc.GradCAMElementWise,
    "gradcampp": pgc.GradCAMPlusPlus,
    "xgradcam": pgc.XGradCAM,
    "layercam": pgc.LayerCAM,
    "scorecam": pgc.ScoreCAM,
    "ablationcam": pgc.AblationCAM,
    "eigencam": pgc.EigenCAM,
    "eigengradcam": pgc.EigenGradCAM,
    "fullgrad": pgc.FullGrad,
    "randomcam": pgc.RandomCAM,
    "kpcacam": pgc.KPCA_CAM,
    "fem": pgc.FEM,
    "shapleycam": ShapleyCAMReshaped,
    "finercam": pgc.FinerCAM,
}


class PatchTokenAblation(AblationLayerVit):
    """grad-cam's AblationLayerVit ablating a channel at the patch tokens only, the class
    and distillation tokens (the first ``prefix``) kept: MetaCAM's AblationCAM on ViT/DeiT
    (README, where we differ). The ablation value is grad-cam's, from the patch tokens:
    0 when their minimum is 0, else that minimum - 1e7."""

    def __init__(self, prefix: int) -> None:
        super().__init__()
        self.prefix = prefix

    def __call__(self, x):
        output = self.activations  # (n, prefix + h*w, C): one copy per channel to ablate
        patches = output[:, self.prefix :, :]
        low = torch.min(patches)
        value = 0 if low == 0 else low - 1e7
        for i in range(output.size(0)):
            patches[i, :, self.indices[i]] = value
        return output


def ablation_layer_for(reshape):
    """grad-cam's ablation layer matching a model's reshape: AblationLayerVit on
    channels-last Swin (no extra tokens: the same ablation as ours), the patch-token
    variant on ViT/DeiT tokens, grad-cam's default for a CNN (None)."""
    prefix = getattr(reshape, "prefix", None)
    if prefix is not None:
        return PatchTokenAblation(prefix)
    return None if reshape is None or reshape.is_identity else AblationLayerVit()


def _orient(projection: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """DESIGN §2's sign: positive correlation with the channel sum of the decomposed maps."""
    channel_sum = batch.sum(axis=1)
    for i in range(len(projection)):
        centred = channel_sum[i] - channel_sum[i].mean()
        if (projection[i] * centred).sum() < 0:
            projection[i] = -projection[i]
    return projection


def oriented_projection(batch: np.ndarray) -> np.ndarray:
    """grad-cam's SVD projection with DESIGN §2's sign (grad-cam's own sign is arbitrary)."""
    return _orient(get_2d_projection(batch), batch)


def oriented_kernel_projection(batch: np.ndarray, kernel="sigmoid", gamma=None) -> np.ndarray:
    """grad-cam's kernel-PCA projection (scikit-learn's KernelPCA) with the same sign."""
    return _orient(get_2d_projection_kernel(batch, kernel, gamma), batch)


def patch_signs(monkeypatch) -> None:
    """Give grad-cam's Eigen members and KPCA-CAM our sign convention."""
    monkeypatch.setattr("pytorch_grad_cam.eigen_cam.get_2d_projection", oriented_projection)
    monkeypatch.setattr("pytorch_grad_cam.eigen_grad_cam.get_2d_projection", oriented_projection)
    monkeypatch.setattr("pytorch_grad_cam.kpca_cam.get_2d_projection_kernel", oriented_kernel_projection)


def oracle_map(name, net, layer, x, targets, monkeypatch=None, *, reshape=None,
               ablation_layer=None, ablation_batch=None) -> np.ndarray:
    """grad-cam's map for member ``name``: (B, H, W) float32.

    layer: a module or a list of target layers; reshape: grad-cam's reshape_transform;
    ablation_layer: AblationCAM's (grad-cam's default for CNNs). On a transformer (signed
    layers) AblationCAM runs one ablated copy per pass: with more, grad-cam lowers the
    ablation value by 1e7 per copy (its loop re-reads the minimum it just wrote), where
    ours is min - 1e7 for every channel. ``ablation_batch`` overrides that (a benchmark
    times grad-cam at its default, 32; where the layer's values saturate after it, as
    in our tiny ViT, the maps differ by ~1e-6).
    """
    if name in ("eigencam", "eigengradcam", "kpcacam"):
        assert monkeypatch is not None, "Eigen members need the sign convention patched in"
        patch_signs(monkeypatch)
    layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    cls = ORACLE_CLASSES[name]
    if name == "fullgrad":
        cam = cls(net, [], reshape_transform=reshape)
    elif name == "ablationcam":
        kwargs = {"ablation_layer": ablation_layer} if ablation_layer is not None else {}
        # one copy per pass where the layer is signed (transformers); 32 is grad-cam's default
        batch = ablation_batch or (1 if reshape else 32)
        cam = cls(net, layers, reshape_transform=reshape, batch_size=batch, **kwargs)
    else:
        cam = cls(net, layers, reshape_transform=reshape)
    if name == "scorecam":
        cam.batch_size = 64  # grad-cam reads this attribute if present; speed only

    # ShapleyCAM's Hessian-vector product needs attention's plain-math kernel (the fused
    # CPU kernel has no second derivative), as MetaCAM's shared pass uses for it.
    with sdpa_kernel([SDPBackend.MATH]) if name == "shapleycam" else nullcontext():
        try:
            if name == "finercam":
                # grad-cam picks the compared classes itself from target_idx (one per call)
                return np.concatenate([
                    cam(x[i : i + 1], None, target_idx=int(c)) for i, c in enumerate(targets)
                ])
            return cam(x, [ClassifierOutputTarget(int(c)) for c in targets])
        finally:
            if name == "ablationcam":
                # grad-cam swaps its ablation layer into the net and, if it raises, leaves it there
                for target in layers:
                    replace_layer_recursive(net, cam.ablation_layer, target)
            inner = getattr(cam, "base_cam", cam)
            # grad-cam's release detaches gradients in place, which fails on views
            inner.activations_and_grads.gradients = []
            inner.activations_and_grads.release()


def max_abs_diff(ours: torch.Tensor, reference: np.ndarray) -> float:
    return float(np.abs(ours.detach().cpu().numpy() - reference).max())
