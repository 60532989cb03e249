"""Shared synthetic datasets (written once per session: the tests only read them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metacam.analysis.synthetic import make_groups, write_synthetic

GROUPS = make_groups(6)
"""group1..group6, group6 a control: the comparator is combo 31."""
PLANTED = dict(zip(GROUPS.names, (0.05, 0.03, 0.02, -0.01, 0.005, -0.04), strict=True))
"""Planted additive effects, all distinct so the order is known."""


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete 64-experiment sweep, 12 single methods, 2 controls; 2 models × 20 images, top-1
    (40 units, 40 clusters); k in {25, 50, 75, 100}; planted optimism 0.02 everywhere."""
    root = tmp_path_factory.mktemp("small")
    write_synthetic(root, 20, groups=GROUPS, seed=11, optimism=0.02, heldout_noise=0.01)
    return root


@pytest.fixture(scope="session")
def planted_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Known additive effects over one model × 150 images (150 clusters), k in {50, 100}."""
    root = tmp_path_factory.mktemp("planted")
    write_synthetic(root, 150, groups=GROUPS, models=("m",), effects=PLANTED, noise=0.03, image_sd=0.08, entry_image_sd=0.0,
                    seed=1, ks=(50.0, 100.0))
    return root


@pytest.fixture(scope="session")
def interaction_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like planted_dataset plus a planted group1 × group4 interaction of +0.04, no singles or controls."""
    root = tmp_path_factory.mktemp("interaction")
    write_synthetic(root, 150, groups=GROUPS, models=("m",), effects=PLANTED,
                    interaction=("group1", "group4", 0.04), noise=0.03, image_sd=0.08, entry_image_sd=0.0, seed=6,
                    ks=(50.0, 100.0), singles={}, controls={})
    return root


@pytest.fixture(scope="session")
def study_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study: 2 models × 12 images × top-2 targets = 48 units in 24 clusters (< 30)."""
    root = tmp_path_factory.mktemp("study")
    write_synthetic(root, 12, groups=make_groups(3), models=("net_a", "net_b"), n_targets=2, seed=5)
    return root
