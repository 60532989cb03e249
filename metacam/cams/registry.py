"""The one registry of member CAMs: built-ins and plug-ins alike.

A member is a function plus what it declares it needs; nothing outside its
definition tests its name. Three decorators make members:

* :func:`layer_member` — ``fn(activations, gradients) -> (B, h, w)``, read off the
  shared forward/backward pass at the target layer (``gradients`` is None unless
  ``needs_gradients``); metacam finishes the raw map like every layer CAM: ReLU,
  min-max, bilinear upsample to the input size, min-max.
* :func:`model_member` — ``fn(net, x, targets) -> (B, H, W)`` at input resolution,
  running whatever passes it likes (Captum, grad-cam, your own perturbation
  method); metacam min-max normalises the map.
* :func:`member` — the general form used by built-ins that need more (ScoreCAM's
  own passes, FullGrad's bias gradients, RandomCAM's seed): ``fn(MemberInput)``.

Built-ins pass ``name=`` and are registered when their module is imported.
A plug-in is decorated without a name and is named by its import path,
``package.module:function``: :func:`resolve_member` imports it on first use (in
every worker process), checks the decorator and registers it under that path.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from metacam import __version__
from metacam.cams.capture import Score, SharedPass
from metacam.cams.postprocess import combine_layer_maps, normalise, scale_layer_map
from metacam.errors import MetaCAMError
from metacam.imports import import_object
from metacam.reshape import Reshape

if TYPE_CHECKING:
    from metacam.models import ModelBundle

_ATTRIBUTE = "__metacam_member__"
LAYER, INPUT = "layer", "input"  # the resolution of a member's raw map


class MemberError(MetaCAMError):
    """A member that failed or returned an unusable map; names the member."""

    def __init__(self, member: str, problem: str) -> None:
        super().__init__(f"member {member}: {problem}")
        self.member = member
        self.problem = problem


@dataclass  # not frozen: it is also the sweep's Hydra schema node ``members``
class MemberOptions:
    """Knobs of the built-in members that bound memory or select a variant.

    batch_size: ScoreCAM's masked images per forward pass (None: 8 on CPU, 64 for a
        transformer on CPU, 128 on CUDA).
    ablation_batch: AblationCAM's ablated copies per pass of the layers after the
        target (None: 256 on CPU, 1024 on CUDA).
    fullgrad_bn_subclasses: include BatchNorm2d subclasses (timm's BatchNormAct2d)
        in FullGrad's bias terms; False reproduces grad-cam 1.5, which skips them.
    """

    batch_size: int | None = None
    ablation_batch: int | None = None
    fullgrad_bn_subclasses: bool = True


@dataclass(frozen=True)
class MemberInput:
    """What a member computes from, for a batch of B images, at one target layer.

    model: the model object (network, target layers, reshape, ...); layer: which of
    its target layers this input is about (a layer-resolution member is computed once
    per target layer, and the maps combined); x: (B, C, H, W) normalised input;
    shared: the shared pass at that layer (activations (B, K, h, w), gradients,
    logits, targets (B,), FullGrad's bias terms); seeds: per image, the member's own
    random stream (seeded members only); progress: called with a count of units of
    work done (own-pass members).
    """

    model: ModelBundle
    layer: int
    x: Tensor
    shared: SharedPass
    seeds: tuple[int, ...]
    options: MemberOptions
    progress: Callable[[int], None] | None = None

    @property
    def net(self) -> nn.Module:
        return self.model.net

    @property
    def target_layer(self) -> nn.Module:
        return self.model.target_layers[self.layer]

    @property
    def reshape(self) -> Reshape:
        return self.model.reshape


@dataclass(frozen=True)
class Member:
    """A registered member CAM and what it needs.

    name: registry key (snake_case built-in, or ``package.module:function``).
    resolution: ``layer`` (raw (B, h, w) map, finished as a layer CAM) or
        ``input`` ((B, H, W), min-max normalised).
    needs_gradients: reads the target score's gradients at the target layer.
    needs_bias_gradients: reads every bias layer's output gradient (FullGrad).
    needs_hessian: reads the Hessian-vector product H·A at the target layer (ShapleyCAM).
    scores: extra scores whose gradients at the target layer it reads (FinerCAM's
        contrast), by name: ``score(logits, targets) -> (B,)``.
    own_passes: runs forward passes of its own; reports progress in channels.
    seeded: draws random numbers; gets one seed per image (stream ``member.<name>``).
    control: carries no class evidence by design (left out of the MetaCAM comparator).
    fingerprint: what else identifies its maps in the member cache (the metacam
        version for built-ins, a hash of the source for plug-ins).
    unsupported: ``unsupported(model) -> reason or None``: why the member cannot
        explain a model (FullGrad on a network with biases it does not model); asked
        before any work (:func:`check_members`).
    """

    name: str
    label: str
    paper: str
    compute: Callable[[MemberInput], Any]
    resolution: str
    needs_gradients: bool = False
    needs_bias_gradients: bool = False
    needs_hessian: bool = False
    scores: Mapping[str, Score] = field(default_factory=dict)
    own_passes: bool = False
    seeded: bool = False
    control: bool = False
    plugin: bool = False
    fingerprint: str = __version__
    unsupported: Callable[[ModelBundle], str | None] | None = None

    def checked(self, raw: Any, batch: int, size: tuple[int, int], device: torch.device) -> Tensor:
        """A raw map checked: (B, h, w) for a layer member, (B, H, W) otherwise, as float32
        on ``device``. Raises MemberError for a non-tensor, a wrong shape, or non-finite values.
        """
        if not isinstance(raw, Tensor):
            raise MemberError(self.name, f"returned {type(raw).__name__}, not a torch.Tensor")
        expected = "(B, h, w)" if self.resolution == LAYER else f"(B, {size[0]}, {size[1]})"
        shape_ok = raw.ndim == 3 and raw.shape[0] == batch
        if self.resolution == INPUT:
            shape_ok = shape_ok and tuple(raw.shape[-2:]) == tuple(size)
        if not shape_ok:
            raise MemberError(
                self.name, f"returned shape {tuple(raw.shape)}; expected {expected} with B = {batch}"
            )
        raw = raw.detach().to(device=device, dtype=torch.float32)
        if not bool(torch.isfinite(raw).all()):
            raise MemberError(self.name, "returned NaN or infinite values")
        return raw

    def finish(self, raws: list[Tensor], size: tuple[int, int]) -> Tensor:
        """Checked raw maps (one per target layer for a layer member, one otherwise) ->
        (B, H, W) float32 in [0, 1]: a layer member's maps are each scaled to the input
        size and combined (pytorch-grad-cam's way); an input-resolution map is normalised."""
        if self.resolution == LAYER:
            return combine_layer_maps([scale_layer_map(raw, size) for raw in raws])
        return normalise(raws[0])


MEMBERS: dict[str, Member] = {}
"""The registry: name -> Member, built-ins in DESIGN's order, then plug-ins as resolved."""


def register(entry: Member) -> Member:
    """Add a member to the registry; re-registering the same name replaces it."""
    MEMBERS[entry.name] = entry
    return entry


def member(
    name: str | None = None,
    *,
    label: str | None = None,
    paper: str = "",
    resolution: str = LAYER,
    needs_gradients: bool = False,
    needs_bias_gradients: bool = False,
    needs_hessian: bool = False,
    scores: Mapping[str, Score] | None = None,
    own_passes: bool = False,
    seeded: bool = False,
    control: bool = False,
    unsupported: Callable[[ModelBundle], str | None] | None = None,
) -> Callable[[Callable[[MemberInput], Any]], Callable[[MemberInput], Any]]:
    """Declare ``fn(MemberInput) -> raw map`` as a member (registered now if ``name`` is given)."""

    def mark(fn: Callable[[MemberInput], Any]) -> Callable[[MemberInput], Any]:
        entry = Member(
            name=name or "",
            label=label or (name or fn.__name__),
            paper=paper,
            compute=fn,
            resolution=resolution,
            needs_gradients=needs_gradients,
            needs_bias_gradients=needs_bias_gradients,
            needs_hessian=needs_hessian,
            scores=dict(scores or {}),
            own_passes=own_passes,
            seeded=seeded,
            control=control,
            unsupported=unsupported,
        )
        setattr(fn, _ATTRIBUTE, entry)
        if name is not None:
            register(entry)
        return fn

    return mark


def _wrap(
    fn: Callable | None,
    call: Callable[[Callable, MemberInput, dict], Any],
    name: str | None,
    label: str | None,
    seeded: bool,
    **declared: Any,
) -> Any:
    """Declare ``fn`` a member whose compute is ``call(fn, inp, extra)`` (``extra`` holds
    ``seeds=`` for seeded members); the function itself is returned unchanged, marked."""

    def mark(function: Callable) -> Callable:
        def compute(inp: MemberInput) -> Any:
            return call(function, inp, {"seeds": inp.seeds} if seeded else {})

        entry = member(name, label=label or name or function.__name__, seeded=seeded, **declared)(compute)
        setattr(function, _ATTRIBUTE, getattr(entry, _ATTRIBUTE))
        return function

    return mark(fn) if fn is not None else mark


def layer_member(
    fn: Callable | None = None,
    *,
    needs_gradients: bool = True,
    name: str | None = None,
    label: str | None = None,
    paper: str = "",
    seeded: bool = False,
    control: bool = False,
) -> Any:
    """Mark ``fn(activations, gradients) -> (B, h, w)`` as a member CAM of the shared pass.

    activations, gradients: (B, C, h, w) at the target layer; gradients are those of
    the target scores (the summed target logits), None unless ``needs_gradients``.
    With ``seeded=True`` fn is also given ``seeds=`` (one int per image). metacam
    applies ReLU, min-max, bilinear upsampling to the input size and min-max.
    Usable bare (``@layer_member``) or with arguments.
    """

    def call(function: Callable, inp: MemberInput, extra: dict) -> Any:
        gradients = inp.shared.gradients if needs_gradients else None
        return function(inp.shared.activations, gradients, **extra)

    return _wrap(fn, call, name, label, seeded, paper=paper, resolution=LAYER,
                 needs_gradients=needs_gradients, control=control)


def model_member(
    fn: Callable | None = None,
    *,
    name: str | None = None,
    label: str | None = None,
    paper: str = "",
    seeded: bool = False,
    control: bool = False,
) -> Any:
    """Mark ``fn(net, x, targets) -> (B, H, W)`` as a member CAM with passes of its own.

    net: the model (eval mode); x: (B, C, H, W) normalised input; targets: (B,) long.
    With ``seeded=True`` fn is also given ``seeds=``. metacam min-max normalises the map.
    Usable bare (``@model_member``) or with arguments.
    """

    def call(function: Callable, inp: MemberInput, extra: dict) -> Any:
        return function(inp.net, inp.x, inp.shared.targets, **extra)

    return _wrap(fn, call, name, label, seeded, paper=paper, resolution=INPUT, own_passes=True,
                 control=control)


def is_plugin_name(name: str) -> bool:
    """``package.module:function`` names a plug-in."""
    return ":" in name


def resolve_member(name: str) -> Member:
    """The registered member ``name``; a plug-in path is imported and registered first.

    Raises MetaCAMError (one line) for an unknown name, a plug-in that does not
    import, names no function, or lacks the decorator.
    """
    name = str(name).strip()
    if name in MEMBERS:
        return MEMBERS[name]
    if not is_plugin_name(name):
        builtins = [m for m, entry in MEMBERS.items() if not entry.plugin]
        near = difflib.get_close_matches(name, builtins, n=3) or builtins
        raise MetaCAMError(
            f"unknown CAM method {name!r}; did you mean: {', '.join(near)}? "
            f"(or name a plug-in as package.module:function)"
        )
    function = import_object(name, "plug-in")
    declared = getattr(function, _ATTRIBUTE, None)
    if not isinstance(declared, Member):
        raise MetaCAMError(
            f"plug-in {name}: {name.rpartition(':')[2]} is not marked with "
            f"@metacam.layer_member or @metacam.model_member"
        )
    return register(replace(declared, name=name, plugin=True, fingerprint=_source_hash(function)))


def resolve_members(methods: Iterable[str] | None) -> list[Member]:
    """Members for a list of names (duplicates dropped, order kept); None means the
    members of the default groups (DESIGN's 12) in registry order. Raises MetaCAMError
    for an empty list or a bad name."""
    if methods is None:
        from metacam.groups import default_groups

        default = {m for group in default_groups().values() for m in group}
        return [entry for name, entry in MEMBERS.items() if name in default]
    names = list(dict.fromkeys(str(m).strip() for m in methods))
    if not names:
        builtins = [m for m, entry in MEMBERS.items() if not entry.plugin]
        raise MetaCAMError("no CAM method selected; name at least one of: " + ", ".join(builtins))
    return [resolve_member(n) for n in names]


def check_members(members: Iterable[Member], model: ModelBundle,
                  advice: str = "leave it out of the methods or groups") -> None:
    """Refuse, before any work, a member that cannot explain ``model``: one line naming
    the member, the network, why, and ``advice`` (MetaCAMError)."""
    for entry in members:
        reason = entry.unsupported(model) if entry.unsupported is not None else None
        if reason:
            raise MetaCAMError(
                f"member {entry.name} cannot explain {model.name} ({type(model.net).__name__}): "
                f"{reason}; {advice}"
            )


def _source_hash(function: Callable) -> str:
    """A plug-in's cache fingerprint: its source text, so editing it invalidates its maps."""
    try:
        text = inspect.getsource(function)
    except (OSError, TypeError):
        text = getattr(function, "__qualname__", repr(function))
    return "src-" + hashlib.sha1(text.encode()).hexdigest()[:12]
