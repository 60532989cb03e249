"""The shared pass: one forward and (at most) one backward serve every member.

:func:`shared_pass` runs the network once with hooks on the target layer (and,
for FullGrad, on every layer with a bias), picks the targets, and
back-propagates the summed target logits once. Everything the gradient family,
EigenCAM and FullGrad need is read off that single pass.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from metacam.errors import MetaCAMError


@dataclass
class SharedPass:
    """What one forward/backward pass leaves behind (B images, K channels).

    activations: (B, K, h, w) target-layer output, detached.
    gradients: (B, K, h, w) d(target logit)/d(activations), or None if not needed.
    logits: (B, num_classes) detached.
    targets: (B,) long, the class explained for each image.
    input_gradient: (B, C, H, W) d(target logit)/dx, only for FullGrad.
    bias_terms: per bias layer, (bias (K_l,), gradient (B, K_l, h_l, w_l)), only for FullGrad.
    """

    activations: Tensor
    gradients: Tensor | None
    logits: Tensor
    targets: Tensor
    input_gradient: Tensor | None = None
    bias_terms: list[tuple[Tensor, Tensor]] = field(default_factory=list)


@contextmanager
def eval_mode(net: nn.Module) -> Iterator[nn.Module]:
    """Put ``net`` in eval mode for the duration, then restore each module's mode."""
    modes = [(module, module.training) for module in net.modules()]
    net.eval()
    try:
        yield net
    finally:
        for module, training in modes:
            module.training = training


def resolve_targets(logits: Tensor, targets: Tensor | list[int] | int | None) -> Tensor:
    """Targets as a (B,) long tensor on the logits' device; None means top-1 per image."""
    batch, num_classes = logits.shape
    if targets is None:
        return logits.argmax(dim=1)
    chosen = torch.as_tensor(targets, dtype=torch.long, device=logits.device).reshape(-1)
    if chosen.numel() == 1 and batch > 1:
        chosen = chosen.expand(batch)
    if chosen.numel() != batch:
        raise MetaCAMError(f"got {chosen.numel()} targets for {batch} images; give one per image")
    if bool(((chosen < 0) | (chosen >= num_classes)).any()):
        raise MetaCAMError(
            f"target classes must lie in 0..{num_classes - 1}, got {chosen.tolist()}"
        )
    return chosen


def bias_layers(net: nn.Module) -> list[nn.Module]:
    """Layers whose bias FullGrad uses: Conv2d with a bias, and every BatchNorm2d
    with a bias *including subclasses* (timm's BatchNormAct2d), unlike grad-cam,
    which tests ``type(layer) in [Conv2d, BatchNorm2d]`` and so misses them."""
    return [
        module
        for module in net.modules()
        if isinstance(module, nn.Conv2d | nn.BatchNorm2d) and module.bias is not None
    ]


def grad_cam_bias_layers(net: nn.Module) -> list[nn.Module]:
    """grad-cam 1.5's selection (exact types only), for the oracle-compatible mode."""
    return [
        module
        for module in net.modules()
        if type(module) in (nn.Conv2d, nn.BatchNorm2d) and module.bias is not None
    ]


def effective_bias(layer: nn.Module) -> Tensor:
    """The bias a layer adds in eval mode, as FullGrad defines it.

    Conv2d: its bias. BatchNorm: beta - running_mean * gamma / sqrt(running_var + eps).
    Returns (K,) detached.
    """
    if isinstance(layer, nn.BatchNorm2d):
        assert layer.running_mean is not None and layer.running_var is not None
        weight = layer.weight if layer.weight is not None else torch.ones_like(layer.running_mean)
        scale = weight / torch.sqrt(layer.running_var + layer.eps)
        return (layer.bias - layer.running_mean * scale).detach()
    bias = layer.bias
    assert isinstance(bias, Tensor)
    return bias.detach()


