"""Top-k% thresholding and MetaCAM, against hand-computed tiny maps and NumPy."""

import numpy as np
import pytest
import torch

from metacam.ensemble import (
    check_ks,
    metacam_map,
    metacam_maps,
    percentile_of_sorted,
    threshold_maps,
    top_k_mask,
)
from metacam.errors import MetaCAMError


@pytest.mark.parametrize("q", [0, 5, 12.5, 20, 33.3, 50, 60, 75, 80, 95, 99.9, 100])
def test_percentile_equals_numpy_bit_for_bit(q):
    rng = np.random.default_rng(0)
    rows = [
        rng.random(50176).astype(np.float32),  # 224 x 224, no ties
        np.round(rng.random(1000) * 4).astype(np.float32) / 4,  # heavy ties
        np.where(rng.random(2500) < 0.9, 0, rng.random(2500)).astype(np.float32),  # 90% zeros
        (1 - rng.random(777).astype(np.float32)),  # as grad-cam's LeRF sees it
    ]
    for row in rows:
        ours = percentile_of_sorted(torch.from_numpy(np.sort(row))[None], q)[0]
        assert ours.item() == np.percentile(row, q), (q, len(row))


def test_top_k_keeps_values_at_or_above_the_percentile():
    # 10 values 0..9: the 80th percentile is 7.2, so k=20 keeps 8 and 9
    maps = torch.arange(10.0).reshape(1, 2, 5)
    assert top_k_mask(maps, 20).flatten().tolist() == [0] * 8 + [8.0, 9.0]
    # k = 100 is the 0th percentile = the minimum: everything stays
    assert torch.equal(top_k_mask(maps, 100), maps)
    # ties at the cut-off all stay: [0,0,0,1,1,1] 50th percentile = 0.5 -> the three ones
    tied = torch.tensor([[[0.0, 0, 0], [1, 1, 1]]])
    assert top_k_mask(tied, 50).flatten().tolist() == [0, 0, 0, 1, 1, 1]
    assert top_k_mask(tied, 10).flatten().tolist() == [0, 0, 0, 1, 1, 1]


def test_metacam_on_tiny_maps_by_hand():
    """Three members on a 2x2 image, k = 50.

    A1 = [[4, 3], [2, 1]]: 50th percentile 2.5 -> T = [[4, 3], [0, 0]]
    A2 = [[1, 4], [3, 2]]: -> T = [[0, 4], [3, 0]]
    A3 = [[3, 4], [1, 2]]: -> T = [[3, 4], [0, 0]]
    S = [[7, 11], [3, 0]]; 50th percentile of S = (3 + 7) / 2 = 5 -> T = [[7, 11], [0, 0]]
    normalised (min 0, max 11): [[7/11, 1], [0, 0]]
    The top-right pixel, in every member's top half, dominates; A2's isolated
    bottom-left highlight is cut.
    """
    members = {
        "a1": torch.tensor([[[4.0, 3], [2, 1]]]),
        "a2": torch.tensor([[[1.0, 4], [3, 2]]]),
        "a3": torch.tensor([[[3.0, 4], [1, 2]]]),
    }
    expected = torch.tensor([[[7 / 11, 1.0], [0.0, 0.0]]])
    assert torch.allclose(metacam_map(members, 50), expected, atol=1e-6)


def test_metacam_at_k100_is_the_normalised_sum():
    maps = torch.rand(3, 2, 6, 7, generator=torch.Generator().manual_seed(0))
    total = maps.sum(0)
    low = total.flatten(1).amin(1)[:, None, None]
    high = total.flatten(1).amax(1)[:, None, None]
    assert torch.allclose(metacam_map(maps, 100), (total - low) / (high - low), atol=1e-6)


def test_grids_stack_along_k():
    maps = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    grid = metacam_maps(maps, [10, 50])
    assert grid.shape == (3, 2, 8, 8)
    assert torch.equal(grid[:, 1], metacam_map(maps, 50))
    single = threshold_maps(maps[0], [10, 50])
    assert torch.equal(single[:, 0], top_k_mask(maps[0], 10))


@pytest.mark.parametrize("bad", [0, -5, 100.5, 250])
def test_k_outside_range_is_an_error(bad):
    with pytest.raises(MetaCAMError, match=r"outside \(0, 100\]"):
        top_k_mask(torch.rand(1, 4, 4), bad)
    with pytest.raises(MetaCAMError, match=r"outside \(0, 100\]"):
        check_ks([10, bad])


def test_empty_k_grid_and_mismatched_members_are_errors():
    with pytest.raises(MetaCAMError, match="k grid is empty"):
        check_ks([])
    with pytest.raises(MetaCAMError, match="differ in shape"):
        metacam_map([torch.rand(1, 4, 4), torch.rand(1, 5, 4)], 50)
