"""KPCA-CAM, FEM, ShapleyCAM and FinerCAM: hand-computed values, the shared pass, and the
extended groups. (Their equality with grad-cam is in test_oracle.py, test_transformers.py
and test_layers.py; their deliberate differences in test_deviations.py.)"""

import pytest
import torch

from metacam.cams import MEMBERS, compute_members
from metacam.cams.newer import fem, finer_score, kernel_projection
from metacam.groups import GroupSet, default_groups
from tests.cams.conftest import tiny_transformer

NEWER = ["kpcacam", "fem", "shapleycam", "finercam"]


def test_fem_weights_by_hand():
    """Channel 0: one pixel of nine far above the rest -> weight 1/9; channel 1: constant
    -> no pixel above mean + 2 std -> weight 0."""
    activations = torch.zeros(1, 2, 3, 3)
    activations[0, 0] = torch.tensor([[0.0, 0, 0], [0, 9, 0], [0, 0, 0]])
    activations[0, 1] = 5.0
    # channel 0: mean 1, population std sqrt(8) = 2.83; 9 > 1 + 5.66, 0 is not
    expected = activations[0, 0] / 9
    assert torch.allclose(fem(activations, None)[0], expected)


def test_finer_score_by_hand():
    logits = torch.tensor([[3.0, 2.9, 0.0, 2.5, 2.0, -1.0]], requires_grad=True)
    targets = torch.tensor([0])
    # the 3 classes closest to class 0's logit 3.0: 1 (2.9), 3 (2.5), 4 (2.0)
    p = torch.softmax(logits.detach(), dim=1)[0]
    compared = torch.tensor([1, 3, 4])
    expected = (p[compared] * (3.0 - logits.detach()[0, compared])).sum() / (p[compared].sum() + 1e-9)
    score = finer_score(logits, targets)
    assert torch.allclose(score, expected[None])
    (gradient,) = torch.autograd.grad(score.sum(), logits)
    assert gradient[0, 2] != 0 and gradient[0, 5] != 0  # the softmax weights are differentiated
    one_class = finer_score(torch.tensor([[1.0]]), torch.tensor([0]))
    assert one_class.item() == 0.0  # nothing to compare with: grad-cam's empty sum


def test_kernel_projection_is_the_top_kernel_component():
    """The projection is an eigenvector of the centred sigmoid kernel (times sqrt of its
    eigenvalue): check K_c v = lambda v directly."""
    maps = torch.randn(1, 6, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    projection = kernel_projection(maps).flatten()
    x = maps[0].flatten(1).T
    x = x - x.mean(0)
    kernel = torch.tanh(x @ x.T / 6 + 1)
    n = kernel.shape[0]
    centre = torch.eye(n, dtype=torch.float64) - 1.0 / n
    kernel = centre @ kernel @ centre
    value = projection @ kernel @ projection / (projection @ projection)
    assert torch.allclose(kernel @ projection, value * projection, atol=1e-10)
    assert value >= torch.linalg.eigvalsh(kernel).max() - 1e-10
    assert torch.allclose(projection.norm() ** 2, value)


def test_newer_members_share_the_one_forward_pass(tiny_input):
    """Every layer member, the newer ones included, reads one forward pass; ShapleyCAM and
    FinerCAM add backward passes over the last block only."""
    model = tiny_transformer("vit")
    shared = [name for name, entry in MEMBERS.items() if not entry.own_passes
              and name != "fullgrad" and not entry.plugin]
    assert set(NEWER) <= set(shared)
    calls = []
    handle = model.net.patch_embed.register_forward_hook(lambda m, i, o: calls.append(1))
    result = compute_members(model, tiny_input, methods=shared)
    handle.remove()
    assert calls == [1] and set(result.maps) == set(shared)


def test_extended_groups_add_a_seventh_group():
    from metacam.experiments.plan import composed

    with composed(["groups=extended"], [], hydra=False) as cfg:
        extended = GroupSet.from_mapping(cfg.groups)
    with composed([], [], hydra=False) as cfg:
        default = GroupSet.from_mapping(cfg.groups)
    assert extended.names[:6] == default.names == tuple(default_groups())
    assert extended.members[:6] == default.members
    assert extended.names[6] == "recent" and list(extended.members[6]) == NEWER
    assert (default.n_combos, extended.n_combos) == (64, 128)
    assert all(name in MEMBERS for group in extended.members for name in group)


@pytest.mark.parametrize("name", NEWER)
def test_newer_members_are_registered_with_their_needs(name):
    entry = MEMBERS[name]
    assert not entry.plugin and not entry.control and not entry.own_passes
    assert entry.needs_hessian == (name == "shapleycam")
    assert list(entry.scores) == (["finercam"] if name == "finercam" else [])
