"""Member CAMs, computed together from one registry (:mod:`metacam.cams.registry`).

``compute_members(model, x, ...)`` takes the model object (:class:`~metacam.models.ModelBundle`:
network, target layer(s), reshape) and runs one forward and one backward pass that every
layer member (the gradient family, EigenCAM/EigenGradCAM, KPCA-CAM, FEM, ShapleyCAM,
FinerCAM, layer plug-ins) and FullGrad read, then the members with passes of their own
(ScoreCAM, AblationCAM, model plug-ins). A layer member's map is computed at each
target layer and the maps combined as pytorch-grad-cam combines them. Every map is
(B, H, W) at input resolution, min-max normalised to [0, 1].
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import torch
from torch import Tensor, nn

# Importing the built-in modules registers their members: DESIGN's 12 in its order,
# then the newer members of the extended groups.
# isort: off
from metacam.cams import gradient, perturbation, eigen, fullgrad, random, newer  # noqa: F401
# isort: on
from metacam.cams.capture import bias_layers, grad_cam_bias_layers, shared_pass
from metacam.cams.registry import (
    LAYER,
    MEMBERS,
    Member,
    MemberError,
    MemberInput,
    MemberOptions,
    check_members,
    layer_member,
    model_member,
    resolve_member,
    resolve_members,
)
from metacam.errors import MetaCAMError
from metacam.models import LayerSpec, ModelBundle, eval_mode
from metacam.progress import NO_PROGRESS, Progress
from metacam.seeds import check_ids, stream_seed

Targets = Tensor | list[int] | int | None


def resolve_methods(methods: Iterable[str] | None) -> list[str]:
    """Validate member names (plug-in paths are imported); None means the default
    groups' 12 members."""
    return [entry.name for entry in resolve_members(methods)]


@dataclass
class MemberResult:
    """compute_members' output with the pass's bookkeeping.

    maps: name -> (B, H, W) in [0, 1]; logits: (B, classes); targets: (B,);
    failures: name -> one-line reason, for members that failed (only with
    ``on_error="collect"``; their maps are absent).
    """

    maps: dict[str, Tensor]
    logits: Tensor
    targets: Tensor
    failures: dict[str, str] = field(default_factory=dict)


@overload
def compute_members(
    model: ModelBundle,
    x: Tensor,
    targets: Targets = None,
    methods: Iterable[str] | None = None,
    **options: Any,
) -> MemberResult: ...


@overload
def compute_members(
    model: nn.Module,
    x: Tensor,
    target_layer: LayerSpec,
    targets: Targets = None,
    methods: Iterable[str] | None = None,
    **options: Any,
) -> MemberResult: ...


def compute_members(model: ModelBundle | nn.Module, x: Tensor, *args: Any, **kwargs: Any) -> MemberResult:
    """All requested members for a batch, with the logits and targets used.

    ``compute_members(model, x, targets=None, methods=None, *, seed=0, image_ids=None,
    options=None, progress=NO_PROGRESS, on_error="raise")`` with ``model`` the model
    object (:class:`~metacam.models.ModelBundle`). The older form
    ``compute_members(net, x, target_layer, targets, methods, ...)`` wraps a bare network
    and its target layer(s) (modules or names) with :meth:`ModelBundle.from_net`, the
    reshape of a recognised transformer included.

    x: (B, C, H, W) normalised input on the net's device.
    targets: None (top-1 per image), an int for all, or one per image.
    methods: member names or plug-in paths (None: the default groups' 12 members).
    seed / image_ids: a seeded member (RandomCAM) draws image b's numbers from the
        stream ``member.<name>`` of (seed, image_ids[b]) (default ids: "0", "1", ...),
        so an image's map does not depend on its batch (metacam.seeds).
    options: memory bounds and variants of the built-ins (MemberOptions).
    progress: told the "member channels" stage (channels x images x target layers x
        members with passes of their own) and the channels done.
    on_error: "raise" (a failing member raises MemberError) or "collect" (its
        reason goes to MemberResult.failures and the other members are computed).
    A member that cannot explain the model (FullGrad on a transformer) is a one-line
    MetaCAMError before any work, whatever ``on_error``.
    """
    if isinstance(model, ModelBundle):
        return _compute(model, x, *args, **kwargs)
    if args:
        target_layer, args = args[0], args[1:]
    elif "target_layer" in kwargs:
        target_layer = kwargs.pop("target_layer")
    else:
        raise TypeError("compute_members(net, x, target_layer, ...) needs the target layer")
    return _compute(as_model(model, target_layer), x, *args, **kwargs)


