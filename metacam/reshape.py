"""How a target layer's output becomes the ``(B, C, h, w)`` map CAM members read, and back.

A CNN layer already outputs ``(B, C, h, w)`` (:class:`Identity`). A vision transformer
does not: a ViT/DeiT block outputs tokens ``(B, T, C)``, its class, distillation and
register tokens first, then one token per patch in row-major order (:class:`Tokens`);
a Swin block outputs ``(B, h, w, C)`` (:class:`ChannelsLast`). A :class:`Reshape` is
called on the layer's output to get the map (pytorch-grad-cam's ``reshape_transform``:
an instance can be passed to grad-cam as one) and its :meth:`Reshape.inverse` writes a
map back into the layer's layout, for members that replace the layer's output
(AblationCAM).

The families MetaCAM recognises (:data:`FAMILIES`: timm's ViT/DeiT and Swin,
torchvision's ``vit_*`` and ``swin_*``) get their reshape and default target layer, the
last block's first norm as pytorch-grad-cam documents, without user code; anything
else takes a user function, ``reshape="package.module:fn"`` (:func:`user_reshape`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from metacam.errors import MetaCAMError
from metacam.imports import import_object

IDENTITY_NAMES = ("none", "identity")  # reshape= spellings of "the output is already a map"


class Reshape:
    """A layer output -> ``(B, C, h, w)`` map transform with its inverse.

    ``name`` identifies it in errors and in the member-cache key. Subclasses are plain
    dataclasses (picklable, comparable), not closures.
    """

    name: str = "reshape"

    def __call__(self, output: Tensor) -> Tensor:
        """The layer's output -> the map ``(B, C, h, w)`` members read."""
        raise NotImplementedError

    def inverse(self, grid: Tensor, output: Tensor) -> Tensor:
        """Maps back into the layer's layout: ``grid (N, C, h, w)`` with ``output`` the layer's
        own output for one image ``(1, ...)`` or for N -> ``(N, ...)``. Whatever the map does
        not cover (class and distillation tokens) is taken from ``output``."""
        raise NotImplementedError

    @property
    def is_identity(self) -> bool:
        return False


def _not_a_map(output: Tensor, what: str) -> MetaCAMError:
    return MetaCAMError(
        f"the target layer outputs shape {tuple(output.shape)}, not {what}; choose a layer "
        f"that does, or pass reshape='package.module:fn' turning its output into (B, C, h, w)"
    )


@dataclass(frozen=True)
class Identity(Reshape):
    """A CNN layer: its output ``(B, C, h, w)`` is the map."""

    name: str = "identity"

    def __call__(self, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor) or output.ndim != 4:
            raise _not_a_map(output, "a (B, C, h, w) feature map")
        return output

    def inverse(self, grid: Tensor, output: Tensor) -> Tensor:
        return grid

    @property
    def is_identity(self) -> bool:
        return True


@dataclass(frozen=True)
class Tokens(Reshape):
    """ViT/DeiT tokens ``(B, prefix + h*w, C)`` -> ``(B, C, h, w)``: the ``prefix`` class,
    distillation and register tokens are dropped, the patch tokens laid out row-major
    on the ``grid`` ``(h, w)`` (pytorch-grad-cam's ``vit_reshape_transform``)."""

    prefix: int
    grid: tuple[int, int]
    name: str = "tokens"

    def __call__(self, output: Tensor) -> Tensor:
        height, width = self.grid
        if output.ndim != 3 or output.shape[1] != self.prefix + height * width:
            raise _not_a_map(
                output, f"(B, {self.prefix} + {height}x{width} tokens, C) (this model's patch grid)"
            )
        patches = output[:, self.prefix :, :]
        return patches.reshape(output.shape[0], height, width, output.shape[2]).permute(0, 3, 1, 2)

    def inverse(self, grid: Tensor, output: Tensor) -> Tensor:
        tokens = grid.flatten(2).transpose(1, 2)  # (N, h*w, C)
        if self.prefix == 0:
            return tokens
        prefix = output[:, : self.prefix, :].expand(grid.shape[0], -1, -1)
        return torch.cat([prefix.to(tokens.dtype), tokens], dim=1)


@dataclass(frozen=True)
class ChannelsLast(Reshape):
    """Swin's ``(B, h, w, C)`` -> ``(B, C, h, w)`` (pytorch-grad-cam's ``swinT_reshape_transform``
    on timm's and torchvision's channels-last blocks)."""

    name: str = "channels_last"

    def __call__(self, output: Tensor) -> Tensor:
        if output.ndim != 4:
            raise _not_a_map(output, "(B, h, w, C)")
        return output.permute(0, 3, 1, 2)

    def inverse(self, grid: Tensor, output: Tensor) -> Tensor:
        return grid.permute(0, 2, 3, 1)


