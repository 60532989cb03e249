"""Members on vision transformers equal grad-cam 1.5 given the same reshape_transform
(max abs difference <= 1e-4), on seeded tiny random-weight models of every recognised
family: timm ViT, DeiT (distilled: two prefix tokens), Swin and Swin V2, torchvision ViT
and Swin.

The reshape and the default target layer are recognised, not given; grad-cam receives
our reshape object as its ``reshape_transform`` (and it equals grad-cam's own
transforms, below). AblationCAM writes its ablated maps back through the reshape's
inverse. Deliberate differences (AblationCAM and ShapleyCAM on transformers) are in
test_deviations.py; RandomCAM draws from its own seed stream (no oracle); FullGrad does
not apply to transformers (a one-line error, below).
"""

import pytest
import torch
from pytorch_grad_cam.utils.reshape_transforms import swinT_reshape_transform, vit_reshape_transform

from metacam.cams import MEMBERS, compute_members, member_cams
from metacam.errors import MetaCAMError
from metacam.models import load_model
from metacam.reshape import ChannelsLast, Tokens, UserReshape
from tests.cams.conftest import TINY_SIZE, TINY_VIT, tiny_transformer
from tests.cams.oracle import ablation_layer_for, max_abs_diff, oracle_map

TOLERANCE = 1e-4
ON_TRANSFORMERS = [name for name in MEMBERS if name not in ("randomcam", "fullgrad")]
EXPECTED = {  # model name -> (reshape, default target layer)
    "timm/vit_tiny_patch16_224": (Tokens(1, (4, 4)), "blocks.1.norm1"),
    "timm/deit_tiny_distilled_patch16_224": (Tokens(2, (4, 4)), "blocks.1.norm1"),
    "timm/swin_tiny_patch4_window7_224": (ChannelsLast(), "layers.1.blocks.0.norm1"),
    "timm/swinv2_tiny_window8_256": (ChannelsLast(), "layers.1.blocks.0.norm1"),
    "tv_vit": (Tokens(1, (4, 4)), "encoder.layers.encoder_layer_1.ln_1"),
    "tv_swin": (ChannelsLast(), "features.3.0.norm1"),
}


@pytest.fixture(scope="module")
def maps(transformer, tiny_input):
    """Every member on the family's model in one shared call, as a user computes them."""
    return member_cams(transformer, tiny_input, methods=ON_TRANSFORMERS)


@pytest.mark.parametrize("name", ON_TRANSFORMERS)
def test_member_equals_grad_cam_with_the_same_reshape(name, transformer, tiny_input, maps, monkeypatch):
    targets = transformer.net(tiny_input).argmax(1)
    reference = oracle_map(name, transformer.net, transformer.target_layers, tiny_input, targets,
                           monkeypatch, reshape=transformer.reshape,
                           ablation_layer=ablation_layer_for(transformer.reshape))
    assert maps[name].shape == (2, TINY_SIZE, TINY_SIZE)
    assert max_abs_diff(maps[name], reference) <= TOLERANCE
    assert float(maps[name].max() - maps[name].min()) > 0.5  # a real map, not a constant


def test_family_is_recognised_with_its_reshape_and_layer(transformer):
    reshape, layer = EXPECTED[transformer.name]
    assert transformer.reshape == reshape and transformer.target_layer_names == (layer,)
    assert transformer.layer_key == f"{layer}|{reshape.name}"


def test_reshapes_equal_grad_cams_transforms(transformer, tiny_input):
    captured = []
    handle = transformer.target_layer.register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        transformer.net(tiny_input)
    handle.remove()
    (output,) = captured
    ours = transformer.reshape(output)
    if isinstance(transformer.reshape, Tokens) and transformer.reshape.prefix == 1:
        assert torch.equal(ours, vit_reshape_transform(output, 4, 4))
    elif isinstance(transformer.reshape, ChannelsLast):
        # grad-cam's Swin transform expects the older flat token layout (B, h*w, C)
        assert torch.equal(ours, swinT_reshape_transform(output.flatten(1, 2), *output.shape[1:3]))
    # the inverse writes a map back: a changed map lands where it was read, the rest kept
    changed = ours * 2 + 1
    back = transformer.reshape.inverse(changed, output)
    assert torch.equal(transformer.reshape(back), changed)
    if isinstance(transformer.reshape, Tokens):
        prefix = transformer.reshape.prefix
        assert torch.equal(back[:, :prefix], output[:, :prefix])


def test_vit_timm_name_matches_the_model_it_builds():
    model = tiny_transformer("vit")
    assert model.name == "timm/vit_tiny_patch16_224" and model.input_size == (TINY_SIZE, TINY_SIZE)
    assert model.mean == (0.5, 0.5, 0.5) and len(model.categories) == 10
    again = tiny_transformer("vit")
    assert all(torch.equal(a, b) for a, b in zip(model.net.state_dict().values(),
                                                  again.net.state_dict().values(), strict=True))