def as_model(net: nn.Module, target_layer: LayerSpec) -> ModelBundle:
    """The model object of a bare network and its target layer(s), for the older call forms
    (no dummy pass: the shared pass that follows checks the layers' output)."""
    return ModelBundle.from_net(net, target_layer, check=False)


def _compute(
    model: ModelBundle,
    x: Tensor,
    targets: Targets = None,
    methods: Iterable[str] | None = None,
    *,
    seed: int = 0,
    image_ids: Sequence[str] | None = None,
    options: MemberOptions | None = None,
    progress: Progress = NO_PROGRESS,
    on_error: str = "raise",
) -> MemberResult:
    chosen = resolve_members(methods)
    if x.ndim != 4:
        raise MetaCAMError(f"expected a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
    if on_error not in ("raise", "collect"):
        raise ValueError(f"on_error={on_error!r}; use 'raise' or 'collect'")
    check_members(chosen, model)
    options = options or MemberOptions()
    ids = check_ids(image_ids, x.shape[0])
    net = model.net
    fullgrad_layers = None
    if any(m.needs_bias_gradients for m in chosen):
        select = bias_layers if options.fullgrad_bn_subclasses else grad_cam_bias_layers
        fullgrad_layers = select(net)
    size = (x.shape[-2], x.shape[-1])

    maps: dict[str, Tensor] = {}
    failures: dict[str, str] = {}
    with eval_mode(net):
        passes = shared_pass(
            net,
            x,
            model.target_layers,
            targets,
            need_gradients=any(m.needs_gradients for m in chosen),
            fullgrad_layers=fullgrad_layers,
            reshape=model.reshape,
            need_hessian=any(m.needs_hessian for m in chosen),
            scores={name: score for m in chosen for name, score in m.scores.items()},
        )
        own = sum(1 for entry in chosen if entry.own_passes)
        if own:
            channels = sum(p.activations.shape[1] for p in passes)
            progress.stage("member channels", own * x.shape[0] * channels)
        for entry in chosen:
            seeds = tuple(stream_seed(seed, f"member.{entry.name}", i) for i in ids) if entry.seeded else ()
            # A layer member runs at each target layer; any other once (it ignores them).
            layers = range(len(passes)) if entry.resolution == LAYER else range(1)
            inputs = [MemberInput(model, i, x, passes[i], seeds, options, progress.advance) for i in layers]
            try:
                maps[entry.name] = _run(entry, inputs, size)
            except MemberError as error:
                if on_error == "raise":
                    raise
                failures[entry.name] = str(error)
    return MemberResult(maps=maps, logits=passes[0].logits, targets=passes[0].targets, failures=failures)


def _run(entry: Member, inputs: list[MemberInput], size: tuple[int, int]) -> Tensor:
    """One member's finished map; a plug-in's own exception becomes a MemberError."""
    raws = []
    for inp in inputs:
        try:
            raw = entry.compute(inp)
        except (MetaCAMError, torch.cuda.OutOfMemoryError):
            raise
        except Exception as error:
            if not entry.plugin:
                raise
            reason = " ".join(str(error).split()) or type(error).__name__
            raise MemberError(entry.name, f"raised {type(error).__name__}: {reason}") from error
        raws.append(entry.checked(raw, inp.x.shape[0], size, inp.x.device))
    return entry.finish(raws, size)


@overload
def member_cams(
    model: ModelBundle,
    x: Tensor,
    targets: Targets = None,
    methods: Iterable[str] | None = None,
    **options: Any,
) -> dict[str, Tensor]: ...


@overload
def member_cams(
    model: nn.Module,
    x: Tensor,
    target_layer: LayerSpec,
    targets: Targets = None,
    methods: Iterable[str] | None = None,
    **options: Any,
) -> dict[str, Tensor]: ...


def member_cams(model: ModelBundle | nn.Module, x: Tensor, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
    """Member CAM maps: name -> (B, H, W) float in [0, 1] at input resolution.

    ``member_cams(model, x, targets=None, methods=None, **options)`` with the model
    object, or ``member_cams(net, x, target_layer, targets=None, methods=None, ...)``.
    x: (B, C, H, W) normalised input; targets=None explains each image's top-1
    class; methods: member names or plug-in paths (None: the default groups' 12).
    ``options`` are those of :func:`compute_members` (seed, image_ids, options,
    progress).
    """
    return compute_members(model, x, *args, **kwargs).maps  # type: ignore[arg-type]


__all__ = [
    "MEMBERS",
    "Member",
    "MemberError",
    "MemberInput",
    "MemberOptions",
    "MemberResult",
    "as_model",
    "check_members",
    "compute_members",
    "layer_member",
    "member_cams",
    "model_member",
    "resolve_member",
    "resolve_members",
    "resolve_methods",
]
