"""The metric registry, the built-in metrics, the Probe and the evaluation engine.

Sparseness and complexity against hand-computed values and Quantus 0.6.0; plug-in
metrics (resolution, clashes, their failures); the engine's rows, its choice of k*,
and the public API under torch.no_grad() and torch.inference_mode().
"""

import hashlib
import inspect
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import metacam
from metacam.config import HeldoutConfig, RoadConfig
from metacam.errors import MetaCAMError
from metacam.evaluation.builtin import complexity, sparseness
from metacam.evaluation.deletion import DeletionConfig, deletion_insertion
from metacam.evaluation.engine import Evaluator
from metacam.evaluation.imputation import impute_masks
from metacam.evaluation.registry import METRICS, resolve_metric, resolve_metrics
from metacam.evaluation.roadscore import Probe
from metacam.schema import FIXED_COLUMNS, file_metadata, read_file_metadata, results_schema
from tests import metric_plugins
from tests.experiments.test_faults import _OOMWhenLarge

# CONTRACTS §1's table of built-in entries, in order
BUILTIN_ENTRIES = [
    ("combined", "ROAD combined", "road_combined", "road_heldout_combined", True, True),
    ("morf", "ROAD MoRF", "road_morf", "road_heldout_morf", False, False),
    ("lerf", "ROAD LeRF", "road_lerf", "road_heldout_lerf", True, False),
    ("deletion", "deletion AUC", None, "deletion_auc", False, True),
    ("insertion", "insertion AUC", None, "insertion_auc", True, True),
    ("sparseness", "sparseness (Gini)", None, "sparseness", True, True),
    ("complexity", "complexity (entropy)", None, "complexity", False, True),
]


def tiny_net(classes: int = 5) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(16, classes)).eval()


def images(batch: int = 2, size: int = 16) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def maps_of(batch: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, size, size, generator=torch.Generator().manual_seed(2))


# --- sparseness and complexity ---------------------------------------------------------


def test_sparseness_and_complexity_by_hand():
    one_hot = torch.zeros(1, 2, 2)
    one_hot[0, 0, 0] = 1.0
    uniform = torch.full((1, 2, 2), 0.5)
    ramp = torch.tensor([[[0.0, 0.25], [0.5, 1.0]]])  # exact in float32
    zeros = torch.zeros(1, 2, 2)
    maps = torch.cat([one_hot, uniform, ramp, zeros])
    eps = 1e-7
    # Gini of sorted a (n = 4): sum_i (2i - n - 1) a_i / (n sum a), with eps added to each value
    gini_one_hot = (3 * (1 + eps) - 3 * eps - eps + eps) / (4 * (1 + 4 * eps))
    gini_ramp = (-3 * (0 + eps) - (0.25 + eps) + (0.5 + eps) + 3 * (1 + eps)) / (4 * (1.75 + 4 * eps))
    assert sparseness(maps, None).tolist() == pytest.approx([gini_one_hot, 0.0, gini_ramp, 0.0], abs=1e-12)
    assert gini_one_hot == pytest.approx(0.75, abs=1e-6) and gini_ramp == pytest.approx(3.25 / 7, abs=1e-6)
    # entropy (nats) of the map normalised to sum 1; zeros count as uniform
    p = np.array([0, 1, 2, 4]) / 7
    ramp_entropy = -sum(q * math.log(q + 1e-12) for q in p)
    uniform_entropy = -4 * 0.25 * math.log(0.25 + 1e-12)
    got = complexity(maps, None).tolist()
    assert got == pytest.approx([-math.log(1 + 1e-12), uniform_entropy, ramp_entropy, uniform_entropy], abs=1e-12)
    assert uniform_entropy == pytest.approx(math.log(4)) and ramp_entropy == pytest.approx(-(2 * math.log(2 / 7) + 4 * math.log(4 / 7) + math.log(1 / 7)) / 7, abs=1e-9)


