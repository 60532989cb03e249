"""The shared pass: one forward and one backward serve every member.

:func:`shared_pass` runs the network once with hooks on the target layers (and,
for FullGrad, on every layer with a bias), picks the targets, and
back-propagates the summed target logits once. Everything the gradient family,
EigenCAM and FullGrad need is read off that single pass; ShapleyCAM's
Hessian-vector product and FinerCAM's contrast score each add a backward over
the part of the network after the target layers, never another forward.
"""

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from metacam.errors import MetaCAMError


@dataclass
class SharedPass:
    """What one forward/backward pass leaves behind at one target layer (B images, K channels).

    activations: (B, K, h, w) the layer's output as a map (after the model's reshape), detached.
    output: the layer's own output, detached (what ``reshape.inverse`` writes maps back into).
    gradients: (B, K, h, w) d(target logit)/d(map), or None if not needed.
    hessian_product: (B, K, h, w) the Hessian of the target logit w.r.t. the layer's output
        times that output, H·A (ShapleyCAM's second-order term), or None.
    score_gradients: per extra score a member declares (FinerCAM's contrast), its
        (B, K, h, w) gradient w.r.t. the map.
    logits: (B, num_classes) detached; targets: (B,) long, the class explained per image.
    input_gradient: (B, C, H, W) d(target logit)/dx, only for FullGrad.
    bias_terms: per bias layer, (bias (K_l,), gradient (B, K_l, h_l, w_l)), only for FullGrad.
    The last four are the same objects for every target layer of one pass.
    """

    activations: Tensor
    gradients: Tensor | None
    logits: Tensor
    targets: Tensor
    input_gradient: Tensor | None = None
    bias_terms: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    output: Tensor | None = None
    hessian_product: Tensor | None = None
    score_gradients: dict[str, Tensor] = field(default_factory=dict)


Score = Callable[[Tensor, Tensor], Tensor]
"""An extra score a member differentiates instead of the target logit:
``score(logits (B, classes), targets (B,)) -> (B,)``, differentiable."""


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
    """Collects gradients through tensor hooks, for backward passes that run to the input.

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


def _math_attention() -> AbstractContextManager[Any]:
    """Scaled dot-product attention's plain-math kernel: the fused CPU kernels have no
    second derivative, which ShapleyCAM's Hessian-vector product needs."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: no fused kernel to avoid
        return nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


