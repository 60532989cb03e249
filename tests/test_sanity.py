"""Tests of metacam.sanity: cascading model-parameter randomisation and class sensitivity."""

from __future__ import annotations

import argparse
import copy
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from torch import nn

from metacam.cams import member_cams
from metacam.errors import MetaCAMError
from metacam.models import ModelBundle, load_model
from metacam.sanity import (
    CLASS_AGNOSTIC_RHO,
    CLASS_COLUMNS,
    METACAM,
    SANITY_COLUMNS,
    SanityReport,
    add_parser,
    block_seed,
    format_summary,
    randomization_blocks,
    reinitialize,
    run,
    sanity_check,
    sanity_evaluator,
    spearman,
    ssim,
    summary_table,
    write_report,
)

GRADIENT_MEMBERS = (
    "gradcam",
    "hirescam",
    "gradcam_elementwise",
    "gradcampp",
    "xgradcam",
    "layercam",
    "eigengradcam",
)

_TINY_SOURCE = '''
import torch
from torch import nn


class TinyCNN(nn.Module):
    """conv-BN-ReLU twice, pool, linear: 16 channels at the target layer ``relu2``."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return self.fc(self.pool(x).flatten(1))


def build(num_classes=10):
    net = TinyCNN(num_classes)
    # "trained" BatchNorm statistics, so that resetting them changes something
    generator = torch.Generator().manual_seed(1)
    for bn in (net.bn1, net.bn2):
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=generator) * 0.1)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
        bn.weight.data.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
        bn.bias.data.copy_(torch.randn(bn.num_features, generator=generator) * 0.1)
    return net
'''


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny_sanity_net.py"
    path.write_text(textwrap.dedent(_TINY_SOURCE))
    return path


@pytest.fixture(scope="module")
def tiny(tiny_file: Path):
    """The tiny CNN as a bundle (seeded weights; 32x32 inputs) and two seeded images."""
    bundle = load_model(f"{tiny_file}:build", "cpu", seed=0, layer="relu2", input_size=(32, 32))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return bundle, x


@pytest.fixture(scope="module")
def report(tiny) -> SanityReport:
    bundle, x = tiny
    return sanity_check(bundle, x, ["img-a", "img-b"], seed=0)


# --- blocks and re-initialisation ------------------------------------------------------


def test_blocks_of_efficientnet_lite0() -> None:
    net = load_model("efficientnet_lite0", "cpu", pretrained=False, num_classes=10).net
    blocks = randomization_blocks(net)
    assert [name for name, _ in blocks] == [
        "classifier",
        "conv_head+bn2",
        *(f"blocks.{i}" for i in range(6, -1, -1)),
        "conv_stem+bn1",
    ]
    modules = dict(blocks)
    assert modules["classifier"] == [net.get_submodule("classifier")]
    assert modules["conv_head+bn2"] == [net.get_submodule("conv_head"), net.get_submodule("bn2")]
    assert modules["blocks.3"] == [net.get_submodule("blocks.3")]
    _assert_blocks_cover_every_parameter_once(net, blocks)


def test_blocks_of_a_resnet() -> None:
    net = load_model("resnet18", "cpu", pretrained=False, num_classes=10, input_size=(64, 64)).net
    blocks = randomization_blocks(net)
    assert [name for name, _ in blocks] == [
        "fc",
        "layer4",
        "layer3",
        "layer2",
        "layer1",
        "bn1",
        "conv1",
    ]  # relu, maxpool, avgpool hold no parameters
    _assert_blocks_cover_every_parameter_once(net, blocks)


def _assert_blocks_cover_every_parameter_once(net: nn.Module, blocks) -> None:
    ids = [id(p) for _, modules in blocks for module in modules for p in module.parameters()]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in net.parameters()}


def test_reinitialize_draws_what_reset_parameters_draws_from_the_generator() -> None:
    for module in (nn.Conv2d(8, 16, 3), nn.Conv2d(8, 16, 3, groups=4), nn.Linear(20, 7)):
        twin = copy.deepcopy(module)
        rng_before = torch.get_rng_state()
        reinitialize([module], torch.Generator().manual_seed(3))
        assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is never used
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            twin.reset_parameters()
        for name in ("weight", "bias"):
            assert torch.equal(module.get_parameter(name), twin.get_parameter(name)), name


