"""Where we deliberately differ from grad-cam, and why: each difference is pinned here."""

import copy

import numpy as np
import pytest
import pytorch_grad_cam as pgc
import torch
from pytorch_grad_cam.ablation_layer import AblationLayerVit
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from timm.layers.norm_act import BatchNormAct2d
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from metacam.cams import MemberOptions, member_cams
from metacam.cams.eigen import principal_projection
from metacam.cams.newer import kernel_projection
from metacam.cams.random import randomcam
from metacam.seeds import stream_seed
from tests.cams.conftest import randomise_batchnorm, tiny_transformer
from tests.cams.oracle import ORACLE_CLASSES, PatchTokenAblation, max_abs_diff, oracle_map


def test_eigen_sign_correlates_with_channel_sum(tiny_resnet, resnet_input):
    """grad-cam's SVD sign is arbitrary; ours correlates positively with the channel sum."""
    maps = torch.rand(4, 16, 5, 5, generator=torch.Generator().manual_seed(0))
    for flip in (1.0, -1.0):  # the sign of the data must not matter to the orientation
        projection = principal_projection(maps * flip)
        channel_sum = (maps * flip).sum(1)
        centred = channel_sum - channel_sum.mean(dim=(1, 2), keepdim=True)
        assert ((projection * centred).sum(dim=(1, 2)) > 0).all()


def test_eigen_without_sign_patch_differs_only_by_sign(tiny_resnet, resnet_input, monkeypatch):
    """grad-cam unpatched equals either our map or the map of the opposite sign."""
    layer = tiny_resnet.layer4[-1]
    targets = tiny_resnet(resnet_input).argmax(1)
    ours = member_cams(tiny_resnet, resnet_input, layer, methods=["eigengradcam"])["eigengradcam"]
    with ORACLE_CLASSES["eigengradcam"](tiny_resnet, [layer]) as cam:
        raw = cam(resnet_input, None)
    patched = oracle_map("eigengradcam", tiny_resnet, layer, resnet_input, targets, monkeypatch)
    for i in range(len(raw)):
        same = np.abs(raw[i] - patched[i]).max() <= 1e-4
        assert same or np.abs(raw[i] - patched[i]).max() > 0.1  # grad-cam flipped: a different map
    assert max_abs_diff(ours, patched) <= 1e-4


def _unfuse_bn_act(net: nn.Module) -> nn.Module:
    """Replace every timm BatchNormAct2d by Sequential(BatchNorm2d, drop, act): the same
    function, but with plain BatchNorm2d types that grad-cam's FullGrad does see."""
    for name, child in net.named_children():
        if isinstance(child, BatchNormAct2d):
            bn = nn.BatchNorm2d(child.num_features, eps=child.eps)
            bn.load_state_dict(child.state_dict())
            setattr(net, name, nn.Sequential(bn, child.drop, child.act))
        else:
            _unfuse_bn_act(child)
    return net.eval()


@pytest.fixture(scope="module")
def timm_net():
    """A small timm EfficientNet-Lite (random seeded weights, randomised BN statistics)."""
    import timm

    torch.manual_seed(0)
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)
    return randomise_batchnorm(net, seed=3).eval()


