"""ProxylessNAS's pieces the MobileNet space owns: binary-gate gradients and expected latency."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spaces.mobilenet import MobileNetArch, MobileNetSpace
from spaces.mobilenet.latency import MobileNetLayout


@pytest.fixture(scope="module")
def space() -> MobileNetSpace:
    return MobileNetSpace(resolution=8, stem_width=8, widths=(8, 16), strides=(1, 2),
                          depth_choices=(1, 2, 3), kernel_choices=(3, 5),
                          expand_choices=(2, 3), head_width=16)


def _mixed_loss(net: Any, space: MobileNetSpace, x: torch.Tensor, y: torch.Tensor,
                arch: MobileNetArch, decision: int, choices: list[int]) -> torch.Tensor:
    """The loss with ``decision``'s output the gated sum of ``choices``' outputs (gates at
    one-hot on the active choice), and its gradient per gate: what ProxylessNAS defines."""
    stages, depth = space.num_stages, space.max_depth
    slots = stages * depth
    h = net.first(net.stem(x))
    gates = torch.zeros(len(choices), requires_grad=True)
    for st in range(stages):
        if decision == st:
            outs = []
            for c in choices:
                o = h
                for j in range(space.depth_choices[c]):
                    b = st * depth + j
                    o = net.blocks[b](o, arch.kernels[b], arch.expands[b])
                outs.append(o)
            h = sum(g * o for g, o in zip(_one_hot_gates(gates, choices, space.depth_choices
                                                          .index(arch.depths[st])), outs,
                                          strict=True))
            continue
        for j in range(arch.depths[st]):
            b = st * depth + j
            if decision in (stages + b, stages + slots + b):
                kernel_decision = decision == stages + b
                values = space.kernel_choices if kernel_decision else space.expand_choices
                active = arch.kernels[b] if kernel_decision else arch.expands[b]
                outs = [net.blocks[b](h, values[c] if kernel_decision else arch.kernels[b],
                                      arch.expands[b] if kernel_decision else values[c])
                        for c in choices]
                h = sum(g * o for g, o in zip(_one_hot_gates(gates, choices,
                                                             values.index(active)),
                                              outs, strict=True))
            else:
                h = net.blocks[b](h, arch.kernels[b], arch.expands[b])
    logits = net.classifier(torch.flatten(net.pool(net.head(h)), 1))
    loss = F.cross_entropy(logits, y)
    (grad,) = torch.autograd.grad(loss, gates)
    return grad


def _one_hot_gates(gates: torch.Tensor, choices: list[int], active: int) -> list[torch.Tensor]:
    # g = gates + one-hot: the forward uses the active choice only, d/dg is the same.
    return [gates[i] + float(c == active) for i, c in enumerate(choices)]


@pytest.mark.parametrize("decision", [0, 1, 2 + 0, 2 + 4, 2 + 6 + 1, 2 + 6 + 3])
def test_gate_gradients_equal_autograd_through_the_gated_sum(space: MobileNetSpace,
                                                             decision: int) -> None:
    torch.manual_seed(0)
    net = space.build_supernet(num_classes=4, in_channels=1).double()
    net.eval()  # batch norm on running statistics: outputs independent of what else runs
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    arch = MobileNetArch((2, 3), (5, 3, 5, 3, 5, 5), (3, 2, 3, 3, 2, 3))
    size = space.decisions[decision].size
    active = space.encode(arch)[decision]
    others = [c for c in range(size) if c != active]
    loss, scores = net.gate_gradients(x, y, arch, {decision: others})
    expected = _mixed_loss(net, space, x, y, arch, decision, [int(active), *others])
    got = [scores[decision][c] for c in [int(active), *others]]
    assert np.allclose(got, expected.numpy(), rtol=1e-8, atol=1e-10)
    with torch.no_grad():
        assert loss == pytest.approx(float(F.cross_entropy(net(x, arch), y)))


def test_gate_gradients_skip_blocks_beyond_the_depth_and_leave_weights_alone(
        space: MobileNetSpace) -> None:
    net = space.build_supernet(num_classes=4, in_channels=1)
    arch = MobileNetArch((1, 1), (3,) * 6, (2,) * 6)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    inactive = space.num_stages + 1  # kernel of stage 0's second slot
    _, scores = net.gate_gradients(x, y, arch, {inactive: [1], 0: [2]})
    assert set(scores) == {0} and set(scores[0]) == {0, 2}
    assert all(p.grad is None for p in net.parameters())


def test_expected_latency_is_the_probability_weighted_lookup(space: MobileNetSpace) -> None:
    layout = MobileNetLayout(space)
    rng = np.random.default_rng(0)
    entries = {key: float(rng.uniform(0.1, 2.0)) for key in layout.keys()}
    probs = [torch.softmax(torch.as_tensor(rng.normal(size=d.size)), 0) for d in space.decisions]
    predict = layout.compile(entries)
    total = 0.0
    for vector in itertools.product(*(range(d.size) for d in space.decisions)):
        p = float(np.prod([float(probs[k][v]) for k, v in enumerate(vector)]))
        total += p * float(predict(np.array([vector]))[0])
    assert float(layout.expected(entries, probs)) == pytest.approx(total, rel=1e-9)
    # Differentiable: a gradient reaches every decision's probabilities.
    leaves = [p.clone().requires_grad_(True) for p in probs]
    layout.expected(entries, leaves).backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in leaves)


def test_a_one_hot_distribution_expects_its_architectures_latency(space: MobileNetSpace) -> None:
    layout = MobileNetLayout(space)
    entries = {key: float(i + 1) for i, key in enumerate(layout.keys())}
    arch = space.sample(np.random.default_rng(3))
    vector = space.encode(arch)
    probs = [F.one_hot(torch.tensor(int(v)), d.size).double()
             for v, d in zip(vector, space.decisions, strict=True)]
    assert float(layout.expected(entries, probs)) == pytest.approx(
        float(layout.compile(entries)(vector[None])[0]))


def test_decision_groups_pair_each_slot_kernel_with_its_expansion(space: MobileNetSpace) -> None:
    groups = space.decision_groups()
    names = [[space.decisions[k].name for k in g] for g in groups]
    assert names[:2] == [["depth/0"], ["depth/1"]]
    assert names[2:] == [[f"ks/{b}", f"e/{b}"] for b in range(6)]


def test_expected_features_are_the_probability_weighted_features(space: MobileNetSpace) -> None:
    rng = np.random.default_rng(1)
    probs = [torch.softmax(torch.as_tensor(rng.normal(size=d.size)), 0) for d in space.decisions]
    total = np.zeros(space.features(np.zeros((1, len(space.dims)), dtype=np.int64)).shape[1])
    for vector in itertools.product(*(range(d.size) for d in space.decisions)):
        p = float(np.prod([float(probs[k][v]) for k, v in enumerate(vector)]))
        total += p * space.features(np.array([vector]))[0]
    got = space.expected_features(probs)
    assert np.allclose(got.numpy(), total, atol=1e-9)
    # One-hot probabilities give that architecture's own features.
    vector = space.encode(space.sample(rng))
    hot = [F.one_hot(torch.tensor(int(v)), d.size).double()
           for v, d in zip(vector, space.decisions, strict=True)]
    assert np.array_equal(space.expected_features(hot).numpy(), space.features(vector[None])[0])
