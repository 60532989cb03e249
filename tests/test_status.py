"""`metacam status`: progress from manifests and result files alone, with failure reasons."""

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metacam.cli import main
from metacam.schema import results_schema
from metacam.status import study_status

SCHEMA = results_schema(["a", "b"])


def write_unit(path: Path, statuses: list[str], mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"sweep_id": "s", "kind": "metacam", "status": s} for s in statuses]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    os.utime(path, (mtime, mtime))


def study(root: Path, model: str, shard: int, units: list[str], experiments: list[str]) -> None:
    record = {"model_key": model, "model_dir": model, "shard_index": shard, "shard_count": 2,
              "experiments": experiments, "units": units}
    (root / "_manifest").mkdir(parents=True, exist_ok=True)
    (root / "_manifest" / f"{model}.shard-{shard}-of-2.json").write_text(json.dumps(record))


@pytest.fixture
def dataset(tmp_path) -> Path:
    """Two models x two shards x 2 units x 3 experiments; model m1 complete, m2 partly done
    and one unit of it failed for an unreadable image."""
    root = tmp_path / "results"
    experiments = ["metacam-combo00", "metacam-combo01", "single-x"]
    now = time.time()
    for model in ("m1", "m2"):
        for shard in (0, 1):
            units = [f"unit-{model}{shard}{i}.parquet" for i in range(2)]
            study(root, model, shard, units, experiments)
            for e, experiment in enumerate(experiments):
                for u, unit in enumerate(units):
                    if model == "m2" and shard == 1 and e > 0:
                        continue  # missing
                    status = "unreadable image: broken.jpg: not an image" if (model, shard, u) == ("m2", 0, 1) else "ok"
                    write_unit(root / model / experiment / unit, ["ok", status], now - 100 + 10 * e + u)
    return root


def test_counts_per_model_with_failure_reasons_and_an_eta(dataset):
    status = study_status(dataset)
    assert (status.files_expected, status.files_done) == (24, 20) and not status.complete
    m1, m2 = status.models
    assert (m1.model, m1.experiments_done, m1.units_done, m1.units_failed) == ("m1", 3, 4, 0)
    assert (m2.experiments_done, m2.experiments_missing, m2.experiments_failed) == (1, 2, 3)
    assert (m2.units, m2.units_done, m2.units_missing, m2.units_failed) == (4, 2, 2, 1)
    assert m2.reasons == {"unreadable image: broken.jpg: not an image": 3}
    # 20 files whose mtimes span 21 s: 4 remaining files at 21/19 s each
    assert status.eta_seconds == pytest.approx(4 * 21 / 19)


def test_cli_exit_status_follows_completeness(dataset, capsys):
    assert main(["status", str(dataset)]) == 1
    out = capsys.readouterr().out
    assert "20/24 result files" in out and "m2: experiments 1/3 done, 2 missing, 3 with failures" in out
    assert "3 x unreadable image: broken.jpg: not an image" in out
    for experiment in ("metacam-combo01", "single-x"):
        for unit in ("unit-m210.parquet", "unit-m211.parquet"):
            write_unit(dataset / "m2" / experiment / unit, ["ok"], time.time())
    assert main(["status", str(dataset)]) == 0
    assert "24/24 result files — complete" in capsys.readouterr().out


def test_a_folder_that_is_not_a_results_dataset_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metacam status: error: ") and err.count("\n") == 1 and "no _manifest/" in err
    assert main(["status", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "_manifest").mkdir()
    (tmp_path / "_manifest" / "m.shard-0-of-1.json").write_text("{not json")
    assert main(["status", str(tmp_path)]) == 2
    assert "not a readable manifest" in capsys.readouterr().err


def test_a_torn_result_file_counts_as_missing(dataset):
    victim = next((dataset / "m1" / "single-x").glob("*.parquet"))
    victim.write_bytes(victim.read_bytes()[:50])
    assert study_status(dataset).files_done == 19
