"""Plug-in metrics for the tests, importable as ``tests.metric_plugins:NAME`` in every worker."""

import torch

import metacam


@metacam.map_metric(higher_is_better=True)
def mean_relevance(maps, images):
    """The mean of each map (a map metric: no model)."""
    return maps.flatten(1).mean(1)


@metacam.model_metric(higher_is_better=False)
def top_decile_drop(probe, maps):
    """A model metric through the public Probe: the target's probability after ROAD's
    imputation of each map's 10% most relevant pixels, minus its clean probability."""
    removed = top_decile(maps)
    return probe.probabilities(probe.impute(removed)) - probe.clean


def top_decile(maps):
    """(B, H, W) bool: each map's pixels at or above its 90th percentile."""
    cut = maps.flatten(1).quantile(0.9, dim=1)
    return maps >= cut[:, None, None]


@metacam.map_metric(higher_is_better=True)
def nan_on_constant(maps, images):
    """NaN for a constant map (combo 0's), the map's mean otherwise."""
    flat = maps.flatten(1)
    constant = flat.amax(1) == flat.amin(1)
    return torch.where(constant, torch.full_like(flat[:, 0], float("nan")), flat.mean(1))


@metacam.model_metric(higher_is_better=True)
def fails_on_astronaut(probe, maps):
    """Raises for the astronaut photo only (its image id starts with 'astronaut')."""
    if any(i.startswith("astronaut") for i in probe.image_ids):
        raise ValueError("this metric cannot score astronauts")
    return maps.flatten(1).mean(1)


@metacam.map_metric(higher_is_better=True)
def wrong_shape(maps, images):
    return maps.flatten(1).mean(1, keepdim=True)  # (B, 1), not (B,)


@metacam.map_metric(higher_is_better=True)
def sparseness(maps, images):
    """Named like a built-in: a clash."""
    return maps.flatten(1).mean(1)


@metacam.map_metric(higher_is_better=True, name="deletion_auc")
def renamed_onto_a_builtin_column(maps, images):
    return maps.flatten(1).mean(1)


@metacam.map_metric(higher_is_better=True, name="status")
def renamed_onto_a_results_column(maps, images):
    return maps.flatten(1).mean(1)


def undecorated(maps, images):
    return maps.flatten(1).mean(1)
