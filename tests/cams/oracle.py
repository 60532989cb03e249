"""grad-cam 1.5 as the oracle: the same net, layer, input and targets through its classes."""

import numpy as np
import pytorch_grad_cam as pgc
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

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
}


def oriented_projection(batch: np.ndarray) -> np.ndarray:
    """grad-cam's SVD projection with DESIGN §2's sign: positive correlation with the
    channel sum of the decomposed maps (grad-cam's own sign is arbitrary)."""
    projection = get_2d_projection(batch)
    channel_sum = batch.sum(axis=1)
    for i in range(len(projection)):
        centred = channel_sum[i] - channel_sum[i].mean()
        if (projection[i] * centred).sum() < 0:
            projection[i] = -projection[i]
    return projection


def oracle_map(name, net, layer, x, targets, monkeypatch=None) -> np.ndarray:
    """grad-cam's map for member ``name``: (B, H, W) float32."""
    if name in ("eigencam", "eigengradcam"):
        assert monkeypatch is not None, "Eigen members need the sign convention patched in"
        monkeypatch.setattr("pytorch_grad_cam.eigen_cam.get_2d_projection", oriented_projection)
        monkeypatch.setattr(
            "pytorch_grad_cam.eigen_grad_cam.get_2d_projection", oriented_projection
        )
    cls = ORACLE_CLASSES[name]
    cam = cls(net, []) if name == "fullgrad" else cls(net, [layer])
    if name == "scorecam":
        cam.batch_size = 64  # grad-cam reads this attribute if present; speed only
    with cam:
        return cam(x, [ClassifierOutputTarget(int(c)) for c in targets])


def max_abs_diff(ours: torch.Tensor, reference: np.ndarray) -> float:
    return float(np.abs(ours.detach().cpu().numpy() - reference).max())
