"""One sweep job as a plain function: experiments, targets, shards, held-out columns,
controls, plug-ins and validation."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from metacam.config import ModelConfig
from metacam.errors import MetaCAMError
from metacam.experiments.plan import job_spec, plan_sweep
from metacam.groups import GroupSet, default_groups
from metacam.results import result_files
from metacam.sweep import experiments_of, model_key, run_job, shard_units, study_units, validate
from tests.experiments.conftest import FAST, FAST_BASE, TWO_GROUPS, composed


def frame_of(spec) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in result_files(spec.results_dir)], ignore_index=True)


def test_experiments_of_a_combination_a_single_group_and_all_groups():
    groups = GroupSet.from_mapping(default_groups(), is_control=lambda m: m == "randomcam")
    both = experiments_of(groups, groups.combo_id_of(["gradcam", "eigen"]))
    assert [(e.kind, e.method, e.combo_id) for e in both] == [("metacam", "gradcam+eigen", 9)]
    assert both[0].members == ("gradcam", "hirescam", "gradcam_elementwise", "eigencam", "eigengradcam")
    alone = experiments_of(groups, groups.combo_id_of(["perturbation"]))
    assert [(e.kind, e.method) for e in alone] == [
        ("metacam", "perturbation"), ("single", "scorecam"), ("single", "ablationcam")]
    assert all(e.flags == (False, False, True, False, False, False) for e in alone)
    everything = experiments_of(groups, 63)
    controls = [e for e in everything if e.kind == "control"]
    assert [e.method for e in controls] == ["shuffled", "smooth_noise"]
    # the shuffled control is built from the pre-specified comparator: every group but random
    assert controls[0].members == tuple(groups.members_of(31)) and "randomcam" not in controls[0].members
    assert all(e.flags == (False,) * 6 for e in controls)
    assert experiments_of(groups, 63, controls=False)[-1].kind == "metacam"
    none = experiments_of(groups, 0)
    assert [(e.method, e.combo_id, e.members) for e in none] == [("none", 0, ())]


def write_photos(folder: Path, count: int = 3) -> list[Path]:
    folder.mkdir()
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        pixels = np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


ONLY_GRADCAM = [*TWO_GROUPS, "combo_id=1"]  # the gradcam group alone: + its 3 singles


def test_labels_csv_sets_targets_and_the_label_column(tmp_path):
    write_photos(tmp_path / "photos", 2)
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\nimg0.png,3\nimg1.png,7\n")
    overrides = [*ONLY_GRADCAM, "data=folder", f"data.images=[{tmp_path / 'photos'}]",
                 f"data.labels={labels}", "data.target=label", "data.images_per_unit=2",
                 f"out_dir={tmp_path / 'out'}"]
    with composed(overrides) as cfg:
        spec = job_spec(cfg)
    report = run_job(spec)
    assert report.units_done == 1
    frame = frame_of(spec)
    assert (frame["status"] == "ok").all()
    assert dict(zip(frame["image_path"].map(lambda p: Path(p).name), frame["target_class"], strict=True)) == {
        "img0.png": 3, "img1.png": 7}
    assert (frame["label"] == frame["target_class"]).all()
    assert frame["target_rank"].between(1, 10).all()


def test_a_labels_file_missing_an_image_is_an_error_before_any_job(tmp_path):
    write_photos(tmp_path / "photos")
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\nimg0.png,3\nimg1.png,7\n")  # img2 has no label
    with pytest.raises(MetaCAMError, match=f"labels file {labels} has no label for img2.png"):
        plan_sweep([*FAST, "data=folder", f"data.images=[{tmp_path / 'photos'}]", f"data.labels={labels}",
                    "data.target=label", f"out_dir={tmp_path}"])


def test_top2_doubles_the_units_and_ranks_them(tmp_path):
    runs = {}
    for target in ("top1", "top2"):
        with composed([*ONLY_GRADCAM, f"data.target={target}", f"out_dir={tmp_path / target}"]) as cfg:
            spec = job_spec(cfg)
        run_job(spec)
        runs[target] = frame_of(spec)
    one, two = runs["top1"], runs["top2"]
    units = ["image_id", "target_class"]
    assert len(two.drop_duplicates(units)) == 2 * len(one.drop_duplicates(units)) == 2
    ranks = two.drop_duplicates(units).sort_values("target_rank")
    assert ranks["target_rank"].tolist() == [1, 2]
    assert ranks["target_prob"].iloc[0] >= ranks["target_prob"].iloc[1]  # rank 1 = most probable
    # the rank-1 unit of top2 is top1's unit with the same draws; its member maps come
    # from a batch of 2 instead of 1, whose float32 rounding can swap nearly tied pixels
    # across a removal cut-off: scores agree to ~1e-4, not to the bit
    first = two[two["target_rank"] == 1].sort_values(["method", "k"]).reset_index(drop=True)
    expected = one.sort_values(["method", "k"]).reset_index(drop=True)
    assert np.allclose(first["road_combined"], expected["road_combined"], atol=1e-3)
    assert (first["target_class"] == expected["target_class"]).all()


def test_heldout_columns_are_filled_on_the_chosen_and_plain_rows_only(tmp_path):
    with composed([*ONLY_GRADCAM, f"out_dir={tmp_path}"]) as cfg:
        spec = job_spec(cfg)
    run_job(spec)
    frame = frame_of(spec)
    rescored = frame["is_best_k"] | (frame["k"] == 100)
    for column in ("road_heldout_combined", "road_heldout_morf", "road_heldout_lerf", "deletion_auc",
                   "insertion_auc"):
        assert frame.loc[rescored, column].notna().all(), column
        assert frame.loc[~rescored, column].isna().all(), column
    assert frame.groupby(["kind", "method"])["is_best_k"].sum().eq(1).all()
    assert frame["deletion_auc"].dropna().between(0, 1).all() and frame["insertion_auc"].dropna().between(0, 1).all()
    assert (frame["heldout_percentiles"] == "30,70").all() and (frame["road_ties"] == "random").all()


def test_heldout_with_the_insample_draw_equals_the_insample_score(tmp_path):
    """The re-scoring path is the same ROAD: with the in-sample stream, percentiles and
    noise 0, every held-out score equals the in-sample score of its row."""
    overrides = [*ONLY_GRADCAM, "road.noise=0", "heldout.percentiles=[50]", "heldout.stream=road",
                 f"out_dir={tmp_path}"]
    with composed(overrides) as cfg:
        spec = job_spec(cfg)
    run_job(spec)
    frame = frame_of(spec).dropna(subset=["road_heldout_combined"])
    assert len(frame) >= 4
    # the same images through the model in other batches: float32 rounding only
    assert np.allclose(frame["road_heldout_combined"], frame["road_combined"], atol=1e-5)
    assert np.allclose(frame["road_heldout_morf"], frame["road_morf"], atol=1e-5)


def test_controls_are_scored_for_every_image_in_the_all_groups_job(tmp_path):
    write_photos(tmp_path / "photos", 2)
    overrides = [*TWO_GROUPS, "combo_id=3", "data=folder", f"data.images=[{tmp_path / 'photos'}]",
                 f"out_dir={tmp_path / 'out'}"]
    with composed(overrides) as cfg:
        spec = job_spec(cfg)
    run_job(spec)
    frame = frame_of(spec)
    controls = frame[frame["kind"] == "control"]
    assert set(controls["method"]) == {"shuffled", "smooth_noise"}
    per_image = controls.groupby("image_id")["method"].nunique()
    assert len(per_image) == 2 and (per_image == 2).all()
    assert controls["combo_id"].isna().all() and not controls[["g_gradcam", "g_eigen"]].any().any()
    assert controls.groupby("method")["is_best_k"].sum().eq(2).all()


def test_the_smooth_noise_control_ignores_the_pixels_and_the_shuffled_uses_another_image():
    import torch

    from metacam.evaluation.roadscore import Probe
    from metacam.sweep.controls import CONTROLS, ControlInput

    def smooth_noise(probe):  # through the registry, as the scoring calls it
        return CONTROLS["smooth_noise"].make(ControlInput(probe, {}, [], [], lambda entry: None))

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    a = Probe.of(net, torch.zeros(1, 3, 32, 32), image_ids=["x"], seed=0)
    b = Probe.of(net, torch.randn(1, 3, 32, 32), image_ids=["x"], seed=0)
    c = Probe.of(net, torch.zeros(1, 3, 32, 32), image_ids=["y"], seed=0)
    assert torch.equal(smooth_noise(a), smooth_noise(b))  # same id, other pixels: same map
    assert not torch.equal(smooth_noise(a), smooth_noise(c))  # seeded per image id
    field = smooth_noise(a)[0]
    assert field.min() == 0 and field.max() == 1
    # smooth: neighbouring pixels differ by far less than the range
    assert (field[1:] - field[:-1]).abs().max() < 0.2


def test_units_do_not_depend_on_the_shard_count(tmp_path):
    photos = [str(p) for p in write_photos(tmp_path / "photos", 5)]
    with composed([*FAST, "data=folder", f"data.images=[{tmp_path / 'photos'}]", "data.images_per_unit=2"]) as cfg:
        spec = job_spec(cfg)
    whole = study_units(spec)
    assert [len(u) for u in whole] == [2, 2, 1]
    shards = [shard_units(replace(spec, data=replace(spec.data, shard_index=i, shard_count=2))) for i in range(2)]
    assert sorted(map(tuple, shards[0] + shards[1])) == sorted(map(tuple, whole))
    flat = [entry for shard in shards for unit in shard for entry in unit]
    assert sorted(flat) == sorted(photos) and len(flat) == len(set(flat))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.target=label", "needs data.labels"),
        ("data.target=best", "data target 'best': use top1, topN"),
        ("data.target=top0", "N must be at least 1"),
        ("data.target=top11", "data target top11: the model has only 10 classes"),
        ("data.shard_index=2", "data shard_index 2 is outside 0..0"),
        ("data.images_per_unit=0", "images_per_unit 0 must be at least 1"),
        ("data.images=[]", "data images is empty"),
        ("groups.eigen=[]", "group 'eigen' has no members"),
        ("groups.eigen=[gradcam]", "member 'gradcam' of group 'eigen' is also in group 'gradcam'"),
        ("groups.eigen=[eigencamm]", "unknown CAM method 'eigencamm'"),
        ("groups.eigen=[tests.plugins:undecorated]", "undecorated is not marked"),
        ("road.percentiles=[]", "percentile list is empty"),
        ("road.noise=-0.5", "noise -0.5 must be a standard deviation"),
        ("road.ties=exact", "is not a tie rule"),
        ("combo_id=64", "combo_id 64 is outside 0..63"),
        ("model.name=resnet5O", "unknown model 'resnet5o'"),
        ("deletion.steps=0", "deletion steps=0"),
        ("metrics=[tests.nowhere:m]", "metric plug-in tests.nowhere:m: cannot import tests.nowhere"),
        ("metrics=[tests.metric_plugins:undecorated]", "undecorated is not marked with @metacam.map_metric"),
        ("metrics=[tests.metric_plugins:sparseness]", "its column 'sparseness' clashes with the metric sparseness"),
        ("metrics=[tests.metric_plugins:renamed_onto_a_results_column]",
         "its column 'status' clashes with a column of the results"),
    ],
)
def test_validation_errors_before_any_job(override, message, tmp_path):
    with pytest.raises(MetaCAMError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_sweep([*FAST, override, f"out_dir={tmp_path}"])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("count", "message"), [(0, "0 groups given"), (11, "11 groups given")])
def test_group_counts_outside_1_to_10_are_refused(tmp_path, count, message):
    (tmp_path / "groups").mkdir()
    names = ["gradcam", "hirescam", "gradcam_elementwise", "gradcampp", "xgradcam", "layercam",
             "scorecam", "ablationcam", "eigencam", "eigengradcam", "fullgrad"]
    text = "".join(f"g{i}: [{names[i]}]\n" for i in range(count)) if count else "{}\n"
    (tmp_path / "groups" / "bad.yaml").write_text(text)
    with pytest.raises(MetaCAMError, match=message):
        plan_sweep([*FAST_BASE, "groups=bad"], [str(tmp_path)])


def test_model_key_tells_weights_apart(tmp_path):
    checkpoint = tmp_path / "net.pt"
    checkpoint.write_bytes(b"weights v1")
    first = model_key(ModelConfig(name="resnet18", checkpoint=str(checkpoint)))
    checkpoint.write_bytes(b"weights v2")
    assert model_key(ModelConfig(name="resnet18", checkpoint=str(checkpoint))) != first
    assert model_key(ModelConfig(name="resnet18", pretrained=False, seed=1)) != model_key(
        ModelConfig(name="resnet18", pretrained=False, seed=2))
    assert model_key(ModelConfig()) == "efficientnet_lite0"
    # a timm model by library or by prefix is one key; its constructor arguments and layers tell it apart
    tiny = {"img_size": 32, "depth": 2}
    by_library = model_key(ModelConfig(name="vit_tiny_patch16_224", library="timm", kwargs=tiny))
    assert by_library == model_key(ModelConfig(name="timm/vit_tiny_patch16_224", kwargs=dict(tiny)))
    assert by_library.startswith("timm/vit_tiny_patch16_224-kw") and by_library != model_key(
        ModelConfig(name="vit_tiny_patch16_224", library="timm", kwargs={**tiny, "depth": 3}))
    assert model_key(ModelConfig(name="resnet18", layer="layer3,layer4")) == "resnet18-layer3+layer4"
    assert model_key(ModelConfig(name="resnet18", layer=["layer3", "layer4"])) == "resnet18-layer3+layer4"
    assert model_key(ModelConfig(name="resnet18", layer=["layer3, layer4"])) == "resnet18-layer3+layer4"  # as load_model reads it


def test_validate_resolves_controls_from_the_registry():
    with composed() as cfg:
        job = validate(job_spec(cfg))
    assert job.groups.controls == (False, False, False, False, False, True)  # RandomCAM is a control
    assert job.groups.comparator == 31


def crops(folder: Path, count: int) -> Path:
    """``count`` distinct real-photo crops (96 x 96 windows of the bundled photographs)."""
    from metacam.images import PHOTO_NAMES, sample_image

    folder.mkdir()
    photos = [np.asarray(sample_image(name).image) for name in PHOTO_NAMES]
    rng = np.random.default_rng(0)
    for i in range(count):
        photo = photos[i % len(photos)]
        y, x = rng.integers(0, photo.shape[0] - 96), rng.integers(0, photo.shape[1] - 96)
        Image.fromarray(photo[y : y + 96, x : x + 96]).save(folder / f"crop{i:03d}.png")
    return folder


@pytest.mark.slow
def test_the_smooth_noise_control_explains_nothing_held_out(tmp_path):
    """Over 60 images, the held-out ROAD of the image-independent smooth-noise control's
    plain map has a 95% CI containing 0, while in-sample scores at its own k* are
    optimistic. Why the plain map: a Gaussian field f and -f are equally likely, and
    negating the map swaps MoRF and LeRF, so its expected combined ROAD is exactly 0; a
    thresholded map is not symmetric (a compact top-k region against randomly tie-broken
    zeros), so ROAD may reward its shape without any information (Song et al. 2023),
    which is why methods are compared with the controls rather than with 0."""
    from scipy import stats

    folder = crops(tmp_path / "crops", 60)
    (tmp_path / "conf" / "groups").mkdir(parents=True)
    (tmp_path / "conf" / "groups" / "one.yaml").write_text("gradient: [gradcam]\n")
    overrides = [*FAST_BASE, "groups=one", "combo_id=1", "data=folder", f"data.images=[{folder}]",
                 "data.images_per_unit=20", "threshold.ks=[10,30,100]", "road.percentiles=[20,50,80]",
                 "heldout.percentiles=[10,30,50,70,90]", f"out_dir={tmp_path / 'out'}"]
    with composed(overrides, config_dirs=[str(tmp_path / "conf")]) as cfg:
        spec = job_spec(cfg)
    run_job(spec)
    frame = frame_of(spec)
    noise = frame[frame["method"] == "smooth_noise"]
    plain, chosen = noise[noise["k"] == 100], noise[noise["is_best_k"]]
    assert plain["image_id"].nunique() == chosen["image_id"].nunique() == 60
    heldout = plain["road_heldout_combined"].to_numpy(dtype=float)
    low, high = stats.t.interval(0.95, len(heldout) - 1, loc=heldout.mean(), scale=stats.sem(heldout))
    assert low < 0 < high, (low, high)
    # chosen on the in-sample draw, the same control looks better than it is
    assert chosen["road_combined"].mean() > chosen["road_heldout_combined"].mean()
