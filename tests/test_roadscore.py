"""ROAD: grad-cam's ROADCombined as the oracle (inclusive ties, noise 0), exact removal
counts under the default tie rule, batching, pairing and bad input."""

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam.metrics import road as grad_cam_road
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

import metacam.evaluation.roadscore as road_module
from metacam.config import RoadConfig
from metacam.ensemble import top_k_mask
from metacam.errors import MetaCAMError
from metacam.evaluation.roadscore import (
    Probe,
    RoadStats,
    relevance_ranks,
    removal_counts,
    road,
    road_many,
)
from tests.cams.conftest import randomise_batchnorm

P = (20, 40, 60, 80)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return randomise_batchnorm(torchvision.models.resnet18(weights=None, num_classes=10), 1).eval()


def blob(height, width, cy, cx, spread):
    yy, xx = np.mgrid[:height, :width]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / spread).astype(np.float32)


def test_maps(height, width):
    """A smooth blob, a tie-heavy quantised map, and a thresholded map that is 90% zeros."""
    rng = np.random.default_rng(height * width)
    smooth = blob(height, width, height / 3, width / 2, height * width / 8)
    quantised = np.round(rng.random((height, width)) * 4).astype(np.float32) / 4
    sparse = top_k_mask(torch.from_numpy(smooth)[None], 10)[0].numpy()
    return [smooth, quantised, sparse]


test_maps.__test__ = False  # a helper, not a test


@pytest.fixture
def grad_cam_noise_free(monkeypatch):
    """grad-cam's ROAD builds NoisyLinearImputer() with noise 0.01 inside; make it 0."""
    original = grad_cam_road.NoisyLinearImputer.__init__

    def noise_free(self, noise=0.01, weighting=grad_cam_road.neighbors_weights):
        original(self, 0.0, weighting)

    monkeypatch.setattr(grad_cam_road.NoisyLinearImputer, "__init__", noise_free)


@pytest.mark.parametrize("size", [(32, 32), (48, 40)])
def test_inclusive_mode_equals_grad_cam_road_combined(net, size, grad_cam_noise_free):
    height, width = size
    maps = test_maps(height, width)
    x = torch.randn(len(maps), 3, height, width, generator=torch.Generator().manual_seed(3))
    targets = net(x).argmax(1)
    reference = grad_cam_road.ROADCombined(percentiles=list(P))(
        x, np.stack(maps), [ClassifierOutputSoftmaxTarget(int(c)) for c in targets], net
    )
    ours = road(net, x, torch.from_numpy(np.stack(maps)), targets, P, config=RoadConfig(ties="inclusive", noise=0))
    assert np.abs(ours.combined.numpy() - reference).max() <= 1e-4
    assert not np.allclose(reference, 0)  # a real difference between LeRF and MoRF


def test_inclusive_curves_equal_grad_cam_per_percentile(net, grad_cam_noise_free):
    """grad-cam's ROADMostRelevantFirst(q) keeps pixels below the q-th percentile, i.e.
    removes (100 - q)%: our MoRF at p equals theirs at q = 100 - p, and likewise LeRF."""
    maps = np.stack(test_maps(32, 32))
    x = torch.randn(len(maps), 3, 32, 32, generator=torch.Generator().manual_seed(4))
    targets = net(x).argmax(1)
    softmax_targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in targets]
    ours = road(net, x, torch.from_numpy(maps), targets, P, config=RoadConfig(ties="inclusive", noise=0))
    for i, p in enumerate(P):
        morf = grad_cam_road.ROADMostRelevantFirst(100 - p)(x, maps, softmax_targets, net)
        lerf = grad_cam_road.ROADLeastRelevantFirst(100 - p)(x, maps, softmax_targets, net)
        assert np.abs((ours.morf_curve[:, i] - ours.clean).numpy() - morf).max() <= 1e-4
        assert np.abs((ours.lerf_curve[:, i] - ours.clean).numpy() - lerf).max() <= 1e-4


def test_inclusive_rule_removes_far_more_than_p_on_sparse_maps():
    """The paper rule's flaw the default fixes: on a map that is 90% zeros, every zero
    ties with LeRF's cut-off, so LeRF at 20% removes 90% of the image."""
    sparse = top_k_mask(torch.from_numpy(blob(40, 40, 20, 20, 100))[None], 10)[0].flatten()
    inclusive = road_module._inclusive_masks(sparse[None], P)[0]
    assert inclusive[4].sum().item() >= 0.89 * 1600  # LeRF at p = 20: every zero goes
    default = road_module._random_tie_masks(
        sparse[None], torch.randperm(1600), removal_counts(P, 1600)
    )[0]
    assert default.sum(1).tolist() == [320, 640, 960, 1280] * 2


@pytest.mark.parametrize("size", [(224, 224), (37, 53)])
def test_default_rule_removes_exactly_round_p_percent(size):
    """Even on a map that is 90% zeros, MoRF and LeRF remove round(p% * H * W) pixels,
    MoRF_p is nested in MoRF_p' for p < p', and MoRF_p and LeRF_(100-p) partition the image."""
    height, width = size
    pixels = height * width
    sparse = top_k_mask(torch.from_numpy(blob(height, width, 10, 12, 50))[None], 10)
    assert (sparse == 0).float().mean() >= 0.89
    counts = removal_counts(P, pixels)
    masks = road_module._random_tie_masks(sparse.flatten(1), torch.randperm(pixels), counts)[0]
    assert masks.sum(1).tolist() == counts * 2
    assert all(bool((masks[i] <= masks[i + 1]).all()) for i in range(3))
    assert bool((masks[0] ^ masks[7]).all())  # MoRF 20% and LeRF 80%: complementary