def shared_pass(
    net: nn.Module,
    x: Tensor,
    target_layers: nn.Module | Sequence[nn.Module],
    targets: Tensor | list[int] | int | None,
    *,
    need_gradients: bool,
    fullgrad_layers: list[nn.Module] | None = None,
    reshape: Callable[[Tensor], Tensor] | None = None,
    need_hessian: bool = False,
    scores: Mapping[str, Score] | None = None,
) -> list[SharedPass]:
    """Run the forward (and the backward) pass every shared member reads; one
    :class:`SharedPass` per target layer, in order.

    x: (B, C, H, W) normalised input. Gradients are of the summed target *logits*
    (grad-cam's ClassifierOutputTarget); images do not interact in eval mode, so
    each image's gradient is its own. One backward serves every layer; the
    Hessian-vector products (``need_hessian``) and each extra score in ``scores``
    add one more backward over the part of the network after the layers, none
    repeats the forward. ``reshape`` turns each layer's output into its map
    (default: the output is one). Model parameters get no ``.grad``.
    """
    layers = [target_layers] if isinstance(target_layers, nn.Module) else list(target_layers)
    reshape = reshape or (lambda output: output)
    scores = dict(scores or {})
    count = len(layers)
    outputs: list[Tensor | None] = [None] * count
    raw: list[Tensor | None] = [None] * count
    versions = [0] * count  # each output's version counter when it was produced
    biases = fullgrad_layers or []
    store = _GradientStore(count + len(biases))
    need_layer_gradients = need_gradients or need_hessian or bool(scores)
    handles = []

    def on_target(index: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            if outputs[index] is not None:
                raise MetaCAMError(
                    f"target layer {index + 1} ({type(_module).__name__}) runs more than once in a "
                    f"forward pass, so its output is ambiguous; choose another layer"
                )
            # Clone: a later in-place op would otherwise change the stored activations.
            raw[index] = output.detach().clone()
            versions[index] = output._version
            outputs[index] = output
            if need_layer_gradients:
                store.hook(output, index)

        return hook

    for index, layer in enumerate(layers):
        handles.append(layer.register_forward_hook(on_target(index)))
    for index, layer in enumerate(biases, start=count):
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
    gradients: Sequence[Tensor | None] = [None] * count
    products: list[Tensor | None] = [None] * count
    extra: dict[str, Sequence[Tensor | None]] = {}
    input_gradient = None
    bias_gradients: list[Tensor | None] = [None] * len(biases)
    try:
        with torch.enable_grad(), _math_attention() if need_hessian else nullcontext():
            # The input requires grad whenever any gradient is needed: then a graph
            # exists even for frozen weights, and the backward can always reach it.
            x_in = x.detach().requires_grad_(with_input_gradient or need_layer_gradients)
            logits = net(x_in)
            if any(output is None for output in outputs):
                raise RuntimeError("a target layer was not called in the forward pass")
            chosen = resolve_targets(logits, targets)
            live = [o for o in outputs if o is not None]
            # Stop the backward at the target layers when nothing earlier is needed; go on
            # to the input (hooks collect the layers' gradients) for FullGrad, and when a
            # layer's output was later modified in place or is not part of the graph.
            direct = all(
                o.requires_grad and o._version == v for o, v in zip(live, versions, strict=True)
            )

            # Keep the graph only when another backward follows (the common case has one).
            retain = need_hessian or bool(scores)

            def layer_gradients(score: Tensor, *, create_graph: bool = False) -> Sequence[Tensor | None]:
                if direct:
                    return torch.autograd.grad(score, live, retain_graph=retain, create_graph=create_graph)
                store.values[:count] = [None] * count
                torch.autograd.grad(score, x_in, retain_graph=retain, allow_unused=True)
                return list(store.values[:count])

            target_score = logits.gather(1, chosen[:, None]).sum()
            if need_hessian:
                if not direct:
                    raise MetaCAMError(
                        "a member needing second derivatives (shapleycam) cannot read a target "
                        "layer whose output the next layer modifies in place; choose another layer"
                    )
                first = layer_gradients(target_score, create_graph=True)
                products = [_hessian_product(g, o) for g, o in zip(first, live, strict=True)]
                gradients = [None if g is None else g.detach() for g in first]
            if with_input_gradient:
                store.values[:count] = [None] * count
                (input_gradient,) = torch.autograd.grad(
                    target_score, x_in, retain_graph=retain, allow_unused=True
                )
                # Read the bias gradients now: a later backward (an extra score's) fires
                # the hooks of the bias layers after the target layers again.
                bias_gradients = list(store.values[count:])
                if need_gradients and not need_hessian:
                    gradients = list(store.values[:count])
            elif need_gradients and not need_hessian:
                gradients = layer_gradients(target_score)
            for name, score in scores.items():
                extra[name] = layer_gradients(score(logits, chosen).sum())
    finally:
        for handle in handles:
            handle.remove()

    if need_gradients and any(g is None for g in gradients):
        raise RuntimeError("no gradient reached a target layer; is it used by the output?")
    bias_terms = [
        (effective_bias(layer), grad)
        for layer, grad in zip(biases, bias_gradients, strict=True)
        if grad is not None
    ]
    shared = {
        "logits": logits.detach(),
        "targets": chosen,
        "input_gradient": None if input_gradient is None else input_gradient.detach(),
        "bias_terms": bias_terms,
    }

    def as_map(tensor: Tensor | None) -> Tensor | None:
        return None if tensor is None else reshape(tensor.detach())

    passes = []
    for index in range(count):
        output = raw[index]
        assert output is not None
        passes.append(
            SharedPass(
                activations=reshape(output),
                gradients=as_map(gradients[index]) if need_gradients else None,
                output=output,
                hessian_product=as_map(products[index]),
                score_gradients={
                    name: _required(as_map(values[index]), name) for name, values in extra.items()
                },
                **shared,  # type: ignore[arg-type]
            )
        )
    return passes


def _hessian_product(gradient: Tensor | None, output: Tensor) -> Tensor:
    """H·A for one layer: the derivative of (gradient · A) w.r.t. the output A, with A held
    fixed as the vector (grad-cam's ShapleyCAM). Zero where the gradient does not depend
    on the output (a network that is linear after the layer)."""
    if gradient is None or not gradient.requires_grad:
        return torch.zeros_like(output)
    (product,) = torch.autograd.grad(
        gradient, output, grad_outputs=output.detach(), retain_graph=True, allow_unused=True
    )
    return torch.zeros_like(output) if product is None else product.detach()


def _required(tensor: Tensor | None, name: str) -> Tensor:
    if tensor is None:
        raise RuntimeError(f"no gradient of {name}'s score reached a target layer")
    return tensor
