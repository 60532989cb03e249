"""The same numbers on CUDA as on the CPU (skipped where torch sees no GPU)."""

import pytest
import torch

from metacam.cams import member_cams
from metacam.evaluation.roadscore import road
from metacam.models import load_model

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def both():
    cpu = load_model("resnet18", "cpu", pretrained=False, seed=0, num_classes=10, input_size=(64, 64))
    gpu = load_model("resnet18", "cuda", pretrained=False, seed=0, num_classes=10, input_size=(64, 64))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return cpu, gpu, x


def test_members_on_cuda_equal_cpu(both):
    cpu, gpu, x = both
    ours_cpu = member_cams(cpu.net, x, cpu.target_layer)
    ours_gpu = member_cams(gpu.net, x.cuda(), gpu.target_layer)
    for name, cam in ours_cpu.items():
        assert ours_gpu[name].is_cuda
        assert (ours_gpu[name].cpu() - cam).abs().max() <= 1e-3, name


def test_road_on_cuda_equals_cpu(both):
    cpu, gpu, x = both
    maps = torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(1))
    on_cpu = road(cpu.net, x, maps, seed=2)
    on_gpu = road(gpu.net, x.cuda(), maps.cuda(), seed=2)
    assert (on_gpu.combined.cpu() - on_cpu.combined).abs().max() <= 1e-3


def test_the_evaluation_engine_on_cuda_equals_cpu(both):
    """Every metric (built-ins and plug-ins through the Probe) on the plain map, on both devices."""
    from metacam.config import RoadConfig
    from metacam.evaluation.engine import Evaluator
    from metacam.evaluation.roadscore import Probe

    cpu, gpu, x = both
    maps = torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(1))
    evaluator = Evaluator.of([50, 100], RoadConfig(percentiles=[50]),
                             metrics=["tests.metric_plugins:mean_relevance", "tests.metric_plugins:top_decile_drop"])
    on_cpu = evaluator.evaluate(Probe.of(cpu.net, x, seed=2), {"map": maps})["map"]
    on_gpu = evaluator.evaluate(Probe.of(gpu.net, x.cuda(), seed=2), {"map": maps.cuda()})["map"]
    for i in range(2):
        plain_cpu, plain_gpu = on_cpu.rows(i)[-1], on_gpu.rows(i)[-1]  # k = 100
        assert set(plain_cpu) == set(plain_gpu)
        for column, value in plain_cpu.items():
            if isinstance(value, float):
                assert abs(plain_gpu[column] - value) <= 1e-3, column