def test_reinitialize_batchnorm_layouts_and_other_parameters() -> None:
    class Scale(nn.Module):  # parameters, but no reset_parameters(): permuted
        def __init__(self) -> None:
            super().__init__()
            self.gamma = nn.Parameter(torch.arange(100.0))

    bn = nn.BatchNorm2d(4)
    mean, var = bn.get_buffer("running_mean"), bn.get_buffer("running_var")
    count = bn.get_buffer("num_batches_tracked")
    with torch.no_grad():
        mean.fill_(0.3)
        var.fill_(2.0)
        bn.weight.fill_(1.7)
        bn.bias.fill_(-0.2)
        count.fill_(1000)
    conv = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    conv.weight.requires_grad_(False)
    bias = conv.get_parameter("bias")
    scale = Scale()
    reinitialize([nn.Sequential(conv, bn, scale)], torch.Generator().manual_seed(0))
    assert torch.equal(mean, torch.zeros(4)) and torch.equal(var, torch.ones(4))
    assert torch.equal(bn.weight, torch.ones(4)) and torch.equal(bn.bias, torch.zeros(4))
    assert int(count) == 0  # running stats consistent with the reset
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.requires_grad and bias.requires_grad
    bound = 1 / math.sqrt(3 * 3 * 3)
    assert conv.weight.abs().max().item() <= bound and bias.abs().max().item() <= bound
    assert torch.equal(scale.gamma.detach().sort().values, torch.arange(100.0))  # values kept
    assert not torch.equal(scale.gamma.detach(), torch.arange(100.0))  # places shuffled


def test_block_seeds_differ_by_block_and_seed() -> None:
    seeds = {block_seed(s, name) for s in (0, 1) for name in ("fc", "layer4", "layer3")}
    assert len(seeds) == 6 and block_seed(0, "fc") == block_seed(0, "fc")


# --- the cascade ---------------------------------------------------------------------------


def test_step0_is_the_trained_model_for_every_method(tiny, report: SanityReport) -> None:
    bundle, x = tiny
    frame = pd.DataFrame(report.rows)
    first = frame[frame.step == 0]
    assert len(first) == 2 * 13 and set(first.method) == {*report.cascade.methods}
    assert (first.spearman == 1.0).all()
    assert np.allclose(first.ssim, 1.0, atol=1e-12, rtol=0)  # float64 SSIM of equal maps
    assert (first.randomized == "").all()
    # step 0 is the trained net's maps for its top-1 classes; the net is left untouched
    with torch.no_grad():
        top1 = bundle.net(x).argmax(1)
    assert torch.equal(report.cascade.targets, top1)
    trained = member_cams(bundle.net, x, bundle.target_layer, targets=top1)
    for m, name in enumerate(report.cascade.methods[:-1]):
        torch.testing.assert_close(report.cascade.maps[0, m], trained[name], atol=1e-6, rtol=0)
    assert report.cascade.methods[-1] == METACAM and len(report.cascade.methods) == 13


def test_the_original_network_is_never_modified(tiny_file: Path) -> None:
    bundle = load_model(f"{tiny_file}:build", "cpu", seed=0, layer="relu2", input_size=(32, 32))
    before = {k: v.clone() for k, v in bundle.net.state_dict().items()}
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    sanity_check(bundle, x, ["one"], methods=["gradcam"])
    after = bundle.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not bundle.net.training


def test_randomising_the_last_block_changes_the_gradient_maps(report: SanityReport) -> None:
    frame = pd.DataFrame(report.rows)
    step1 = frame[frame.step == 1].set_index(["method", "image_id"])
    assert report.cascade.randomized[:2] == ["", "fc"]
    assert (frame[frame.step == 1].randomized == "fc").all()
    for method in GRADIENT_MEMBERS:
        for image in ("img-a", "img-b"):
            assert step1.loc[(method, image), "spearman"] < 1, (method, image)
    # The activations at the target layer come before fc: maps that read only them stay.
    for method in ("eigencam", "randomcam"):
        assert (step1.loc[method, "spearman"] == 1).all()
    # Fully randomised, every map has drifted from the trained one.
    last = frame[frame.step == len(report.cascade.randomized) - 1]
    assert (last.spearman.fillna(0) < 0.9).all()


