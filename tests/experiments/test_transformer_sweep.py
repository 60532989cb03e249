"""A sweep of a vision transformer (``model=timm``, a tiny seeded random ViT, two groups)
runs, resumes bit-identically and is analysed; several target layers are their own model
in the study and their own ``target_layer``; a member that cannot explain the network is
one line before any work."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from metacam.analysis import analyze
from metacam.cams import member_cams
from metacam.errors import MetaCAMError
from metacam.experiments.plan import plan_sweep, write_manifests
from metacam.images import load_images
from metacam.results import result_files
from metacam.status import study_status
from metacam.sweep import load_bundle, run_job
from tests.experiments.conftest import TWO_GROUPS

TINY_VIT = [
    "model=timm",
    "model.pretrained=false",
    "model.num_classes=10",
    "++model.kwargs={img_size: 32, patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}",
]
# the reduced grid of the sweep tests on a tiny ViT instead of the tiny ResNet
VIT_TWO_GROUPS = [*(o for o in TWO_GROUPS if not o.startswith("model=")), *TINY_VIT,
                  "data.images=[sample:coffee,sample:rocket]"]


def frame_of(results: str) -> pd.DataFrame:
    frame = pd.concat([pd.read_parquet(f) for f in result_files(results)], ignore_index=True)
    return frame.sort_values(["model", "kind", "method", "combo_id", "image_id", "k"]).reset_index(drop=True)


def run_all(plan) -> None:
    write_manifests(plan)
    for task in plan.tasks():
        run_job(task)


def test_a_tiny_vit_sweep_runs_resumes_and_is_analysed(tmp_path):
    plan = plan_sweep([*VIT_TWO_GROUPS, f"out_dir={tmp_path}"])
    (results,) = plan.results_dirs
    run_all(plan)
    status = study_status(results)
    assert status.complete and status.files_done == 2 * 11  # images x (4 combinations, 5 singles, 2 controls)
    frame = frame_of(results)
    assert set(frame["status"]) == {"ok"}
    (model,) = frame["model"].unique()
    assert model.startswith("timm/vit_tiny_patch16_224-random0-c10-kw")
    assert set(frame["target_layer"]) == {"blocks.1.norm1"}  # recognised: the last block's first norm

    # the rows explain what the ViT predicts, with its members through the ViT's reshape
    bundle = load_bundle(plan.variants[0])
    images, _ = load_images(["sample:coffee"])
    x = bundle.preprocess(images)
    with torch.no_grad():
        probs = bundle.net(x).softmax(-1)[0]
    coffee = frame[(frame.image_id == images[0].image_id) & (frame.kind == "single")]
    assert set(coffee["target_class"]) == {int(probs.argmax())}
    assert np.allclose(coffee["target_prob"], float(probs.max()), atol=1e-6)
    maps = member_cams(bundle, x, methods=["eigencam"])
    assert maps["eigencam"].shape == (1, 32, 32) and float(maps["eigencam"].amax()) == pytest.approx(1.0)

    # resume: a lost unit file is recomputed, bit-identical
    lost = sorted(result_files(results))[3]
    lost.unlink()
    assert not study_status(results).complete
    run_all(plan)
    pd.testing.assert_frame_equal(frame_of(results), frame)

    result = analyze(results, tmp_path / "analysis", replicates=200)
    cre = pd.read_csv(tmp_path / "analysis" / "cre.csv")
    assert sorted(cre["group"]) == ["eigen", "gradcam"] and cre["cre"].notna().all()
    assert len(result.dataset.units) == 2


def test_several_target_layers_are_their_own_model_and_column(tmp_path):
    layers = "blocks.0.norm1,blocks.1.norm1"
    plan = plan_sweep([*VIT_TWO_GROUPS, f"model.layer=[{layers}]", "combo_id=1", f"out_dir={tmp_path}"])
    run_all(plan)
    frame = frame_of(plan.results_dirs[0])
    assert set(frame["target_layer"]) == {layers}
    assert frame["model"].str.endswith("-blocks.0.norm1+blocks.1.norm1").all()
    # the single-layer run of the same network is another model of the same study
    single = plan_sweep([*VIT_TWO_GROUPS, "combo_id=1", f"out_dir={tmp_path}"])
    assert single.results_dirs == plan.results_dirs
    run_all(single)
    both = frame_of(plan.results_dirs[0])
    assert both["model"].nunique() == 2 and set(both["target_layer"]) == {layers, "blocks.1.norm1"}
    by_layer = both[both.k == 100].pivot_table(index=["image_id", "method"], columns="target_layer",
                                               values="road_combined")
    assert not np.allclose(by_layer[layers], by_layer["blocks.1.norm1"])  # other maps, other scores


def test_a_member_that_cannot_explain_the_network_is_one_line_before_any_work(tmp_path):
    """FullGrad needs conv biases; a ViT has none it can model. The plan refuses it, and so
    does a job started by hand, before writing anything."""
    overrides = [*VIT_TWO_GROUPS, "groups.gradcam=[gradcam,fullgrad]", f"out_dir={tmp_path}"]
    with pytest.raises(MetaCAMError, match=r"^member fullgrad cannot explain timm/vit_tiny_patch16_224 "
                                           r"\(VisionTransformer\): .*; leave it out of group gradcam "
                                           r"\(or drop the group: '~groups.gradcam'\)$"):
        plan_sweep(overrides)
    spec = plan_sweep(VIT_TWO_GROUPS[:]).variants[0]
    spec = replace(spec, groups={**spec.groups, "gradcam": ["gradcam", "fullgrad"]}, results_dir=str(tmp_path / "r"))
    with pytest.raises(MetaCAMError, match="^member fullgrad cannot explain"):
        run_job(spec)
    assert not (tmp_path / "r").exists()
    # the default groups hold FullGrad: the advice given works
    plan = plan_sweep([*(o for o in VIT_TWO_GROUPS if not o.startswith("groups=")), "~groups.fullgrad"])
    assert plan.variants[0].groups.keys() == {"gradcam", "gradcampp", "perturbation", "eigen", "random"}


README_VIT = ("metacam sweep model=timm model.pretrained=false model.num_classes=10 groups=two_groups \\\n"
              "    '++model.kwargs={img_size: 32, patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}'")


def test_the_readme_vit_sweep_is_the_one_tested_here(tmp_path):
    """The README's offline ViT command plans the tiny ViT these tests sweep (all 4 combinations)."""
    import shlex
    from pathlib import Path

    assert README_VIT in (Path(__file__).resolve().parents[2] / "README.md").read_text()
    plan = plan_sweep([*shlex.split(README_VIT.replace("\\\n", ""))[2:], f"out_dir={tmp_path}"])
    tested = plan_sweep([*VIT_TWO_GROUPS, f"out_dir={tmp_path}"])
    assert plan.combos == [0, 1, 2, 3] and plan.variants[0].model == tested.variants[0].model
