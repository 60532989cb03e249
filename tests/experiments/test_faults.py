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

from metacam.cache import EntryKey, MemberCache
from metacam.evaluation.registry import builtins, entries
from metacam.experiments.plan import job_spec
from metacam.results import result_files
from metacam.schema import results_schema
from metacam.sweep import run_job
from tests.experiments.conftest import TWO_GROUPS, composed

REPO = Path(__file__).resolve().parents[2]
# Two groups (4 jobs; 4 combinations + 5 singles + 2 controls = 11 experiments):
# enough to kill one mid-way.
SMALL = TWO_GROUPS


def sweep_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "experiments" / "sweep.py"), "-m", *SMALL, f"out_dir={out}", *extra]


def results_of(out: Path) -> Path:
    return next((out / "sweeps").iterdir()) / "results"


def dataset(out: Path) -> pd.DataFrame:
    files = result_files(results_of(out))
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return frame.sort_values(["kind", "method", "image_id", "k"], na_position="first").reset_index(drop=True)


def finished(out: Path) -> list[Path]:
    """The public (renamed, complete) result files: a unit being written is invisible."""
    sweeps = out / "sweeps"
    return result_files(results_of(out)) if sweeps.exists() and any(sweeps.iterdir()) else []


def run_sweep(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_command(out, *extra), cwd=REPO, capture_output=True, text=True, check=False)


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_same_dataset(tmp_path):
    """SIGKILL mid-sweep, rerun: the finished units are untouched and the dataset equals an
    uninterrupted run's. Only finished (public) files are counted, so the test does not
    depend on when the signal lands (a unit being written is a hidden temporary file)."""
    images = "data.images=[sample:coffee,sample:astronaut,sample:rocket]"
    whole = run_sweep(tmp_path / "whole", images)
    assert whole.returncode == 0, whole.stderr[-2000:]
    expected = dataset(tmp_path / "whole")
    assert set(expected["method"]) == {"none", "gradcam", "eigen", "gradcam+eigen", "hirescam",
                                       "gradcam_elementwise", "eigencam", "eigengradcam", "shuffled",
                                       "smooth_noise"}
    total = 11 * 3  # experiments x image units

    out = tmp_path / "killed"
    worker = subprocess.Popen(sweep_command(out, images), cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while len(finished(out)) < 6 and worker.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    partial = finished(out)  # counted after the kill: nothing can appear or vanish now
    assert 6 <= len(partial) < total, "the worker should die mid-sweep"
    stamps = {p: p.stat().st_mtime_ns for p in partial}

    resumed = run_sweep(out, images)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "already done" in resumed.stdout
    assert all(p.stat().st_mtime_ns == stamps[p] for p in partial)  # finished units untouched
    got = dataset(out)
    assert len(got) == len(expected) == len(got.drop_duplicates(["kind", "method", "image_id", "k"]))
    pd.testing.assert_frame_equal(got, expected)  # bit for bit, provenance included
    assert not list(out.rglob(".*.partial*"))  # a killed writer's temporary file was cleaned


def test_a_killed_writers_temporary_file_is_removed_when_the_unit_is_rewritten(tmp_path):
    with composed([*SMALL, "combo_id=1", f"out_dir={tmp_path}"]) as cfg:
        spec = job_spec(cfg)
    run_job(spec)
    target = result_files(spec.results_dir)[0]
    stale = target.with_name(f".{target.stem}.999.deadbeef.partial.parquet")
    stale.write_bytes(b"half a file")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    target.unlink()
    run_job(spec)
    assert target.exists() and not stale.exists()


def test_rerun_of_a_finished_job_skips_every_unit(tmp_path):
    with composed([*SMALL, f"out_dir={tmp_path}"]) as cfg:
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
    overrides = [*SMALL, f"data.images=[sample:coffee,{broken},{tiny}]", f"out_dir={tmp_path / 'out'}",
                 "combo_id=1"]  # gradcam alone: + its 3 singles
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
    assert list(frame.columns) == results_schema(["gradcam", "eigen"], None, entries(builtins())).names


def _race(root: str, barrier, results) -> None:
    """One process: compute (slowly) and store the same entry as the other, then read it."""
    cache = MemberCache(root)
    key = EntryKey("m", "layer4", "img-0", 3, "gradcam", (32, 32))
    saliency = torch.linspace(0, 1, 32 * 32).reshape(1, 32, 32)

    def compute(indices, members):
        barrier.wait()  # both processes are computing at the same moment
        return {"gradcam": saliency}, {}

    maps, _ = cache.get_or_compute([[key]], compute, torch.device("cpu"))
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


def test_a_killed_cache_writers_temporary_file_is_removed_when_the_entry_is_computed(tmp_path):
    """SIGKILL while a member's cache entry is being written leaves a hidden temporary
    file and no entry; the rerun computes the entry and removes the stale file, while a
    temporary file newer than its computation (a live writer's) is left alone."""
    cache = MemberCache(tmp_path)
    key = EntryKey("m", "layer4", "img-0", 3, "gradcam", (8, 8))
    path = cache.path(key)
    path.parent.mkdir(parents=True)
    stale = path.with_name(f".{path.stem}.999.deadbeef.partial.npz")
    stale.write_bytes(b"half an entry")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    live = path.with_name(f".{path.stem}.998.cafef00d.partial.npz")

    def compute(indices, members):
        live.write_bytes(b"another process, writing now")
        return {"gradcam": torch.linspace(0, 1, 64).reshape(1, 8, 8)}, {}

    cache.get_or_compute([[key]], compute, torch.device("cpu"))
    assert np.allclose(MemberCache(tmp_path).load(key), np.linspace(0, 1, 64).reshape(8, 8))
    assert not stale.exists() and live.exists()


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
        return {"gradcam": torch.from_numpy(good)[None]}, {}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        maps, _ = cache.get_or_compute([[key]], compute, torch.device("cpu"))
    assert calls == [["gradcam"]] and cache.corrupt == 1
    assert any("recomputing" in str(w.message) for w in caught)
    assert np.array_equal(maps["gradcam"][0].numpy(), good)
    assert np.array_equal(MemberCache(tmp_path).load(key), good)  # rewritten whole


def test_corrupt_cache_entry_in_a_sweep_gives_the_same_rows(tmp_path):
    with composed([*SMALL, "combo_id=1", f"out_dir={tmp_path}"]) as cfg:
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
        ("combo_id=99", "combo_id 99 is outside 0..3"),
        ("groups.eigen=[eigencam,eigencamm]", "unknown CAM method 'eigencamm'"),
        ("groups.eigen=[tests.nowhere:cam]", "plug-in tests.nowhere:cam: cannot import tests.nowhere"),
        ("model.name=resnet5O", "unknown model 'resnet5o'"),
        ("model=resnet", "model"),
        ("threshold.ks=[0,50]", "k=0 is outside (0, 100]"),
        ("road=exact", "road"),
        ("road.tiess=random", "tiess"),
        ("metrics=[tests.nowhere:metric]", "metric plug-in tests.nowhere:metric: cannot import tests.nowhere"),
    ],
)
def test_bad_override_is_one_error_before_any_job_starts(tmp_path, override, message):
    result = subprocess.run(
        [sys.executable, "-m", "metacam.cli", "sweep", *SMALL, f"out_dir={tmp_path}", override],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("metacam sweep: error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())  # nothing was launched or written


def test_a_bad_value_in_any_swept_model_is_caught_before_any_job(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "metacam.cli", "sweep", *SMALL, f"out_dir={tmp_path}",
         "model.name=resnet18,resnet5O"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2 and "unknown model 'resnet5o'" in result.stderr
    assert not list(tmp_path.iterdir())


def test_a_plugin_that_fails_on_the_data_gets_status_rows_and_the_rest_is_scored(tmp_path):
    overrides = [*SMALL, "groups.eigen=[tests.plugins:returns_nan]", "combo_id=3", f"out_dir={tmp_path}"]
    with composed(overrides) as cfg:
        spec = job_spec(cfg)
    run_job(spec)
    frame = pd.concat([pd.read_parquet(f) for f in result_files(spec.results_dir)])
    failed = frame[frame["status"] != "ok"]
    # every experiment built from the plug-in's map fails, the shuffled control too (it is
    # the comparator's map of another image); one status row each, with the reason
    assert sorted(failed["method"]) == ["gradcam+eigen", "shuffled"]
    assert set(failed["status"]) == {"member tests.plugins:returns_nan: returned NaN or infinite values"}
    ok = frame[frame["status"] == "ok"]
    assert set(ok["method"]) == {"smooth_noise"} and len(ok) == 3
    assert ok["road_combined"].notna().all()


class _OOMWhenLarge(torch.nn.Module):
    """Wraps a net; raises CUDA's out-of-memory error for batches above ``limit`` (or always)."""

    def __init__(self, net, limit):
        super().__init__()
        self.net, self.limit, self.sizes = net, limit, []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        if self.limit is not None and x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return self.net(x)


def test_out_of_memory_halves_the_batch_and_gives_the_same_scores(caplog):
    from metacam.config import RoadConfig
    from metacam.evaluation.roadscore import Probe, road_many

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 5)).eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    maps = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    config = RoadConfig(batch_size=8)
    plain = road_many(Probe.of(net, x, image_ids=["a"]), maps, config)
    small = _OOMWhenLarge(net, limit=2)
    with caplog.at_level("WARNING", logger="metacam"):
        halved = road_many(Probe.of(small, x, image_ids=["a"]), maps, config)
    assert torch.allclose(halved.combined, plain.combined, atol=1e-6)
    assert small.sizes[:3] == [1, 8, 4] and max(small.sizes[3:]) == 2  # clean pass, 8, 4, then 2s
    assert "ROAD forward: out of memory at batch 8; retrying at batch 4" in caplog.text


def test_out_of_memory_at_batch_1_fails_the_unit_with_a_status_row(tmp_path, monkeypatch):
    from metacam.sweep import runner

    with composed([*SMALL, "combo_id=1", f"out_dir={tmp_path}"]) as cfg:
        spec = job_spec(cfg)
    bundle = runner.load_bundle(spec)
    monkeypatch.setattr(bundle, "net", _OOMWhenLarge(bundle.net, limit=0))
    report = run_job(spec)
    assert report.units_failed == 1
    frame = pd.concat([pd.read_parquet(f) for f in result_files(spec.results_dir)])
    assert set(frame["status"]) == {"out of memory in clean forward at batch 1"}
