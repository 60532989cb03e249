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
    maps = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    on_cpu = road(cpu.net, x, maps, seed=2)
    on_gpu = road(gpu.net, x.cuda(), maps.cuda(), seed=2)
    assert (on_gpu.combined.cpu() - on_cpu.combined).abs().max() <= 1e-3
