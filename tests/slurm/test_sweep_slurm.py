"""The real thing: the 64-experiment sweep submitted through Hydra's submitit_slurm
launcher to the one-node cluster, read back as one dataset with DESIGN §3's schema."""

import subprocess
import sys

import pyarrow.dataset as ds
import pytest

from metacam.groups import DEFAULT_GROUPS, combo_flags
from metacam.schema import RESULTS_SCHEMA
from tests.experiments.conftest import FAST
from tests.slurm.conftest import REPO

pytestmark = pytest.mark.slurm


def test_reduced_sweep_through_submitit_slurm(slurm_cluster, tmp_path):
    out = tmp_path / "sweep"
    # FAST without its perturbation override: all 12 members, so all 12 baselines
    overrides = [o for o in FAST if not o.startswith("groups.")]
    command = [
        sys.executable, "-m", "metacam.cli", "sweep", *overrides, f"out_dir={out}",
        "hydra/launcher=submitit_slurm", f"hydra.launcher.partition={slurm_cluster.partition}",
        "hydra.launcher.timeout_min=30", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
        "hydra.launcher.array_parallelism=8", "member_batch_size=64",
    ]
    # The launcher waits on every task; without sacct a dead task would hang it, so bound it.
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1500, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Analyse it with:" in result.stdout

    results = next((out / "sweeps").iterdir()) / "results"
    table = ds.dataset(results, format="parquet").to_table()
    assert table.schema.equals(RESULTS_SCHEMA, check_metadata=False)
    frame = table.to_pandas()
    assert (frame["status"] == "ok").all()
    combos = frame[frame["kind"] == "metacam"]
    singles = frame[frame["kind"] == "single"]
    assert sorted(combos["combo_id"].unique()) == list(range(64))
    assert sorted(singles["method"].unique()) == sorted(m for ms in DEFAULT_GROUPS.values() for m in ms)
    assert len(combos) == 64 * 3 and len(singles) == 12 * 3  # one image, three ks each
    for combo_id, rows in combos.groupby("combo_id"):
        flags = combo_flags(int(combo_id))
        assert all((rows[f"g_{group}"] == flag).all() for group, flag in flags.items())
    # every (experiment, image) has exactly one adaptive choice
    assert frame.groupby(["kind", "method", "image_id"])["is_best_k"].sum().eq(1).all()
    # the jobs really ran inside SLURM: submitit's folders hold one log per array task
    logs = list(out.rglob(".submitit/*/*_log.out"))
    assert len(logs) == 64
    assert frame["sweep_id"].nunique() == 1
