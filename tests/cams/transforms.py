"""User-side code for the transformer tests: reshape transforms named
``tests.cams.transforms:NAME`` and a ViT MetaCAM does not recognise."""

import timm
import torch
from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform
from torch import nn

from tests.cams.conftest import TINY_VIT


def vit_grid(tensor: torch.Tensor) -> torch.Tensor:
    """grad-cam's ViT transform for a 4x4 patch grid: (B, 1 + 16, C) -> (B, C, 4, 4)."""
    return vit_reshape_transform(tensor, 4, 4)


def vit_grid_with_inverse(tensor: torch.Tensor) -> torch.Tensor:
    return vit_grid(tensor)


def _zeros_inverse(grid: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return torch.zeros(grid.shape[0], *output.shape[1:])


vit_grid_with_inverse.inverse = _zeros_inverse  # type: ignore[attr-defined]


class WrappedViT(nn.Module):
    """A tiny timm ViT inside a module of its own: not a family MetaCAM recognises."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=num_classes,
                                     **TINY_VIT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)


def wrapped_vit(num_classes: int = 10) -> nn.Module:
    return WrappedViT(num_classes)
