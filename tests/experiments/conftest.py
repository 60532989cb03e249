"""Hydra's compose API over the package's conf/, with the global state cleared after each use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from omegaconf import DictConfig

from metacam.experiments.plan import composed as _composed


@contextmanager
def composed(overrides: list[str] = (), hydra_config: bool = False, config_dirs: list[str] = ()) -> Iterator[DictConfig]:
    with _composed(list(overrides), list(config_dirs), hydra=hydra_config) as cfg:
        yield cfg


# Overrides that make a real but fast sweep: random-weight ResNet-18 at 64 x 64,
# one photo, a 3-value k grid, one ROAD percentage, two held-out percentages,
# 4 deletion steps, ScoreCAM left out.
FAST_BASE = [
    "model=tiny_random",
    "data.images=[sample:coffee]",
    "threshold.ks=[20,60,100]",
    "road.percentiles=[50]",
    "heldout.percentiles=[30,70]",
    "deletion.steps=4",
]
FAST = [*FAST_BASE, "groups.perturbation=[ablationcam]"]

# Two groups only (gradcam, eigen: 4 combinations): the sweep tests' reduced grid.
TWO_GROUPS = [*FAST_BASE, "groups=two_groups"]
