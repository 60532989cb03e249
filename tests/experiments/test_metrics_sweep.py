"""Metrics in the sweep and in explain: one engine, the same numbers, plug-in columns,
the dataset's metrics list, and plug-ins that fail on the data."""

import hashlib
import textwrap
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from metacam.evaluation.registry import resolve_metrics
from metacam.experiments.plan import job_spec
from metacam.explain import ExplainOptions, evaluator, explain
from metacam.images import load_images
from metacam.results import result_files
from metacam.schema import read_file_metadata
from metacam.sweep import load_bundle, run_job
from tests.experiments.conftest import TWO_GROUPS, composed

ONLY_GRADCAM = [*TWO_GROUPS, "combo_id=1"]  # the gradcam group: its combination + 3 singles
PLUGIN = '''
import metacam


@metacam.map_metric(higher_is_better=True, label="peak share")
def peak_share(maps, images):
    """The share of each map's mass in its top 5% of pixels."""
    flat = maps.flatten(1)
    top = flat.topk(max(1, flat.shape[1] // 20), dim=1).values.sum(1)
    return top / flat.sum(1).clamp_min(1e-12)


@metacam.model_metric(higher_is_better=False, name="quarter_drop")
def drop_after_removing_a_quarter(probe, maps):
    """The target's probability after ROAD's imputation of each map's top quarter, minus clean."""
    removed = maps >= maps.flatten(1).quantile(0.75, dim=1)[:, None, None]
    return probe.probabilities(probe.impute(removed)) - probe.clean
'''


def frame_of(spec) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in result_files(spec.results_dir)], ignore_index=True)


