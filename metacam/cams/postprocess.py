"""Turning raw layer maps into saliency maps: ReLU, min-max normalise, upsample, and
combining several target layers' maps.

These reproduce pytorch-grad-cam's ``scale_cam_image`` (normalise with a 1e-7
guard, then an OpenCV-style bilinear resize) in torch, so that our members
equal the oracle without a NumPy/OpenCV round trip.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

NORMALISE_EPS = 1e-7  # grad-cam's guard against an all-zero map


def normalise(cam: Tensor) -> Tensor:
    """Min-max normalise each map to [0, 1].

    cam: (B, H, W) -> (B, H, W). An all-constant map becomes all zeros.
    """
    low = cam.flatten(1).amin(dim=1)[:, None, None]
    shifted = cam - low
    high = shifted.flatten(1).amax(dim=1)[:, None, None]
    return shifted / (NORMALISE_EPS + high)


def upsample(cam: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize with half-pixel centres (equal to ``cv2.resize`` INTER_LINEAR).

    cam: (B, h, w) -> (B, *size).
    """
    if tuple(cam.shape[-2:]) == tuple(size):
        return cam
    return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def scale_layer_map(cam: Tensor, size: tuple[int, int]) -> Tensor:
    """One target layer's raw map as grad-cam scales it: ReLU, normalise, upsample.

    cam: (B, h, w) raw layer map -> (B, *size), >= 0.
    """
    return upsample(normalise(torch.relu(cam)), size)


def combine_layer_maps(scaled: list[Tensor]) -> Tensor:
    """grad-cam's ``aggregate_multi_layers``: the mean over target layers of their scaled
    maps (each >= 0 already, so its ReLU is a no-op), normalised.

    scaled: per layer (B, H, W) from :func:`scale_layer_map` -> (B, H, W) in [0, 1]. For
    one layer this is that map normalised again, which matters: bilinear upsampling
    rarely lands on the source maximum, so the upsampled map peaks slightly below 1.
    """
    return normalise(scaled[0] if len(scaled) == 1 else torch.stack(scaled).mean(dim=0))