def real_like_maps() -> torch.Tensor:
    """Smooth, thresholded (70% zeros) and sparse maps in [0, 1] with maximum 1, 32 x 32."""
    g = torch.Generator().manual_seed(5)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 1, 4, 4, generator=g), size=(32, 32), mode="bilinear")[0]
    cut = torch.where(smooth >= smooth.quantile(0.7), smooth, torch.zeros_like(smooth))
    sparse = torch.zeros(1, 32, 32)
    sparse[0, 3:5, 7:9] = torch.rand(2, 2, generator=g)
    stacked = torch.cat([smooth, cut, sparse, torch.rand(1, 32, 32, generator=g)])
    return stacked / stacked.flatten(1).amax(1)[:, None, None]


def test_sparseness_and_complexity_equal_quantus():
    quantus = pytest.importorskip("quantus", reason="Quantus is not installed: `make` installs it with --no-deps "
                                                    "(its opencv-python would replace grad-cam's headless one)")
    maps = real_like_maps()
    a = maps[:, None].double().numpy()  # Quantus's (N, 1, H, W) attributions, the same values
    x = torch.rand(len(maps), 3, 32, 32, generator=torch.Generator().manual_seed(6)).numpy()
    y = np.zeros(len(maps), dtype=int)
    expected_gini = quantus.Sparseness(disable_warnings=True)(model=None, x_batch=x, y_batch=y, a_batch=a.copy())
    expected_entropy = quantus.Complexity(disable_warnings=True)(model=None, x_batch=x, y_batch=y, a_batch=a.copy())
    assert np.abs(sparseness(maps, None).numpy() - np.array(expected_gini)).max() <= 1e-6
    assert np.abs(complexity(maps, None).numpy() - np.array(expected_entropy)).max() <= 1e-6
    assert len(set(np.round(expected_gini, 3))) == 4  # four different maps, four different values


# --- the registry and its metadata ------------------------------------------------------


def test_the_builtin_entries_are_the_contract():
    metrics = resolve_metrics()
    assert [m.name for m in metrics] == ["road", "deletion", "sparseness", "complexity"]
    recorded = [entry for m in metrics for entry in m.entries()]
    assert [(e["key"], e["label"], e["insample_column"], e["chosen_column"], e["higher_is_better"], e["headline"])
            for e in recorded] == BUILTIN_ENTRIES
    assert all(e["source"] == "builtin" and e["source_hash"] is None for e in recorded)
    record = read_file_metadata(results_schema(["a"], file_metadata([], {}, recorded), recorded))
    assert record["format"] == 3 and record["metrics"] == recorded
    # without a list: a dataset that records none, version 0.2's five (CONTRACTS §1's reader default)
    legacy = read_file_metadata(results_schema(["a"], file_metadata([], {})))
    assert legacy["metrics"] == recorded[:5] and "sparseness" not in results_schema(["a"]).names


def test_a_plugin_is_imported_registered_and_recorded():
    metrics = resolve_metrics(["tests.metric_plugins:mean_relevance"])
    plugin = metrics[-1]
    assert plugin.name == "tests.metric_plugins:mean_relevance" and METRICS[plugin.name] is plugin
    source = inspect.getsource(metric_plugins.mean_relevance)
    assert plugin.entries() == [{"key": "mean_relevance", "label": "mean_relevance", "insample_column": None,
                                 "chosen_column": "mean_relevance", "higher_is_better": True, "headline": True,
                                 "source": "tests.metric_plugins:mean_relevance",
                                 "source_hash": hashlib.sha256(source.encode()).hexdigest()}]
    schema = results_schema(["g"], None, [e for m in metrics for e in m.entries()])
    assert schema.field("mean_relevance").type == "float" and schema.names.index("mean_relevance") == \
        schema.names.index("complexity") + 1


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tests.nowhere:metric", "metric plug-in tests.nowhere:metric: cannot import tests.nowhere"),
        ("tests.metric_plugins:undecorated", "undecorated is not marked with @metacam.map_metric"),
        ("tests.metric_plugins:nothing", "tests.metric_plugins has no attribute 'nothing'"),
        ("sparsenes", "unknown metric 'sparsenes'; did you mean: sparseness"),
        ("tests.metric_plugins:sparseness", "its column 'sparseness' clashes with the metric sparseness"),
        ("tests.metric_plugins:renamed_onto_a_builtin_column",
         "its column 'deletion_auc' clashes with the metric deletion"),
        ("tests.metric_plugins:renamed_onto_a_results_column", "its column 'status' clashes with a column"),
    ],
)
def test_bad_plugins_are_one_line_errors(name, message):
    with pytest.raises(MetaCAMError, match=message.replace("(", r"\(")) as caught:
        resolve_metrics([name], reserved=FIXED_COLUMNS)
    assert "\n" not in str(caught.value)


