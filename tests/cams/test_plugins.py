"""Plug-in members: the two contracts, the registry, and every way a plug-in can be wrong."""

import pytest
import torch

from metacam.cams import MEMBERS, compute_members, member_cams, resolve_member, resolve_members
from metacam.cams.registry import MemberError
from metacam.errors import MetaCAMError


def test_layer_plugin_reimplementing_gradcam_equals_the_builtin(tiny_resnet, resnet_input):
    layer = tiny_resnet.layer4[-1]
    maps = member_cams(tiny_resnet, resnet_input, layer, methods=["gradcam", "tests.plugins:gradcam_again"])
    # Same float32 operations in another order (mean then product vs einsum): a few ulps
    # of values in [0, 1] after normalisation, far below 1e-6.
    assert torch.allclose(maps["tests.plugins:gradcam_again"], maps["gradcam"], atol=1e-6)
    assert maps["gradcam"].std() > 0.05  # a real map, not a constant


def test_model_plugin_wrapping_the_public_api_equals_the_builtin(tiny_resnet, resnet_input):
    layer = tiny_resnet.layer4[-1]
    maps = member_cams(tiny_resnet, resnet_input, layer, methods=["gradcam", "tests.plugins:gradcam_via_api"])
    assert torch.allclose(maps["tests.plugins:gradcam_via_api"], maps["gradcam"], atol=1e-6)


def test_a_plugin_is_registered_under_its_path_with_what_it_declares():
    entry = resolve_member("tests.plugins:channel_sum")
    assert MEMBERS["tests.plugins:channel_sum"] is entry
    assert entry.plugin and not entry.needs_gradients and entry.resolution == "layer"
    assert entry.fingerprint.startswith("src-")  # the cache key changes when its source does
    model = resolve_member("tests.plugins:gradcam_via_api")
    assert model.own_passes and model.resolution == "input"
    # the built-ins stay the default set, plug-ins come only when named
    assert [m.name for m in resolve_members(None)] == [
        "gradcam", "hirescam", "gradcam_elementwise", "gradcampp", "xgradcam", "layercam",
        "scorecam", "ablationcam", "eigencam", "eigengradcam", "fullgrad", "randomcam"]


def test_a_layer_plugin_without_gradients_needs_no_backward(tiny_resnet, resnet_input, monkeypatch):
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: pytest.fail("backward ran"))
    maps = member_cams(tiny_resnet, resnet_input, tiny_resnet.layer4[-1], methods=["tests.plugins:channel_sum"])
    assert maps["tests.plugins:channel_sum"].amax() == pytest.approx(1.0, abs=1e-5)


def test_a_seeded_plugin_gets_its_own_stream_per_image(tiny_resnet, resnet_input):
    layer = tiny_resnet.layer4[-1]
    name = "tests.plugins:seeded_noise"
    both = member_cams(tiny_resnet, resnet_input, layer, methods=[name], image_ids=["a", "b"])[name]
    alone = member_cams(tiny_resnet, resnet_input[1:], layer, methods=[name], image_ids=["b"])[name]
    assert torch.equal(both[1], alone[0]) and not torch.equal(both[0], both[1])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tests.nowhere:thing", "plug-in tests.nowhere:thing: cannot import tests.nowhere"),
        ("tests.plugins:missing", "plug-in tests.plugins:missing: tests.plugins has no attribute 'missing'"),
        ("tests.plugins:NOT_A_FUNCTION", "plug-in tests.plugins:NOT_A_FUNCTION: NOT_A_FUNCTION is not callable"),
        ("tests.plugins:undecorated", "plug-in tests.plugins:undecorated: undecorated is not marked with @metacam.layer_member or @metacam.model_member"),
        ("tests.plugins", "unknown CAM method 'tests.plugins'"),
        ("gradcamm", "unknown CAM method 'gradcamm'; did you mean: gradcam"),
    ],
)
def test_bad_plugin_names_are_one_line_errors_before_any_work(name, message):
    with pytest.raises(MetaCAMError) as caught:
        resolve_members([name])
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("tests.plugins:returns_nan", "returned NaN or infinite values"),
        ("tests.plugins:wrong_shape", "returned shape (2, 512, 3, 3); expected (B, h, w) with B = 2"),
        ("tests.plugins:not_a_tensor", "returned list, not a torch.Tensor"),
        ("tests.plugins:raises", "raised ValueError: this plug-in always fails"),
    ],
)
def test_a_plugin_returning_garbage_fails_alone(tiny_resnet, resnet_input, name, problem):
    layer = tiny_resnet.layer4[-1]
    with pytest.raises(MemberError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        member_cams(tiny_resnet, resnet_input, layer, methods=[name])
    collected = compute_members(tiny_resnet, resnet_input, layer, methods=["gradcam", name], on_error="collect")
    assert list(collected.maps) == ["gradcam"]  # the others are still computed
    assert collected.failures[name] == f"member {name}: {problem}"
