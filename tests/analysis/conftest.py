"""Shared synthetic datasets (written once per session: the tests only read them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metacam.analysis.synthetic import write_synthetic

# Planted additive effects used by the planted-effect tests, all distinct so the order is known.
PLANTED = {
    "gradcam": 0.05,
    "gradcampp": 0.03,
    "perturbation": 0.02,
    "eigen": -0.01,
    "fullgrad": 0.005,
    "random": -0.04,
}


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete 64-experiment sweep with 12 single methods, 40 units, k in {25, 50, 75, 100}."""
    root = tmp_path_factory.mktemp("small")
    write_synthetic(root, 40, seed=11)
    return root


@pytest.fixture(scope="session")
def planted_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Known additive effects, unit intercepts and noise over 150 units."""
    root = tmp_path_factory.mktemp("planted")
    # Each 95% CI misses its effect 5% of the time, so all six are covered for ~74% of seeds; this
    # fixed seed is one of those (test_ci_coverage_is_nominal checks coverage over many seeds).
    write_synthetic(root, 150, effects=PLANTED, noise=0.03, unit_sd=0.08, seed=1, ks=(50.0, 100.0))
    return root


@pytest.fixture(scope="session")
def interaction_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like planted_dataset plus a planted gradcam × eigen interaction of +0.04."""
    root = tmp_path_factory.mktemp("interaction")
    write_synthetic(
        root,
        150,
        effects=PLANTED,
        interaction=("gradcam", "eigen", 0.04),
        noise=0.03,
        unit_sd=0.08,
        seed=6,
        ks=(50.0, 100.0),
        singles={},
    )
    return root
