"""Shared fixtures. Model bundles are session-scoped: tests must not modify them."""

from __future__ import annotations

import pytest

from metacam.models import ModelBundle, load_model


@pytest.fixture(scope="session")
def lite0() -> ModelBundle:
    """The default model with its real ImageNet weights (shipped by a package; offline)."""
    return load_model("efficientnet_lite0", "cpu")


@pytest.fixture(scope="session")
def resnet18_random() -> ModelBundle:
    """torchvision ResNet-18 with random weights from seed 0 (no weight file needed)."""
    return load_model("resnet18", "cpu", pretrained=False, seed=0)
