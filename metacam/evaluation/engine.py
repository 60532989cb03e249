"""The evaluation engine: one flow from saliency maps to every score (DESIGN §2).

For B (image, target) items and any number of methods, each given as one map per
item or as member maps to ensemble:

1. candidates: each method's maps at every k of the grid (T_k of a map, MetaCAM_k of
   an ensemble), plus the plain map (k = 100) when the grid lacks it;
2. in-sample ROAD of every candidate of every method in one batched call;
3. k* per item: the argmax of in-sample ROAD combined over the grid (the plain map
   competes only if k = 100 is in the grid);
4. every metric of the run (:mod:`~metacam.evaluation.registry`: held-out ROAD,
   deletion/insertion AUC, sparseness, complexity, plug-ins) on each method's chosen
   (k*) and plain (k = 100) map, each distinct map of an image scored once.

:class:`Evaluator` holds the validated settings; :meth:`Evaluator.evaluate` returns an
:class:`Evaluation`, which knows its columns and gives the results rows (one per k)
that ``metacam explain``, the sweep and the tests share. A plug-in metric that raises,
returns a non-tensor, a wrong shape or NaN fails only the (method, item) pairs whose
maps it could not score; the engine records why (:attr:`MethodEvaluation.failures`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from metacam import __version__
from metacam.batching import OutOfMemory
from metacam.config import DEFAULT_KS, PLAIN_K, HeldoutConfig, RoadConfig, check_ks
from metacam.device import device_name
from metacam.evaluation.adaptive import AdaptiveResult, candidate_maps, choose_k, score_methods
from metacam.evaluation.deletion import DeletionConfig
from metacam.evaluation.registry import (
    Metric,
    MetricError,
    MetricInput,
    OutputError,
    entries,
    resolve_metrics,
)
from metacam.evaluation.roadscore import Probe, RoadStats
from metacam.progress import NO_PROGRESS, Progress

MapSource = Tensor | Mapping[str, Tensor]
"""A method's maps: one (B, H, W) map per item (thresholded as T_k), or member maps
name -> (B, H, W) (ensembled as MetaCAM_k)."""


@dataclass
class EvaluationStats:
    """Where the evaluation's time goes (accumulated over calls when passed in).

    road: the in-sample draw's split; heldout: held-out ROAD's split; metrics: seconds
    per metric on the chosen and plain maps (held-out ROAD's under ``road``).
    """

    road: RoadStats = field(default_factory=RoadStats)
    heldout: RoadStats = field(default_factory=RoadStats)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def deletion(self) -> float:
        """Seconds of deletion/insertion AUC."""
        return self.metrics.get("deletion", 0.0)

    @property
    def other_metrics(self) -> float:
        """Seconds of the metrics besides ROAD and deletion/insertion (sparseness, plug-ins)."""
        return sum(s for name, s in self.metrics.items() if name not in ("road", "deletion"))


@dataclass
class MethodEvaluation:
    """One method's scores for B items.

    adaptive: in-sample ROAD at every k of the grid and the choice k*;
    chosen: column -> (B, 2), column 0 the k* map's score, column 1 the plain map's
    (NaN where a metric did not compute it); failures: item -> why it has no scores.
    """

    adaptive: AdaptiveResult
    insample: dict[str, Tensor]
    chosen: dict[str, Tensor]
    failures: dict[int, str] = field(default_factory=dict)

    @property
    def ks(self) -> tuple[float, ...]:
        return self.adaptive.ks

    @property
    def best_map(self) -> Tensor:
        """(B, H, W) the k* map."""
        return self.adaptive.best_map

    def rows(self, i: int) -> list[dict]:
        """Item i's rows: one per k with ``k``, the in-sample columns and ``is_best_k``;
        the k* and k = 100 rows also hold every chosen column (null where missing)."""
        best = int(self.adaptive.best_index[i])
        rows = []
        for j, k in enumerate(self.ks):
            row: dict = {"k": k, **{c: float(v[i, j]) for c, v in self.insample.items()}}
            slot = 0 if j == best else (1 if k == PLAIN_K else None)
            if slot is not None:
                row.update({c: _nullable(float(v[i, slot])) for c, v in self.chosen.items()})
            rows.append({**row, "is_best_k": j == best})  # the schema's column order
        return rows


def _nullable(value: float) -> float | None:
    return None if value != value else value  # NaN -> null


@dataclass
class Evaluation:
    """The engine's result: methods (name -> MethodEvaluation, in the order given) and
    the score columns, in-sample then chosen, in the metrics' order."""

    methods: dict[str, MethodEvaluation]
    columns: tuple[str, ...]

    def __getitem__(self, method: str) -> MethodEvaluation:
        return self.methods[method]


@dataclass(frozen=True)
class Evaluator:
    """The validated settings of one evaluation: the k grid, ROAD's in-sample and
    held-out draws, deletion/insertion's settings and the metrics (built-ins, then
    plug-ins). Build it with :meth:`of`."""

    ks: tuple[float, ...]
    road: RoadConfig
    heldout: RoadConfig | None
    deletion: DeletionConfig
    metrics: tuple[Metric, ...]

    @classmethod
    def of(
        cls,
        ks: Sequence[float] = DEFAULT_KS,
        road: RoadConfig | None = None,
        heldout: HeldoutConfig | None = None,
        deletion: DeletionConfig | None = None,
        metrics: Iterable[str] = (),
        reserved: Iterable[str] = (),
    ) -> Evaluator:
        """Validate and resolve the settings; one-line MetaCAMError for any bad value.

        metrics: plug-in metrics (``package.module:function``) besides the built-ins,
        imported here; reserved: the other columns of the table the scores go into.
        """
        road = (road or RoadConfig()).checked()
        heldout = heldout or HeldoutConfig()
        deletion = deletion or DeletionConfig()
        deletion.validate()
        return cls(tuple(check_ks(ks)), road, heldout.road(road) if heldout.enabled else None, deletion,
                   resolve_metrics(metrics, reserved))

    @property
    def grid(self) -> tuple[float, ...]:
        """The thresholds scored: the k grid, plus k = 100 at the end if it lacks it."""
        return self.ks if PLAIN_K in self.ks else (*self.ks, PLAIN_K)

    @property
    def columns(self) -> tuple[str, ...]:
        """The score columns, in-sample first (ROAD's), then every metric's chosen columns."""
        insample = [s.insample_column for m in self.metrics for s in m.scores if s.insample_column]
        chosen = [s.chosen_column for m in self.metrics for s in m.scores if s.chosen_column]
        return (*insample, *chosen)

    def entries(self) -> list[dict]:
        """The dataset's ``"metrics"`` list (CONTRACTS §1)."""
        return entries(self.metrics)

    def provenance(self, *, seed: int, device: torch.device) -> dict:
        """The provenance columns every row records: ROAD's tie rule, percentiles, held-out
        percentiles and noise, the seed, the device (``cpu: AMD EPYC``), torch and metacam."""
        heldout = self.heldout.percentiles if self.heldout is not None else []
        return {"road_ties": self.road.ties, "percentiles": _numbers(self.road.percentiles),
                "heldout_percentiles": _numbers(heldout), "noise": self.road.noise, "seed": seed,
                "device": device_name(device), "torch_version": torch.__version__,
                "metacam_version": __version__}

    def evaluate(
        self,
        probe: Probe,
        maps: Mapping[str, MapSource],
        *,
        stats: EvaluationStats | None = None,
        progress: Progress = NO_PROGRESS,
    ) -> Evaluation:
        """Score every method's maps for the probe's B items (steps 1-4 of the module docstring).

        maps: method -> one (B, H, W) map per item, or member maps name -> (B, H, W) for
        an ensemble. stats: accumulates where the time goes; progress: ROAD masks done.
        """
        stats = stats if stats is not None else EvaluationStats()
        probe = replace(probe, batch_size=self.road.batch_size, noise=self.road.noise)
        grid = self.grid
        candidates = {name: candidate_maps(source, grid) for name, source in maps.items()}
        scored = score_methods(probe, candidates, grid, self.road, stats=stats.road, progress=progress)
        choices = len(self.ks)  # k* among the grid the caller gave, never the appended plain map
        results: dict[str, AdaptiveResult] = {}
        for name, result in scored.items():
            best_index, best_k = choose_k(result.scores.combined[:, :choices], self.ks)
            results[name] = replace(result, best_index=best_index, best_k=best_k)
        chosen, failures = self._chosen_scores(probe, results, stats)
        insample = {s.insample_column: s.key for m in self.metrics for s in m.scores if s.insample_column}
        methods = {
            name: MethodEvaluation(
                result,
                {column: getattr(result.scores, key) for column, key in insample.items()},
                {column: values[:, 2 * i : 2 * i + 2] for column, values in chosen.items()},
                failures.get(name, {}),
            )
            for i, (name, result) in enumerate(results.items())
        }
        return Evaluation(methods, self.columns)

    def _chosen_scores(
        self, probe: Probe, results: Mapping[str, AdaptiveResult], stats: EvaluationStats
    ) -> tuple[dict[str, Tensor], dict[str, dict[int, str]]]:
        """Every metric on each method's k* and plain map: column -> (B, 2E), method i's
        maps at 2i (k*) and 2i + 1 (plain); and method -> {item: why it failed}."""
        names = list(results)
        plain = self.grid.index(PLAIN_K)
        stacked = torch.stack([m for r in results.values() for m in (r.best_map, r.candidates[:, plain])], dim=1)
        columns = {s.chosen_column: (m, s.key) for m in self.metrics for s in m.scores if s.chosen_column}
        values = {column: torch.full(stacked.shape[:2], float("nan"), device=probe.x.device) for column in columns}
        failures: dict[str, dict[int, str]] = {}
        for b in range(stacked.shape[0]):
            # each distinct map of the image once (k* = 100 gives one map twice; a
            # one-member combination equals its single)
            distinct, inverse = torch.unique(stacked[b].flatten(1), dim=0, return_inverse=True)
            inp = MetricInput(probe.subset([b]), distinct.view(1, -1, *stacked.shape[-2:]), self.heldout,
                              self.deletion, stats)
            for metric in self.metrics:
                started = time.perf_counter()
                try:
                    scores = _run(metric, inp)
                except MetricError as error:
                    for name in names:
                        failures.setdefault(name, {}).setdefault(b, str(error))
                    continue
                finally:
                    stats.metrics[metric.name] = stats.metrics.get(metric.name, 0.0) + time.perf_counter() - started
                for score in metric.scores:
                    if score.chosen_column is None or score.key not in scores:
                        continue
                    got = scores[score.key][0].to(values[score.chosen_column].device)[inverse]  # (2E,)
                    values[score.chosen_column][b] = got
                    for i in torch.nonzero(~torch.isfinite(got)).flatten().tolist():
                        reason = str(MetricError(metric.name, "returned NaN or infinite values"))
                        failures.setdefault(names[i // 2], {}).setdefault(b, reason)
        return values, failures


def _run(metric: Metric, inp: MetricInput) -> Mapping[str, Tensor]:
    """One metric's scores {key: (1, N)}; a plug-in's own failure becomes a MetricError."""
    try:
        return metric.compute(inp)
    except OutputError as error:
        raise MetricError(metric.name, str(error)) from None
    except (OutOfMemory, torch.cuda.OutOfMemoryError):
        raise
    except Exception as error:
        if not metric.plugin:
            raise
        reason = " ".join(str(error).split()) or type(error).__name__
        raise MetricError(metric.name, f"raised {type(error).__name__}: {reason}") from error


def _numbers(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


__all__ = ["EvaluationStats", "Evaluation", "Evaluator", "MapSource", "MethodEvaluation"]