def test_the_randomisation_is_seeded(tiny, report: SanityReport) -> None:
    bundle, x = tiny
    rng_before = torch.get_rng_state()
    again = sanity_check(bundle, x, ["img-a", "img-b"], seed=0)
    assert torch.equal(torch.get_rng_state(), rng_before)  # global RNG untouched
    assert torch.equal(again.cascade.maps, report.cascade.maps)
    other = sanity_check(bundle, x, ["img-a", "img-b"], seed=1)
    assert torch.equal(other.cascade.maps[:1], report.cascade.maps[:1])  # same trained model
    assert not torch.equal(other.cascade.maps[-1], report.cascade.maps[-1])


def test_class_sensitivity_flags_the_class_agnostic_members(tiny, report: SanityReport) -> None:
    bundle, x = tiny
    with torch.no_grad():
        top = bundle.net(x).topk(2, dim=1).indices
    classes = pd.DataFrame(report.class_rows)
    assert list(classes.columns) == list(CLASS_COLUMNS)
    assert classes.groupby("image_id").top1.first().tolist() == top[:, 0].tolist()
    assert classes.groupby("image_id").top2.first().tolist() == top[:, 1].tolist()
    by_method = classes.groupby("method").spearman.mean()
    assert by_method["eigencam"] == 1.0 and by_method["randomcam"] == 1.0
    assert by_method["gradcam"] < CLASS_AGNOSTIC_RHO
    flags = {row["method"]: row["class_flag"] for row in summary_table(report)}
    assert flags["eigencam"] == flags["randomcam"] == "class-insensitive"
    assert flags["gradcam"] == ""
    text = format_summary(report, "tiny")
    assert "class-insensitive (top-1 vs top-2 Spearman >= 0.99): " in text
    assert "eigencam" in text.splitlines()[-1] and "randomcam" in text.splitlines()[-1]


def test_csv_files_columns_and_values(report: SanityReport, tmp_path: Path) -> None:
    written = write_report(report, tmp_path)
    assert {p.name for p in written} == {"sanity.csv", "class_sensitivity.csv"}
    frame = pd.read_csv(tmp_path / "sanity.csv", keep_default_na=False, na_values=["NaN", "nan"])
    assert list(frame.columns) == list(SANITY_COLUMNS)
    steps = len(report.cascade.randomized)
    assert steps == 1 + 5  # trained, then fc, bn2, conv2, bn1, conv1
    assert len(frame) == 2 * 13 * steps
    assert frame[frame.step == 0].randomized.eq("").all()
    names = frame[(frame.image_id == "img-a") & (frame.method == "gradcam")].randomized.tolist()
    assert names == ["", "fc", "bn2", "conv2", "bn1", "conv1"]
    # a value recomputed from the maps with the reference implementations
    m = report.cascade.methods.index("gradcampp")
    reference, changed = report.cascade.maps[0, m, 1].numpy(), report.cascade.maps[3, m, 1].numpy()
    row = frame[(frame.image_id == "img-b") & (frame.method == "gradcampp") & (frame.step == 3)]
    expected = scipy.stats.spearmanr(reference.ravel(), changed.ravel())[0]
    assert row.spearman.item() == pytest.approx(expected, abs=1e-12)
    assert row.ssim.item() == pytest.approx(ssim(reference, changed), abs=1e-12)
    classes = pd.read_csv(tmp_path / "class_sensitivity.csv")
    assert list(classes.columns) == list(CLASS_COLUMNS) and len(classes) == 2 * 13
    assert not list(tmp_path.glob(".*partial*"))  # written atomically


