"""The 12 member CAMs, computed together.

``member_cams`` runs one forward and one backward pass for the gradient family,
EigenCAM/EigenGradCAM and FullGrad (all read off the same pass), then the
perturbation members (batched, memory-bounded) and the seeded RandomCAM.
Every map is (B, H, W) at input resolution, min-max normalised to [0, 1].
"""

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metacam.cams import gradient
from metacam.cams.capture import (
    SharedPass,
    bias_layers,
    eval_mode,
    grad_cam_bias_layers,
    shared_pass,
)
from metacam.cams.fullgrad import fullgrad
from metacam.cams.perturbation import ablationcam, scorecam
from metacam.cams.postprocess import finish_layer_cam
from metacam.cams.random import randomcam
from metacam.errors import MetaCAMError


@dataclass(frozen=True)
class Member:
    """A member CAM: its registry name, display label, paper, and what it needs.

    kind: "layer" (a function of the shared pass), "fullgrad", "scorecam",
    "ablationcam" or "random".
    """

    name: str
    label: str
    kind: str
    needs_gradients: bool
    paper: str
    layer_map: Callable[[SharedPass], Tensor] | None = None


MEMBERS: dict[str, Member] = {
    member.name: member
    for member in (
        Member("gradcam", "Grad-CAM", "layer", True, "arXiv:1610.02391", gradient.gradcam),
        Member("hirescam", "HiResCAM", "layer", True, "arXiv:2011.08891", gradient.hirescam),
        Member(
            "gradcam_elementwise",
            "Grad-CAM element-wise",
            "layer",
            True,
            "pytorch-grad-cam",
            gradient.gradcam_elementwise,
        ),
        Member("gradcampp", "Grad-CAM++", "layer", True, "arXiv:1710.11063", gradient.gradcampp),
        Member("xgradcam", "XGrad-CAM", "layer", True, "arXiv:2008.02312", gradient.xgradcam),
        Member(
            "layercam", "LayerCAM", "layer", True, "doi:10.1109/TIP.2021.3089943", gradient.layercam
        ),
        Member("scorecam", "Score-CAM", "scorecam", False, "arXiv:1910.01279"),
        Member(
            "ablationcam",
            "Ablation-CAM",
            "ablationcam",
            False,
            "doi:10.1109/WACV45572.2020.9093360",
        ),
        Member("eigencam", "EigenCAM", "layer", False, "arXiv:2008.00299", gradient.eigencam),
        Member(
            "eigengradcam", "EigenGradCAM", "layer", True, "pytorch-grad-cam", gradient.eigengradcam
        ),
        Member("fullgrad", "FullGrad", "fullgrad", True, "arXiv:1905.00780"),
        Member("randomcam", "RandomCAM", "random", False, "control: U(-1,1) channel weights"),
    )
}


def resolve_methods(methods: Iterable[str] | None) -> list[str]:
    """Validate member names; None means all 12, in registry order."""
    if methods is None:
        return list(MEMBERS)
    chosen = list(dict.fromkeys(methods))
    for name in chosen:
        if name not in MEMBERS:
            near = difflib.get_close_matches(name, MEMBERS, n=3) or list(MEMBERS)
            raise MetaCAMError(f"unknown CAM method {name!r}; did you mean: {', '.join(near)}?")
    if not chosen:
        raise MetaCAMError("no CAM method selected; name at least one of: " + ", ".join(MEMBERS))
    return [name for name in MEMBERS if name in chosen]


@dataclass
class MemberResult:
    """member_cams' output with the pass's bookkeeping.

    maps: name -> (B, H, W) in [0, 1]; logits: (B, classes); targets: (B,).
    """

    maps: dict[str, Tensor]
    logits: Tensor
    targets: Tensor


def default_batch_size(device: torch.device) -> int:
    """ScoreCAM's masked images per forward pass: small on CPU (cache-friendly), large on GPU."""
    return 128 if device.type == "cuda" else 8


