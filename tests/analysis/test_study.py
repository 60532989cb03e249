"""A study: two models × 12 images × top-2 targets in one dataset, pooled with model and
target-rank fixed effects, clustered by image (the same photo under both models is one
cluster), with per-model and per-target-rank tables; and a 3-model study whose every
inference table counts its images."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from metacam.analysis.cli import main
from metacam.analysis.synthetic import make_groups, write_synthetic


@pytest.fixture(scope="module")
def study_run(study_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("study-out")
    return main([str(study_dataset), "--out", str(out), "--bootstrap", "300"]), out


def test_every_unit_is_counted(study_run, study_dataset, capsys):
    code, out = study_run
    assert code == 0
    raw = pq.read_table(study_dataset, columns=["model", "image_id", "target_class", "target_rank"]).to_pandas()
    units = raw.drop_duplicates(["model", "image_id", "target_class"])
    assert len(units) == 2 * 12 * 2
    per_model = pd.read_csv(out / "units_by_model.csv").set_index("model")
    assert per_model["n_units"].to_dict() == {"net_a": 24, "net_b": 24}
    assert per_model["n_images"].to_dict() == {"net_a": 12, "net_b": 12}
    assert (per_model["target_ranks"] == 2).all()
    assert ("48 in 12 clusters (images: the same photo under several models is one cluster) — net_a (24 units, "
            "12 images), net_b (24 units, 12 images)") in (out / "report.md").read_text()


def test_per_model_and_per_target_rank_tables(study_run):
    _, out = study_run
    names = list(make_groups(3).names)
    by_model = pd.read_csv(out / "cre_by_model.csv")
    assert sorted(by_model["model"].unique()) == ["net_a", "net_b"]
    assert by_model.groupby("model")["group"].apply(list).tolist() == [names, names]
    assert (by_model["n_units"] == 24).all() and (by_model["n_clusters"] == 12).all()
    assert (by_model["ci_low"] < by_model["cre"]).all() and (by_model["cre"] < by_model["ci_high"]).all()
    by_rank = pd.read_csv(out / "cre_by_target_rank.csv")
    assert sorted(by_rank["target_rank"].unique()) == [1, 2]
    assert (by_rank["n_units"] == 24).all() and (by_rank["n_clusters"] == 12).all()
    effects = pd.read_csv(out / "effects_by_model.csv")
    assert effects.groupby("model")["term"].apply(list).tolist() == [[f"g_{n}" for n in names]] * 2
    assert (effects["inference"] == "CR2").all()  # 12 clusters per model
    effects_rank = pd.read_csv(out / "effects_by_target_rank.csv")
    assert len(effects_rank) == 2 * 3 and (effects_rank["n_units"] == 24).all()
    for name in ("cre_by_model.md", "effects_by_model.md", "cre_by_target_rank.md", "effects_by_target_rank.md",
                 "cre_by_model.png"):
        assert (out / name).is_file(), name


def test_pooled_fit_has_model_fixed_effects_and_clusters_by_model_and_image(study_run):
    _, out = study_run
    report = (out / "report.md").read_text()
    assert "`score ~ C(model) + C(target_rank) + g_group1 + g_group2 + g_group3`" in report
    assert "48 units, 12 images (clusters); models and target ranks are fixed effects; CR2 (Bell-McCaffrey)" in report
    assert "## Study: by model and by target rank (exploratory)" in report
    # The pooled CRE equals the CRE of the experiment means over all 48 units.
    pooled = pd.read_csv(out / "cre.csv").set_index("group")["cre"]
    curves = pd.read_csv(out / "cre_curves.csv")
    np.testing.assert_allclose(curves[list(pooled.index)].iloc[-1], pooled)


def test_few_clusters_warn_in_report_and_stdout(study_dataset, tmp_path, capsys):
    code = main([str(study_dataset), "--out", str(tmp_path), "--bootstrap", "200"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert re.search(r"^WARNING: Only 12 images \(clusters\)", out, re.MULTILINE)
    report = (tmp_path / "report.md").read_text()
    assert "> **Warning:** Only 12 images (clusters) carry the data" in report
    assert "CR2 standard errors with Bell–McCaffrey degrees of freedom" in report


def test_no_warning_with_enough_images(planted_dataset, tmp_path, capsys):
    assert main([str(planted_dataset), "--out", str(tmp_path), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "WARNING" not in out  # 150 images


def test_subsets_with_few_images_warn(small_dataset, tmp_path, capsys):
    assert main([str(small_dataset), "--out", str(tmp_path), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: Subsets with fewer than 30 clusters (CR2 / corrected bootstrap used there): model model_a (20)" in out


def test_three_model_study_counts_images_as_clusters(tmp_path, capsys):
    # 3 models × 10 images, 1-3 targets per image (unequal clusters): every inference table says 10.
    write_synthetic(tmp_path / "data", 10, groups=make_groups(3), models=("a", "b", "c"),
                    n_targets=[1, 2, 3, 1, 2, 3, 1, 2, 3, 1], seed=9)
    assert main([str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--bootstrap", "200"]) == 0
    assert "57 units in 10 clusters (images)" in capsys.readouterr().out
    out = tmp_path / "out"
    for name in ("headline.csv", "comparisons.csv", "selection.csv", "paper_comparison.csv", "cre.csv",
                 "gain_split.csv"):
        assert (pd.read_csv(out / name)["n_clusters"] == 10).all(), name
    assert (pd.read_csv(out / "cre_by_model.csv")["n_clusters"] == 10).all()  # each model has every image
    assert (pd.read_csv(out / "units_by_model.csv")["n_images"] == 10).all()
    assert "10 images (clusters); models and target ranks are fixed effects" in (out / "report.md").read_text()
