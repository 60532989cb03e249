"""FullGrad (Srinivas & Fleuret, NeurIPS 2019, arXiv:1905.00780), from the shared backward.

FullGrad = |x * dS/dx| (each input channel normalised) plus, for every layer
with a bias b, sum_k normalise(|b_k * dS/dz_k|) upsampled, where z is the
layer's (pre-activation) output; the total is min-max normalised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from metacam.cams.capture import SharedPass
from metacam.cams.postprocess import normalise, upsample
from metacam.cams.registry import INPUT, MemberInput, member

if TYPE_CHECKING:
    from metacam.models import ModelBundle


def _channel_normalised_sum(maps: Tensor) -> Tensor:
    """Normalise each (image, channel) map to [0, 1], then sum the channels.

    maps: (B, K, h, w) -> (B, h, w).
    """
    batch, channels, height, width = maps.shape
    flat = normalise(maps.reshape(batch * channels, height, width))
    return flat.reshape(batch, channels, height, width).sum(dim=1)


def fullgrad(p: SharedPass, x: Tensor) -> Tensor:
    """FullGrad saliency at input resolution.

    x: (B, C, H, W) the input the pass ran on -> (B, H, W) in [0, 1].
    grad-cam resizes every channel to the input size before summing; bilinear
    resizing is linear, so we sum at each layer's own resolution and resize once.
    """
    assert p.input_gradient is not None, "FullGrad needs the input gradient"
    size = (x.shape[-2], x.shape[-1])
    total = _channel_normalised_sum((p.input_gradient * x).abs())
    for bias, grad in p.bias_terms:
        layer_term = _channel_normalised_sum((bias[None, :, None, None] * grad).abs())
        total = total + upsample(layer_term, size)
    return normalise(total)


def unmodelled_biases(model: ModelBundle) -> str | None:
    """Why FullGrad's map would be wrong for ``model``, or None.

    FullGrad decomposes the output into the input-gradient term and one bias-gradient
    map per convolution and batch-norm layer. Biases added elsewhere on the way to the
    target layers (linear and layer-norm layers acting on tokens or feature maps, as in
    transformers and ConvNeXt) would be left out of the map: the completeness it rests
    on fails. Layers registered after the last target layer (the classifier head) act on
    pooled features and have no map, as in the paper.
    """
    if not model.reshape.is_identity:
        return ("it sums bias-gradient maps of convolution and batch-norm layers, and a "
                "transformer adds its biases in linear and layer-norm layers over tokens")
    modules = list(model.net.named_modules())
    positions = {id(module): i for i, (_, module) in enumerate(modules)}
    last = max(positions[id(layer)] for layer in model.target_layers)
    others = [
        f"{name} ({type(module).__name__})"
        for name, module in modules[:last]
        if not isinstance(module, nn.Conv2d | nn.BatchNorm2d)
        and any(p.endswith("bias") for p, _ in module.named_parameters(recurse=False))
    ]
    if not others:
        return None
    more = f" and {len(others) - 2} more" if len(others) > 2 else ""
    return (f"it sums bias-gradient maps of convolution and batch-norm layers, and this network "
            f"also adds biases in {', '.join(others[:2])}{more}, which its map would leave out")


@member(
    "fullgrad",
    label="FullGrad",
    paper="arXiv:1905.00780",
    resolution=INPUT,
    needs_bias_gradients=True,
    unsupported=unmodelled_biases,
)
def _fullgrad_member(inp: MemberInput) -> Tensor:
    return fullgrad(inp.shared, inp.x)


__all__ = ["fullgrad", "unmodelled_biases"]