def default_ablation_batch(device: torch.device) -> int:
    """AblationCAM's ablated copies per pass: only the layers after the target run on
    them (the prefix runs once per chunk), so chunks can be large."""
    return 1024 if device.type == "cuda" else 256


def compute_members(
    net: nn.Module,
    x: Tensor,
    target_layer: nn.Module,
    targets: Tensor | list[int] | int | None = None,
    methods: Iterable[str] | None = None,
    *,
    seed: int = 0,
    image_seeds: Sequence[int] | None = None,
    batch_size: int | None = None,
    ablation_batch: int | None = None,
    fullgrad_bn_subclasses: bool = True,
    progress: Callable[[int], None] | None = None,
) -> MemberResult:
    """All requested members for a batch, with the logits and targets used.

    x: (B, C, H, W) normalised input on the net's device.
    targets: None (top-1 per image), an int for all, or one per image.
    seed / image_seeds: RandomCAM's weights for image b come from a generator seeded
        with image_seeds[b] (default seed + b); see metacam.roadscore.image_seed.
    batch_size: masked images per forward pass in ScoreCAM (the memory bound:
        ~batch_size forward passes' activations); default 8 on CPU, 128 on CUDA.
    ablation_batch: ablated copies of the target activations per pass of the layers
        after it (memory ~ ablation_batch x the tail's activations); default 256 on
        CPU, 1024 on CUDA.
    fullgrad_bn_subclasses: include BatchNorm2d subclasses (timm's BatchNormAct2d)
        in FullGrad's bias terms; False reproduces grad-cam 1.5, which skips them.
    progress: called with a count of channels done by the perturbation members.
    """
    names = resolve_methods(methods)
    if x.ndim != 4:
        raise MetaCAMError(f"expected a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
    members = [MEMBERS[name] for name in names]
    need_gradients = any(m.needs_gradients and m.kind == "layer" for m in members)
    fullgrad_layers = None
    if "fullgrad" in names:
        fullgrad_layers = bias_layers(net) if fullgrad_bn_subclasses else grad_cam_bias_layers(net)
    size = (x.shape[-2], x.shape[-1])
    batch = batch_size or default_batch_size(x.device)
    chunk = ablation_batch or default_ablation_batch(x.device)

    with eval_mode(net):
        shared = shared_pass(
            net,
            x,
            target_layer,
            targets,
            need_gradients=need_gradients,
            fullgrad_layers=fullgrad_layers,
        )
        raw: dict[str, Tensor] = {}
        maps: dict[str, Tensor] = {}
        for member in members:
            if member.kind == "layer":
                assert member.layer_map is not None
                raw[member.name] = member.layer_map(shared)
            elif member.kind == "fullgrad":
                maps[member.name] = fullgrad(shared, x)
            elif member.kind == "scorecam":
                raw[member.name] = scorecam(
                    net, x, shared.activations, shared.targets, batch_size=batch, progress=progress
                )
            elif member.kind == "ablationcam":
                raw[member.name] = ablationcam(
                    net,
                    x,
                    target_layer,
                    shared.activations,
                    shared.logits,
                    shared.targets,
                    batch_size=chunk,
                    progress=progress,
                )
            else:
                seeds = (
                    image_seeds if image_seeds is not None else [seed + b for b in range(len(x))]
                )
                raw[member.name] = randomcam(shared.activations, seeds)
    for name, layer_map in raw.items():
        maps[name] = finish_layer_cam(layer_map, size)
    return MemberResult(
        maps={name: maps[name] for name in names}, logits=shared.logits, targets=shared.targets
    )


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
    class. ``options`` are those of :func:`compute_members` (seed, image_seeds,
    batch_size, ablation_batch, fullgrad_bn_subclasses, progress).
    """
    return compute_members(net, x, target_layer, targets, methods, **options).maps


__all__ = ["MEMBERS", "Member", "MemberResult", "compute_members", "member_cams", "resolve_methods"]
