"""bench/gpu.py, the one-shot GPU check: budgets, failures that do not stop the run, the
no-CUDA line, and its CPU dry run (so it works the moment a GPU is lent)."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "bench" / "gpu.py")
gpu = sys.modules["bench_gpu"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(gpu)


def test_a_step_over_its_budget_is_killed_and_what_it_printed_is_kept(tmp_path):
    code = "import time; print('rate: 42 images/s', flush=True); time.sleep(60)"
    step = gpu.Step("slow", 2, [sys.executable, "-c", code], {"rate": r"^rate: (\d+ images/s)"})
    started = time.perf_counter()
    result = gpu.run_step(step, tmp_path)
    assert time.perf_counter() - started < 30
    assert result.status == "over budget (killed after 2 s)" and result.figures == {"rate": "42 images/s"}
    assert (tmp_path / "slow.log").read_text() == "rate: 42 images/s\n"


def test_a_failing_step_and_a_broken_figure_reader_are_reported_not_raised(tmp_path):
    def broken(result, text):
        raise RuntimeError("no progress records")

    failing = gpu.run_step(gpu.Step("fails", 30, [sys.executable, "-c", "import sys; sys.exit(3)"]), tmp_path)
    assert failing.status == "failed (exit 3)"
    reader = gpu.run_step(gpu.Step("reader", 30, [sys.executable, "-c", "print('x')"], after=broken), tmp_path)
    assert reader.status == "ok" and reader.figures == {"error": "RuntimeError: no progress records"}
    text = gpu.summary([failing, reader], "a GPU")
    assert "| fails | failed (exit 3) |" in text and "## fails: failed (exit 3)" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_in_one_line_and_exits_0(tmp_path, capsys):
    assert gpu.main(["--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out == "bench/gpu.py: no CUDA device here (torch.cuda.is_available() is False); nothing measured\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_dry_run_runs_every_step_on_the_cpu(tmp_path):
    assert gpu.main(["--dry-run", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "summary.json").read_text())
    steps = {step["name"]: step for step in record["steps"]}
    assert list(steps) == ["tests", "sweep", "road", "impute", "members"]
    assert all(step["status"] == "ok" for step in steps.values()), steps
    cuda_tests = (Path(__file__).parent / "test_cuda.py").read_text().count("\ndef test_")
    assert steps["tests"]["figures"]["cuda tests"] == f"{cuda_tests} skipped"  # no CUDA here: each skips
    sweep = steps["sweep"]["figures"]
    assert sweep["jobs done"] == "4 of 4" and "error" not in sweep
    assert float(sweep["sweep wall / forward passes"].split("x")[0]) > 1  # wall includes more than forwards
    for name in ("road", "impute", "members"):  # the flags the GPU run passes still exist
        assert steps[name]["figures"] == {"flags": "all accepted"}
    assert "| sweep | ok |" in (tmp_path / "summary.md").read_text()