def _linear_output_site(layer: nn.Module) -> nn.Module | None:
    """For a BatchNorm subclass that applies an activation inside (timm's BatchNormAct2d:
    batch_norm -> drop -> act), the child whose *input* is the BN's linear output.
    None when the layer's own output is the linear output."""
    if type(layer) is nn.BatchNorm2d or not isinstance(layer, nn.BatchNorm2d):
        return None
    for name in ("drop", "act"):
        child = getattr(layer, name, None)
        if isinstance(child, nn.Module):
            return child
    return None


class _GradientStore:
    """Collects gradients through tensor hooks.

    Tensor hooks registered before an in-place op (timm's ReLU6(inplace=True))
    receive the gradient w.r.t. the value *before* that op, which is what we want.
    """

    def __init__(self, count: int) -> None:
        self.values: list[Tensor | None] = [None] * count

    def hook(self, tensor: Tensor, index: int) -> None:
        if tensor.requires_grad:

            def store(grad: Tensor) -> None:
                self.values[index] = grad.detach()

            tensor.register_hook(store)


def shared_pass(
    net: nn.Module,
    x: Tensor,
    target_layer: nn.Module,
    targets: Tensor | list[int] | int | None,
    *,
    need_gradients: bool,
    fullgrad_layers: list[nn.Module] | None = None,
) -> SharedPass:
    """Run the forward (and one backward) pass every shared member reads.

    x: (B, C, H, W) normalised input. Gradients are of the summed target *logits*
    (grad-cam's ClassifierOutputTarget); images do not interact in eval mode, so
    each image's gradient is its own. Model parameters get no ``.grad``.
    """
    captured: dict[str, Tensor] = {}
    versions: dict[str, int] = {}  # the target output's version counter when it was produced
    layers = fullgrad_layers or []
    store = _GradientStore(1 + len(layers))
    handles = []

    def on_target(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        # Clone: a later in-place op would otherwise change the stored activations.
        captured["activations"] = output.detach().clone()
        versions["target"] = output._version
        captured["target_output"] = output
        if need_gradients:
            store.hook(output, 0)

    handles.append(target_layer.register_forward_hook(on_target))
    for index, layer in enumerate(layers, start=1):
        site = _linear_output_site(layer)
        if site is None:
            handles.append(
                layer.register_forward_hook(lambda _m, _i, out, i=index: store.hook(out, i))
            )
        else:
            handles.append(
                site.register_forward_pre_hook(lambda _m, inputs, i=index: store.hook(inputs[0], i))
            )

    with_input_gradient = fullgrad_layers is not None
    try:
        with torch.enable_grad():
            # The input requires grad whenever any gradient is needed: then a graph
            # exists even for frozen weights, and the in-place fallback below can
            # back-propagate to it.
            x_in = x.detach().requires_grad_(with_input_gradient or need_gradients)
            logits = net(x_in)
            if "activations" not in captured:
                raise RuntimeError("the target layer was not called in the forward pass")
            chosen = resolve_targets(logits, targets)
            input_gradient = None
            if need_gradients or with_input_gradient:
                score = logits.gather(1, chosen[:, None]).sum()
                target_output = captured["target_output"]
                modified = target_output._version != versions["target"]
                if with_input_gradient or modified or not target_output.requires_grad:
                    # Back-propagate to the input: needed by FullGrad, and the safe
                    # route when the target output was later modified in place.
                    (input_gradient,) = torch.autograd.grad(score, x_in, allow_unused=True)
                else:
                    # Stop the backward at the target layer: nothing earlier is needed.
                    (store.values[0],) = torch.autograd.grad(score, target_output)
    finally:
        for handle in handles:
            handle.remove()

    gradients = store.values[0] if need_gradients else None
    if need_gradients and gradients is None:
        raise RuntimeError("no gradient reached the target layer; is it used by the output?")
    bias_terms = []
    for index, layer in enumerate(layers, start=1):
        grad = store.values[index]
        if grad is not None:
            bias_terms.append((effective_bias(layer), grad))
    return SharedPass(
        activations=captured["activations"],
        gradients=gradients,
        logits=logits.detach(),
        targets=chosen,
        input_gradient=None if input_gradient is None else input_gradient.detach(),
        bias_terms=bias_terms,
    )
