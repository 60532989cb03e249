"""Plug-in members for the tests, importable as ``tests.plugins:NAME`` in every worker."""

import torch

import metacam
from metacam.cams import member_cams


@metacam.layer_member(needs_gradients=True)
def gradcam_again(activations, gradients):
    """Grad-CAM re-implemented as a plug-in: channel-mean gradients times activations, summed."""
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(dim=1)


@metacam.layer_member(needs_gradients=False)
def channel_sum(activations, gradients):
    """The summed activations (gradients are not asked for, so they are None)."""
    assert gradients is None
    return activations.sum(dim=1)


@metacam.model_member
def gradcam_via_api(net, x, targets):
    """A model plug-in wrapping a built-in method through the public API."""
    return member_cams(net, x, _layer(net), targets, methods=["gradcam"])["gradcam"]


def _layer(net):
    return net.layer4[-1] if hasattr(net, "layer4") else net.bn2


@metacam.layer_member(needs_gradients=False)
def returns_nan(activations, gradients):
    out = activations.sum(dim=1)
    out[:, 0, 0] = float("nan")
    return out


@metacam.layer_member(needs_gradients=False)
def wrong_shape(activations, gradients):
    return activations  # (B, C, h, w), not (B, h, w)


@metacam.model_member
def not_a_tensor(net, x, targets):
    return [[0.0]]


@metacam.layer_member(needs_gradients=False)
def raises(activations, gradients):
    raise ValueError("this plug-in always fails")


def undecorated(activations, gradients):
    return activations.sum(dim=1)


NOT_A_FUNCTION = 3


@metacam.model_member(seeded=True)
def seeded_noise(net, x, targets, seeds):
    """A seeded model plug-in: one generator per image from its own stream."""
    return torch.stack([torch.rand(x.shape[-2:], generator=torch.Generator().manual_seed(s)) for s in seeds])
