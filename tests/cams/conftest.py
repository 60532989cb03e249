"""Small seeded networks for the oracle tests."""

import pytest
import torch
import torchvision


def randomise_batchnorm(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters, so
    that eval-mode BN (and FullGrad's BN bias) is not the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return net


@pytest.fixture(scope="module")
def tiny_resnet() -> torch.nn.Module:
    """torchvision ResNet-18, 10 classes, seeded random weights and BN statistics."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    return randomise_batchnorm(net, seed=1).eval()


@pytest.fixture(scope="module")
def resnet_input() -> torch.Tensor:
    """(2, 3, 96, 96): small, so layer4 is 3x3 and grad-cam's perturbation members are quick."""
    return torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
