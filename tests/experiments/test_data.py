"""The data of a sweep: layouts end to end, labels resolved with the model, samples on record,
and bad data as one line before any job."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from metacam.errors import MetaCAMError
from metacam.experiments.plan import job_spec, plan_sweep, write_manifests
from metacam.results import dataset_files
from metacam.sweep import load_bundle, run_job, validate
from metacam.sweep.design import images_manifest_path
from tests.datasets import LOC_VAL_CLASSES, imagefolder, imagenet_val, photo
from tests.experiments import conftest
from tests.experiments.conftest import composed

REPO = Path(__file__).resolve().parents[2]
# conftest's fast settings without their one photo: each test brings its own data
FAST = [o for o in conftest.FAST if not o.startswith("data.images")]
TWO_GROUPS = [o for o in conftest.TWO_GROUPS if not o.startswith("data.images")]
ONLY_GRADCAM = [*TWO_GROUPS, "combo_id=1"]  # the gradcam group alone: + its 3 singles


def frame_of(results: str) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in dataset_files(results)], ignore_index=True)


def test_a_folder_that_does_not_exist_is_exit_2_and_nothing_runs(tmp_path):
    """v0.2 ran a 'successful' sweep of unreadable-image status rows here and exited 0."""
    result = subprocess.run(
        [sys.executable, "-m", "metacam.cli", "sweep", *TWO_GROUPS, "data=folder", "data.images=[/no/such/folder]",
         f"out_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr == "metacam sweep: error: data images: /no/such/folder: no such file or folder\n"
    assert not list(tmp_path.iterdir())


def test_a_label_outside_the_models_classes_is_an_error_before_any_job(tmp_path):
    """v0.2: an IndexError traceback inside the job."""
    (tmp_path / "photos").mkdir()
    photo("coffee").save(tmp_path / "photos" / "a.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\na.png,5000\n")
    with pytest.raises(MetaCAMError, match=r"labels file .*: label '5000' of .*a\.png is outside the classes "
                                           r"0\.\.9 of resnet18"):
        plan_sweep([*FAST, "data=folder", f"data.images=[{tmp_path / 'photos'}]", f"data.labels={labels}",
                    "data.target=label", f"out_dir={tmp_path / 'out'}"])
    assert not (tmp_path / "out").exists()


def test_imagefolder_sweep_labels_targets_and_unreadable_files(tmp_path):
    """Class folders by index and by the model's category name; a file of the same name in two
    folders keeps its own class; an unreadable file in a valid dataset gets status rows."""
    root = imagefolder(tmp_path / "val", {"3": [("same.png", "coffee"), ("a.png", "rocket")],
                                          "class 7": [("same.png", "chelsea")]})
    (root / "3" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    overrides = [*ONLY_GRADCAM, "threshold.ks=[100]", "heldout.enabled=false", "data=imagefolder",
                 f"data.root={root}", "data.target=label",
                 "data.images_per_unit=4", f"out_dir={tmp_path / 'out'}"]
    plan = plan_sweep(overrides)
    write_manifests(plan)
    (spec,) = plan.tasks()
    report = run_job(spec, emit=lambda line: None)
    assert report.units_done == 1
    frame = frame_of(spec.results_dir)
    rows = frame.drop_duplicates(["method", "image_path"]).set_index(["method", "image_path"])
    for method in ("gradcam", "hirescam"):
        assert rows.loc[(method, str(root / "3" / "same.png")), "target_class"] == 3
        assert rows.loc[(method, str(root / "class 7" / "same.png")), "target_class"] == 7
        assert rows.loc[(method, str(root / "3" / "a.png")), "label"] == 3
        broken = rows.loc[(method, str(root / "3" / "broken.jpg"))]
        assert broken["status"].startswith("unreadable image: ") and broken["label"] == 3
    ok = frame[frame["status"] == "ok"]
    assert (ok["label"] == ok["target_class"]).all() and len(ok.drop_duplicates("image_path")) == 3
    record = json.loads(images_manifest_path(spec.results_dir, spec.sweep_id).read_text())
    assert record["entries"] == [str(root / k) for k in ("3/a.png", "3/broken.jpg", "3/same.png", "class 7/same.png")]
    assert record["labels"] == ["3", "3", "3", "class 7"] and record["total"] == 4 and record["sample"] is None


def test_imagenet_val_labels_are_wordnet_ids_of_the_imagenet_models(tmp_path):
    root, labels = imagenet_val(tmp_path / "val")
    overrides = [*TWO_GROUPS, "model=efficientnet_lite0", "data=imagenet_val", f"data.root={root}",
                 f"data.labels={labels}", "data.target=label", f"out_dir={tmp_path}"]
    plan = plan_sweep(overrides)
    (spec,) = plan.variants
    job = validate(spec, load_bundle(replace(spec, device="cpu")).categories)
    assert job.labels == {str(root / name): index for name, index in LOC_VAL_CLASSES.items()}
    with pytest.raises(MetaCAMError, match=r"labels file .*: label 'n01751748' of ILSVRC2012_val_00000001.JPEG "
                                           r"is a WordNet id, but resnet18 has 10 classes"):
        plan_sweep([*overrides[1:], "model=tiny_random"])


def test_a_sample_is_on_record_and_defines_the_study(tmp_path):
    tree = {str(c): [(f"{i}.png", "coffee") for i in range(3)] for c in range(3)}
    root = imagefolder(tmp_path / "val", tree)
    base = [*FAST, "data=imagefolder", f"data.root={root}", f"out_dir={tmp_path / 'out'}"]
    ids = {}
    for seed in (0, 0, 1):
        with composed([*base, "data.sample=3", f"data.sample_seed={seed}"]) as cfg:
            ids.setdefault(seed, set()).add(job_spec(cfg).sweep_id)
    assert len(ids[0]) == 1 and ids[0] != ids[1]
    with composed(base) as cfg:
        assert job_spec(cfg).sweep_id not in ids[0] | ids[1]  # all 9 images: another study
    plan = plan_sweep([*base, "data.sample=3"])
    write_manifests(plan)
    (spec,) = plan.variants
    record = json.loads(images_manifest_path(spec.results_dir, spec.sweep_id).read_text())
    assert (record["total"], record["chosen"], record["sample"], record["sample_seed"]) == (9, 3, 3, 0)
    assert sorted(record["labels"]) == ["0", "1", "2"]  # one per class
    assert [Path(e).parent.name for e in record["entries"]] == record["labels"]
    with pytest.raises(MetaCAMError, match="data sample 10 is larger than the 9 image"):
        plan_sweep([*base, "data.sample=10"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=imagefolder", "data.root=/no/such/folder"], "data root /no/such/folder: no such folder"),
        (["data=imagefolder"], "data=imagefolder needs data.root"),
        (["data=imagenet_val", "data.root=/tmp"], "data=imagenet_val needs data.labels"),
        (["data=folder", "data.images=[sample:dog]"], "data images: sample:dog: unknown sample image"),
        (["data.layout=coco"], "data layout 'coco' is not a layout"),
    ],
)
def test_bad_data_is_one_line_before_any_job(tmp_path, overrides, message):
    with pytest.raises(MetaCAMError, match=message):
        plan_sweep([*FAST, *overrides, f"out_dir={tmp_path}"])
    assert not list(tmp_path.iterdir())


def test_an_empty_folder_and_an_empty_class_folder_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MetaCAMError, match="data images: .*empty: folder has no image files"):
        plan_sweep([*FAST, "data=folder", f"data.images=[{tmp_path / 'empty'}]", f"out_dir={tmp_path / 'out'}"])
    root = imagefolder(tmp_path / "val", {"1": [("a.png", "coffee")]})
    (root / "2").mkdir()
    with pytest.raises(MetaCAMError, match="class folder '2' has no image files"):
        plan_sweep([*FAST, "data=imagefolder", f"data.root={root}", f"out_dir={tmp_path / 'out'}"])
    (root / "2" / "b.png").write_bytes(b"")  # there, though unreadable: a status row in the job
    photo("rocket").save(root / "unicorn.png")  # loose files beside the class folders are not images of it
    (root / "unicorn").mkdir()
    photo("rocket").save(root / "unicorn" / "c.png")
    with pytest.raises(MetaCAMError, match=r"class folder 'unicorn' \(.*\) maps to no class of resnet18"):
        plan_sweep([*FAST, "data=imagefolder", f"data.root={root}", f"out_dir={tmp_path / 'out'}"])


README_IMAGENET = (
    "metacam sweep data=imagefolder data.root=/data/imagenet/val data.target=label data.sample=1000 "
    "model=efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 compact=true"
)


def test_the_readme_shows_the_imagenet_study_and_its_slurm_variant():
    readme = (REPO / "README.md").read_text()
    assert README_IMAGENET in readme
    assert ("data=imagefolder data.root=/shared/imagenet/val data.target=label data.sample=1000 \\\n"
            "    model=efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 \\\n"
            "    data.shard_count=16 'data.shard_index=range(16)' compact=true --detach") in readme


@pytest.mark.slow
def test_the_readme_imagenet_study_gives_one_compacted_dataset_that_analyze_reads(tmp_path):
    """The README's command as written, on an ImageFolder tree of WordNet-id class folders (a
    sample of 3 of 6 images instead of 1,000 of 50,000) and a reduced grid: three real models,
    one dataset, compacted, labels resolved through timm's synset list, analysed."""
    import shlex

    from metacam.analysis import analyze
    from metacam.status import study_status

    tree = {wnid: [(f"{wnid}_{i}.JPEG", photo) for i in range(2)]
            for wnid, photo in (("n02124075", "chelsea"), ("n07920052", "coffee"), ("n04008634", "rocket"))}
    root = imagefolder(tmp_path / "val", tree)
    command = [arg.replace("/data/imagenet/val", str(root)).replace("data.sample=1000", "data.sample=3")
               for arg in shlex.split(README_IMAGENET)[1:]]
    result = subprocess.run(
        [sys.executable, "-m", "metacam.cli", *command, "data.images_per_unit=1",  # 3 units: something to merge
         "groups=two_groups", "threshold.ks=[50,100]",
         "road.percentiles=[50]", "heldout.percentiles=[30,70]", "deletion.steps=4", f"out_dir={tmp_path / 'out'}"],
        cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (results,) = (tmp_path / "out" / "sweeps").glob("*/results")
    files = dataset_files(results)
    assert len(files) == 3 * 11 and all(f.name.startswith("part-") for f in files)  # one per (model, experiment)
    assert "compacted 99 unit file(s) and 0 small part(s) into 33 part(s)" in result.stdout
    frame = frame_of(str(results))
    assert sorted(frame["model"].unique()) == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert (frame["status"] == "ok").all() and frame["sweep_id"].nunique() == 1
    chosen = frame.drop_duplicates("image_path")
    assert sorted(chosen["label"]) == [285, 744, 967]  # one image per class; n04008634 = projectile (744)
    assert (frame["target_class"] == frame["label"]).all()
    assert study_status(results).complete
    analysis = analyze(results, tmp_path / "analysis", replicates=100)
    assert len(analysis.dataset.units) == 3 * 3
