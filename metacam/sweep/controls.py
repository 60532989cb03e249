"""The null controls: maps that explain nothing, scored exactly like the methods.

One registry, :data:`CONTROLS` (name -> :class:`NullControl`), in the order of
:data:`metacam.schema.CONTROL_METHODS`; the experiments and the scoring dispatch
through it, never by name. A control's ``make`` builds one (B, H, W) map per item:

* ``shuffled`` — the plain MetaCAM comparator map of *another* image of the study
  (realistic structure, wrong image); it declares ``uses_comparator``;
* ``smooth_noise`` — a seeded smooth random field that never looks at the image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from metacam.config import PLAIN_K
from metacam.ensemble import metacam_map
from metacam.evaluation.roadscore import Probe
from metacam.schema import CONTROL_METHODS
from metacam.seeds import generator

SMOOTH_GRID = 7  # the smooth-noise control: a 7 x 7 Gaussian field, upsampled


@dataclass(frozen=True)
class ControlInput:
    """What a control map is made from, for B items.

    probe: the items' images, targets and ids; members: the experiment's member maps,
    name -> (B, H, W) (the comparator's, for a control that uses it); sources: each
    item's image entry; study: every image entry of the study, in order;
    comparator_of: an entry -> the plain comparator map (H, W) of that image for its
    top-1 class, or None when it cannot be read.
    """

    probe: Probe
    members: Mapping[str, Tensor]
    sources: Sequence[str]
    study: Sequence[str]
    comparator_of: Callable[[str], Tensor | None]


@dataclass(frozen=True)
class NullControl:
    """A registered null control: its map maker and whether it is built from the
    comparator's members (then the experiment needs them)."""

    name: str
    make: Callable[[ControlInput], Tensor]
    uses_comparator: bool


def smooth_noise(inp: ControlInput) -> Tensor:
    """The smooth-noise control: per image a seeded 7 x 7 Gaussian field (stream
    ``control.smooth_noise``), bilinearly upsampled and min-max normalised. It depends on
    the image's id only, never on its pixels. -> (B, H, W)."""
    probe = inp.probe
    fields = [
        torch.randn(1, 1, SMOOTH_GRID, SMOOTH_GRID, generator=generator(probe.seed, "control.smooth_noise", i))
        for i in probe.image_ids
    ]
    size = (probe.x.shape[-2], probe.x.shape[-1])
    up = F.interpolate(torch.cat(fields), size=size, mode="bilinear", align_corners=False)[:, 0]
    low = up.flatten(1).amin(1)[:, None, None]
    high = up.flatten(1).amax(1)[:, None, None]
    return ((up - low) / (high - low)).to(probe.x.device)


def shuffled(inp: ControlInput) -> Tensor:
    """The shuffled control: the plain MetaCAM comparator map of *another* image of the
    study (the next one in the image list, for its top-1 class); in a one-image study, or
    when that image is unreadable, a fixed seeded permutation of this image's own
    comparator map (stream ``control.shuffled``). -> (B, H, W)."""
    probe = inp.probe
    own = metacam_map(dict(inp.members), PLAIN_K)
    out = torch.empty_like(own)
    for i, source in enumerate(inp.sources):
        position = inp.study.index(source) if source in inp.study else -1
        partner = inp.study[(position + 1) % len(inp.study)] if len(inp.study) > 1 and position >= 0 else None
        found = inp.comparator_of(partner) if partner is not None else None
        if found is not None:
            out[i] = found
        else:
            order = torch.randperm(own[i].numel(), generator=generator(probe.seed, "control.shuffled",
                                                                       probe.image_ids[i]))
            out[i] = own[i].flatten()[order.to(own.device)].view_as(own[i])
    return out


CONTROLS: dict[str, NullControl] = {
    control.name: control
    for control in (NullControl("shuffled", shuffled, uses_comparator=True),
                    NullControl("smooth_noise", smooth_noise, uses_comparator=False))
}
assert tuple(CONTROLS) == CONTROL_METHODS, "the control registry and metacam.schema.CONTROL_METHODS differ"