def test_ranks_order_by_value_then_by_the_permutation():
    values = torch.tensor([[0.5, 0.0, 0.5, 1.0, 0.0]])
    permutation = torch.tensor([4, 2, 0, 1, 3])  # tie order: pixel 4 before 1, 2 before 0
    ranks = relevance_ranks(values, permutation)
    assert ranks.tolist() == [[2, 4, 1, 0, 3]]


def test_default_mode_has_no_nan_on_constant_map(net):
    x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(5))
    scores = road(net, x, torch.zeros(1, 24, 24))
    assert torch.isfinite(scores.combined).all()


def test_clean_forward_once_and_duplicate_maps_evaluated_once(net):
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(6))
    maps = torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(7))
    twice = torch.cat([maps, maps], dim=1)
    stats = RoadStats()
    probe = Probe.of(net, x, stats=stats)
    scores = road_many(probe, twice, RoadConfig(batch_size=1000), stats=stats)
    assert torch.equal(scores.combined[:, 0], scores.combined[:, 1])
    assert stats.masks == 2 * 2 * 8 and stats.unique_masks == 2 * 8
    # one clean pass for both images, then one pass per image for its 8 distinct masks
    assert stats.forward_passes == 1 + 2 and stats.forward_images == 2 + 16


def test_scores_do_not_depend_on_batch_composition(net):
    """With random streams seeded by image ids, an image scores the same alone or in a batch."""
    x = torch.randn(3, 3, 24, 24, generator=torch.Generator().manual_seed(8))
    maps = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(9))
    ids = ["a.png", "b.png", "c.png"]
    together = road(net, x, maps, image_ids=ids)
    alone = road(net, x[1:2], maps[1:2], image_ids=ids[1:2])
    # Same perturbed images, but evaluated in batches of other sizes: float32 convolutions
    # may sum in another order (kernel choice depends on batch size and CPU ISA), which
    # moves a softmax probability by a few float32 ulps of the logits (~1e-6); 1e-5 bounds it.
    assert torch.allclose(together.combined[1], alone.combined[0], atol=1e-5)
    other_seed = road(net, x[1:2], maps[1:2], image_ids=ids[1:2], seed=1)
    assert abs(float(other_seed.combined[0] - alone.combined[0])) > 2e-5  # the draw matters (noise)


def test_permutation_and_noise_are_separate_streams(net):
    """Changing the noise stream alone changes the scores at noise > 0 but not the masks."""
    x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(12))
    maps = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(13))
    probe = Probe.of(net, x, image_ids=["a.png"])
    base = road_many(probe, maps, RoadConfig(noise=0))
    renamed = road_many(probe, maps, RoadConfig(noise=0, stream="other"))
    # noise 0: only the permutation matters, and a map without ties does not use it
    assert torch.equal(base.combined, renamed.combined)
    noisy = road_many(probe, maps, RoadConfig(noise=0.5))
    assert not torch.equal(base.combined, noisy.combined)


def test_combined_is_half_lerf_minus_morf(net):
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(10))
    scores = road(net, x, torch.rand(2, 24, 24, generator=torch.Generator().manual_seed(11)))
    # the same float32 numbers combined in two orders: a few ulps of values in [-1, 1]
    assert torch.allclose(scores.combined, (scores.lerf - scores.morf) / 2, atol=1e-6)
    assert scores.morf_curve.shape == (2, 4)


def test_bad_input_is_a_clear_error(net):
    x = torch.randn(2, 3, 16, 16)
    good = torch.rand(2, 16, 16)
    with pytest.raises(MetaCAMError, match="percentile list is empty"):
        road(net, x, good, percentiles=[])
    with pytest.raises(MetaCAMError, match=r"percentile 100 is outside \(0, 100\)"):
        road(net, x, good, percentiles=[20, 100])
    with pytest.raises(MetaCAMError, match=r"saliency maps of shape \(2, 1, 16, 15\) do not match"):
        road(net, x, torch.rand(2, 16, 15))
    with pytest.raises(MetaCAMError, match=r"saliency maps of shape \(3, 1, 16, 16\)"):
        road(net, x, torch.rand(3, 16, 16))
    with pytest.raises(MetaCAMError, match=r"one map per image, \(B, H, W\)"):
        road(net, x, torch.rand(2, 2, 16, 16))
    nan_map = good.clone()
    nan_map[1, 3, 4] = float("nan")
    with pytest.raises(MetaCAMError, match="map 0 of image 1 contains NaN"):
        road(net, x, nan_map)
    with pytest.raises(MetaCAMError, match="is not a tie rule"):
        road(net, x, good, config=RoadConfig(ties="exact"))
    with pytest.raises(MetaCAMError, match="noise -1 must be a standard deviation"):
        road(net, x, good, config=RoadConfig(noise=-1))
