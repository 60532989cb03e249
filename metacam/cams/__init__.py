"""Member CAMs, computed together from one registry (:mod:`metacam.cams.registry`).

``member_cams`` runs one forward and (at most) one backward pass that every
layer member (the gradient family, EigenCAM/EigenGradCAM, layer plug-ins) and
FullGrad read, then the members with passes of their own (ScoreCAM, AblationCAM,
model plug-ins). Every map is (B, H, W) at input resolution, min-max normalised
to [0, 1].
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

# Importing the built-in modules registers their members, in DESIGN's order.
# isort: off
from metacam.cams import gradient, perturbation, eigen, fullgrad, random  # noqa: F401
# isort: on
from metacam.cams.capture import bias_layers, eval_mode, grad_cam_bias_layers, shared_pass
from metacam.cams.registry import (
    MEMBERS,
    Member,
    MemberError,
    MemberInput,
    MemberOptions,
    layer_member,
    model_member,
    resolve_member,
    resolve_members,
)
from metacam.errors import MetaCAMError
from metacam.progress import NO_PROGRESS, Progress
from metacam.seeds import check_ids, stream_seed


def resolve_methods(methods: Iterable[str] | None) -> list[str]:
    """Validate member names (plug-in paths are imported); None means the 12 built-ins."""
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


def compute_members(
    net: nn.Module,
    x: Tensor,
    target_layer: nn.Module,
    targets: Tensor | list[int] | int | None = None,
    methods: Iterable[str] | None = None,
    *,
    seed: int = 0,
    image_ids: Sequence[str] | None = None,
    options: MemberOptions | None = None,
    progress: Progress = NO_PROGRESS,
    on_error: str = "raise",
) -> MemberResult:
    """All requested members for a batch, with the logits and targets used.

    x: (B, C, H, W) normalised input on the net's device.
    targets: None (top-1 per image), an int for all, or one per image.
    seed / image_ids: a seeded member (RandomCAM) draws image b's numbers from the
        stream ``member.<name>`` of (seed, image_ids[b]) (default ids: "0", "1", ...),
        so an image's map does not depend on its batch (metacam.seeds).
    options: memory bounds and variants of the built-ins (MemberOptions).
    progress: told the "member channels" stage (channels x images x members with passes
        of their own) and the channels done.
    on_error: "raise" (a failing member raises MemberError) or "collect" (its
        reason goes to MemberResult.failures and the other members are computed).
    """
    chosen = resolve_members(methods)
    if x.ndim != 4:
        raise MetaCAMError(f"expected a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
    if on_error not in ("raise", "collect"):
        raise ValueError(f"on_error={on_error!r}; use 'raise' or 'collect'")
    options = options or MemberOptions()
    ids = check_ids(image_ids, x.shape[0])
    fullgrad_layers = None
    if any(m.needs_bias_gradients for m in chosen):
        select = bias_layers if options.fullgrad_bn_subclasses else grad_cam_bias_layers
        fullgrad_layers = select(net)
    size = (x.shape[-2], x.shape[-1])

    maps: dict[str, Tensor] = {}
    failures: dict[str, str] = {}
    with eval_mode(net):
        shared = shared_pass(
            net,
            x,
            target_layer,
            targets,
            need_gradients=any(m.needs_gradients for m in chosen),
            fullgrad_layers=fullgrad_layers,
        )
        own = sum(1 for entry in chosen if entry.own_passes)
        if own:
            progress.stage("member channels", own * shared.activations.shape[0] * shared.activations.shape[1])
        for entry in chosen:
            seeds = tuple(stream_seed(seed, f"member.{entry.name}", i) for i in ids) if entry.seeded else ()
            inp = MemberInput(net, x, target_layer, shared, seeds, options, progress.advance)
            try:
                maps[entry.name] = _run(entry, inp, size)
            except MemberError as error:
                if on_error == "raise":
                    raise
                failures[entry.name] = str(error)
    return MemberResult(maps=maps, logits=shared.logits, targets=shared.targets, failures=failures)


def _run(entry: Member, inp: MemberInput, size: tuple[int, int]) -> Tensor:
    """One member's finished map; a plug-in's own exception becomes a MemberError."""
    try:
        raw = entry.compute(inp)
    except (MetaCAMError, torch.cuda.OutOfMemoryError):
        raise
    except Exception as error:
        if not entry.plugin:
            raise
        reason = " ".join(str(error).split()) or type(error).__name__
        raise MemberError(entry.name, f"raised {type(error).__name__}: {reason}") from error
    return entry.finish(raw, inp.x.shape[0], size, inp.x.device)


def member_cams(
    net: nn.Module,
    x: Tensor,
    target_layer: nn.Module,
    targets: Tensor | list[int] | int | None = None,
    methods: Iterable[str] | None = None,
    **options,
) -> dict[str, Tensor]:
    """Member CAM maps: name -> (B, H, W) float in [0, 1] at input resolution.

    x: (B, C, H, W) normalised input; targets=None explains each image's top-1
    class; methods: member names or plug-in paths (None: the 12 built-ins).
    ``options`` are those of :func:`compute_members` (seed, image_ids, options,
    progress).
    """
    return compute_members(net, x, target_layer, targets, methods, **options).maps


__all__ = [
    "MEMBERS",
    "Member",
    "MemberError",
    "MemberInput",
    "MemberOptions",
    "MemberResult",
    "compute_members",
    "layer_member",
    "member_cams",
    "model_member",
    "resolve_member",
    "resolve_members",
    "resolve_methods",
]
