"""`metacam explain` end to end: outputs with values, and every bad input as one line."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from metacam.cams import member_cams
from metacam.cli import main
from metacam.images import load_image

FAST = ["--groups", "gradcam", "--k", "50", "--percentiles", "50"]


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(["explain", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_explain_writes_figure_table_and_maps(tmp_path, capsys, lite0):
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "sample:coffee", *FAST, "--save-maps", "--metrics",
                          "tests.metric_plugins:mean_relevance", "--out", out)
    assert code == 0
    table = pd.read_csv(out / "scores.csv", dtype={"percentiles": str, "heldout_percentiles": str})
    # the sweep's rows: per method its k* row (a fixed k: 50) and its plain (k = 100) row
    methods = ["gradcam", "hirescam", "gradcam_elementwise", "metacam"]
    assert list(table["method"]) == [m for m in methods for _ in range(2)]
    assert list(table["k"]) == [50, 100] * 4 and list(table["is_best_k"]) == [True, False] * 4
    assert list(table["kind"]) == ["single"] * 6 + ["metacam"] * 2
    assert (table["target_class"] == 967).all() and (table["target_name"] == "espresso").all()
    assert table["target_prob"].iloc[0] == pytest.approx(0.90, abs=0.02)
    scores = ["road_combined", "road_heldout_combined", "deletion_auc", "insertion_auc", "sparseness", "complexity"]
    assert table[scores].notna().all().all() and (table["status"] == "ok").all()
    assert table[["road_combined", "road_heldout_combined"]].abs().max().max() <= 1
    plain = table[table["k"] == 100].set_index("method")
    assert plain.loc["gradcam", "road_combined"] > 0.1  # Grad-CAM on coffee is a good explanation
    assert plain.loc["gradcam", "deletion_auc"] < plain.loc["gradcam", "insertion_auc"]  # and by RISE too
    chosen = table[table["is_best_k"]].set_index("method")
    # k = 50 zeros half the map: more concentrated (Gini up) and simpler (entropy down)
    assert (chosen["sparseness"] > plain["sparseness"]).all() and (chosen["complexity"] < plain["complexity"]).all()
    assert (table["road_ties"] == "random").all() and (table["percentiles"] == "50").all()
    assert pd.read_parquet(out / "scores.parquet").equals(table)

    image = load_image("sample:coffee")
    maps = np.load(out / "maps" / f"{image.image_id}.npz")
    assert sorted(maps) == ["gradcam", "gradcam_elementwise", "hirescam", "metacam"]
    expected = member_cams(
        lite0.net, lite0.preprocess([image.image]), lite0.target_layer, methods=["gradcam"]
    )["gradcam"][0]
    assert maps["gradcam"].shape == (224, 224) and maps["gradcam"].dtype == np.float32
    assert np.abs(maps["gradcam"] - expected.numpy()).max() <= 1e-5
    # the plug-in metric's column: its value on the plain map, and on MetaCAM's k* map
    assert plain.loc["gradcam", "mean_relevance"] == pytest.approx(float(maps["gradcam"].mean()), abs=1e-6)
    assert chosen.loc["metacam", "mean_relevance"] == pytest.approx(float(maps["metacam"].mean()), abs=1e-6)
    assert 0 <= maps["metacam"].min() and maps["metacam"].max() <= 1
    # MetaCAM at k = 50 keeps about half the pixels
    assert 0.4 <= (maps["metacam"] > 0).mean() <= 0.6

    with Image.open(out / f"{image.image_id}.png") as figure:
        assert figure.size[0] > 600 and figure.getextrema() != ((0, 0), (0, 0), (0, 0), (0, 0))
    assert "metacam" in stdout and "written to" in stdout


def bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    corrupt = folder / "corrupt.jpg"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:300])  # truncated JPEG
    text = folder / "notes.png"
    text.write_text("not an image")
    tiny = folder / "tiny.png"
    Image.new("RGB", (8, 8)).save(tiny)
    return {"missing": folder / "missing.jpg", "corrupt": corrupt, "text": text, "tiny": tiny}


def test_bad_images_are_reported_one_line_each_and_the_rest_processed(tmp_path, capsys):
    bad = bad_files(tmp_path / "in")
    out = tmp_path / "out"
    code, _, stderr = run(capsys, *bad.values(), "sample:coffee", *FAST, "--no-road", "--out", out)
    assert code == 1  # partial success
    lines = [line for line in stderr.splitlines() if line.startswith("metacam explain: skipped")]
    assert len(lines) == 4
    for path, line in zip(bad.values(), lines, strict=True):
        assert str(path) in line
    assert "8×8" in lines[3] or "8x8" in lines[3]
    assert "Traceback" not in stderr
    assert set(pd.read_csv(out / "scores.csv")["image_id"]) == {
        load_image("sample:coffee").image_id
    }
    assert len(list(out.glob("*.png"))) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "resnet5O"], "unknown model 'resnet5o'; did you mean resnet50"),
        (["--layer", "bn9"], "layer 'bn9' not found in efficientnet_lite0; nearest: bn2"),
        (["--methods", "gradcam,scorecam2"], "unknown CAM method 'scorecam2'"),
        (
            ["--groups", "eigen,gradcampp,perturbaton"],
            "unknown group 'perturbaton'; did you mean perturbation",
        ),
        (["--groups", "gradcam", "--methods", "gradcam"], "give --groups or --methods, not both"),
        (["--k", "0"], r"k=0 is outside (0, 100]"),
        (["--k", "150"], r"k=150 is outside (0, 100]"),
        (["--k", "half"], "--k 'half': give 'auto'"),
        (["--percentiles", ""], "percentile list is empty"),
        (["--percentiles", "50,100"], "percentile 100 is outside (0, 100)"),
        (["--noise", "-1"], "noise -1.0 must be a standard deviation >= 0"),
        (["--ties", "exact"], "invalid choice: 'exact'"),
        (["--methods", "gradcam,nosuchpkg.cams:mine"], "plug-in nosuchpkg.cams:mine: cannot import nosuchpkg.cams"),
        (["--methods", "metacam.ensemble:metacam_map"], "plug-in metacam.ensemble:metacam_map: metacam_map is not marked"),
        (["--methods", "metacam.ensemble:nothing"], "metacam.ensemble has no attribute 'nothing'"),
        (["--target", "teapot-ish"], "--target 'teapot-ish' is not a class of efficientnet_lite0"),
        (["--target", "1000"], "--target 1000 is outside 0..999"),
        (["--device", "tpu"], "tpu"),
        (["--metrics", "tests.nowhere:m"], "metric plug-in tests.nowhere:m: cannot import tests.nowhere"),
        (["--metrics", "tests.metric_plugins:undecorated"], "undecorated is not marked with @metacam.map_metric"),
        (["--metrics", "tests.metric_plugins:sparseness"], "its column 'sparseness' clashes with the metric sparseness"),
        (["--metrics", "tests.metric_plugins:renamed_onto_a_results_column"], "its column 'status' clashes with a column"),
    ],
)
def test_bad_options_are_one_line_errors(capsys, args, message):
    code, _, stderr = run(capsys, "sample:coffee", *args)
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("metacam explain: error: ")
    assert message in stderr


def test_no_readable_image_is_an_error(tmp_path, capsys):
    code, _, stderr = run(capsys, tmp_path / "nothing.png", "--no-road")
    assert code == 2
    assert "no image could be read" in stderr.splitlines()[-1]


def test_the_installed_command_prints_no_traceback(tmp_path):
    bad = bad_files(tmp_path / "in")
    result = subprocess.run(
        [sys.executable, "-m", "metacam.cli", "explain", str(bad["text"]), "--layer", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("metacam explain: error: layer 'nope' not found")
    assert "Traceback" not in result.stderr


def test_models_layers_lists_the_default(capsys):
    assert main(["models", "layers", "resnet18"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert "layer4.1  (default)" in listing and "layer3.0.conv1" in listing


def test_explain_target_by_name_explains_that_class(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, _ = run(
        capsys,
        "sample:coffee",
        "--target",
        "cup",
        "--methods",
        "gradcam",
        "--no-road",
        "--out",
        out,
    )
    assert code == 0
    table = pd.read_csv(out / "scores.csv")
    assert table["target_class"].tolist() == [968] and table["target_name"].tolist() == ["cup"]


# --- transformers, several layers ------------------------------------------------------


@pytest.fixture(scope="module")
def deit_checkpoint(tmp_path_factory) -> Path:
    """A DeiT-Tiny (distilled: two prefix tokens) with seeded random weights and 10 classes, saved
    as the state dict a user would fine-tune: explain reads it with --checkpoint."""
    import torch

    from metacam.models import load_model

    bundle = load_model("timm/deit_tiny_distilled_patch16_224", "cpu", pretrained=False, seed=3, num_classes=10)
    path = tmp_path_factory.mktemp("deit") / "w.pth"
    torch.save(bundle.net.state_dict(), path)
    return path


def test_explain_a_transformer_from_a_checkpoint_over_two_layers(tmp_path, capsys, deit_checkpoint):
    """The README's transformer example, scaled down: the table's target_layer names both
    layers, the saved map equals member_cams over the same model object, the target is the
    checkpoint's top-1."""
    import torch

    from metacam.models import load_model

    layers = "blocks.10.norm1,blocks.11.norm1"
    out = tmp_path / "out"
    code, _, stderr = run(capsys, "sample:coffee", "--model", "timm/deit_tiny_distilled_patch16_224",
                          "--checkpoint", deit_checkpoint, "--num-classes", "10", "--layer", layers,
                          "--methods", "gradcam,eigencam", "--k", "50", "--percentiles", "50",
                          "--save-maps", "--out", out)
    assert code == 0, stderr
    table = pd.read_csv(out / "scores.csv")
    assert set(table["target_layer"]) == {layers} and set(table["status"]) == {"ok"}
    bundle = load_model("timm/deit_tiny_distilled_patch16_224", "cpu", checkpoint=deit_checkpoint,
                        num_classes=10, layer=layers)
    image = load_image("sample:coffee")
    x = bundle.preprocess([image.image])
    with torch.no_grad():
        top1 = int(bundle.net(x).argmax())
    assert set(table["target_class"]) == {top1}
    expected = member_cams(bundle, x, methods=["gradcam"])["gradcam"][0]
    maps = np.load(out / "maps" / f"{image.image_id}.npz")
    assert np.abs(maps["gradcam"] - expected.numpy()).max() <= 1e-5
    one_layer = member_cams(load_model("timm/deit_tiny_distilled_patch16_224", "cpu", checkpoint=deit_checkpoint,
                                       num_classes=10), x, methods=["gradcam"])["gradcam"][0]
    assert np.abs(maps["gradcam"] - one_layer.numpy()).max() > 1e-3  # two layers are not the last one alone


DEIT = ["--model", "timm/deit_tiny_distilled_patch16_224", "--num-classes", "10", "--methods", "gradcam"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "timm/vit_tiny_patch16_2244"],
         "unknown timm model 'vit_tiny_patch16_2244'; did you mean timm/vit_tiny_patch16_224"),
        (["--model", "timm/vit_tiny_patch16_224"], "model timm/vit_tiny_patch16_224: its pretrained weights"),
        ([*DEIT, "--checkpoint", "CHECKPOINT", "--reshape", "none"], "blocks.11.norm1"),
        ([*DEIT, "--checkpoint", "CHECKPOINT", "--methods", "gradcam,fullgrad"],
         "member fullgrad cannot explain timm/deit_tiny_distilled_patch16_224 (VisionTransformerDistilled)"),
    ],
)
def test_a_transformer_that_cannot_be_explained_is_one_line(capsys, deit_checkpoint, args, message):
    """An unknown timm name, pretrained weights not in the local cache, a token layer without
    its reshape, a member that does not apply: each one line, exit 2, before any work."""
    args = [str(deit_checkpoint) if a == "CHECKPOINT" else a for a in args]
    code, _, stderr = run(capsys, "sample:coffee", *args)
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("metacam explain: error: ")
    assert message in stderr
