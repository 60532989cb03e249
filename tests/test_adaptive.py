"""Adaptive thresholding: k* is the argmax of the ROAD curve over the k grid."""

import pytest
import torch
import torchvision

import metacam.evaluation.adaptive as adaptive_module
from metacam.ensemble import metacam_map, top_k_mask
from metacam.errors import MetaCAMError
from metacam.evaluation.adaptive import adaptive_threshold, choose_k
from metacam.evaluation.roadscore import RoadScores, road
from tests.cams.conftest import randomise_batchnorm


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return randomise_batchnorm(torchvision.models.resnet18(weights=None, num_classes=10), 1).eval()


def test_k_star_is_the_maximum_of_a_known_curve(monkeypatch):
    """With ROAD replaced by a known curve, k* is its argmax (the smallest k on a tie),
    and the chosen map is the candidate at k*."""
    curve = torch.tensor([[0.10, 0.50, 0.30, 0.20], [0.25, 0.25, 0.10, -0.10]])

    def known_road(probe, candidates, config=None, **options):
        assert candidates.shape == (2, 4, 8, 8)
        zeros = torch.zeros_like(curve)
        return RoadScores(curve, zeros, zeros, zeros[..., None], zeros[..., None], zeros[:, 0])

    monkeypatch.setattr(adaptive_module, "road_many", known_road)
    saliency = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(1))
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    result = adaptive_threshold(net, torch.zeros(2, 3, 8, 8), saliency, ks=[10, 20, 50, 100])
    assert result.best_k.tolist() == [20.0, 10.0]
    assert result.best_score.tolist() == pytest.approx([0.50, 0.25])
    assert torch.equal(result.best_map[0], top_k_mask(saliency[0:1], 20)[0])
    assert torch.equal(result.best_map[1], top_k_mask(saliency[1:2], 10)[0])


def test_ensemble_curve_equals_road_of_metacam_at_each_k(net):
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    members = {
        name: torch.rand(2, 24, 24, generator=torch.Generator().manual_seed(seed))
        for seed, name in enumerate(("a", "b", "c"))
    }
    ks = [10, 40, 100]
    result = adaptive_threshold(net, x, members, ks=ks, seed=3)
    for i, k in enumerate(ks):
        direct = road(net, x, metacam_map(members, k), seed=3)
        # other forward batch sizes: float32 rounding of the logits only (see test_roadscore)
        assert torch.allclose(result.scores.combined[:, i], direct.combined, atol=1e-5)
    assert result.best_k.tolist() == [ks[i] for i in result.scores.combined.argmax(1).tolist()]


def test_single_map_at_k100_is_plain_road(net):
    x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    saliency = torch.rand(1, 24, 24, generator=torch.Generator().manual_seed(5))
    result = adaptive_threshold(net, x, saliency, ks=[50, 100])
    plain = road(net, x, saliency)
    assert torch.allclose(result.scores.combined[:, 1], plain.combined, atol=1e-5)


def test_choose_k_takes_the_first_maximum():
    combined = torch.tensor([[0.1, 0.3, 0.3], [0.2, 0.1, 0.0]])
    index, k = choose_k(combined, [10, 50, 100])
    assert index.tolist() == [1, 0] and k.tolist() == [50.0, 10.0]


def test_bad_k_grid_is_an_error(net):
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(MetaCAMError, match="k grid is empty"):
        adaptive_threshold(net, x, torch.rand(1, 8, 8), ks=[])
    with pytest.raises(MetaCAMError, match=r"k=0 is outside \(0, 100\]"):
        adaptive_threshold(net, x, torch.rand(1, 8, 8), ks=[0, 50])
