"""One config object per concept, each default written once.

These plain dataclasses are what the Python API, ``metacam explain`` and the sweep
use; ``metacam.experiments`` registers them as Hydra's structured schema, so the
YAML files under ``conf/`` only say what differs from these defaults.
(This module never imports Hydra or OmegaConf.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from metacam.errors import MetaCAMError

TIE_RULES = ("random", "inclusive")
"""How ROAD orders pixels of equal relevance: ``random`` breaks ties by one seeded
permutation per image, so exactly p% is removed (DESIGN's ROAD); ``inclusive`` removes
every pixel tied with the cut-off, pytorch-grad-cam's rule (the paper's numbers)."""


def check_percentiles(percentiles: Sequence[float], what: str = "ROAD percentile") -> tuple[float, ...]:
    """Removal percentages, each in (0, 100), at least one."""
    values = tuple(float(p) for p in percentiles)
    if not values:
        raise MetaCAMError(f"the {what} list is empty; give removal percentages in (0, 100)")
    for p in values:
        if not 0 < p < 100:
            raise MetaCAMError(f"{what} {p:g} is outside (0, 100); it is the % of pixels removed")
    return values


@dataclass
class RoadConfig:
    """ROAD (Remove And Debias) as one object (DESIGN §2).

    ties: ``random`` or ``inclusive`` (:data:`TIE_RULES`).
    percentiles: removal percentages p in (0, 100).
    noise: std of the Gaussian noise added to imputed pixels (0 allowed).
    stream: prefix of the seed streams of the tie permutation and the noise
        (``<stream>.permutation``, ``<stream>.noise``; see metacam.seeds).
    batch_size: perturbed images per forward pass (None: 8 on CPU, 512 on CUDA).
    """

    ties: str = "random"
    percentiles: list[float] = field(default_factory=lambda: [20.0, 40.0, 60.0, 80.0])
    noise: float = 0.01
    stream: str = "road"
    batch_size: int | None = None

    def checked(self) -> RoadConfig:
        """This config validated (one-line MetaCAMError per problem), percentiles as floats."""
        if self.ties not in TIE_RULES:
            raise MetaCAMError(f"ROAD ties={self.ties!r} is not a tie rule; use one of {', '.join(TIE_RULES)}")
        if not self.noise >= 0:
            raise MetaCAMError(f"ROAD noise {self.noise} must be a standard deviation >= 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise MetaCAMError(f"ROAD batch_size {self.batch_size} must be at least 1")
        return replace(self, percentiles=list(check_percentiles(self.percentiles)))


@dataclass
class HeldoutConfig:
    """The held-out re-scoring of every chosen (k*) and plain (k = 100) map: ROAD with
    the same tie rule and noise level but its own draw and, by default, percentiles
    disjoint from the in-sample ones (DESIGN §2, held-out scores).

    stream: its seed streams' prefix; ``road`` would repeat the in-sample draw (only
    useful to test that the re-scoring path is the same ROAD).
    """

    enabled: bool = True
    percentiles: list[float] = field(default_factory=lambda: [10.0, 30.0, 50.0, 70.0, 90.0])
    stream: str = "heldout"

    def road(self, insample: RoadConfig) -> RoadConfig:
        """The ROAD config of the re-scoring."""
        return replace(insample, percentiles=list(check_percentiles(self.percentiles, "held-out percentile")),
                       stream=self.stream).checked()


DEFAULT_KS: tuple[float, ...] = tuple(float(k) for k in range(10, 101, 10))
"""Adaptive thresholding's default grid {10, 20, ..., 100}: the one default of the API,
``metacam explain`` and the sweep. Each k costs 2 x |percentiles| forward passes per map;
steps finer than 10 points are below what held-out ROAD resolves and add in-sample
optimism (the max of more noisy estimates). DESIGN §2's 20-value grid is :data:`FINE_KS`."""

FINE_KS: tuple[float, ...] = tuple(float(k) for k in range(5, 101, 5))
"""DESIGN §2's grid {5, 10, ..., 100} (``threshold=fine``, ``--k 5,10,...,100``)."""

PLAIN_K = 100.0
"""k = 100 keeps every pixel: the plain map, re-scored beside k* (DESIGN §2, held-out)."""


def check_ks(ks: Sequence[float] | float) -> list[float]:
    """Validate threshold percentages: each in (0, 100], at least one."""
    values = [float(ks)] if isinstance(ks, int | float) else [float(k) for k in ks]
    if not values:
        raise MetaCAMError("the k grid is empty; give at least one threshold in (0, 100]")
    for k in values:
        if not 0 < k <= 100:
            raise MetaCAMError(f"k={k:g} is outside (0, 100]; k is the percentage of pixels kept")
    return values