def test_decorator_arguments_are_checked():
    with pytest.raises(MetaCAMError, match="higher_is_better=None"):
        metacam.map_metric(higher_is_better=None)(lambda maps, images: maps.mean())
    with pytest.raises(MetaCAMError, match="is not a valid column name"):
        metacam.model_metric(higher_is_better=True, name="two words")(lambda probe, maps: maps.mean())
    assert resolve_metric("sparseness") is METRICS["sparseness"]


# --- the Probe ----------------------------------------------------------------------------


def test_probe_probabilities_and_impute_are_ROADs():
    net, x = tiny_net(), images()
    probe = Probe.of(net, x, image_ids=["a", "b"], seed=3)
    assert torch.allclose(probe.probabilities(x), probe.clean, atol=1e-6)
    versions = torch.stack([x, x.flip(-1), torch.zeros_like(x)], dim=1)  # (B, S, C, H, W)
    got = probe.probabilities(versions)
    softmax = net(versions.flatten(0, 1)).softmax(-1).view(2, 3, -1)
    assert got.shape == (2, 3) and torch.allclose(got, softmax.gather(2, probe.targets[:, None, None].expand(2, 3, 1))[..., 0], atol=1e-6)
    removed = maps_of() > 0.7
    filled = replace(probe, noise=0.0).impute(removed)
    assert torch.equal(filled[1], impute_masks(x[1], removed[1:2])[0])
    noisy = probe.impute(removed)  # ROAD's noise (std 0.01) on the removed pixels only
    difference = noisy - filled
    assert torch.equal(difference[:, :, ~removed[0]][0], torch.zeros_like(difference[:, :, ~removed[0]][0]))
    assert 0.005 < float(difference[0][:, removed[0]].std()) < 0.02
    assert torch.equal(noisy, probe.impute(removed))  # seeded per image: the same draw again


def test_probe_probabilities_obey_the_batch_size_and_the_oom_back_off():
    net, x = tiny_net(), images()
    reference = Probe.of(net, x).probabilities(x[:, None].expand(2, 5, 3, 16, 16))
    small = _OOMWhenLarge(net, limit=2)
    probe = replace(Probe.of(net, x), net=small, batch_size=4)
    got = probe.probabilities(x[:, None].expand(2, 5, 3, 16, 16))
    assert torch.allclose(got, reference, atol=1e-6)
    assert small.sizes[0] == 4 and max(small.sizes[1:]) == 2  # 4 failed, then halves and keeps 2


# --- the engine ---------------------------------------------------------------------------


def test_the_engine_rows_choose_k_among_the_grid_and_rescore_plain():
    net, x = tiny_net(), images()
    probe = Probe.of(net, x, image_ids=["a", "b"])
    evaluator = Evaluator.of([30, 60], RoadConfig(percentiles=[50]), HeldoutConfig(percentiles=[25, 75]),
                             DeletionConfig(steps=4), ["tests.metric_plugins:mean_relevance"])
    assert evaluator.grid == (30.0, 60.0, 100.0)  # k = 100 appended for the plain map
    saliency = maps_of()
    result = evaluator.evaluate(probe, {"map": saliency})["map"]
    rows = result.rows(0)
    assert [row["k"] for row in rows] == [30.0, 60.0, 100.0]
    assert [row["is_best_k"] for row in rows][2] is False  # k* is among the given grid only
    best = next(row for row in rows if row["is_best_k"])
    assert best["road_combined"] == max(row["road_combined"] for row in rows[:2])
    other = next(row for row in rows[:2] if not row["is_best_k"])
    assert "road_heldout_combined" not in other and "sparseness" not in other  # chosen columns: k* and plain
    plain = rows[2]
    # every score of the plain row is that metric on the plain map, recomputed here
    assert plain["sparseness"] == pytest.approx(float(sparseness(saliency[:1], None)), abs=1e-6)
    assert plain["complexity"] == pytest.approx(float(complexity(saliency[:1], None)), abs=1e-6)
    assert plain["mean_relevance"] == pytest.approx(float(saliency[0].mean()), abs=1e-6)
    auc = deletion_insertion(net, x[:1], saliency[:1, None], probe.targets[:1], config=DeletionConfig(steps=4),
                             seeds=probe.subset([0]).seeds("deletion.permutation"), clean=probe.clean[:1])
    assert plain["deletion_auc"] == pytest.approx(float(auc.deletion_auc[0, 0]), abs=1e-6)
    heldout = metacam.road(net, x[:1], saliency[:1], probe.targets[:1], image_ids=["a"],
                           config=RoadConfig(percentiles=[25, 75], stream="heldout"))
    assert plain["road_heldout_combined"] == pytest.approx(float(heldout.combined[0]), abs=1e-6)


