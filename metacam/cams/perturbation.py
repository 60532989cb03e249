"""The perturbation members: ScoreCAM and AblationCAM, batched, with a memory bound.

Both weight the target layer's channels by how the target logit responds when
the input is masked by a channel (ScoreCAM) or when a channel is removed
(AblationCAM). Channels that are constant over the map ("dead" after ReLU) are
handled once instead of once each: their contribution to the map is exactly zero.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metacam.batching import Batches
from metacam.cams.gradient import weighted_sum
from metacam.cams.registry import MemberInput, member
from metacam.reshape import Identity, Reshape

ABLATION_OFFSET = 1e7  # grad-cam's ablation value below the minimum for signed layers


def default_batch_size(device: torch.device, transformer: bool = False) -> int:
    """ScoreCAM's masked images per forward pass: large on GPU; on CPU small for a CNN
    (cache-friendly), larger for a transformer, whose small matrix products run up to 2-3x
    faster per image in batches of 32-64 than of 8 (ViT-Tiny at 224x224, bench/members.py)."""
    if device.type == "cuda":
        return 128
    return 64 if transformer else 8


def default_ablation_batch(device: torch.device) -> int:
    """AblationCAM's ablated copies per pass: only the layers after the target run on
    them (the prefix runs once per chunk), so chunks can be large."""
    return 1024 if device.type == "cuda" else 256


@member(
    "scorecam", label="Score-CAM", paper="arXiv:1910.01279", own_passes=True
)
def _scorecam_member(inp: MemberInput) -> Tensor:
    return scorecam(
        inp.net,
        inp.x,
        inp.shared.activations,
        inp.shared.targets,
        batch_size=inp.options.batch_size or default_batch_size(inp.x.device, not inp.reshape.is_identity),
        progress=inp.progress,
    )


@member(
    "ablationcam",
    label="Ablation-CAM",
    paper="doi:10.1109/WACV45572.2020.9093360",
    own_passes=True,
)
def _ablationcam_member(inp: MemberInput) -> Tensor:
    return ablationcam(
        inp.net,
        inp.x,
        inp.target_layer,
        inp.shared.activations,
        inp.shared.logits,
        inp.shared.targets,
        batch_size=inp.options.ablation_batch or default_ablation_batch(inp.x.device),
        progress=inp.progress,
        reshape=inp.reshape,
        outputs=inp.shared.output,
    )


@torch.no_grad()
def _target_scores(net: nn.Module, inputs: Tensor, target: int) -> Tensor:
    """Target logit of each input. inputs: (N, C, H, W) -> (N,)."""
    return net(inputs)[:, target]


@torch.no_grad()
def scorecam(
    net: nn.Module,
    x: Tensor,
    activations: Tensor,
    targets: Tensor,
    *,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Score-CAM (Wang et al., CVPR-W 2020, arXiv:1910.01279), as grad-cam computes it.

    Each channel, upsampled (bilinear, align_corners=True) and min-max normalised
    with max - min + 1e-8 (finite on constant channels), masks the input; the
    softmax over channels of the masked inputs' target logits weights the channels.

    x: (B, C, H, W); activations: (B, K, h, w); targets: (B,) -> raw map (B, h, w).
    batch_size bounds the masked images per forward pass (memory ~ batch_size x one forward).
    """
    batch, channels = activations.shape[:2]
    size = x.shape[-2:]
    scores = torch.empty(batch, channels, device=x.device, dtype=x.dtype)
    batches = Batches(batch_size, "ScoreCAM")  # halves on CUDA out-of-memory
    zero_score: dict[int, Tensor] = {}
    for b in range(batch):
        target = int(targets[b])
        acts = activations[b]
        constant = acts.flatten(1).amax(1) == acts.flatten(1).amin(1)
        if bool(constant.any()):
            # A constant channel normalises to 0 and masks the input to all zeros.
            if target not in zero_score:
                zero_score[target] = _target_scores(net, torch.zeros_like(x[:1]), target)[0]
            scores[b, constant] = zero_score[target]
        live = torch.nonzero(~constant).flatten()

        def masked(start: int, stop: int, b: int = b, acts: Tensor = acts, live: Tensor = live,
                   target: int = target) -> None:
            idx = live[start:stop]
            up = F.interpolate(acts[idx][None], size=size, mode="bilinear", align_corners=True)[0]
            low = up.flatten(1).amin(1)[:, None, None]
            high = up.flatten(1).amax(1)[:, None, None]
            masks = (up - low) / (high - low + 1e-8)
            scores[b, idx] = _target_scores(net, x[b][None] * masks[:, None], target)
            if progress is not None:
                progress(idx.numel())

        batches.run(live.numel(), masked)
        if progress is not None:
            progress(int(constant.sum()))
    return weighted_sum(torch.softmax(scores, dim=1), activations)


