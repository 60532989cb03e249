"""A study: several models and shards in one dataset, any number of groups through the
analysis, and the README's sharding example run as written (on a reduced grid)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metacam.analysis import analyze
from metacam.experiments.plan import plan_sweep, write_manifests
from metacam.results import result_files
from metacam.status import study_status
from metacam.sweep import run_job
from tests.experiments.conftest import FAST_BASE, TWO_GROUPS

REPO = Path(__file__).resolve().parents[2]
TWO_IMAGES = "data.images=[sample:coffee,sample:rocket]"


def run_plan(plan) -> None:
    write_manifests(plan)
    for task in plan.tasks():
        run_job(task)


def frame_of(results: str) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in result_files(results)], ignore_index=True)


def test_two_models_and_two_shards_land_in_one_dataset(tmp_path):
    overrides = [*TWO_GROUPS, TWO_IMAGES, "model.seed=0,1", "data.shard_count=2", "data.shard_index=range(2)",
                 f"out_dir={tmp_path}"]
    plan = plan_sweep(overrides)
    assert len(plan.variants) == 4 and plan.combos == [0, 1, 2, 3]
    assert len(plan.results_dirs) == 1  # one study, one dataset
    (results,) = plan.results_dirs
    write_manifests(plan)  # what `metacam sweep` does before launching
    before = study_status(results)
    assert before.files_done == 0 and before.files_expected == 2 * 2 * 11 and not before.complete
    run_plan(plan)
    status = study_status(results)
    assert status.complete and status.files_done == 2 * 2 * 11  # models x images x experiments
    frame = frame_of(results)
    assert frame["sweep_id"].nunique() == 1
    assert sorted(frame["model"].unique()) == ["resnet18-random0-c10-64x64", "resnet18-random1-c10-64x64"]
    units = frame.drop_duplicates(["model", "image_id", "target_class"])
    assert len(units) == 4

    result = analyze(results, tmp_path / "analysis", replicates=200)
    assert len(result.dataset.units) == 4
    by_model = result.units_by_model.set_index("model")
    assert by_model["n_units"].to_dict() == {"resnet18-random0-c10-64x64": 2, "resnet18-random1-c10-64x64": 2}
    cre_by_model = pd.read_csv(tmp_path / "analysis" / "cre_by_model.csv")
    assert set(cre_by_model["model"]) >= {"resnet18-random0-c10-64x64", "resnet18-random1-c10-64x64"}
    assert any("below 30" in w or "fewer than 30" in w for w in result.warnings)  # 4 clusters


def test_a_second_run_adding_a_model_lands_in_the_same_dataset(tmp_path):
    first = plan_sweep([*TWO_GROUPS, "model.seed=0", "combo_id=1", f"out_dir={tmp_path}"])
    second = plan_sweep([*TWO_GROUPS, "model.seed=1", "combo_id=1", f"out_dir={tmp_path}"])
    assert first.results_dirs == second.results_dirs
    run_plan(first)
    run_plan(second)
    assert frame_of(first.results_dirs[0])["model"].nunique() == 2


def seven_groups(tmp_path: Path, count: int) -> Path:
    """A groups config of ``count`` one-member groups, the last a plug-in."""
    members = ["gradcam", "hirescam", "gradcam_elementwise", "gradcampp", "xgradcam", "layercam"][: count - 1]
    members.append("tests.plugins:gradcam_again")
    folder = tmp_path / "conf"
    (folder / "groups").mkdir(parents=True)
    (folder / "groups" / "mine.yaml").write_text("".join(f"g{i}: [{m}]\n" for i, m in enumerate(members)))
    return folder


@pytest.mark.parametrize("count", [3, 7])
def test_g_group_sweeps_give_g_cre_values_that_satisfy_the_identity(tmp_path, count):
    """CRE_g = 2^{G-1} (mean - median) + 2^{G-2} beta_g on the complete design, for G = 3 and 7
    (the 7th group a plug-in), computed here by hand from the rows and by `analyze`."""
    conf = seven_groups(tmp_path, count)
    plan = plan_sweep([*FAST_BASE, "groups=mine", "controls=false", "threshold.ks=[100]",
                       f"out_dir={tmp_path / 'out'}"], [str(conf)])
    assert plan.combos == list(range(2**count))
    run_plan(plan)
    (results,) = plan.results_dirs
    frame = frame_of(results)
    metacam = frame[(frame["kind"] == "metacam") & frame["is_best_k"]]
    means = metacam.groupby("combo_id")["road_heldout_combined"].mean().sort_index()
    assert len(means) == 2**count
    flags = (means.index.to_numpy(dtype=np.int64)[:, None] >> np.arange(count)) & 1
    residual = means.to_numpy() - np.median(means.to_numpy())
    cre = residual @ flags
    beta = np.array([means[flags[:, g] == 1].mean() - means[flags[:, g] == 0].mean() for g in range(count)])
    identity = 2 ** (count - 1) * (means.mean() - np.median(means)) + 2 ** (count - 2) * beta
    assert np.allclose(cre, identity, atol=1e-9)

    result = analyze(results, tmp_path / "analysis", replicates=200)
    table = pd.read_csv(tmp_path / "analysis" / "cre.csv")
    assert list(table["group"]) == [f"g{i}" for i in range(count)]
    assert np.allclose(table["cre"], cre, atol=1e-6)
    assert result.identity_facts["complete"] and result.identity_facts["max_abs_difference"] < 1e-9
    # the plug-in's single rows equal the built-in's: it re-implements Grad-CAM
    singles = frame[frame["kind"] == "single"].set_index(["method", "k"])["road_combined"]
    assert np.allclose(singles.loc["tests.plugins:gradcam_again"], singles.loc["gradcam"], atol=1e-5)


README_STUDY = (
    "metacam sweep model=efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 "
    "data.shard_count=4 'data.shard_index=range(4)'"
)


def test_the_readme_shows_the_study_command_tested_here():
    assert README_STUDY in (REPO / "README.md").read_text()


@pytest.mark.slow
def test_the_readme_sharding_example_writes_one_dataset(tmp_path):
    """The README's study command as written, on a reduced grid (two groups, one combination
    per group set, two thresholds): three real models x four shards, one dataset."""
    import shlex

    command = [sys.executable, "-m", "metacam.cli", *shlex.split(README_STUDY)[1:],
               "groups=two_groups", "combo_id=1,3", "threshold.ks=[50,100]", "road.percentiles=[50]",
               "heldout.percentiles=[30,70]", "deletion.steps=4", f"out_dir={tmp_path}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = list((tmp_path / "sweeps").iterdir())
    frame = frame_of(str(sweep / "results"))
    assert sorted(frame["model"].unique()) == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert frame["sweep_id"].nunique() == 1 and (frame["status"] == "ok").all()
    assert frame.drop_duplicates(["model", "image_id"]).shape[0] == 3 * 4  # 3 models x 4 photos
    # combo 1 (gradcam + its 3 singles) and combo 3 (both groups + 2 controls): 7 experiments
    # x 12 units done; combos 0 and 2 were left out, so the study is not complete
    status = study_status(sweep / "results")
    assert (status.files_done, status.files_expected) == (7 * 12, 11 * 12) and not status.complete