def test_a_model_plugin_sees_the_probe_of_its_maps():
    net, x = tiny_net(), images()
    probe = Probe.of(net, x, image_ids=["a", "b"], seed=4)
    evaluator = Evaluator.of([50, 100], RoadConfig(percentiles=[50]), metrics=["tests.metric_plugins:top_decile_drop"])
    saliency = maps_of()
    rows = evaluator.evaluate(probe, {"map": saliency})["map"].rows(1)
    plain = next(row for row in rows if row["k"] == 100)
    item = probe.subset([1])
    expected = item.probabilities(item.impute(metric_plugins.top_decile(saliency[1:]))) - item.clean
    assert plain["top_decile_drop"] == pytest.approx(float(expected[0]), abs=1e-6)


def test_each_distinct_map_is_scored_once_and_failures_name_the_metric(monkeypatch):
    net, x = tiny_net(), images(1)
    probe = Probe.of(net, x, image_ids=["a"])
    seen = []
    original = METRICS["sparseness"]
    monkeypatch.setitem(METRICS, "sparseness", replace(
        original, compute=lambda inp: seen.append(inp.maps.shape[1]) or original.compute(inp)))
    evaluator = Evaluator.of([50, 100], RoadConfig(percentiles=[50]), metrics=["tests.metric_plugins:nan_on_constant"])
    saliency = maps_of(1)
    result = evaluator.evaluate(probe, {"a": saliency, "same": saliency.clone(), "none": torch.zeros_like(saliency)})
    # 3 methods x (k*, plain) = 6 maps; "same" duplicates "a", and the zero map's k* and plain coincide
    assert seen == [2 + int(result["a"].adaptive.best_k[0] != 100)]
    assert torch.equal(result["a"].best_map, result["same"].best_map)
    assert result["none"].failures == {0: "metric tests.metric_plugins:nan_on_constant: returned NaN or infinite values"}
    assert result["a"].failures == {} and result["same"].failures == {}


# --- the public API under no_grad and inference_mode --------------------------------------


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_the_public_api_and_every_metric_work_in_no_grad_and_inference_mode(context):
    net, x, saliency = tiny_net(), images(), maps_of()
    removed = saliency > 0.5
    outside = {
        "impute": metacam.impute(x, removed, generator=torch.Generator().manual_seed(0)),
        "road": metacam.road(net, x, saliency).combined,
        "adaptive": metacam.adaptive_threshold(net, x, saliency, ks=[50, 100]).best_k,
    }
    evaluator = Evaluator.of([50, 100], RoadConfig(percentiles=[50]), HeldoutConfig(percentiles=[50]),
                             DeletionConfig(steps=2), ["tests.metric_plugins:mean_relevance",
                                                       "tests.metric_plugins:top_decile_drop"])
    expected = evaluator.evaluate(Probe.of(net, x), {"map": saliency})["map"].rows(0)
    with context():
        assert torch.equal(metacam.impute(x, removed, generator=torch.Generator().manual_seed(0)), outside["impute"])
        assert torch.equal(metacam.road(net, x, saliency).combined, outside["road"])
        assert torch.equal(metacam.adaptive_threshold(net, x, saliency, ks=[50, 100]).best_k, outside["adaptive"])
        got = evaluator.evaluate(Probe.of(net, x), {"map": saliency})["map"].rows(0)
        assert metric_plugins.top_decile_drop(Probe.of(net, x), saliency).shape == (2,)
    assert got == expected and set(evaluator.columns) <= set(got[-1])
