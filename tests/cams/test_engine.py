"""How member_cams works: one shared pass, the ablation tail, constant channels,
modes and errors."""

import pytest
import torch
from torch import nn

from metacam.cams import MEMBERS, MemberOptions, compute_members, member_cams, resolve_methods
from metacam.errors import MetaCAMError
from tests.cams.oracle import max_abs_diff, oracle_map

SHARED = [
    "gradcam",
    "hirescam",
    "gradcam_elementwise",
    "gradcampp",
    "xgradcam",
    "layercam",
    "eigencam",
    "eigengradcam",
    "fullgrad",
]


class Counter:
    """Counts calls and images through a module (a forward hook)."""

    def __init__(self, module: nn.Module) -> None:
        self.calls, self.images = 0, 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, _module, inputs, _output) -> None:
        self.calls += 1
        self.images += inputs[0].shape[0]


def test_gradient_family_eigen_and_fullgrad_share_one_forward_and_one_backward(
    tiny_resnet, resnet_input, monkeypatch
):
    net = nn.Sequential(tiny_resnet)  # fresh wrapper: hooks stay off the shared fixture
    forwards = Counter(net)
    backwards = []
    real_grad = torch.autograd.grad
    monkeypatch.setattr(
        torch.autograd, "grad", lambda *a, **k: backwards.append(1) or real_grad(*a, **k)
    )
    maps = member_cams(net, resnet_input, tiny_resnet.layer4[-1], methods=SHARED)
    assert set(maps) == set(SHARED)
    assert (forwards.calls, len(backwards)) == (1, 1)


def test_eigencam_alone_needs_no_backward(tiny_resnet, resnet_input, monkeypatch):
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: pytest.fail("backward ran"))
    member_cams(tiny_resnet, resnet_input, tiny_resnet.layer4[-1], methods=["eigencam"])