class _ReplaceOutput:
    """A forward hook that swaps the target layer's output for a given batch."""

    def __init__(self) -> None:
        self.replacement: Tensor | None = None

    def __call__(self, _module: nn.Module, _inputs: tuple, _output: Tensor) -> Tensor:
        assert self.replacement is not None
        return self.replacement


def _ablation_value(acts: Tensor) -> float:
    """0 for post-activation (non-negative) maps; grad-cam's min - 1e7 for signed ones."""
    low = float(acts.min())
    return 0.0 if low >= 0 else low - ABLATION_OFFSET


@torch.no_grad()
def ablationcam(
    net: nn.Module,
    x: Tensor,
    target_layer: nn.Module,
    activations: Tensor,
    logits: Tensor,
    targets: Tensor,
    *,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
    reshape: Reshape | None = None,
    outputs: Tensor | None = None,
) -> Tensor:
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020): w_k = (s - s_k) / s, where s_k is
    the target logit with channel k of the map set to the ablation value.

    Only the part of the network after the target layer does real work: the
    input goes through once per chunk (batch of 1) and a hook replaces the target
    layer's output by the chunk of ablated copies, which broadcast against any
    skip tensors from before the layer. Models where that broadcast fails fall
    back to full passes over repeated inputs (grad-cam's strategy).

    On a transformer the ablated maps are written back into the layer's layout by
    ``reshape.inverse`` (tokens, channels-last), the class and distillation tokens
    kept from ``outputs``, the layer's own output (B, ...): a channel is ablated where
    the map shows it.

    x: (B, C, H, W); activations: (B, K, h, w); logits: (B, classes); targets: (B,)
    -> raw map (B, h, w).
    """
    reshape = reshape or Identity()
    batch, channels = activations.shape[:2]
    weights = torch.zeros(batch, channels, device=x.device, dtype=activations.dtype)
    batches = Batches(batch_size, "AblationCAM")  # halves on CUDA out-of-memory
    swap = _ReplaceOutput()
    tail = _Tail(net)
    handle = target_layer.register_forward_hook(swap)
    try:
        for b in range(batch):
            target = int(targets[b])
            acts = activations[b]
            value = _ablation_value(acts)
            original = logits[b, target]
            # A channel already equal to the ablation value everywhere is unchanged
            # by ablation: its weight is 0 (and its activation is 0 when value is 0).
            unchanged = (acts == value).flatten(1).all(1)
            live = torch.nonzero(~unchanged).flatten()

            def ablate(start: int, stop: int, b: int = b, acts: Tensor = acts, live: Tensor = live,
                       value: float = value, original: Tensor = original, target: int = target) -> None:
                idx = live[start:stop]
                ablated = acts.expand(idx.numel(), -1, -1, -1).clone()
                ablated[torch.arange(idx.numel()), idx] = value
                swap.replacement = reshape.inverse(ablated, acts[None] if outputs is None else outputs[b : b + 1])
                scores = tail.scores(x[b][None], idx.numel(), target)
                weights[b, idx] = (original - scores) / original
                if progress is not None:
                    progress(idx.numel())

            batches.run(live.numel(), ablate)
            if progress is not None:
                progress(int(unchanged.sum()))
    finally:
        handle.remove()
    return weighted_sum(weights, activations)


class _Tail:
    """Runs the network after the target layer for a batch of replaced outputs.

    First tries the cheap route (a batch-1 input, the hook widens the batch at the
    target layer); if the model cannot broadcast that, remembers it and runs full
    passes over the repeated input from then on.
    """

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.full_passes = False

    def scores(self, image: Tensor, count: int, target: int) -> Tensor:
        """Target logits for ``count`` replaced outputs. image: (1, C, H, W) -> (count,)."""
        if not self.full_passes:
            try:
                out = self.net(image)
                if out.shape[0] == count:
                    return out[:, target]
            except torch.cuda.OutOfMemoryError:
                raise  # not a shape problem: the caller halves the batch
            except RuntimeError:
                pass  # a layer after the target mixes the batch-1 prefix with the batch
            self.full_passes = True
        return self.net(image.expand(count, -1, -1, -1))[:, target]