def test_spearman_and_ssim_helpers() -> None:
    a = np.arange(16.0).reshape(4, 4) / 15
    assert spearman(a, a) == 1.0 and spearman(a, 1 - a) == pytest.approx(-1.0)
    assert spearman(a, a**2) == pytest.approx(1.0)  # monotone: rank correlation 1
    assert math.isnan(spearman(a, np.zeros((4, 4))))  # a constant map has no ranking
    assert spearman(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0  # identical maps
    b = np.random.default_rng(0).random((16, 16))
    assert ssim(b, b) == pytest.approx(1.0, abs=1e-12) and ssim(b, 1 - b) < 0


# --- command line -----------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="metacam")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["sanity", *argv])


def test_parser_defaults() -> None:
    args = _parse(["sample:coffee"])
    assert args.images == ["sample:coffee"] and args.model == "efficientnet_lite0"
    assert (args.k, args.seed, args.device, args.layer, args.methods) == (
        100.0,
        0,
        "auto",
        None,
        None,
    )
    assert args.out == Path("metacam-sanity")


@pytest.mark.slow
def test_run_writes_tables_and_figures(tiny_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = _parse(
        [
            "sample:coffee",
            str(tmp_path / "missing.png"),
            "--model",
            f"{tiny_file}:build",
            "--layer",
            "relu2",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert run(args) == 1  # one unreadable image: reported, the rest done
    captured = capsys.readouterr()
    assert "metacam sanity: skipped" in captured.err and "missing.png" in captured.err
    assert "cascading randomisation of" in captured.out and "class-insensitive" in captured.out
    names = {p.name for p in out.iterdir()}
    image_id = pd.read_csv(out / "sanity.csv").image_id.iloc[0]
    assert names == {"sanity.csv", "class_sensitivity.csv", "faithfulness.csv", f"{image_id}.png",
                     "sanity_curves.png"}
    assert "ROAD of the plain map on the trained model" in captured.out
    scored = pd.read_csv(out / "faithfulness.csv")
    assert set(scored["step"]) == {0, len(pd.read_csv(out / "sanity.csv").step.unique()) - 1}
    assert scored[["road_combined", "deletion_auc", "insertion_auc", "sparseness", "complexity"]].notna().all().all()
    assert image_id.startswith("coffee-")
    assert (out / f"{image_id}.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--k", "150"], "--k 150: k=150 is outside (0, 100]"),
        (["--k", "0"], "--k 0: "),
        (["--methods", " , "], "--methods ' , ': name at least one member"),
        (["--methods", "gradcam,nope"], "nope"),
        (["--device", "gpu"], "--device gpu: not a device"),
        (["--layer", "nolayer"], "layer 'nolayer' not found"),
        (["--checkpoint", "/no/such/net.pt"], "checkpoint /no/such/net.pt: no such file"),
        (["--reshape", "nosuchpkg.mod:fn"], "reshape nosuchpkg.mod:fn: cannot import nosuchpkg.mod"),
    ],
)
def test_bad_options_are_one_line(argv: list[str], message: str, tiny_file: Path, tmp_path: Path):
    args = _parse(["sample:coffee", "--model", f"{tiny_file}:build", "--out", str(tmp_path), *argv])
    with pytest.raises(MetaCAMError) as error:
        run(args)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "sanity.csv").exists()


def test_no_readable_image_is_one_line(tiny_file: Path, tmp_path: Path) -> None:
    args = _parse([str(tmp_path / "nothing.png"), "--model", f"{tiny_file}:build"])
    with pytest.raises(MetaCAMError, match="^no image could be read; check the paths above$"):
        run(args)


def test_bad_arguments_to_the_functions(tiny) -> None:
    bundle, x = tiny
    with pytest.raises(MetaCAMError, match="^image_ids: 1 ids for 2 images$"):
        sanity_check(bundle, x, ["only-one"], methods=["gradcam"])
    single = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)
    ).eval()
    with pytest.raises(MetaCAMError, match="needs \\(B, classes\\) logits with at least 2 classes"):
        sanity_check(ModelBundle.from_net(single, "1", input_size=(32, 32)), x, ["a", "b"], methods=["gradcam"])


