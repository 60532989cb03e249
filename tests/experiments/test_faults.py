"""Faults the sweep must survive: a killed worker, racing and corrupt cache entries,
unreadable images, and bad overrides."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from metacam.experiments.sweep import job_spec
from metacam.cache import EntryKey, MemberCache
from metacam.results import result_files
from metacam.schema import RESULTS_SCHEMA
from metacam.sweep import run_job
from tests.experiments.conftest import FAST, composed

REPO = Path(__file__).resolve().parents[2]
# Sweep two groups only (4 jobs, 9 experiments): enough to kill one mid-way.
SMALL = [*FAST, "combo.gradcampp=false", "combo.perturbation=false", "combo.fullgrad=false", "combo.random=false"]


def sweep_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "experiments" / "sweep.py"), "-m", *SMALL, f"out_dir={out}", *extra]


def dataset(out: Path) -> pd.DataFrame:
    files = result_files(next((out / "sweeps").iterdir()) / "results")
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return frame.sort_values(["kind", "method", "image_id", "k"], na_position="first").reset_index(drop=True)


def run_sweep(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_command(out, *extra), cwd=REPO, capture_output=True, text=True, check=False)


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_same_dataset(tmp_path):
    images = "data.images=[sample:coffee,sample:astronaut,sample:rocket]"
    whole = run_sweep(tmp_path / "whole", images)
    assert whole.returncode == 0, whole.stderr[-2000:]
    expected = dataset(tmp_path / "whole")
    assert set(expected["method"]) == {"none", "gradcam", "eigen", "gradcam+eigen",
                                       "hirescam", "gradcam_elementwise", "eigencam", "eigengradcam"}
    total = 9 * 3  # experiments x image units

    out = tmp_path / "killed"
    worker = subprocess.Popen(sweep_command(out, images), cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while len(list(out.rglob("results/*/*.parquet"))) < 6 and worker.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    partial = list(out.rglob("results/*/*.parquet"))
    assert 6 <= len(partial) < total, "the worker should die mid-sweep"
    stamps = {p: p.stat().st_mtime_ns for p in partial}

    resumed = run_sweep(out, images)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "already done" in resumed.stdout
    assert all(p.stat().st_mtime_ns == stamps[p] for p in partial)  # finished units untouched
    got = dataset(out)
    assert len(got) == len(expected) == len(got.drop_duplicates(["kind", "method", "image_id", "k"]))
    pd.testing.assert_frame_equal(got, expected)  # bit for bit, provenance included
    assert not list(out.rglob("*.partial"))


def test_rerun_of_a_finished_job_skips_every_unit(tmp_path):
    with composed([*FAST, f"out_dir={tmp_path}"]) as cfg:
        spec = job_spec(cfg)
    first = run_job(spec)
    assert first.units_done == 1 and first.units_skipped == 0 and first.cache_misses > 0
    stamps = {p: p.stat().st_mtime_ns for p in result_files(Path(spec.results_dir))}
    again = run_job(spec)
    assert again.units_done == 0 and again.units_skipped == 1
    assert {p: p.stat().st_mtime_ns for p in result_files(Path(spec.results_dir))} == stamps


def test_unreadable_image_gets_a_status_row_and_the_rest_is_scored(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8)).save(tiny)
    overrides = [*FAST, f"data.images=[sample:coffee,{broken},{tiny}]", f"out_dir={tmp_path / 'out'}",
                 "combo.gradcampp=false", "combo.perturbation=false", "combo.eigen=false",
                 "combo.fullgrad=false", "combo.random=false"]  # gradcam alone: + its 3 singles
    with composed(overrides) as cfg:
        spec = job_spec(cfg)
    report = run_job(spec)
    assert report.units_done == 3
    frame = pd.concat([pd.read_parquet(f) for f in result_files(Path(spec.results_dir))])
    bad = frame[frame["status"] != "ok"]
    assert len(bad) == 2 * 4  # two bad images x (1 combination + 3 singles), one row each
    assert set(bad["image_path"]) == {str(broken), str(tiny)}
    assert bad["status"].str.startswith("unreadable image: ").all()
    assert bad[bad["image_path"] == str(tiny)]["status"].str.contains("8×8").all()
    assert bad[["road_combined", "k", "target_class"]].isna().all().all()
    good = frame[frame["status"] == "ok"]
    assert len(good) == 4 * 3 and good["road_combined"].notna().all()  # 4 experiments x 3 ks
    assert good.groupby(["kind", "method"])["is_best_k"].sum().eq(1).all()
    assert list(frame.columns) == RESULTS_SCHEMA.names


def _race(root: str, barrier, results) -> None:
    """One process: compute (slowly) and store the same entry as the other, then read it."""
    cache = MemberCache(root)
    key = EntryKey("m", "layer4", "img-0", 3, "gradcam", (32, 32))
    saliency = torch.linspace(0, 1, 32 * 32).reshape(1, 32, 32)

    def compute(indices, members):
        barrier.wait()  # both processes are computing at the same moment
        return {"gradcam": saliency}

    maps = cache.get_or_compute([[key]], compute, torch.device("cpu"))
    results.put((os.getpid(), float(maps["gradcam"].sum()), cache.misses))


def test_two_processes_computing_the_same_cache_entry(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_race, args=(str(tmp_path), barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    outcomes = [results.get(timeout=5) for _ in workers]
    assert len({pid for pid, _, _ in outcomes}) == 2
    assert [total for _, total, _ in outcomes] == pytest.approx([512.0, 512.0])
    assert all(misses == 1 for _, _, misses in outcomes)  # both computed: neither saw a torn file
    entries = list(tmp_path.rglob("*.npz"))
    assert len(entries) == 1 and not entries[0].name.startswith(".")
    key = EntryKey("m", "layer4", "img-0", 3, "gradcam", (32, 32))
    assert np.allclose(MemberCache(tmp_path).load(key), np.linspace(0, 1, 1024).reshape(32, 32))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other_key", "out_of_range"])
def test_corrupt_cache_entry_is_detected_and_recomputed(tmp_path, damage):
    cache = MemberCache(tmp_path)
    key = EntryKey("m", "layer4", "img-0", 3, "gradcam", (8, 8))
    good = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    cache.store(key, good)
    path = cache.path(key)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(os.urandom(path.stat().st_size))
    elif damage == "other_key":
        other = EntryKey("m", "layer4", "img-1", 3, "gradcam", (8, 8))
        cache.store(other, good)
        cache.path(other).replace(path)
    else:
        np.savez(path, map=good * 3, key=np.array(key.text()))
    calls = []

    def compute(indices, members):
        calls.append(members)
        return {"gradcam": torch.from_numpy(good)[None]}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        maps = cache.get_or_compute([[key]], compute, torch.device("cpu"))
    assert calls == [["gradcam"]] and cache.corrupt == 1
    assert any("recomputing" in str(w.message) for w in caught)
    assert np.array_equal(maps["gradcam"][0].numpy(), good)
    assert np.array_equal(MemberCache(tmp_path).load(key), good)  # rewritten whole


def test_corrupt_cache_entry_in_a_sweep_gives_the_same_rows(tmp_path):
    with composed([*FAST, f"out_dir={tmp_path}"]) as cfg:
        spec = job_spec(cfg)
    run_job(spec)
    before = pd.concat([pd.read_parquet(f) for f in result_files(Path(spec.results_dir))])
    for entry in Path(spec.cache_dir).rglob("gradcam-*.npz"):
        entry.write_bytes(b"PK\x03\x04 truncated")
    for file in result_files(Path(spec.results_dir)):
        file.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        report = run_job(spec)
    assert report.cache_misses == 1  # only the damaged gradcam entry was recomputed
    after = pd.concat([pd.read_parquet(f) for f in result_files(Path(spec.results_dir))])
    pd.testing.assert_frame_equal(before.reset_index(drop=True), after.reset_index(drop=True))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("combo.gradcamm=true", "gradcamm"),
        ("+combo.extra=true", "combo flags and groups disagree: unknown group(s) extra"),
        ("groups.eigen=[eigencam,eigencamm]", "unknown CAM method 'eigencamm'"),
        ("model.name=resnet5O", "unknown model 'resnet5o'"),
        ("model=resnet", "model"),
        ("threshold.ks=[0,50]", "k=0 is outside (0, 100]"),
        ("road=exact", "road"),
    ],
)
def test_bad_override_is_one_error_before_any_job_starts(tmp_path, override, message):
    result = subprocess.run(
        [sys.executable, "-m", "metacam.cli", "sweep", *FAST, f"out_dir={tmp_path}", override],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("metacam sweep: error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())  # nothing was launched or written
