"""`metacam analyze` end to end: outputs, degraded cases, one-line errors, no torch."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from metacam.analysis.cli import main
from metacam.analysis.outputs import OUTPUTS
from metacam.analysis.synthetic import (
    make_groups,
    synthetic_results,
    write_results,
    write_synthetic,
)
from metacam.schema import REQUIRED_COLUMNS
from tests.analysis.conftest import GROUPS
from tests.analysis.helpers import hand_frame, write_hand

NAMES = list(GROUPS.names)
THREE = make_groups(3)


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small_run(small_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("small-out")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main([str(small_dataset), "--out", str(out), "--bootstrap", "400"])
    return code, out, stdout.getvalue()


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """Three groups (8 combos), one model × 8 images, k in {25, 50, 75, 100}."""
    root = tmp_path_factory.mktemp("tiny")
    write_results(synthetic_results(8, groups=THREE, models=("m",), seed=3), root, THREE)
    return root


def test_full_run_writes_tables_figures_and_report(small_run, small_dataset):
    code, out, _ = small_run
    assert code == 0
    # CRE recomputed independently from the raw Parquet rows (held-out at k*).
    raw = pq.read_table(small_dataset).to_pandas()
    best = raw[(raw["kind"] == "metacam") & raw["is_best_k"]]
    means = best.groupby("combo_id")["road_heldout_combined"].mean().astype(float)
    residual = means - means.median()
    combos = means.index.to_numpy(dtype=np.int64)
    expected = [residual[(combos >> bit & 1) == 1].sum() for bit in range(6)]
    table = pd.read_csv(out / "cre.csv").set_index("group").loc[NAMES]
    np.testing.assert_allclose(table["cre"], expected, rtol=1e-9)
    assert table["rank"].tolist() == list((-table["cre"]).rank(method="min").astype(int))
    assert ((table["ci_low"] < table["cre"]) & (table["cre"] < table["ci_high"])).all()
    assert table["control"].tolist() == [False] * 5 + [True]

    ranking = pd.read_csv(out / "experiments.csv")
    assert len(ranking) == 64 and ranking["rank"].tolist() == list(range(1, 65))
    np.testing.assert_allclose(ranking.set_index("combo_id")["mean"].sort_index(), means.sort_index(), rtol=1e-9)
    assert (ranking["rank_low"] <= ranking["rank"]).all() and (ranking["rank"] <= ranking["rank_high"]).all()

    paper = pd.read_csv(out / "metacam_vs_single.csv")
    assert paper["entry"].iloc[0] == "MetaCAM comparator: group1+group2+group3+group4+group5"
    kinds = paper["kind"].tolist()
    assert (kinds.count("single"), kinds.count("single (control group)"), kinds.count("control")) == (11, 1, 2)
    assert paper["entry"].iloc[-3] == "group6_random"  # the control group's member, after the real CAMs
    plain = raw[(raw["kind"] == "metacam") & (raw["k"] == 100) & (raw["combo_id"] == 31)]
    assert paper.loc[0, "plain_mean"] == pytest.approx(float(plain["road_heldout_combined"].astype(float).mean()))

    comparisons = pd.read_csv(out / "comparisons.csv")
    # One row per headline metric the dataset records (CONTRACTS §1).
    assert set(comparisons["metric"]) == {"combined", "deletion", "insertion", "sparseness", "complexity"}
    assert (comparisons.groupby("metric").size() == 14).all()  # 12 singles + 2 controls per metric
    kinds = comparisons[comparisons["metric"] == "combined"].set_index("opponent")["opponent_kind"]
    assert kinds["group6_random"] == "control" and kinds["group1_cam1"] == "single"
    assert (kinds == "control").sum() == 3
    # 2 models × 20 images: the images are the clusters, and wins are counted over them.
    assert (comparisons["n_clusters"] == 20).all() and (comparisons["n_units"] == 40).all()
    assert ((comparisons["wins"] + comparisons["ties"] + comparisons["losses"]) == comparisons["n_clusters"]).all()
    families = comparisons.groupby("opponent_kind")["family"].unique()
    assert families["single"].tolist() == ["intersection–union: none"]
    assert families["control"].tolist() == ["Holm within the controls"]
    for name in ("headline.csv", "paper_comparison.csv", "selection.csv", "selection_folds.csv", "cre.csv",
                 "effects.csv", "cre_by_model.csv"):
        frame = pd.read_csv(out / name)
        n_clusters = frame["n_clusters"] if "n_clusters" in frame else None
        if n_clusters is not None and name != "cre_by_model.csv":
            assert (n_clusters == 20).all(), name  # every table that reports inference says so

    effects = pd.read_csv(out / "effects.csv")
    assert effects["term"].tolist() == [f"g_{g}" for g in NAMES]
    assert not (out / "anova.csv").exists()

    report = (out / "report.md").read_text()
    for target in re.findall(r"\]\(([^)]+)\)", report):  # every link resolves
        assert (out / target).is_file(), target
    for name in ("cre_plot.png", "cre_per_unit.png", "effects.png", "cre_by_model.png", "experiments.md",
                 "comparisons.csv", "optimism.csv"):
        assert f"({name})" in report
    assert "the identity holds to max |difference|" in report and "64 of 64" in report
    assert "No classical ANOVA table" in report
    written = {p.name for p in out.iterdir()}
    assert set(OUTPUTS) <= written | {"failed_rows.csv"}  # everything documented was written


def test_stdout_summary(small_run):
    code, folder, out = small_run
    assert code == 0
    assert "64/64 MetaCAM experiments, 12 single methods, 2 controls, 40 units in 20 clusters (images)" in out
    assert "model_a: 20, model_b: 20" in out
    assert all(re.search(rf"^{g}\s+[+-]\d.*(helps|hurts|no evidence)$", out, re.MULTILINE) for g in NAMES)
    assert "held-out adaptive ROAD combined: beats every single CAM? " in out
    assert "CRE = 2^5*(mean - median) + 2^4*beta holds" in out
    assert f"report: {folder / 'report.md'}" in out


def test_interactions_option_finds_the_planted_interaction(interaction_dataset, tmp_path, capsys):
    code, out, _ = run(capsys, interaction_dataset, "--out", tmp_path, "--interactions", "--bootstrap", "200")
    assert code == 0
    effects = pd.read_csv(tmp_path / "effects.csv").set_index("term")
    assert len(effects) == 21
    significant = effects[(effects["kind"] == "interaction") & (effects["p_holm"] < 0.001)]
    assert significant.index.tolist() == ["g_group1:g_group4"]
    assert "Interactions with Holm-corrected p < 0.05: group1 × group4" in (tmp_path / "report.md").read_text()


def test_partial_sweep_runs_on_what_exists_and_says_so(tmp_path, capsys):
    frame = synthetic_results(3, groups=GROUPS, seed=2, missing_combos=[3, 17, 40, 41], singles={})
    write_results(frame, tmp_path / "data", GROUPS)
    code, out, _ = run(capsys, tmp_path / "data", "--out", tmp_path / "out", "--bootstrap", "200")
    assert code == 0
    assert "Partial sweep: 60 of 64 experiments present; missing combo_id 3, 17, 40-41" in out
    report = (tmp_path / "out" / "report.md").read_text()
    assert "missing combo_id 3, 17, 40-41" in report and "does not hold exactly" in report
    assert len(pd.read_csv(tmp_path / "out" / "experiments.csv")) == 60


def test_missing_comparator_is_stated(tmp_path, capsys):
    frame = synthetic_results(4, groups=THREE, models=("m",), seed=2, missing_combos=[3])
    write_results(frame, tmp_path / "data", THREE)
    code, out, _ = run(capsys, tmp_path / "data", "--out", tmp_path / "out", "--bootstrap", "200")
    assert code == 0 and "The pre-specified comparator (combo 3" in out
    assert not (tmp_path / "out" / "comparisons.csv").exists()


def test_single_experiment_gives_clearly_degraded_output(tmp_path, capsys):
    write_hand(tmp_path / "data", {5: [0.1, 0.3]}, singles={"group1_cam1": [0.0, 0.1]})
    code, out, err = run(capsys, tmp_path / "data", "--out", tmp_path / "out", "--bootstrap", "200")
    assert code == 0 and err == ""
    assert "Only one MetaCAM experiment (combo 5)" in out
    report = (tmp_path / "out" / "report.md").read_text()
    assert "CRE, the CRE plots and the factorial model need at least two experiments" in report
    assert not (tmp_path / "out" / "cre_plot.png").exists()
    paper = pd.read_csv(tmp_path / "out" / "metacam_vs_single.csv")
    assert paper["adaptive_mean"].tolist() == pytest.approx([0.2, 0.05])


def test_only_single_methods(tmp_path, capsys):
    frame = synthetic_results(3, groups=GROUPS, seed=1)
    write_results(frame[frame["kind"] != "metacam"], tmp_path / "data", GROUPS)
    code, out, _ = run(capsys, tmp_path / "data", "--out", tmp_path / "out", "--bootstrap", "200")
    assert code == 0 and "No MetaCAM experiments are in the dataset" in out
    assert len(pd.read_csv(tmp_path / "out" / "metacam_vs_single.csv")) == 12 + 2


def test_stale_outputs_are_removed(small_run, tmp_path, capsys):
    _, full, _ = small_run
    out = tmp_path / "out"
    out.mkdir()
    for name in ("cre_plot.png", "effects.csv", "comparisons.md"):
        (out / name).write_bytes((full / name).read_bytes())
    (out / "anova.csv").write_text("from an older version")
    (out / "mine.txt").write_text("not ours")
    write_hand(tmp_path / "data", {5: [0.1, 0.3]})
    assert run(capsys, tmp_path / "data", "--out", out, "--bootstrap", "200")[0] == 0
    for name in ("cre_plot.png", "effects.csv", "comparisons.md", "anova.csv"):
        assert not (out / name).exists(), name
    assert (out / "mine.txt").exists()


def test_default_output_folder_is_not_read_back(tmp_path, capsys):
    data = write_hand(tmp_path / "data", {c: [c / 8, 0.0] for c in range(8)}, groups=THREE)
    (data / "analysis").mkdir()
    (data / "analysis" / "stray.parquet").write_bytes(b"not parquet")
    code, out, err = run(capsys, data, "--bootstrap", "200")
    assert code == 0, err
    assert (data / "analysis" / "report.md").is_file()


def test_score_and_metric_options(tiny_dataset, tmp_path, capsys):
    code, out, _ = run(capsys, tiny_dataset, "--out", tmp_path, "--score", "k=50", "--metric", "morf",
                       "--in-sample", "--bootstrap", "200")
    assert code == 0 and "in-sample ROAD MoRF at k = 50, lower is better" in out
    raw = pq.read_table(tiny_dataset).to_pandas()
    rows = raw[(raw["kind"] == "metacam") & (raw["k"] == 50)]
    best = rows.groupby("combo_id")["road_morf"].mean().idxmin()  # lowest MoRF is best
    assert pd.read_csv(tmp_path / "experiments.csv")["combo_id"].iloc[0] == best


def test_outputs_are_reproducible_from_the_parquet_alone(tiny_dataset, tmp_path, capsys):
    for name in ("a", "b"):
        assert run(capsys, tiny_dataset, "--out", tmp_path / name, "--bootstrap", "200")[0] == 0
    for table in ("comparisons.csv", "cre.csv", "experiments.csv", "optimism.csv", "effects.csv"):
        assert (tmp_path / "a" / table).read_bytes() == (tmp_path / "b" / table).read_bytes(), table
    assert run(capsys, tiny_dataset, "--out", tmp_path / "c", "--bootstrap", "200", "--bootstrap-seed", "1")[0] == 0
    first, other = (pd.read_csv(tmp_path / n / "cre.csv") for n in ("a", "c"))
    np.testing.assert_array_equal(first["cre"], other["cre"])  # the estimates do not depend on the seed
    assert not np.array_equal(first["ci_low"], other["ci_low"])  # the intervals do, a little


def test_deletion_metric_ranks_lowest_first(tiny_dataset, tmp_path, capsys):
    code, out, _ = run(capsys, tiny_dataset, "--out", tmp_path, "--metric", "deletion", "--bootstrap", "200")
    assert code == 0 and "adaptive deletion AUC (at each unit's k*), lower is better" in out
    ranking = pd.read_csv(tmp_path / "experiments.csv")
    assert (np.diff(ranking["mean"]) >= 0).all()
    raw = pq.read_table(tiny_dataset).to_pandas()
    rows = raw[(raw["kind"] == "metacam") & raw["is_best_k"]]
    assert ranking["combo_id"].iloc[0] == rows.groupby("combo_id")["deletion_auc"].mean().idxmin()


def _flag_mismatch(folder: Path) -> None:
    frame = hand_frame({0: [0.1], 1: [0.2]})
    frame.loc[frame["combo_id"] == 1, "g_group2"] = True
    write_results(frame, folder, GROUPS)


def _mixed_ties(folder: Path) -> None:
    frame = hand_frame({0: [0.1], 1: [0.2]})
    frame.loc[frame["combo_id"] == 1, "road_ties"] = "inclusive"
    write_results(frame, folder, GROUPS)


def _legacy_mixed_modes(folder: Path) -> None:
    frame = hand_frame({0: [0.1], 1: [0.2]}).drop(columns=["road_ties"])
    frame["road_mode"] = np.where(frame["combo_id"] == 1, "paper", "default")
    write_results(frame, folder)


def _no_heldout(folder: Path) -> None:
    frame = hand_frame({0: [0.1], 1: [0.2]})
    frame[["road_heldout_combined", "road_heldout_morf", "road_heldout_lerf"]] = np.nan
    write_results(frame, folder, GROUPS)


@pytest.mark.parametrize(("setup", "argv", "message"), [
    ("empty", [], "is empty"),
    ("text", [], "no Parquet files"),
    ("columns", [], "lack(s) required column(s) road_morf"),
    ("none", [], "does not exist"),
    ("data", ["--score", "k=33", "--in-sample"], "no rows with k = 33"),
    ("data", ["--score", "k=33"], "held-out ROAD and the chosen-map metrics (deletion/insertion AUC, ...) exist "
                                  "only at k* and k = 100"),
    ("data", ["--score", "best"], "--score 'best' is unknown"),
    ("data", ["--metric", "auc"], "--metric 'auc' is not recorded in this dataset; recorded metrics: combined, morf, "
                                  "lerf, deletion, insertion, sparseness, complexity"),
    ("data", ["--metric", "deletion", "--score", "k=50", "--in-sample"], "chosen-map metrics"),
    ("data", ["--sweep-id", "nope"], "--sweep-id 'nope' is not in the dataset"),
    ("data", ["--bootstrap", "5"], "--bootstrap 5: use at least 100 replicates"),
    ("data", ["--folds", "1"], "--folds 1: use at least 2 folds"),
    ("data", ["--bootstrap", "many"], "invalid int value: 'many'"),
    ("flags", [], "group flags (g_*) that do not match their combo_id"),
    ("ties", [], "mixes ROAD tie rules inclusive, random"),
    ("modes", [], "mixes ROAD tie rules inclusive, random"),
    ("heldout", [], "held-out columns are empty: rerun the sweep with held-out re-scoring, or analyse in-sample"),
])
def test_bad_input_gives_one_line_error(tmp_path, capsys, setup, argv, message):
    folder = tmp_path / "results"
    if setup != "none":
        folder.mkdir()
    if setup == "text":
        (folder / "readme.txt").write_text("x")
    if setup == "columns":
        frame = synthetic_results(2, groups=GROUPS, singles={}, ks=(100.0,))
        write_results(frame.drop(columns=["road_morf"]), folder, GROUPS)
    if setup == "data":
        write_hand(folder, {0: [0.1], 1: [0.2]})
    builders = {"flags": _flag_mismatch, "ties": _mixed_ties, "modes": _legacy_mixed_modes, "heldout": _no_heldout}
    if setup in builders:
        builders[setup](folder)
    code, out, err = run(capsys, folder, *argv)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("metacam analyze: error: ")
    assert message in err


def test_design_columns_alone_suffice_end_to_end(tmp_path, capsys):
    # No file metadata, no road_ties / road_mode, no optional provenance: DESIGN §3's columns only.
    frame = synthetic_results(6, groups=THREE, seed=8, provenance_columns=False)
    keep = [c for c in frame.columns if c in REQUIRED_COLUMNS or c.startswith("g_")]
    write_results(frame[keep], tmp_path / "data")
    code, out, err = run(capsys, tmp_path / "data", "--out", tmp_path / "out", "--bootstrap", "200")
    assert code == 0 and err == ""
    assert "groups (3, from columns): group1, group2, group3; comparator group1+group2+group3" in out
    report = (tmp_path / "out" / "report.md").read_text()
    assert "The ROAD tie rule is not recorded (no road_ties or road_mode column, no metadata): assumed 'random'" in report
    assert "The files record no group definition (Parquet metadata): groups were read from the g_* columns" in report
    assert (tmp_path / "out" / "comparisons.csv").is_file() and (tmp_path / "out" / "cre_plot.png").is_file()


def test_in_sample_still_works_without_heldout_scores(tmp_path, capsys):
    _no_heldout(tmp_path / "data")
    code, out, _ = run(capsys, tmp_path / "data", "--out", tmp_path / "out", "--in-sample", "--bootstrap", "200")
    assert code == 0 and "in-sample adaptive ROAD combined" in out
    assert "No optimism table" in out


def test_help_and_missing_argument(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for option in ("RESULTS_DIR", "--in-sample", "--metric", "deletion", "--bootstrap", "--interactions", "--folds",
                   "--fold-seed", "plug-in"):
        assert option in text
    code, _, err = run(capsys)
    assert code == 2 and "required: RESULTS_DIR" in err


def test_help_reads_no_dataset_and_loads_no_pandas():
    done = subprocess.run([sys.executable, "-c", "import sys; from metacam.analysis.cli import main; main(['--help']); "
                           "print('LOADED', sorted(m for m in ('pandas', 'numpy', 'pyarrow') if m in sys.modules))"],
                          capture_output=True, text=True, check=False)
    assert "LOADED []" in done.stdout, done.stderr


def test_a_plug_in_metric_gets_a_headline_row(tmp_path, capsys):
    write_synthetic(tmp_path / "data", 8, groups=THREE, models=("m",), seed=4, plugins={"my_metric": False})
    code, out, err = run(capsys, tmp_path / "data", "--out", tmp_path / "out", "--metric", "my_metric",
                         "--bootstrap", "200")
    assert code == 0, err
    assert "score: adaptive my_metric (at each unit's k*), lower is better" in out
    headline = pd.read_csv(tmp_path / "out" / "headline.csv")
    # The analysed metric first, then every headline metric the dataset records, the plug-in included.
    assert headline["metric"].tolist() == ["my_metric", "combined", "deletion", "insertion", "sparseness",
                                           "complexity"]
    assert "adaptive my_metric: beats every single CAM?" in out
    raw = pq.read_table(tmp_path / "data").to_pandas()
    best = raw[(raw["kind"] == "metacam") & raw["is_best_k"]]
    top = pd.read_csv(tmp_path / "out" / "experiments.csv")["combo_id"].iloc[0]
    assert top == best.groupby("combo_id")["my_metric"].mean().idxmin()  # ranked in its own direction
    assert "`my_metric` (my_metric, headline, plug-in synthetic.plugins:my_metric)" in (
        tmp_path / "out" / "report.md").read_text()


def test_python_dash_m_without_torch_and_without_tracebacks(tmp_path):
    # One fresh interpreter runs `python -m metacam.analysis` twice: a missing folder (one-line
    # error, exit 2, no traceback), then a real dataset; torch is never imported.
    data = write_hand(tmp_path / "data", {c: [c / 8, 0.1, 0.2] for c in range(8)}, groups=THREE,
                      singles={"group1_cam1": [0, 0, 0]})
    script = "\n".join([
        "import runpy, sys",
        "for argv in ([{missing!r}], [{data!r}, '--out', {out!r}, '--bootstrap', '200']):",
        "    sys.argv = ['metacam analyze', *argv]",
        "    try:",
        "        runpy.run_module('metacam.analysis', run_name='__main__')",
        "    except SystemExit as done:",
        "        print('RC', done.code, flush=True)",
        "print('TORCH', 'torch' in sys.modules)",
    ]).format(missing=str(tmp_path / "missing"), data=str(data), out=str(tmp_path / "out"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert "RC 2" in done.stdout and "RC 0" in done.stdout and "TORCH False" in done.stdout, done.stderr
    assert done.stderr.startswith("metacam analyze: error: results folder") and "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert (tmp_path / "out" / "cre_plot.png").is_file()


def test_failed_rows_are_counted_listed_and_left_out(tmp_path, capsys):
    frame = hand_frame({c: [1.0, 3.0] for c in range(8)}, groups=THREE)
    failed = (frame["combo_id"] == 5) & (frame["image_id"] == frame["image_id"].min())
    frame.loc[failed, ["status", "road_heldout_combined"]] = ["unreadable image: broken.jpg", 99.0]
    write_results(frame, tmp_path / "data", THREE)
    code, out, _ = run(capsys, tmp_path / "data", "--out", tmp_path / "out", "--bootstrap", "200")
    assert code == 0
    assert "Excluded 1 rows with status other than 'ok' (unreadable image: broken.jpg: 1), from 1 unit(s)" in out
    listed = pd.read_csv(tmp_path / "out" / "failed_rows.csv")
    assert listed[["combo_id", "status"]].values.tolist() == [[5, "unreadable image: broken.jpg"]]
    ranking = pd.read_csv(tmp_path / "out" / "experiments.csv").set_index("combo_id")
    assert ranking.loc[5, "mean"] == 3.0 and ranking.loc[5, "n_units"] == 1
    assert "failed_rows.csv" in (tmp_path / "out" / "report.md").read_text()