@pytest.mark.slow
def test_explain_and_the_sweep_give_the_same_scores_and_plugin_columns(tmp_path, monkeypatch):
    """A plug-in module outside the package (on the path, as PYTHONPATH puts it) gives a
    column in a tiny_random sweep and in explain's table; explain and the sweep give the
    same ROAD, held-out, AUC, sparseness, complexity and plug-in values for the same image,
    model, maps and seed (one image per forward pass, so even the float rounding agrees)."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "mymetrics.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    plugins = ["mymetrics:peak_share", "mymetrics:drop_after_removing_a_quarter"]
    overrides = [*ONLY_GRADCAM, "road.batch_size=1", "deletion.cpu_batch=1", f"metrics=[{','.join(plugins)}]",
                 f"out_dir={tmp_path / 'sweep'}"]
    with composed(overrides) as cfg:
        spec = job_spec(cfg)
    run_job(spec)
    sweep = frame_of(spec)
    assert (sweep["status"] == "ok").all()

    # the dataset records both plug-ins after the built-ins (CONTRACTS §1)
    record = read_file_metadata(pq.read_schema(result_files(spec.results_dir)[0]))
    assert [m["key"] for m in record["metrics"]] == ["combined", "morf", "lerf", "deletion", "insertion",
                                                     "sparseness", "complexity", "peak_share", "quarter_drop"]
    source = (tmp_path / "site" / "mymetrics.py").read_text()
    start = source.index("@metacam.model_metric")
    entry = record["metrics"][-1]
    assert entry == {"key": "quarter_drop", "label": "quarter_drop", "insample_column": None,
                     "chosen_column": "quarter_drop", "higher_is_better": False, "headline": True,
                     "source": "mymetrics:drop_after_removing_a_quarter",
                     "source_hash": hashlib.sha256(source[start:].lstrip("\n").encode()).hexdigest()}
    assert record["metrics"][-2]["label"] == "peak share" and record["metrics"][-2]["higher_is_better"] is True
    rescored = sweep["is_best_k"] | (sweep["k"] == 100)
    for column in ("peak_share", "quarter_drop", "sparseness", "complexity"):
        assert sweep.loc[rescored, column].notna().all() and sweep.loc[~rescored, column].isna().all()
        assert str(pq.read_schema(result_files(spec.results_dir)[0]).field(column).type) == "float"

    bundle = load_bundle(spec)
    options = ExplainOptions(
        methods=["gradcam", "hirescam", "gradcam_elementwise"], seed=spec.seed,
        evaluation=evaluator(ks=spec.threshold.ks, road=spec.road, heldout=spec.heldout, deletion=spec.deletion,
                             metrics=spec.metrics))
    images, _ = load_images(["sample:coffee"])
    table = pd.DataFrame(explain(bundle, images, options, tmp_path / "explain").rows)
    # explain's "metacam" is the sweep's combination of the gradcam group
    table["method"] = table["method"].replace({"metacam": "gradcam"})
    columns = ["road_combined", "road_morf", "road_lerf", "road_heldout_combined", "road_heldout_morf",
               "road_heldout_lerf", "deletion_auc", "insertion_auc", "sparseness", "complexity", "peak_share",
               "quarter_drop"]
    keys = ["kind", "method", "k"]
    merged = table.merge(sweep, on=keys, suffixes=("_explain", "_sweep"), validate="one_to_one")
    assert len(merged) == len(table) >= 8  # every explain row (k* and k = 100 of 4 methods) is in the sweep
    for column in [*columns, "is_best_k", "target_class", "road_ties", "percentiles", "heldout_percentiles"]:
        explained, swept = merged[f"{column}_explain"], merged[f"{column}_sweep"]
        if column in columns:  # the sweep stores float32
            explained = explained.astype(np.float32)
        assert (explained == swept).all(), column
    assert merged["quarter_drop_sweep"].lt(0).any()  # removing a map's top quarter does cost probability


@pytest.mark.parametrize(
    ("plugin", "overrides", "failed", "reason"),
    [
        ("nan_on_constant", ["combo_id=0"], {"none"}, "returned NaN or infinite values"),
        pytest.param("fails_on_astronaut", ["combo_id=1", "data.images=[sample:coffee,sample:astronaut]"],
                     {"gradcam", "hirescam", "gradcam_elementwise"},
                     "raised ValueError: this metric cannot score astronauts", marks=pytest.mark.slow),
        ("wrong_shape", ["combo_id=1"], {"gradcam", "hirescam", "gradcam_elementwise"},
         "returned shape (N, 1); expected (N,), one score per map"),
    ],
)
def test_a_metric_that_fails_on_the_data_gets_status_rows_and_the_rest_is_scored(tmp_path, plugin, overrides,
                                                                                 failed, reason):
    name = f"tests.metric_plugins:{plugin}"
    with composed([*TWO_GROUPS, *overrides, f"metrics=[{name}]", f"out_dir={tmp_path}"]) as cfg:
        spec = job_spec(cfg)
    report = run_job(spec)
    assert report.units_failed == 0  # the unit is written; only the affected experiments fail
    frame = frame_of(spec)
    bad = frame[frame["status"] != "ok"]
    distinct = bad["status"].str.replace(r"\(\d+", "(N", regex=True)  # N: the image's distinct maps
    assert set(distinct) == {f"metric {name}: {reason}"}
    assert set(bad["method"]) <= failed and bad[["road_combined", "k"]].isna().all().all()
    if plugin == "nan_on_constant":  # combo 0 (a constant map) fails; the next job is scored as usual
        assert len(bad) == len(frame) == 1
        with composed([*TWO_GROUPS, "combo_id=1", f"metrics=[{name}]", f"out_dir={tmp_path}"]) as cfg:
            run_job(job_spec(cfg))
        frame = frame_of(spec)
    if plugin == "fails_on_astronaut":
        assert set(bad["image_id"].str.split("-").str[0]) == {"astronaut"}
    good = frame[frame["status"] == "ok"]
    if plugin == "wrong_shape":  # fails on every map: every experiment has its status row, nothing raised
        assert len(bad) == 4 and good.empty
        return
    assert len(good) == 4 * 3 and len(bad) == {"nan_on_constant": 1, "fails_on_astronaut": 4}[plugin]
    if plugin == "fails_on_astronaut":
        assert good["image_id"].str.startswith("coffee").all()
    chosen = good[good["is_best_k"] | (good["k"] == 100)]
    assert chosen[plugin].notna().all()


def test_the_metrics_define_the_study():
    with composed(TWO_GROUPS) as cfg:
        plain = job_spec(cfg).sweep_id
    with composed([*TWO_GROUPS, "metrics=[tests.metric_plugins:mean_relevance]"]) as cfg:
        assert job_spec(cfg).sweep_id != plain  # other columns: another dataset
    assert resolve_metrics(["tests.metric_plugins:mean_relevance"])[-1].name == "tests.metric_plugins:mean_relevance"


def test_a_plugin_metric_from_a_real_sweep_is_analysed_in_its_own_direction(tmp_path, capsys):
    """End to end: a plug-in metric's column, written by a real sweep (two groups, all four
    combinations, two images), is read from the dataset's metrics list by `metacam analyze`:
    a headline row of its own, experiments ranked by its per-image means in its direction
    (lower is better for top_decile_drop, a model metric), the plug-in named with its source in the report."""
    from metacam.analysis.cli import main as analyze_main

    name = "tests.metric_plugins:top_decile_drop"
    with composed([*TWO_GROUPS, "data.images=[sample:coffee,sample:rocket]", f"metrics=[{name}]",
                   f"out_dir={tmp_path}"]) as cfg:
        base = job_spec(cfg)
    for combo in range(4):
        run_job(replace(base, combo_id=combo))
    assert analyze_main([base.results_dir, "--out", str(tmp_path / "out"), "--metric", "top_decile_drop",
                         "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "score: adaptive top_decile_drop (at each unit's k*), lower is better" in out
    headline = pd.read_csv(tmp_path / "out" / "headline.csv")
    assert headline["metric"].iloc[0] == "top_decile_drop" and "combined" in set(headline["metric"])
    frame = frame_of(base)
    best = frame[(frame["kind"] == "metacam") & frame["is_best_k"]]
    means = best.groupby("combo_id")["top_decile_drop"].mean()
    experiments = pd.read_csv(tmp_path / "out" / "experiments.csv")
    metacam_rows = experiments[experiments["combo_id"].notna()]
    assert int(metacam_rows["combo_id"].iloc[0]) == means.idxmin()
    assert f"plug-in {name}" in (tmp_path / "out" / "report.md").read_text()
