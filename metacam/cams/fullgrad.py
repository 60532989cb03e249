"""FullGrad (Srinivas & Fleuret, NeurIPS 2019, arXiv:1905.00780), from the shared backward.

FullGrad = |x * dS/dx| (each input channel normalised) plus, for every layer
with a bias b, sum_k normalise(|b_k * dS/dz_k|) upsampled, where z is the
layer's (pre-activation) output; the total is min-max normalised.
"""

from torch import Tensor

from metacam.cams.capture import SharedPass
from metacam.cams.postprocess import normalise, upsample
from metacam.cams.registry import INPUT, MemberInput, member


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


@member(
    "fullgrad",
    label="FullGrad",
    paper="arXiv:1905.00780",
    resolution=INPUT,
    needs_bias_gradients=True,
)
def _fullgrad_member(inp: MemberInput) -> Tensor:
    return fullgrad(inp.shared, inp.x)


__all__ = ["fullgrad"]
