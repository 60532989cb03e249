"""`metacam analyze` end to end: outputs, degraded cases, one-line errors, no torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metacam.analysis.cli import main
from metacam.analysis.synthetic import synthetic_results, write_results
from metacam.groups import GROUP_KEYS
from tests.analysis.helpers import write_hand

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small_run(small_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("small-out")
    code = main([str(small_dataset), "--out", str(out)])
    return code, out


def test_full_run_writes_tables_figures_and_report(small_run, small_dataset):
    code, out = small_run
    assert code == 0
    # CRE recomputed independently from the raw Parquet rows.
    raw = pd.read_parquet(small_dataset)
    best = raw[(raw["kind"] == "metacam") & raw["is_best_k"]]
    means = best.groupby("combo_id")["road_combined"].mean().astype(float)
    residual = means - means.median()
    combos = means.index.to_numpy(dtype=np.int64)
    expected = [residual[(combos >> bit & 1) == 1].sum() for bit in range(6)]
    table = pd.read_csv(out / "cre.csv").set_index("group").loc[list(GROUP_KEYS)]
    np.testing.assert_allclose(table["cre"], expected, rtol=1e-9)
    assert table["rank"].tolist() == list((-table["cre"]).rank(method="min").astype(int))

    ranking = pd.read_csv(out / "experiments.csv")
    assert len(ranking) == 64 and ranking["rank"].tolist() == list(range(1, 65))
    np.testing.assert_allclose(ranking.set_index("combo_id")["mean"].sort_index(), means.sort_index(), rtol=1e-9)

    paper = pd.read_csv(out / "metacam_vs_single.csv")
    assert len(paper) == 2 + 12 and paper["entry"].iloc[0].startswith("MetaCAM best")
    assert paper.loc[0, "combo_id"] == ranking.loc[0, "combo_id"]
    plain = raw[(raw["kind"] == "metacam") & (raw["k"] == 100) & (raw["combo_id"] == 63)]["road_combined"]
    assert paper.loc[1, "plain_mean"] == pytest.approx(float(plain.astype(float).mean()))
    wins = pd.read_csv(out / "win_rate.csv")
    assert wins["n_units"].tolist() == [40, 40]
    assert ((wins["wins"] + wins["ties"] + wins["losses"]) == 40).all()

    effects = pd.read_csv(out / "effects.csv")
    assert effects["term"].tolist() == [f"g_{g}" for g in GROUP_KEYS]
    anova = pd.read_csv(out / "anova.csv")
    assert anova["term"].tolist() == [*GROUP_KEYS, "Residual"]

    report = (out / "report.md").read_text()
    for target in re.findall(r"\]\(([^)]+)\)", report):  # every link resolves
        assert (out / target).is_file(), target
    for name in ("cre_plot.png", "cre_per_unit.png", "effects.png", "experiments.md", "anova.md"):
        assert f"({name})" in report
    assert "the identity holds to max |difference|" in report
    assert "64 of 64" in report


def test_stdout_summary(small_dataset, tmp_path, capsys):
    code, out, err = run(capsys, small_dataset, "--out", tmp_path)
    assert code == 0 and err == ""
    assert "64/64 MetaCAM experiments, 12 single methods, 40 units" in out
    assert all(re.search(rf"^{g}\s+[+-]\d", out, re.MULTILINE) for g in GROUP_KEYS)
    assert f"report: {tmp_path / 'report.md'}" in out


def test_interactions_option_finds_the_planted_interaction(interaction_dataset, tmp_path, capsys):
    code, out, _ = run(capsys, interaction_dataset, "--out", tmp_path, "--interactions")
    assert code == 0
    effects = pd.read_csv(tmp_path / "effects.csv").set_index("term")
    assert len(effects) == 21
    significant = effects[(effects["kind"] == "interaction") & (effects["p_value"] < 0.001)]
    assert significant.index.tolist() == ["g_gradcam:g_eigen"]
    assert "Interactions with clustered p < 0.05: gradcam × eigen" in (tmp_path / "report.md").read_text()


def test_partial_sweep_runs_on_what_exists_and_says_so(tmp_path, capsys):
    frame = synthetic_results(12, seed=2, missing_combos=[3, 17, 40, 41])
    write_results(frame, tmp_path / "data")
    code, out, _ = run(capsys, tmp_path / "data", "--out", tmp_path / "out")
    assert code == 0
    assert "Partial sweep: 60 of 64 experiments present; missing combo_id 3, 17, 40-41" in out
    report = (tmp_path / "out" / "report.md").read_text()
    assert "missing combo_id 3, 17, 40-41" in report and "does not hold exactly" in report
    assert len(pd.read_csv(tmp_path / "out" / "experiments.csv")) == 60


def test_single_experiment_gives_clearly_degraded_output(tmp_path, capsys):
    write_hand(tmp_path / "data", {5: [0.1, 0.3]}, singles={"gradcam": [0.0, 0.1]})
    code, out, err = run(capsys, tmp_path / "data", "--out", tmp_path / "out")
    assert code == 0 and err == ""
    assert "Only one MetaCAM experiment (combo 5)" in out
    report = (tmp_path / "out" / "report.md").read_text()
    assert "CRE, the CRE plots and the factorial model need at least two experiments" in report
    assert not (tmp_path / "out" / "cre_plot.png").exists()
    paper = pd.read_csv(tmp_path / "out" / "metacam_vs_single.csv")
    assert paper["adaptive_mean"].tolist() == pytest.approx([0.2, 0.05])


def test_only_single_methods(tmp_path, capsys):
    frame = synthetic_results(5, seed=1)
    write_results(frame[frame["kind"] == "single"], tmp_path / "data")
    code, out, _ = run(capsys, tmp_path / "data", "--out", tmp_path / "out")
    assert code == 0 and "No MetaCAM experiments are in the dataset" in out
    assert len(pd.read_csv(tmp_path / "out" / "metacam_vs_single.csv")) == 12


def test_stale_outputs_are_removed(small_run, tmp_path, capsys):
    _, full = small_run
    out = tmp_path / "out"
    out.mkdir()
    for name in ("cre_plot.png", "effects.csv"):
        (out / name).write_bytes((full / name).read_bytes())
    write_hand(tmp_path / "data", {5: [0.1, 0.3]})
    assert run(capsys, tmp_path / "data", "--out", out)[0] == 0
    assert not (out / "cre_plot.png").exists() and not (out / "effects.csv").exists()


def test_default_output_folder_is_not_read_back(tmp_path, capsys):
    data = write_hand(tmp_path / "data", {c: [c / 64, 0.0] for c in range(64)})
    (data / "analysis").mkdir()
    (data / "analysis" / "stray.parquet").write_bytes(b"not parquet")
    code, out, err = run(capsys, data)
    assert code == 0, err
    assert (data / "analysis" / "report.md").is_file()


def test_score_and_metric_options(small_dataset, tmp_path, capsys):
    code, out, _ = run(capsys, small_dataset, "--out", tmp_path, "--score", "k=50", "--metric", "morf")
    assert code == 0 and "ROAD MoRF at k = 50, lower is better" in out
    raw = pd.read_parquet(small_dataset)
    rows = raw[(raw["kind"] == "metacam") & (raw["k"] == 50)]
    best = rows.groupby("combo_id")["road_morf"].mean().idxmin()  # lowest MoRF is best
    assert pd.read_csv(tmp_path / "experiments.csv")["combo_id"].iloc[0] == best


@pytest.mark.parametrize(("setup", "argv", "message"), [
    ("empty", [], "is empty"),
    ("text", [], "no Parquet files"),
    ("columns", [], "lack(s) required column(s) road_morf"),
    ("none", [], "does not exist"),
    ("data", ["--score", "k=33"], "no rows with k = 33"),
    ("data", ["--score", "best"], "--score 'best' is unknown"),
    ("data", ["--metric", "auc"], "invalid choice: 'auc'"),
    ("data", ["--sweep-id", "nope"], "--sweep-id 'nope' is not in the dataset"),
])
def test_bad_input_gives_one_line_error(tmp_path, capsys, setup, argv, message):
    folder = tmp_path / "results"
    if setup != "none":
        folder.mkdir()
    if setup == "text":
        (folder / "readme.txt").write_text("x")
    if setup == "columns":
        frame = synthetic_results(2, singles={}, ks=(100.0,))
        write_results(frame.drop(columns=["road_morf"]), folder, schema=None)
    if setup == "data":
        write_hand(folder, {0: [0.1], 1: [0.2]})
    code, out, err = run(capsys, folder, *argv)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("metacam analyze: error: ")
    assert message in err


def test_help_and_missing_argument(capsys):
    assert main(["--help"]) == 0
    assert "RESULTS_DIR" in capsys.readouterr().out
    code, _, err = run(capsys)
    assert code == 2 and "required: RESULTS_DIR" in err


def test_runs_without_torch_in_a_fresh_interpreter(tmp_path):
    data = write_hand(tmp_path / "data", {c: [c / 64, 0.1, 0.2] for c in range(64)}, singles={"gradcam": [0, 0, 0]})
    script = ("import sys, analysis.cli; "
              f"rc = analysis.cli.main([{str(data)!r}, '--out', {str(tmp_path / 'out')!r}]); "
              "print('TORCH', 'torch' in sys.modules, 'RC', rc)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False)
    assert "TORCH False RC 0" in done.stdout, done.stderr
    assert (tmp_path / "out" / "cre_plot.png").is_file()


def test_python_dash_m_analysis_reports_errors_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path / "missing")],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("metacam analyze: error: results folder") and "Traceback" not in done.stderr


def test_failed_rows_are_counted_listed_and_left_out(tmp_path, capsys):
    from tests.analysis.helpers import hand_frame

    frame = hand_frame({c: [1.0, 3.0] for c in range(64)})
    failed = (frame["combo_id"] == 9) & (frame["image_id"] == frame["image_id"].min())
    frame.loc[failed, ["status", "road_combined"]] = ["unreadable image", 99.0]
    write_results(frame, tmp_path / "data")
    code, out, _ = run(capsys, tmp_path / "data", "--out", tmp_path / "out")
    assert code == 0
    assert "Excluded 1 rows with status other than 'ok' (unreadable image: 1), from 1 unit(s)" in out
    listed = pd.read_csv(tmp_path / "out" / "failed_rows.csv")
    assert listed[["combo_id", "status"]].values.tolist() == [[9, "unreadable image"]]
    ranking = pd.read_csv(tmp_path / "out" / "experiments.csv").set_index("combo_id")
    assert ranking.loc[9, "mean"] == 3.0 and ranking.loc[9, "n_units"] == 1
    assert "failed_rows.csv" in (tmp_path / "out" / "report.md").read_text()
