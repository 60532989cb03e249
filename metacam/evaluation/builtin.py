"""The built-in metrics, registered like plug-ins (CONTRACTS §1's order):

* ``road`` — ROAD (Rong et al. 2022): combined, MoRF and LeRF. Its in-sample columns
  come from the draw that chooses k* (the engine's first stage); its chosen columns
  are the held-out re-scoring of the k* and plain maps (:mod:`~metacam.evaluation.roadscore`).
* ``deletion`` — deletion and insertion AUC (Petsiuk et al. 2018; :mod:`~metacam.evaluation.deletion`).
* ``sparseness`` — the Gini index of the map (Chalasani et al. 2020). Higher: more concentrated.
* ``complexity`` — the entropy of the map normalised to sum 1 (Bhatt et al. 2020). Lower: simpler.

Sparseness and complexity need no forward pass and compute what Quantus 0.6.0's
``Sparseness`` and ``Complexity`` compute (its epsilons included; its default
normalise-by-max is the identity on maps whose maximum is 1, as every min-max
normalised map's), in float64. This module imports no torch until a metric runs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from metacam.evaluation.registry import (
    MetricInput,
    Score,
    declared,
    map_metric,
    metric,
    register,
)

if TYPE_CHECKING:
    from torch import Tensor

GINI_EPSILON = 1e-7  # Quantus adds it to every value (a map of zeros then has Gini 0)
LOG_EPSILON = 1e-12  # Quantus's log(p + eps)


@metric(
    "road",
    scores=(
        Score("combined", "ROAD combined", "road_heldout_combined", True, "road_combined", headline=True),
        Score("morf", "ROAD MoRF", "road_heldout_morf", False, "road_morf", headline=False),
        Score("lerf", "ROAD LeRF", "road_heldout_lerf", True, "road_lerf", headline=False),
    ),
    needs_model=True,
)
def heldout_road(inp: MetricInput) -> dict[str, Any]:
    """Held-out ROAD of every map: its own draw (permutation, noise, percentiles); none when off."""
    if inp.heldout is None:
        return {}
    from metacam.evaluation.roadscore import road_many

    scores = road_many(inp.probe, inp.maps, inp.heldout, stats=inp.stats.heldout)
    return {"combined": scores.combined, "morf": scores.morf, "lerf": scores.lerf}


@metric(
    "deletion",
    scores=(
        Score("deletion", "deletion AUC", "deletion_auc", False),
        Score("insertion", "insertion AUC", "insertion_auc", True),
    ),
    needs_model=True,
)
def deletion_insertion_auc(inp: MetricInput) -> dict[str, Any]:
    """Deletion and insertion AUC of every map (ties by the stream ``deletion.permutation``)."""
    from metacam.evaluation.deletion import deletion_insertion

    probe = inp.probe
    auc = deletion_insertion(probe.net, probe.x, inp.maps, probe.targets, config=inp.deletion,
                             seeds=probe.seeds("deletion.permutation"), clean=probe.clean)
    return {"deletion": auc.deletion_auc, "insertion": auc.insertion_auc}


@map_metric(higher_is_better=True, label="sparseness (Gini)")
def sparseness(maps: Tensor, images: Tensor) -> Tensor:
    """Gini index of each map: maps (B, H, W) -> (B,) in [0, 1) (images unused).

    With a = |map| + 1e-7 sorted ascending over its n pixels,
    G = sum_i (2i - n - 1) a_i / (n sum_i a_i): 0 for a constant map, near 1 when one
    pixel holds everything.
    """
    import torch

    values = (maps.flatten(1).double().abs() + GINI_EPSILON).sort(dim=1).values
    count = values.shape[1]
    weights = 2 * torch.arange(1, count + 1, dtype=torch.float64, device=values.device) - count - 1
    return (values * weights).sum(1) / (count * values.sum(1))


@map_metric(higher_is_better=False, label="complexity (entropy)")
def complexity(maps: Tensor, images: Tensor) -> Tensor:
    """Entropy (nats) of each map normalised to sum 1: maps (B, H, W) -> (B,) (images unused).

    p = |map| / sum |map|, H = -sum p log(p + 1e-12): 0 when one pixel holds everything,
    log(n) for a uniform map. A map of zeros has no normalisation; it counts as uniform
    (like any constant map), so it is the most complex.
    """
    values = maps.flatten(1).double().abs()
    total = values.sum(1, keepdim=True)
    share = (values / total.clamp_min(1e-300)).where(total > 0, 1.0 / values.shape[1])
    return -(share * (share + LOG_EPSILON).log()).sum(1)


def _optional(function: Any) -> Any:
    """Its scores are new in format 3: readers take their columns only where present."""
    entry = declared(function)
    return replace(entry, scores=tuple(replace(s, optional=True) for s in entry.scores))


for _entry in (declared(heldout_road), declared(deletion_insertion_auc), _optional(sparseness),
               _optional(complexity)):
    register(_entry)
