"""The one registry of metrics: built-ins and plug-ins alike (like the member registry).

A metric scores saliency maps; the engine (:mod:`metacam.evaluation.engine`) runs every
registered metric of a run on each chosen (k*) and plain (k = 100) map. Each metric
declares its *scores*: the analysable numbers it produces, each with its column, its
direction and whether it is a headline number. This one table is what the results
schema (:mod:`metacam.schema`), the sweep's rows, ``metacam explain``'s table and the
dataset's metadata (the ``"metrics"`` list, CONTRACTS §1) are built from.

Two public decorators make a metric of one function:

* :func:`map_metric` — ``fn(maps, images) -> (B,)``, maps (B, H, W) in [0, 1] and
  images (B, 3, H, W); no model (sparseness, complexity).
* :func:`model_metric` — ``fn(probe, maps) -> (B,)``, ``probe`` a
  :class:`~metacam.evaluation.roadscore.Probe` of the batch (its images, targets,
  clean probabilities, a batched ``probabilities(images)`` and ROAD's ``impute``).

:func:`metric` is the general form the built-ins use when one computation yields
several scores (ROAD's combined, MoRF and LeRF; deletion and insertion AUC):
``fn(MetricInput) -> {score key: (B, M)}``. A plug-in is decorated in its own module
and named by its import path, ``package.module:function``; :func:`resolve_metric`
imports it (in every worker), checks the decorator and registers it under that path.
Its column is the function's name (``name=`` overrides it).

This module imports no torch: the schema and the analysis read the table without it.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from metacam.errors import MetaCAMError
from metacam.imports import import_object

if TYPE_CHECKING:
    from torch import Tensor

    from metacam.config import RoadConfig
    from metacam.evaluation.deletion import DeletionConfig
    from metacam.evaluation.engine import EvaluationStats
    from metacam.evaluation.roadscore import Probe

_ATTRIBUTE = "__metacam_metric__"
BUILTIN_SOURCE = "builtin"
RESERVED_PREFIX = "g_"  # the group flag columns


class MetricError(MetaCAMError):
    """A metric that failed on the data or returned unusable values; names the metric."""

    def __init__(self, metric: str, problem: str) -> None:
        super().__init__(f"metric {metric}: {problem}")
        self.metric = metric
        self.problem = problem


@dataclass(frozen=True)
class Score:
    """One analysable score: one entry of the dataset's ``"metrics"`` list (CONTRACTS §1).

    key: the analysis's ``--metric NAME``; label: its human name.
    chosen_column: the column on the k* and k = 100 rows (None: none).
    insample_column: the column on every k row, from the draw that chose k* (only ROAD).
    higher_is_better: its direction; headline: a row of the report's headline table.
    optional: not one of DESIGN §3's required columns (readers take it only if present).
    """

    key: str
    label: str
    chosen_column: str | None
    higher_is_better: bool
    insample_column: str | None = None
    headline: bool = True
    optional: bool = False


@dataclass(frozen=True)
class MetricInput:
    """What a metric computes from: M maps of each of B images.

    probe: the B images, their targets and clean probabilities (a Probe);
    maps: (B, M, H, W) in [0, 1]; heldout: the held-out ROAD draw (None: off);
    deletion: deletion/insertion's settings; stats: where the time goes.
    """

    probe: Probe
    maps: Tensor
    heldout: RoadConfig | None
    deletion: DeletionConfig
    stats: EvaluationStats


@dataclass(frozen=True)
class Metric:
    """A registered metric: one function and the scores it yields.

    name: registry key (a built-in's name, or ``package.module:function``).
    compute: ``fn(MetricInput) -> {score key: (B, M)}`` (keys it could not compute,
        e.g. held-out ROAD when it is off, are left out: their columns stay null).
    needs_model: runs forward passes (a model metric).
    source_hash: sha256 of a plug-in's source (None for built-ins).
    """

    name: str
    scores: tuple[Score, ...]
    compute: Callable[[MetricInput], Mapping[str, Any]]
    needs_model: bool = False
    plugin: bool = False
    source_hash: str | None = None

    @property
    def source(self) -> str:
        """``builtin`` or the plug-in's ``package.module:function``."""
        return self.name if self.plugin else BUILTIN_SOURCE

    def columns(self) -> list[str]:
        """Every column this metric fills, in-sample ones first."""
        insample = [s.insample_column for s in self.scores if s.insample_column]
        return insample + [s.chosen_column for s in self.scores if s.chosen_column]

    def entries(self) -> list[dict]:
        """This metric's entries of the dataset's ``"metrics"`` list (CONTRACTS §1)."""
        return [
            {"key": s.key, "label": s.label, "insample_column": s.insample_column,
             "chosen_column": s.chosen_column, "higher_is_better": s.higher_is_better,
             "headline": s.headline, "source": self.source, "source_hash": self.source_hash}
            for s in self.scores
        ]


METRICS: dict[str, Metric] = {}
"""The registry: name -> Metric, built-ins in CONTRACTS §1's order, then plug-ins as resolved."""


def register(entry: Metric) -> Metric:
    """Add a metric to the registry; re-registering the same name replaces it."""
    METRICS[entry.name] = entry
    return entry


def declared(function: Callable) -> Metric:
    """The Metric a decorator attached to ``function`` (MetaCAMError if none)."""
    entry = getattr(function, _ATTRIBUTE, None)
    if not isinstance(entry, Metric):
        raise MetaCAMError(f"{getattr(function, '__name__', function)!r} is not marked as a metric")
    return entry


def metric(name: str, *, scores: Sequence[Score], needs_model: bool) -> Callable[[Callable], Callable]:
    """Declare ``fn(MetricInput) -> {score key: (B, M)}`` as a metric of several scores."""

    def mark(fn: Callable) -> Callable:
        setattr(fn, _ATTRIBUTE, Metric(name, tuple(scores), fn, needs_model))
        return fn

    return mark


def _one_score(fn: Callable, name: str | None, label: str | None, higher_is_better: Any) -> Score:
    if not isinstance(higher_is_better, bool):
        raise MetaCAMError(f"metric {fn.__name__}: higher_is_better={higher_is_better!r}; give True or False")
    column = name or fn.__name__
    if not column.isidentifier():
        raise MetaCAMError(f"metric {fn.__name__}: name={column!r} is not a valid column name "
                           f"(letters, digits and _)")
    return Score(column, label or column, column, higher_is_better)


def map_metric(*, higher_is_better: bool, name: str | None = None, label: str | None = None) -> Callable:
    """Mark ``fn(maps, images) -> (B,)`` as a metric that needs no model.

    maps: (B, H, W) saliency maps in [0, 1]; images: (B, 3, H, W), the normalised images
    they explain. Returns one score per map. Its column is ``name`` (default: the
    function's name); ``higher_is_better`` is its direction; ``label`` names it in tables.
    """

    def mark(fn: Callable) -> Callable:
        score = _one_score(fn, name, label, higher_is_better)

        def compute(inp: MetricInput) -> dict[str, Any]:
            batch, count = inp.maps.shape[:2]
            images = inp.probe.x[:, None].expand(batch, count, *inp.probe.x.shape[1:])
            flat_images = images.reshape(batch * count, *inp.probe.x.shape[1:])
            out = fn(inp.maps.reshape(batch * count, *inp.maps.shape[2:]), flat_images)
            return {score.key: _per_map(out, batch, count)}

        setattr(fn, _ATTRIBUTE, Metric(score.key, (score,), compute, needs_model=False))
        return fn

    return mark


def model_metric(*, higher_is_better: bool, name: str | None = None, label: str | None = None) -> Callable:
    """Mark ``fn(probe, maps) -> (B,)`` as a metric that runs the model.

    probe: a :class:`~metacam.evaluation.roadscore.Probe` of B items (item b: the image
    that map b explains, its target, its clean probability), with a batched
    ``probe.probabilities(images)`` and ROAD's ``probe.impute(removed)``; maps: (B, H, W)
    in [0, 1]. Returns one score per map. ``name``, ``label``: as :func:`map_metric`.
    """

    def mark(fn: Callable) -> Callable:
        score = _one_score(fn, name, label, higher_is_better)

        def compute(inp: MetricInput) -> dict[str, Any]:
            batch, count = inp.maps.shape[:2]
            items = [b for b in range(batch) for _ in range(count)]  # map (b, m) -> item b
            out = fn(inp.probe.subset(items), inp.maps.reshape(batch * count, *inp.maps.shape[2:]))
            return {score.key: _per_map(out, batch, count)}

        setattr(fn, _ATTRIBUTE, Metric(score.key, (score,), compute, needs_model=True))
        return fn

    return mark


class OutputError(Exception):
    """A metric function's result is not one finite-or-NaN score per map (the engine
    turns it into a MetricError naming the metric)."""


def _per_map(out: Any, batch: int, count: int) -> Any:
    """A function's (B * M,) result as float (B, M); OutputError for anything else."""
    import torch  # only ever called with torch loaded; this module stays importable without it

    if not isinstance(out, torch.Tensor):
        raise OutputError(f"returned {type(out).__name__}, not a torch.Tensor")
    if tuple(out.shape) != (batch * count,):
        raise OutputError(f"returned shape {tuple(out.shape)}; expected ({batch * count},), one score per map")
    return out.detach().float().reshape(batch, count)


def is_plugin_name(name: str) -> bool:
    """``package.module:function`` names a plug-in."""
    return ":" in name


def builtins() -> list[Metric]:
    """The built-in metrics, in CONTRACTS §1's order."""
    return [entry for entry in METRICS.values() if not entry.plugin]


def resolve_metric(name: str) -> Metric:
    """The registered metric ``name``; a plug-in path is imported and registered first.

    Raises MetaCAMError (one line) for an unknown name, a plug-in that does not import,
    names no function, or lacks the decorator.
    """
    name = str(name).strip()
    if name in METRICS:
        return METRICS[name]
    if not is_plugin_name(name):
        known = [entry.name for entry in builtins()]
        near = difflib.get_close_matches(name, known, n=3) or known
        raise MetaCAMError(f"unknown metric {name!r}; did you mean: {', '.join(near)}? "
                           f"(or name a plug-in as package.module:function)")
    function = import_object(name, "metric plug-in")
    entry = getattr(function, _ATTRIBUTE, None)
    if not isinstance(entry, Metric):
        raise MetaCAMError(f"metric plug-in {name}: {name.rpartition(':')[2]} is not marked with "
                           f"@metacam.map_metric or @metacam.model_metric")
    return register(replace(entry, name=name, plugin=True, source_hash=source_hash(function)))


def resolve_metrics(names: Iterable[str] = (), reserved: Iterable[str] = ()) -> tuple[Metric, ...]:
    """The built-ins, then the metrics ``names`` (plug-ins imported), duplicates dropped.

    reserved: other columns of the table the scores go into (a plug-in's column may not
    take one). MetaCAMError (one line) for a bad name or a column clash.
    """
    chosen = {entry.name: entry for entry in builtins()}
    for name in dict.fromkeys(str(n).strip() for n in names):
        entry = resolve_metric(name)
        chosen[entry.name] = entry
    # keys (the analysis's --metric NAME) and columns share one namespace
    taken: dict[str, str] = {column: "a column of the results" for column in reserved}
    for entry in chosen.values():
        owner = f"the metric {entry.name}"
        for column in dict.fromkeys([*(s.key for s in entry.scores), *entry.columns()]):
            if column in taken:
                raise MetaCAMError(
                    f"metric {entry.name}: its column {column!r} clashes with {taken[column]}; "
                    f"give the function another name or pass name= to its decorator")
            if entry.plugin and column.startswith(RESERVED_PREFIX):
                raise MetaCAMError(f"metric {entry.name}: column {column!r} starts with "
                                   f"{RESERVED_PREFIX!r}, which is reserved for the group flags")
            taken[column] = owner
    return tuple(chosen.values())


def source_hash(function: Callable) -> str:
    """sha256 of a plug-in's source text (its function's; its name where none is found)."""
    try:
        text = inspect.getsource(function)
    except (OSError, TypeError):
        text = getattr(function, "__qualname__", repr(function))
    return hashlib.sha256(text.encode()).hexdigest()


def entries(metrics: Iterable[Metric]) -> list[dict]:
    """The dataset's ``"metrics"`` list (CONTRACTS §1) for these metrics, in order."""
    return [entry for m in metrics for entry in m.entries()]


# Importing the built-ins registers them, in CONTRACTS §1's order.
from metacam.evaluation import builtin  # noqa: E402, F401  (registers the built-in metrics)
