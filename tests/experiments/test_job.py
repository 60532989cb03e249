"""One sweep job as a plain function: experiments, targets from labels, shards, validation."""

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from metacam.experiments.sweep import job_spec
from metacam.errors import MetaCAMError
from metacam.groups import DEFAULT_GROUPS
from metacam.results import result_files
from metacam.sweep import (
    DataSpec,
    ModelSpec,
    experiments_of,
    model_key,
    run_job,
    units_of,
    validate,
)
from tests.experiments.conftest import FAST, composed

ONLY_GRADCAM = ["combo.gradcampp=false", "combo.perturbation=false", "combo.eigen=false",
                "combo.fullgrad=false", "combo.random=false"]


def test_experiments_of_a_combination_and_of_a_single_group():
    groups = {key: list(members) for key, members in DEFAULT_GROUPS.items()}
    both = experiments_of({**dict.fromkeys(groups, False), "gradcam": True, "eigen": True}, groups)
    assert [(e.kind, e.method, e.combo_id) for e in both] == [("metacam", "gradcam+eigen", 9)]
    assert both[0].members == ["gradcam", "hirescam", "gradcam_elementwise", "eigencam", "eigengradcam"]
    alone = experiments_of({**dict.fromkeys(groups, False), "perturbation": True}, groups)
    assert [(e.kind, e.method) for e in alone] == [
        ("metacam", "perturbation"), ("single", "scorecam"), ("single", "ablationcam")]
    assert all(e.flags["perturbation"] and not e.flags["gradcam"] for e in alone)
    none = experiments_of(dict.fromkeys(groups, False), groups)
    assert [(e.method, e.combo_id, e.members) for e in none] == [("none", 0, [])]


def write_photos(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        path = folder / f"img{i}.png"
        Image.new("RGB", (40, 40), colour).save(path)
        paths.append(path)
    return paths


def test_labels_csv_sets_targets_and_the_label_column(tmp_path):
    write_photos(tmp_path / "photos")
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\nimg0.png,3\nimg1.png,7\n")  # img2 has no label
    overrides = [*FAST, *ONLY_GRADCAM, "data=folder", f"data.images=[{tmp_path / 'photos'}]",
                 f"data.labels={labels}", "data.target=label", "data.images_per_unit=2",
                 f"out_dir={tmp_path / 'out'}"]
    with composed(overrides) as cfg:
        spec = job_spec(cfg)
    report = run_job(spec)
    assert report.units_done == 2  # 3 images in units of 2
    frame = pd.concat([pd.read_parquet(f) for f in result_files(Path(spec.results_dir))])
    ok = frame[frame["status"] == "ok"]
    assert dict(zip(ok["image_path"].map(lambda p: Path(p).name), ok["target_class"], strict=True)) == {
        "img0.png": 3, "img1.png": 7}
    assert (ok["label"] == ok["target_class"]).all()
    missing = frame[frame["status"] != "ok"]
    assert set(missing["status"]) == {f"no label for img2.png in {labels}"}


def test_shards_split_the_images_without_overlap(tmp_path):
    photos = [str(p) for p in write_photos(tmp_path / "photos")]
    shards = [units_of(DataSpec(images=[str(tmp_path / "photos")], shard_index=i, shard_count=2))
              for i in range(2)]
    flat = [entry for shard in shards for unit in shard for entry in unit]
    assert sorted(flat) == sorted(photos) and len(flat) == len(set(flat))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.target=label", "needs data.labels"),
        ("data.target=best", "use null (top-1), a class index, or 'label'"),
        ("data.shard_index=2", "shard_index 2 is outside 0..0"),
        ("data.images_per_unit=0", "images_per_unit must be at least 1"),
        ("data.images=[]", "data images is empty"),
        ("groups.random=[]", "group 'random' has no members"),
        ("road.percentiles=[]", "percentile list is empty"),
        ("road.noise=-0.5", "road noise -0.5 is negative"),
    ],
)
def test_validation_errors(override, message):
    with composed([*FAST, override]) as cfg:
        spec = job_spec(cfg)
    with pytest.raises(MetaCAMError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(spec)


def test_model_key_tells_weights_apart(tmp_path):
    checkpoint = tmp_path / "net.pt"
    checkpoint.write_bytes(b"weights v1")
    first = model_key(ModelSpec(name="resnet18", checkpoint=str(checkpoint)))
    checkpoint.write_bytes(b"weights v2")
    assert model_key(ModelSpec(name="resnet18", checkpoint=str(checkpoint))) != first
    assert model_key(ModelSpec(name="resnet18", pretrained=False, seed=1)) != model_key(
        ModelSpec(name="resnet18", pretrained=False, seed=2))
    assert model_key(ModelSpec()) == "efficientnet_lite0"
