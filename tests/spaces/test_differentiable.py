"""The differentiable NAS-Bench-201 supernet: relaxations, partial channels, shared alpha."""

from __future__ import annotations

import pytest
import torch

from spaces import create_space
from spaces.nb201.differentiable import (
    DifferentiableNB201,
    MixedCell,
    channel_shuffle,
    edge_weights,
)
from spaces.nb201.space import NB201_OPS


@pytest.fixture
def space():
    return create_space("nb201", channels=8, cells_per_stage=1, resolution=8)


def test_softmax_and_sigmoid_weights() -> None:
    alpha = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    soft = edge_weights(alpha, "softmax")
    assert torch.allclose(soft.sum(), torch.tensor(1.0))
    assert torch.allclose(soft, torch.softmax(alpha, -1))
    sig = edge_weights(alpha, "sigmoid")  # independent: FairDARTS
    assert torch.allclose(sig, torch.sigmoid(alpha)) and float(sig.sum()) > 1.0


def test_gumbel_is_one_hot_forward_with_the_soft_gradient() -> None:
    alpha = torch.zeros(6, 5, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    w = edge_weights(alpha, "gumbel", tau=1.0, generator=gen)
    assert torch.equal(w.detach().sum(-1), torch.ones(6))
    assert set(w.detach().flatten().tolist()) == {0.0, 1.0}
    (w * torch.arange(5.0)).sum().backward()
    assert alpha.grad is not None and bool((alpha.grad != 0).all())  # every entry gets one
    # a seeded generator gives the same sample
    again = edge_weights(alpha, "gumbel", generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.detach(), w.detach())


def test_derived_weights_are_the_argmax_without_gradient() -> None:
    alpha = torch.tensor([[0.0, 2.0, 1.0, 0.0, 0.0]], requires_grad=True)
    w = edge_weights(alpha, "derived")
    assert w.tolist() == [[0.0, 1.0, 0.0, 0.0, 0.0]] and not w.requires_grad
    with pytest.raises(ValueError, match="unknown relaxation 'hard'"):
        edge_weights(alpha, "hard")


def test_mixed_network_with_a_peaked_alpha_matches_its_derived_path(space) -> None:
    torch.manual_seed(0)
    net = DifferentiableNB201(space, in_channels=1).eval()
    with torch.no_grad():
        net.alpha.fill_(-30.0)
        net.alpha[:, NB201_OPS.index("nor_conv_3x3")] = 30.0
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(net(x, "softmax"), net(x, "derived"), atol=1e-5)
    assert space.ops(net.derive()) == ["nor_conv_3x3"] * 6
    assert net(x, "softmax").shape == (4, 10)


def test_aux_skip_adds_the_input_on_every_edge() -> None:
    torch.manual_seed(0)
    cell = MixedCell(4)
    weights = torch.zeros(6, 5)
    weights[:, 0] = 1.0  # every edge `none`: only the auxiliary skips carry the input
    x = torch.randn(2, 4, 5, 5)
    out = cell(x, weights, True, None, 0.5)
    # node1 = .5x, node2 = .5x + .5 node1, node3 = .5x + .5 node1 + .5 node2
    n1 = 0.5 * x
    n2 = 0.5 * x + 0.5 * n1
    assert torch.allclose(out, 0.5 * x + 0.5 * n1 + 0.5 * n2)


def test_partial_channels_send_a_slice_through_the_mix_and_shuffle(space) -> None:
    net = DifferentiableNB201(space, in_channels=1, partial_channels=4)
    conv = net.cells[0].edges[0].ops["nor_conv_3x3"][1]
    assert conv.in_channels == 2 and conv.out_channels == 2  # 8 channels / 4
    assert net.beta is not None and len(net.beta) == 3  # edge normalisation per node
    assert {id(p) for p in net.arch_parameters()} == {id(net.alpha)} | {id(b) for b in net.beta}
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="partial_channels must divide the width 8"):
        DifferentiableNB201(space, in_channels=1, partial_channels=3)


def test_a_deeper_network_shares_alpha_without_owning_it(space) -> None:
    search = DifferentiableNB201(space, in_channels=1)
    deep = DifferentiableNB201(space, in_channels=1, cells_per_stage=3, alpha=search.alpha)
    assert deep.alpha is search.alpha and deep.arch_parameters() == []
    assert all(p is not search.alpha for p in deep.weight_parameters())
    assert sum(isinstance(m, MixedCell) for m in deep.cells) == 9
    with torch.no_grad():
        search.alpha[2, 4] = 1.0
    assert deep.derive() == search.derive()
    with pytest.raises(ValueError, match=r"alpha must have shape \(6, 5\)"):
        DifferentiableNB201(space, alpha=torch.nn.Parameter(torch.zeros(3, 5)))


def test_space_counts_parameter_free_operations(space) -> None:
    arch = "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"
    assert space.parameter_free_fraction(arch) == pytest.approx(4 / 6)
    assert space.skip_connections(arch) == 2
    assert space.provides("build_differentiable")
    assert not create_space("mobilenet").provides("build_differentiable")


def test_gumbel_hard_runs_exactly_one_operation_per_edge(space) -> None:
    net = DifferentiableNB201(space, in_channels=1)
    calls: list[str] = []
    for edge in net.cells[0].edges:
        for name, op in edge.ops.items():
            op.register_forward_hook(lambda *_, name=name: calls.append(name))
    logits = net(torch.randn(2, 1, 8, 8), "gumbel", generator=torch.Generator().manual_seed(1))
    assert len(calls) == 6  # one operation on each of the 6 edges
    logits.sum().backward()
    assert net.alpha.grad is not None and bool(net.alpha.grad.abs().sum() > 0)
    calls.clear()
    net(torch.randn(2, 1, 8, 8), "softmax")
    assert len(calls) == 30  # the relaxed mix runs all 5 everywhere
