"""Every member except RandomCAM equals grad-cam 1.5 (max abs difference <= 1e-4)
for the same net, layer, input and targets, on two architectures.

Deliberate differences are tested in test_deviations.py: the Eigen sign (here
the oracle gets our sign convention patched in) and FullGrad on timm's
BatchNormAct2d (here FullGrad runs in grad-cam-compatible mode on timm).
"""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from metacam.cams import MEMBERS, MemberOptions, member_cams
from tests.cams.oracle import max_abs_diff, oracle_map

TOLERANCE = 1e-4
CHEAP = [name for name in MEMBERS if name not in ("scorecam", "ablationcam", "randomcam")]
PERTURBATION = ["scorecam", "ablationcam"]


@pytest.fixture(scope="module")
def resnet_maps(tiny_resnet, resnet_input):
    """All our maps for the ResNet case in one call, as a user would compute them."""
    return member_cams(tiny_resnet, resnet_input, tiny_resnet.layer4[-1], methods=CHEAP + PERTURBATION)


@pytest.mark.parametrize("name", CHEAP + PERTURBATION)
def test_resnet_member_equals_grad_cam(name, tiny_resnet, resnet_input, resnet_maps, monkeypatch):
    targets = tiny_resnet(resnet_input).argmax(1)
    reference = oracle_map(
        name, tiny_resnet, tiny_resnet.layer4[-1], resnet_input, targets, monkeypatch
    )
    assert resnet_maps[name].shape == (2, 96, 96)
    assert max_abs_diff(resnet_maps[name], reference) <= TOLERANCE


def test_resnet_explicit_targets_equal_grad_cam(tiny_resnet, resnet_input, monkeypatch):
    """Explaining a class other than the top-1 changes the map, and still matches."""
    top1 = tiny_resnet(resnet_input).argmin(1)  # the least likely class: surely not top-1
    ours = member_cams(tiny_resnet, resnet_input, tiny_resnet.layer4[-1], top1, CHEAP)
    default = member_cams(tiny_resnet, resnet_input, tiny_resnet.layer4[-1], None, ["gradcam"])
    assert max_abs_diff(ours["gradcam"], default["gradcam"].numpy()) > 0.1
    for name in CHEAP:
        reference = oracle_map(
            name, tiny_resnet, tiny_resnet.layer4[-1], resnet_input, top1, monkeypatch
        )
        assert max_abs_diff(ours[name], reference) <= TOLERANCE, name


@pytest.fixture(scope="module")
def coffee_96(lite0):
    """The real coffee photo at 96x96 (bn2 is 3x3), normalised as the model expects."""
    image = Image.fromarray(data.coffee()).resize((96, 96), Image.BICUBIC)
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    mean = torch.tensor(lite0.mean)[:, None, None]
    std = torch.tensor(lite0.std)[:, None, None]
    return ((pixels - mean) / std)[None]


@pytest.fixture(scope="module")
def lite0_maps(lite0, coffee_96):
    return member_cams(lite0.net, coffee_96, lite0.target_layer, methods=CHEAP + PERTURBATION,
                       options=MemberOptions(fullgrad_bn_subclasses=False))


@pytest.mark.slow
@pytest.mark.parametrize("name", CHEAP + PERTURBATION)
def test_efficientnet_lite0_member_equals_grad_cam(name, lite0, coffee_96, lite0_maps, monkeypatch):
    targets = lite0.net(coffee_96).argmax(1)
    reference = oracle_map(name, lite0.net, lite0.target_layer, coffee_96, targets, monkeypatch)
    assert max_abs_diff(lite0_maps[name], reference) <= TOLERANCE
    # a real photo gives a real map, not a degenerate constant one
    assert lite0_maps[name].max() == pytest.approx(1.0, abs=1e-5)
