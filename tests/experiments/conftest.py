"""Hydra's compose API over conf/, with the global state cleared after each use."""

from collections.abc import Iterator
from contextlib import contextmanager

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from metacam.experiments.sweep import CONF_DIR


@contextmanager
def composed(overrides: list[str] = (), hydra_config: bool = False) -> Iterator[DictConfig]:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            yield compose("sweep", overrides=list(overrides), return_hydra_config=hydra_config)
    finally:
        GlobalHydra.instance().clear()


# Overrides that make a real but fast sweep: random-weight ResNet-18 at 64 x 64,
# one photo, a 3-value k grid, one ROAD percentage, ScoreCAM left out.
FAST = [
    "model=tiny_random",
    "data.images=[sample:coffee]",
    "threshold.ks=[20,60,100]",
    "road.percentiles=[50]",
    "groups.perturbation=[ablationcam]",
]