def test_the_model_object_carries_several_target_layers_into_every_step(tiny_file: Path) -> None:
    """Two target layers: step 0 is members over both layers (as member_cams computes them),
    and every randomised copy keeps both layers by name, so its maps differ from one layer's."""

    both = load_model(f"{tiny_file}:build", "cpu", seed=0, layer="relu1,relu2", input_size=(32, 32))
    one = load_model(f"{tiny_file}:build", "cpu", seed=0, layer="relu2", input_size=(32, 32))
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    report = sanity_check(both, x, ["two"], methods=["gradcam"], seed=0)
    expected = member_cams(both, x, targets=report.cascade.targets, methods=["gradcam"])["gradcam"]
    assert torch.allclose(report.cascade.maps[0, 0], expected.float(), atol=1e-6)
    single = sanity_check(one, x, ["two"], methods=["gradcam"], seed=0)
    assert single.cascade.randomized == report.cascade.randomized
    assert not torch.allclose(single.cascade.maps[-1, 0], report.cascade.maps[-1, 0], atol=1e-3)


@pytest.mark.slow
def test_cascade_over_an_efficientnet_follows_its_blocks() -> None:
    """timm's EfficientNet-Lite0 (seeded random weights, 64x64): the target layer bn2 sits
    after conv_head, so activation-only maps change at conv_head+bn2, not at classifier."""
    bundle = load_model(
        "efficientnet_lite0", "cpu", pretrained=False, seed=0, num_classes=10, input_size=(64, 64)
    )
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    report = sanity_check(bundle, x, ["noise"], methods=["gradcam", "eigencam"])
    assert report.cascade.randomized == [
        "",
        *(name for name, _ in randomization_blocks(bundle.net)),
    ]
    assert report.cascade.methods == ["gradcam", "eigencam", METACAM]
    frame = pd.DataFrame(report.rows).set_index(["method", "step"])
    assert frame.loc[("eigencam", 1), "spearman"] == 1.0  # classifier: after the target layer
    assert frame.loc[("eigencam", 2), "spearman"] < 1.0  # conv_head+bn2: the target layer itself
    assert frame.loc[("gradcam", 1), "spearman"] < 1.0  # the class weights changed


def test_undefined_correlations_are_written_as_nan(report: SanityReport, tmp_path: Path) -> None:
    """A constant map has no ranking: its Spearman is NaN, written "nan" (never "", which
    is step 0's ``randomized``), so both read back as meant."""
    rows = [dict(row) for row in report.rows]
    rows[7]["spearman"] = math.nan
    changed = SanityReport(
        report.image_ids, report.cascade, report.classes, rows, report.class_rows
    )
    write_report(changed, tmp_path)
    lines = (tmp_path / "sanity.csv").read_text().splitlines()
    assert lines[1 + 7].split(",")[4] == "nan"
    frame = pd.read_csv(tmp_path / "sanity.csv", keep_default_na=False, na_values=["nan"])
    assert math.isnan(frame.spearman[7]) and frame.spearman.notna().sum() == len(rows) - 1
    assert frame.randomized[0] == ""


def test_faithfulness_scores_both_ends_of_the_cascade_on_the_trained_model(tiny) -> None:
    """The engine's scores of the trained and the fully randomised maps: sparseness is the
    Gini of each map (by hand), AUCs and ROAD in range, Grad-CAM's two ends score apart."""
    bundle, x = tiny
    report = sanity_check(bundle, x, ["img-a", "img-b"], methods=["gradcam", "randomcam"], seed=0,
                          evaluator=sanity_evaluator())
    frame = pd.DataFrame(report.faithfulness_rows)
    last = len(report.cascade.randomized) - 1
    assert sorted(frame["step"].unique()) == [0, last] and len(frame) == 2 * 3 * 2  # steps x methods x images
    for row in frame.itertuples():
        i = report.cascade.methods.index(row.method)
        b = ["img-a", "img-b"].index(row.image_id)
        a = np.sort(report.cascade.maps[row.step, i, b].double().numpy().ravel()) + 1e-7
        n = a.size
        gini = float(np.sum((2 * np.arange(1, n + 1) - n - 1) * a) / (n * a.sum()))
        assert row.sparseness == pytest.approx(gini, abs=1e-5), (row.method, row.step)
    assert frame[["deletion_auc", "insertion_auc"]].stack().between(0, 1).all()
    assert frame["road_combined"].between(-1, 1).all()
    gradcam = frame[frame.method == "gradcam"].set_index(["image_id", "step"])
    assert (gradcam.xs(0, level="step")["road_combined"] != gradcam.xs(last, level="step")["road_combined"]).all()