# --- a reshape given by the user ---------------------------------------------------------


def test_user_reshape_and_its_autograd_inverse_equal_the_built_in(tiny_input):
    """reshape='package.module:fn' (grad-cam's ViT transform, 4x4): the same maps as the
    recognised family's, AblationCAM included, whose inverse is derived by autograd."""
    built_in = tiny_transformer("vit")
    user = load_model("timm/vit_tiny_patch16_224", "cpu", pretrained=False, seed=0, num_classes=10,
                      kwargs=TINY_VIT, reshape="tests.cams.transforms:vit_grid")
    user.net.load_state_dict(built_in.net.state_dict())
    assert user.reshape == UserReshape("tests.cams.transforms:vit_grid")
    assert user.layer_key == "blocks.1.norm1|tests.cams.transforms:vit_grid"
    ours = member_cams(user, tiny_input, methods=["gradcam", "scorecam", "ablationcam"])
    reference = member_cams(built_in, tiny_input, methods=["gradcam", "scorecam", "ablationcam"])
    for name, saliency in ours.items():
        assert max_abs_diff(saliency, reference[name].numpy()) <= 1e-6, name


def test_user_inverse_is_exact_and_an_explicit_inverse_is_used(tiny_input):
    output = torch.randn(3, 17, 8, generator=torch.Generator().manual_seed(0))
    grid = torch.randn(5, 8, 4, 4, generator=torch.Generator().manual_seed(1))
    derived = UserReshape("tests.cams.transforms:vit_grid").inverse(grid, output[:1])
    assert torch.equal(derived, Tokens(1, (4, 4)).inverse(grid, output[:1]))
    explicit = UserReshape("tests.cams.transforms:vit_grid_with_inverse")
    assert torch.equal(explicit.inverse(grid, output[:1]), torch.zeros(5, 17, 8))  # its own


# --- what cannot be explained: one line, before any work -------------------------------


def test_fullgrad_on_a_transformer_is_one_line_before_any_work(tiny_input):
    model = tiny_transformer("vit")
    calls = []
    handle = model.net.register_forward_hook(lambda m, i, o: calls.append(1))
    with pytest.raises(MetaCAMError, match=r"^member fullgrad cannot explain timm/vit_tiny_patch16_224 "
                                           r"\(VisionTransformer\): .*linear and layer-norm") as error:
        compute_members(model, tiny_input, methods=["gradcam", "fullgrad"])
    handle.remove()
    assert calls == [] and "\n" not in str(error.value)


def test_a_transformer_without_a_reshape_is_one_line():
    # a network MetaCAM does not recognise: a ViT inside a wrapper module
    with pytest.raises(MetaCAMError, match=r"is not a CNN MetaCAM recognises: .* outputs tokens "
                                           r"\(B, T, C\).*reshape='package.module:fn'") as error:
        load_model("tests.cams.transforms:wrapped_vit", "cpu", input_size=(TINY_SIZE, TINY_SIZE))
    assert "\n" not in str(error.value)
    # its token layer named without a reshape
    with pytest.raises(MetaCAMError, match=r"layer vit.blocks.1.norm1: the target layer outputs "
                                           r"shape \(1, 17, 32\), not a \(B, C, h, w\) feature map"):
        load_model("tests.cams.transforms:wrapped_vit", "cpu", input_size=(TINY_SIZE, TINY_SIZE),
                   layer="vit.blocks.1.norm1")
    # ... and with one, it works
    model = load_model("tests.cams.transforms:wrapped_vit", "cpu", input_size=(TINY_SIZE, TINY_SIZE),
                       layer="vit.blocks.1.norm1", reshape="tests.cams.transforms:vit_grid")
    assert model.target_layer_names == ("vit.blocks.1.norm1",)


def test_bad_reshapes_and_names_are_one_line():
    for spec, message in [
        ("grid", r"reshape 'grid': give 'package.module:function'"),
        ("tests.cams.nothing:grid", r"reshape tests.cams.nothing:grid: cannot import"),
        ("tests.cams.transforms:no_such", r"has no attribute 'no_such'"),
    ]:
        with pytest.raises(MetaCAMError, match=message):
            load_model("resnet18", "cpu", pretrained=False, reshape=spec)
    with pytest.raises(MetaCAMError, match=r"^unknown timm model 'vit_tiny_patch16_2244'; did you "
                                           r"mean timm/vit_tiny_patch16_224"):
        load_model("timm/vit_tiny_patch16_2244", "cpu", pretrained=False)
    with pytest.raises(MetaCAMError, match=r"^model timm/vit_tiny_patch16_224 raised TypeError"):
        load_model("timm/vit_tiny_patch16_224", "cpu", pretrained=False, kwargs={"no_such": 1})