@dataclass(frozen=True)
class UserReshape(Reshape):
    """A user's ``package.module:fn``, ``fn(output) -> (B, C, h, w)``.

    Its inverse is ``fn.inverse(grid, output)`` when the function has that attribute;
    otherwise it is derived by autograd from J, the Jacobian of ``fn``:
    ``J^T grid + output * (1 - J^T 1)``. For what reshape transforms are (selections,
    permutations and reshapes of the output's entries, each read at most once, so J has
    0/1 entries) this writes every map value back where ``fn`` read it and keeps the rest
    of ``output``, exactly (no float rounding: each entry is one value times 1 plus zeros).
    """

    name: str

    @property
    def function(self) -> Callable[..., Any]:
        return _imported(self.name)

    def __call__(self, output: Tensor) -> Tensor:
        grid = self.function(output)
        if not isinstance(grid, Tensor) or grid.ndim != 4:
            got = tuple(grid.shape) if isinstance(grid, Tensor) else type(grid).__name__
            raise MetaCAMError(f"reshape {self.name} returned {got} for an output of shape "
                               f"{tuple(output.shape)}; it must return (B, C, h, w)")
        return grid

    def inverse(self, grid: Tensor, output: Tensor) -> Tensor:
        function = self.function
        explicit = getattr(function, "inverse", None)
        if callable(explicit):
            return explicit(grid, output)
        base = output.expand(grid.shape[0], *output.shape[1:]).detach().clone()
        with torch.enable_grad():
            base.requires_grad_(True)
            mapped = function(base)
            (placed,) = torch.autograd.grad(mapped, base, grad_outputs=grid, retain_graph=True)
            (read,) = torch.autograd.grad(mapped, base, grad_outputs=torch.ones_like(grid))
        return placed + base.detach() * (1 - read)


@functools.lru_cache(maxsize=16)
def _imported(spec: str) -> Callable[..., Any]:
    """A user's reshape function, imported once per process (a ``file.py:fn`` executes its file)."""
    return import_object(spec, "reshape")


def user_reshape(spec: str) -> Reshape:
    """``reshape=`` as given by a user: ``"none"``/``"identity"`` or ``package.module:fn``
    (imported now, so a bad path is a one-line error before any work)."""
    text = spec.strip()
    if text.lower() in IDENTITY_NAMES:
        return Identity()
    if ":" not in text:
        raise MetaCAMError(
            f"reshape {spec!r}: give 'package.module:function' (layer output -> (B, C, h, w)) "
            f"or 'none'"
        )
    _imported(text)
    return UserReshape(text)


# --- the recognised families ----------------------------------------------------


@dataclass(frozen=True)
class Family:
    """An architecture family MetaCAM explains without user code.

    ``matches(net)``; ``default_layer(net)``: the dotted name of its default target
    layer; ``reshape(net)``: the transform of that layer's output.
    """

    name: str
    matches: Callable[[nn.Module], bool]
    default_layer: Callable[[Any], str]  # the net: Any, as each reads its own attributes
    reshape: Callable[[Any], Reshape]


def _loaded_class(module: str, name: str) -> type | None:
    """``module.name`` if ``module`` is already imported (a net of that class implies it is)."""
    loaded = sys.modules.get(module)
    return getattr(loaded, name, None) if loaded is not None else None


def _is_instance(net: nn.Module, *classes: tuple[str, str]) -> bool:
    found = tuple(c for c in (_loaded_class(m, n) for m, n in classes) if c is not None)
    return bool(found) and isinstance(net, found)


def _last(sequence: Any) -> int:
    return len(sequence) - 1


def _timm_vit_grid(net: Any) -> Reshape:
    height, width = (int(s) for s in net.patch_embed.grid_size)
    return Tokens(int(net.num_prefix_tokens), (height, width))


def _torchvision_vit_grid(net: Any) -> Reshape:
    side = int(net.image_size) // int(net.patch_size)
    return Tokens(1, (side, side))


FAMILIES: tuple[Family, ...] = (
    Family(
        "timm ViT/DeiT",  # VisionTransformer and its subclasses (distilled DeiT, ...)
        lambda net: _is_instance(net, ("timm.models.vision_transformer", "VisionTransformer")),
        lambda net: f"blocks.{_last(net.blocks)}.norm1",
        _timm_vit_grid,
    ),
    Family(
        "timm Swin",
        lambda net: _is_instance(net, ("timm.models.swin_transformer", "SwinTransformer"),
                                 ("timm.models.swin_transformer_v2", "SwinTransformerV2")),
        lambda net: f"layers.{_last(net.layers)}.blocks.{_last(net.layers[-1].blocks)}.norm1",
        lambda net: ChannelsLast(),
    ),
    Family(
        "torchvision ViT",
        lambda net: _is_instance(net, ("torchvision.models.vision_transformer", "VisionTransformer")),
        lambda net: f"encoder.layers.{list(net.encoder.layers._modules)[-1]}.ln_1",
        _torchvision_vit_grid,
    ),
    Family(
        "torchvision Swin",
        lambda net: _is_instance(net, ("torchvision.models.swin_transformer", "SwinTransformer")),
        lambda net: f"features.{_last(net.features)}.{_last(net.features[-1])}.norm1",
        lambda net: ChannelsLast(),
    ),
)


def family_of(net: nn.Module) -> Family | None:
    """The recognised family of ``net``, or None (a CNN, or an architecture to reshape yourself)."""
    return next((family for family in FAMILIES if family.matches(net)), None)


__all__ = [
    "FAMILIES",
    "ChannelsLast",
    "Family",
    "Identity",
    "Reshape",
    "Tokens",
    "UserReshape",
    "family_of",
    "user_reshape",
]