@dataclass
class ThresholdConfig:
    """The k grid of adaptive thresholding (percentages of pixels kept, in (0, 100])."""

    ks: list[float] = field(default_factory=lambda: list(DEFAULT_KS))


@dataclass
class ModelConfig:
    """Which network (see metacam.models.load_model): a built-in name, a torchvision
    name, ``timm/NAME``, or ``package.module:factory``; its target layer(s), reshape,
    weights and preprocessing.

    library: ``timm`` makes ``name`` a timm model name (``model=timm model.name=NAME`` is
        ``model.name=timm/NAME``); None: ``name`` says it all (:attr:`load_name`).
    layer: a dotted layer name, several as ``"a,b"`` or a list ``[a, b]`` (their maps are
        combined as pytorch-grad-cam combines target layers); None: the model's default.
    reshape: ``package.module:fn`` turning the layer's output into (B, C, h, w), ``none``,
        or None (a recognised transformer's own, see metacam.reshape).
    kwargs: extra keyword arguments of the architecture's constructor (timm's
        ``create_model``, torchvision's ``get_model``, your factory).
    """

    name: str = "efficientnet_lite0"
    library: str | None = None
    layer: Any = None
    reshape: str | None = None
    checkpoint: str | None = None
    categories: str | None = None
    num_classes: int | None = None
    pretrained: bool = True
    seed: int = 0  # weights seed when pretrained is false
    input_size: list[int] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def load_name(self) -> str:
        """The name load_model takes: ``library/name`` when a library is set."""
        if self.library and not self.name.startswith(f"{self.library}/"):
            return f"{self.library}/{self.name}"
        return self.name


def layer_entries(layers: Any) -> list[Any]:
    """A target-layer setting as a flat list: ``"a,b"``, ``["a", "b"]`` and ``["a,b"]`` all
    give ``["a", "b"]`` (names stripped, empty parts dropped); other entries (modules) pass
    through; None gives ``[]``. The one reading of ``--layer``, ``model.layer`` and ``layer=``."""
    if layers is None:
        return []
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        layers = [layers]
    entries: list[Any] = []
    for entry in layers:
        if isinstance(entry, str):
            entries += [part for part in (p.strip() for p in entry.split(",")) if part]
        else:
            entries.append(entry)
    return entries


LAYOUTS = ("files", "imagefolder", "imagenet_val")
"""How an image set is laid out on disk (``DataConfig.layout``; see metacam.datasets)."""


@dataclass
class DataConfig:
    """Which images and which classes to explain, and how they are split into work.

    layout: ``files`` (``images``: files, folders, ``sample:NAME``, ``samples``, ``photos``;
        labels from an optional ``labels`` CSV), ``imagefolder`` (``root/<class>/<image>``,
        the label is the class folder's name) or ``imagenet_val`` (a flat ``root`` of images,
        labels from ``labels``: ILSVRC2012's LOC_val_solution.csv or any CSV of image and label).
        Labels may be class indices, ImageNet WordNet ids (n01440764) or the model's category names.
    images: the ``files`` layout's inputs (empty for the other layouts).
    root: the folder of the ``imagefolder`` and ``imagenet_val`` layouts.
    labels: a CSV with a header row: an image column (``image`` or ``ImageId``; else the
        first) and a label column (``label`` or ``PredictionString``, first token; else the second).
    target: ``top1`` (each image's most probable class), ``topN`` (the N most probable,
        each its own unit), ``label`` (each image's label), a class index, or a list of
        class indices (each its own unit).
    sample / sample_seed: explain a reproducible sample of N images (stratified by label
        where there are labels) instead of all; None = all.
    images_per_unit: images per result file (the unit of resume).
    shard_index / shard_count: this job's share of the units (unit i goes to shard
        i mod shard_count), so every shard of a study writes into one dataset.
    """

    layout: str = "files"
    images: list[str] = field(default_factory=lambda: ["samples"])
    root: str | None = None
    labels: str | None = None
    target: Any = "top1"
    sample: int | None = None
    sample_seed: int = 0
    images_per_unit: int = 1
    shard_index: int = 0
    shard_count: int = 1


__all__ = [
    "DEFAULT_KS",
    "FINE_KS",
    "LAYOUTS",
    "PLAIN_K",
    "TIE_RULES",
    "DataConfig",
    "HeldoutConfig",
    "ModelConfig",
    "RoadConfig",
    "ThresholdConfig",
    "check_ks",
    "layer_entries",
    "check_percentiles",
]
