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


# --- tiny vision transformers (seeded random weights; timm with pretrained=False) -------

TINY_SIZE = 32  # 32x32 images: a 4x4 patch grid at patch size 8
TINY_VIT = {"img_size": TINY_SIZE, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
TINY_SWIN = {"img_size": TINY_SIZE, "patch_size": 4, "embed_dim": 16, "depths": (1, 1),
             "num_heads": (1, 2), "window_size": 4}


def randomise_layernorm(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial LayerNorm affine parameters (timm and torchvision start them at 1 and 0),
    so that the norms the CAMs read are not plain standardisations."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.LayerNorm) and module.weight is not None:
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
    return net


def tiny_transformer(family: str):
    """The model object of a seeded tiny transformer of ``family``, 10 classes, 32x32:
    timm's through load_model("timm/NAME", pretrained=False), torchvision's classes
    built directly (their builders fix the depth) and wrapped with ModelBundle.from_net.
    Either way the reshape and target layer are recognised, not given."""
    from metacam.models import ModelBundle, load_model

    timm_names = {"vit": ("vit_tiny_patch16_224", TINY_VIT),
                  "deit": ("deit_tiny_distilled_patch16_224", TINY_VIT),
                  "swin": ("swin_tiny_patch4_window7_224", TINY_SWIN),
                  "swinv2": ("swinv2_tiny_window8_256", TINY_SWIN)}
    if family in timm_names:
        name, kwargs = timm_names[family]
        model = load_model(f"timm/{name}", "cpu", pretrained=False, seed=0, num_classes=10,
                           kwargs=kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            if family == "tv_vit":
                net = torchvision.models.VisionTransformer(
                    image_size=TINY_SIZE, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                    mlp_dim=64, num_classes=10)
                torch.nn.init.normal_(net.heads.head.weight, std=0.1)  # torchvision zeroes it
            else:
                net = torchvision.models.SwinTransformer(
                    patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                    window_size=[4, 4], num_classes=10)
        model = ModelBundle.from_net(net.eval(), input_size=(TINY_SIZE, TINY_SIZE), name=family)
    randomise_layernorm(model.net, seed=1)
    return model


TRANSFORMERS = ("vit", "deit", "swin", "swinv2", "tv_vit", "tv_swin")


@pytest.fixture(scope="module", params=TRANSFORMERS)
def transformer(request):
    """Each tiny transformer family in turn (module-scoped: built once per test module)."""
    return tiny_transformer(request.param)


@pytest.fixture(scope="module")
def tiny_input() -> torch.Tensor:
    """(2, 3, 32, 32) seeded noise."""
    return torch.randn(2, 3, TINY_SIZE, TINY_SIZE, generator=torch.Generator().manual_seed(3))
