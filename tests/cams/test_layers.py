"""Several target layers: each member's map per layer, combined as pytorch-grad-cam
combines them (per layer: ReLU, normalise, upsample; then the mean over layers,
normalised), equals grad-cam with ``target_layers=[a, b]`` (max abs difference <= 1e-4);
the layers are part of the member-cache key."""

import pytest

from metacam.cache import EntryKey
from metacam.cams import MEMBERS, member_cams
from metacam.errors import MetaCAMError
from metacam.models import ModelBundle, load_model
from tests.cams.conftest import tiny_transformer
from tests.cams.oracle import ablation_layer_for, max_abs_diff, oracle_map

TOLERANCE = 1e-4
CNN_MEMBERS = [name for name in MEMBERS if name not in ("randomcam", "scorecam", "ablationcam")]
TRANSFORMER_MEMBERS = [name for name in MEMBERS if name not in ("randomcam", "fullgrad")]


@pytest.fixture(scope="module")
def resnet_two_layers(tiny_resnet):
    """layer3 (6x6 at 96x96) and layer4 (3x3): two resolutions."""
    return ModelBundle.from_net(tiny_resnet, ["layer3.1", tiny_resnet.layer4[-1]], input_size=(96, 96))


@pytest.fixture(scope="module")
def resnet_two_layer_maps(resnet_two_layers, resnet_input):
    return member_cams(resnet_two_layers, resnet_input, methods=CNN_MEMBERS)


@pytest.mark.parametrize("name", CNN_MEMBERS)
def test_two_resnet_layers_equal_grad_cam(name, resnet_two_layers, resnet_input, resnet_two_layer_maps,
                                          monkeypatch):
    net = resnet_two_layers.net
    targets = net(resnet_input).argmax(1)
    reference = oracle_map(name, net, list(resnet_two_layers.target_layers), resnet_input, targets,
                           monkeypatch)
    assert max_abs_diff(resnet_two_layer_maps[name], reference) <= TOLERANCE


def test_two_layers_are_not_either_layer(resnet_two_layers, resnet_input):
    """The combination is not one of its layers' maps (the test above can fail)."""
    both = member_cams(resnet_two_layers, resnet_input, methods=["gradcam"])["gradcam"]
    for layer in resnet_two_layers.target_layers:
        alone = member_cams(resnet_two_layers.net, resnet_input, layer, methods=["gradcam"])["gradcam"]
        assert max_abs_diff(both, alone.numpy()) > 0.05


@pytest.fixture(scope="module", params=[("vit", ["blocks.0.norm1", "blocks.1.norm1"]),
                                        ("swin", ["layers.0.blocks.0.norm1", "layers.1.blocks.0.norm1"])],
                ids=["vit", "swin"])
def transformer_two_layers(request):
    """A tiny ViT's two blocks (the same 4x4 grid), a tiny Swin's two stages (8x8 and 4x4)."""
    family, layers = request.param
    model = tiny_transformer(family)
    return ModelBundle.from_net(model.net, layers, name=model.name, input_size=model.input_size)


@pytest.fixture(scope="module")
def transformer_two_layer_maps(transformer_two_layers, tiny_input):
    return member_cams(transformer_two_layers, tiny_input, methods=TRANSFORMER_MEMBERS)


@pytest.mark.parametrize("name", TRANSFORMER_MEMBERS)
def test_two_transformer_layers_equal_grad_cam(name, transformer_two_layers, tiny_input,
                                               transformer_two_layer_maps, monkeypatch):
    model = transformer_two_layers
    targets = model.net(tiny_input).argmax(1)
    reference = oracle_map(name, model.net, list(model.target_layers), tiny_input, targets, monkeypatch,
                           reshape=model.reshape, ablation_layer=ablation_layer_for(model.reshape))
    assert max_abs_diff(transformer_two_layer_maps[name], reference) <= TOLERANCE


def test_layer_lists_resolve_by_name_and_are_checked():
    model = load_model("resnet18", "cpu", pretrained=False, layer="layer3, layer4[-1]")
    assert model.target_layer_names == ("layer3", "layer4.1")
    assert model.target_layers == (model.net.layer3, model.net.layer4[1])
    assert model.target_layer_name == model.layer_key == "layer3,layer4.1"
    with pytest.raises(MetaCAMError, match=r"model resnet18 has 2 target layers \(layer3,layer4.1\); "
                                           r"this caller takes one layer"):
        model.target_layer  # noqa: B018 - a caller that takes one bare layer is refused, not misled
    same = load_model("resnet18", "cpu", pretrained=False, layer=["layer3", "layer4.-1"])
    assert same.target_layer_names == model.target_layer_names
    with pytest.raises(MetaCAMError, match="names a layer twice"):
        load_model("resnet18", "cpu", pretrained=False, layer="layer4.1,layer4[-1]")
    with pytest.raises(MetaCAMError, match="the layer list is empty"):
        load_model("resnet18", "cpu", pretrained=False, layer=[" , "])
    with pytest.raises(MetaCAMError, match=r"layer 'layer9' not found in resnet18"):
        load_model("resnet18", "cpu", pretrained=False, layer="layer3,layer9")


def test_the_layers_and_the_reshape_are_part_of_the_cache_key(tiny_resnet):
    """EntryKey.layer is the model's layer_key: the target layers in order, and the
    reshape when the layer output is not already a map."""

    def key(model: ModelBundle) -> EntryKey:
        return EntryKey("resnet18-random0", model.layer_key, "img-abc", 3, "gradcam", (224, 224))

    def layers(spec):
        return ModelBundle.from_net(tiny_resnet, spec, check=False)

    one, two, swapped = layers("layer4"), layers("layer3,layer4"), layers("layer4,layer3")
    again = layers([tiny_resnet.layer3, tiny_resnet.layer4])
    assert key(two) == key(again) and key(two).relative_path() == key(again).relative_path()
    paths = {key(m).relative_path() for m in (one, two, swapped)}
    assert len(paths) == 3  # each layer list has its own entries
    assert key(two).relative_path().parts[1] == "layer3,layer4"
    vit = tiny_transformer("vit")
    reshaped = ModelBundle.from_net(vit.net, vit.target_layer_names, reshape="tests.cams.transforms:vit_grid",
                                    input_size=vit.input_size)
    assert key(vit).layer == "blocks.1.norm1|tokens"
    assert key(reshaped).layer == "blocks.1.norm1|tests.cams.transforms:vit_grid"
    assert key(vit).relative_path() != key(reshaped).relative_path()