def test_fullgrad_on_timm_includes_batchnormact(timm_net):
    """grad-cam's FullGrad tests type(layer) == BatchNorm2d, so on timm it keeps only the
    input-gradient term. Ours includes BatchNormAct2d biases, with the gradient taken
    before the fused ReLU6: it equals grad-cam on the unfused (but identical) network."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    unfused = _unfuse_bn_act(copy.deepcopy(timm_net))
    assert torch.allclose(unfused(x), timm_net(x), atol=1e-5)
    targets = timm_net(x).argmax(1)

    ours = member_cams(timm_net, x, timm_net.bn2, methods=["fullgrad"])["fullgrad"]
    compat = member_cams(
        timm_net, x, timm_net.bn2, methods=["fullgrad"], options=MemberOptions(fullgrad_bn_subclasses=False)
    )["fullgrad"]
    grad_cam_fused = oracle_map("fullgrad", timm_net, None, x, targets)
    grad_cam_unfused = oracle_map("fullgrad", unfused, None, x, targets)

    assert max_abs_diff(compat, grad_cam_fused) <= 1e-4  # compatibility mode reproduces the flaw
    assert max_abs_diff(ours, grad_cam_unfused) <= 1e-4  # our default is FullGrad proper
    assert max_abs_diff(ours, grad_cam_fused) > 0.1  # and the flaw is not negligible


def test_fullgrad_plain_batchnorm_unaffected_by_subclass_rule(tiny_resnet, resnet_input):
    """On torchvision (plain BatchNorm2d) both selections are the same layers."""
    layer = tiny_resnet.layer4[-1]
    ours = member_cams(tiny_resnet, resnet_input, layer, methods=["fullgrad"])["fullgrad"]
    compat = member_cams(
        tiny_resnet, resnet_input, layer, methods=["fullgrad"], options=MemberOptions(fullgrad_bn_subclasses=False)
    )["fullgrad"]
    assert torch.equal(ours, compat)


def test_randomcam_is_grad_cams_formula_with_seeded_weights(tiny_resnet, resnet_input, monkeypatch):
    """RandomCAM draws U(-1, 1) channel weights from its own seeded stream per image
    (``member.randomcam`` of the run seed and the image id); given the same weights,
    grad-cam's RandomCAM gives the same map. An image's map does not depend on its batch."""
    layer = tiny_resnet.layer4[-1]
    ids = ["a.png", "b.png"]

    def maps(seed, x=resnet_input, image_ids=ids):
        return member_cams(
            tiny_resnet, x, layer, methods=["randomcam"], seed=seed, image_ids=image_ids
        )["randomcam"]

    ours = maps(7)
    assert torch.equal(ours, maps(7))
    assert max_abs_diff(ours, maps(8).numpy()) > 0.05

    # Batch independence is about the seeding, so test it on the same activations in
    # float64: in float32 the convolutions before the layer round differently at batch
    # 1 and 2 (kernel choice depends on batch size and CPU ISA), which says nothing
    # about RandomCAM. In float64 the only difference left is summation order (~1e-15).
    activations = torch.randn(
        2, 16, 5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    seeds = [stream_seed(7, "member.randomcam", i) for i in ids]
    assert torch.allclose(
        randomcam(activations[1:], seeds[1:]), randomcam(activations, seeds)[1:], atol=1e-12
    )

    weights = torch.stack(
        [
            torch.rand(512, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
            for s in seeds
        ]
    )
    weights = (weights * 2 - 1).numpy()
    monkeypatch.setattr("pytorch_grad_cam.random_cam.np.random.uniform", lambda *a, **k: weights)
    targets = tiny_resnet(resnet_input).argmax(1)
    reference = oracle_map("randomcam", tiny_resnet, layer, resnet_input, targets)
    assert max_abs_diff(ours, reference) <= 1e-4


def test_kpca_sign_is_oriented_as_eigencam(tiny_resnet, resnet_input, monkeypatch):
    """scikit-learn's KernelPCA makes the largest entry of the component positive, which
    is as arbitrary for a map as the SVD's sign; ours is oriented like EigenCAM's. grad-cam
    unpatched equals either our map or the map of the opposite sign, image by image."""
    layer = tiny_resnet.layer4[-1]
    maps = torch.rand(3, 16, 5, 5, generator=torch.Generator().manual_seed(0))
    for flip in (1.0, -1.0):
        projection = kernel_projection(maps * flip)
        channel_sum = (maps * flip).sum(1)
        centred = channel_sum - channel_sum.mean(dim=(1, 2), keepdim=True)
        assert ((projection * centred).sum(dim=(1, 2)) > 0).all()
    targets = tiny_resnet(resnet_input).argmax(1)
    with ORACLE_CLASSES["kpcacam"](tiny_resnet, [layer]) as cam:
        raw = cam(resnet_input, None)
    patched = oracle_map("kpcacam", tiny_resnet, layer, resnet_input, targets, monkeypatch)
    for i in range(len(raw)):
        gap = np.abs(raw[i] - patched[i]).max()
        assert gap <= 1e-4 or gap > 0.1  # the same map, or grad-cam's flipped one
    ours = member_cams(tiny_resnet, resnet_input, layer, methods=["kpcacam"])["kpcacam"]
    assert max_abs_diff(ours, patched) <= 1e-4


@pytest.fixture(scope="module")
def vit():
    return tiny_transformer("vit")


def test_ablationcam_on_vit_ablates_the_map_not_the_class_token(vit, tiny_input):
    """On ViT/DeiT our AblationCAM removes a channel where the map shows it, the patch
    tokens, and keeps the class (and distillation) tokens; grad-cam's AblationLayerVit
    also overwrites that channel in them, so its weight mixes in the class token's own
    use of the channel, which no map position shows. Ours equals grad-cam with the
    class token spared (test_transformers.py); the difference to its stock layer is
    not negligible."""
    targets = vit.net(tiny_input).argmax(1)
    ours = member_cams(vit, tiny_input, methods=["ablationcam"])["ablationcam"]
    args = ("ablationcam", vit.net, vit.target_layers, tiny_input, targets)
    spared = oracle_map(*args, reshape=vit.reshape, ablation_layer=PatchTokenAblation(1))
    stock = oracle_map(*args, reshape=vit.reshape, ablation_layer=AblationLayerVit())
    assert max_abs_diff(ours, spared) <= 1e-4
    assert max_abs_diff(ours, stock) > 0.05


def test_shapleycam_on_transformers_needs_grad_cams_reshape_fixed(vit, tiny_input):
    """grad-cam 1.5.7's ShapleyCAM cannot run with a reshape_transform (it weights the
    un-reshaped activations); ours equals it with that one line fixed
    (test_transformers.py). On a ViT the Hessian term is real: ShapleyCAM is not Grad-CAM
    there, while on the ReLU networks after their last map it is (H·A = 0)."""
    targets = [ClassifierOutputTarget(int(c)) for c in vit.net(tiny_input).argmax(1)]
    with pytest.raises((ValueError, RuntimeError)):
        with sdpa_kernel([SDPBackend.MATH]):
            cam = pgc.ShapleyCAM(vit.net, list(vit.target_layers), reshape_transform=vit.reshape)
            try:
                cam(tiny_input, targets)
            finally:
                cam.activations_and_grads.gradients = []
                cam.activations_and_grads.release()
    maps = member_cams(vit, tiny_input, methods=["shapleycam", "gradcam"])
    assert max_abs_diff(maps["shapleycam"], maps["gradcam"].numpy()) > 0.01