def test_ablation_runs_the_prefix_once_per_chunk(tiny_resnet, resnet_input):
    """The layers before the target see one image per chunk of ablated channels, not one
    per channel as in grad-cam; the layers after see every ablated copy."""
    stem, head = Counter(tiny_resnet.conv1), Counter(tiny_resnet.fc)
    try:
        compute_members(
            tiny_resnet,
            resnet_input,
            tiny_resnet.layer4[-1],
            methods=["ablationcam"],
            options=MemberOptions(ablation_batch=100),
        )
    finally:
        stem.handle.remove()
        head.handle.remove()
    # shared forward: 2 images; then per image ceil(live channels / 100) chunks of 1 image
    acts = []
    handle = tiny_resnet.layer4[-1].register_forward_hook(lambda m, i, o: acts.append(o))
    tiny_resnet(resnet_input)
    handle.remove()
    live_channels = [(a.flatten(1).amax(1) > 0).sum().item() for a in acts[0]]
    chunks = sum(-(-n // 100) for n in live_channels)
    assert stem.images - 2 == chunks  # minus the shared pass
    assert head.images - 2 == sum(live_channels)


class SkipAcrossTarget(nn.Module):
    """A net whose tail concatenates, along the channel axis, a feature computed before
    the target layer: a batch-1 prefix cannot broadcast into cat, so AblationCAM must
    fall back to full passes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        skip = self.stem(x)
        out = torch.cat([skip, self.body(skip)], dim=1)
        return self.head(out.mean(dim=(2, 3)))


def test_ablation_falls_back_to_full_passes_and_still_equals_grad_cam(monkeypatch):
    net = SkipAcrossTarget().eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    ours = member_cams(net, x, net.body, methods=["ablationcam"])["ablationcam"]
    reference = oracle_map("ablationcam", net, net.body, x, net(x).argmax(1))
    assert max_abs_diff(ours, reference) <= 1e-4


class ConstantChannels(nn.Module):
    """Target layer output has channels that are exactly constant (0 and 0.5)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(9)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.target = nn.Identity()
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        feats = self.features(x)
        constant = torch.cat(
            [torch.zeros_like(feats[:, :1]), torch.full_like(feats[:, :1], 0.5)], 1
        )
        out = self.target(torch.cat([feats, constant], dim=1))
        return self.head(out.mean(dim=(2, 3)))


def test_scorecam_constant_channels_are_finite_and_match_grad_cam():
    net = ConstantChannels().eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(10))
    ours = member_cams(net, x, net.target, methods=["scorecam", "ablationcam"])
    for name, cam in ours.items():
        assert torch.isfinite(cam).all(), name
        reference = oracle_map(name, net, net.target, x, net(x).argmax(1))
        assert max_abs_diff(cam, reference) <= 1e-4, name


def test_training_mode_is_restored_and_maps_use_eval_mode(tiny_resnet, resnet_input):
    layer = tiny_resnet.layer4[-1]
    expected = member_cams(tiny_resnet, resnet_input, layer, methods=["gradcam"])["gradcam"]
    tiny_resnet.train()
    try:
        got = member_cams(tiny_resnet, resnet_input, layer, methods=["gradcam"])["gradcam"]
        assert tiny_resnet.training and all(m.training for m in tiny_resnet.modules())
    finally:
        tiny_resnet.eval()
    assert torch.equal(got, expected)


def test_parameters_get_no_gradients(tiny_resnet, resnet_input):
    member_cams(tiny_resnet, resnet_input, tiny_resnet.layer4[-1], methods=SHARED)
    assert all(p.grad is None for p in tiny_resnet.parameters())


def test_maps_are_normalised_at_input_resolution(tiny_resnet, resnet_input):
    maps = member_cams(tiny_resnet, resnet_input, tiny_resnet.layer4[-1], methods=SHARED)
    for name, cam in maps.items():
        assert cam.shape == (2, 96, 96) and cam.dtype == torch.float32, name
        assert cam.min() >= 0 and cam.max() <= 1, name
        assert torch.allclose(cam.flatten(1).amax(1), torch.ones(2), atol=1e-5), name


def test_unknown_method_is_a_one_line_error_with_suggestions():
    with pytest.raises(MetaCAMError, match=r"unknown CAM method 'gradcam\+\+'.*gradcampp"):
        resolve_methods(["gradcam++"])
    with pytest.raises(MetaCAMError, match="no CAM method selected"):
        resolve_methods([])
    # None: the default groups' 12 members, in registry order; the 4 newer built-ins are
    # registered after them and chosen by name (or by the extended groups)
    builtins = [name for name, entry in MEMBERS.items() if not entry.plugin]
    assert resolve_methods(None) == builtins[:12] and len(builtins) == 16
    assert builtins[12:] == ["kpcacam", "fem", "shapleycam", "finercam"]


def test_wrong_number_of_targets_is_an_error(tiny_resnet, resnet_input):
    with pytest.raises(MetaCAMError, match="got 3 targets for 2 images"):
        member_cams(tiny_resnet, resnet_input, tiny_resnet.layer4[-1], [1, 2, 3], ["gradcam"])
    with pytest.raises(MetaCAMError, match=r"target classes must lie in 0\.\.9"):
        member_cams(tiny_resnet, resnet_input, tiny_resnet.layer4[-1], [1, 10], ["gradcam"])


class ConvThenInplaceReLU(nn.Module):
    """Target = a conv whose output a later in-place ReLU overwrites."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        torch.manual_seed(11)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=inplace)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.relu(self.conv(x)).mean(dim=(2, 3)))


def test_target_output_modified_in_place_later_still_gives_its_own_values_and_gradients():
    """The activations are the conv's (cloned before the ReLU overwrites them) and the
    gradient is w.r.t. the conv output, as with an out-of-place ReLU."""
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(12))
    inplace, plain = ConvThenInplaceReLU(True).eval(), ConvThenInplaceReLU(False).eval()
    plain.load_state_dict(inplace.state_dict())
    got = member_cams(inplace, x, inplace.conv, methods=SHARED[:-1])
    want = member_cams(plain, x, plain.conv, methods=SHARED[:-1])
    for name in got:
        assert torch.allclose(got[name], want[name], atol=1e-6), name


def test_frozen_weights_still_give_gradient_maps(tiny_resnet, resnet_input):
    """A deployed model often has requires_grad=False everywhere; the maps are unchanged."""
    layer = tiny_resnet.layer4[-1]
    expected = member_cams(tiny_resnet, resnet_input, layer, methods=SHARED)
    for parameter in tiny_resnet.parameters():
        parameter.requires_grad_(False)
    try:
        got = member_cams(tiny_resnet, resnet_input, layer, methods=SHARED)
    finally:
        for parameter in tiny_resnet.parameters():
            parameter.requires_grad_(True)
    for name in SHARED:
        assert torch.allclose(got[name], expected[name], atol=1e-6), name


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_perturbation_members_halve_their_batch_on_out_of_memory(tiny_resnet, resnet_input, method, caplog):
    """CUDA's out-of-memory error injected (on CPU) into the classifier head for batches
    above 2: the member retries at half its batch and gives the same map."""
    layer = tiny_resnet.layer4[-1]
    options = MemberOptions(batch_size=8, ablation_batch=8)
    expected = member_cams(tiny_resnet, resnet_input[:1], layer, methods=[method], options=options)[method]

    def out_of_memory(_module, inputs):
        if inputs[0].shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")

    handle = tiny_resnet.fc.register_forward_pre_hook(out_of_memory)
    try:
        with caplog.at_level("WARNING", logger="metacam"):
            got = member_cams(tiny_resnet, resnet_input[:1], layer, methods=[method], options=options)[method]
    finally:
        handle.remove()
    # the same images through the model in other batch sizes: float32 rounding only
    assert torch.allclose(got, expected, atol=1e-5)
    label = {"scorecam": "ScoreCAM", "ablationcam": "AblationCAM"}[method]
    assert f"{label}: out of memory at batch 8; retrying at batch 4" in caplog.text
