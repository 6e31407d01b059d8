from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from spaces import SearchSpace
from spaces.mobilenet import MobileNetSpace
from spaces.nb201 import NB201Space
from spaces.nb201.space import ops_to_string


@pytest.fixture(scope="module")
def mobilenet() -> MobileNetSpace:
    return MobileNetSpace(resolution=32)


def _param_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def _hook_macs(net: nn.Module, x: torch.Tensor) -> int:
    """Conv2d and Linear MACs of one image, counted on a real forward pass."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        per_image = out.numel() // out.shape[0]
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += per_image * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    net.eval()
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return total


def test_import_spaces_does_not_import_torch() -> None:
    code = (
        "import spaces, spaces.mobilenet.space, spaces.nb201.space, sys; "
        "spaces.create_space('mobilenet').count_flops(spaces.create_space('mobilenet')"
        ".decode([0] * 45)); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_nb201_defaults_and_options() -> None:
    space = NB201Space()
    assert (space.channels, space.cells_per_stage, space.resolution) == (16, 5, 32)
    for bad in ({"channels": 0}, {"cells_per_stage": -1}, {"resolution": 1.5}):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=name):
            NB201Space(**bad)


def test_nb201_forward_shapes(nb201: NB201Space) -> None:
    rng = np.random.default_rng(0)
    for _ in range(4):
        arch = nb201.sample(rng)
        net = nb201.build_network(arch, num_classes=10, in_channels=1)
        out = net(torch.randn(3, 1, 8, 8))
        assert out.shape == (3, 10)
        assert torch.isfinite(out).all()


def test_mobilenet_forward_shapes(mobilenet: MobileNetSpace) -> None:
    rng = np.random.default_rng(0)
    for _ in range(3):
        arch = mobilenet.sample(rng)
        net = mobilenet.build_network(arch, num_classes=5)
        out = net(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, 5)
        assert torch.isfinite(out).all()
    # Tiny inputs too: spatial sizes never reach zero.
    net = mobilenet.build_network(arch, num_classes=10, in_channels=1)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("space_name", ["nb201", "mobilenet"])
def test_count_params_matches_torch(
    space_name: str, nb201: NB201Space, mobilenet: MobileNetSpace
) -> None:
    space: SearchSpace = {"nb201": nb201, "mobilenet": mobilenet}[space_name]
    rng = np.random.default_rng(1)
    for num_classes, in_channels in ((10, 3), (7, 1), (10, 3), (3, 2)):
        arch = space.sample(rng)
        net = space.build_network(arch, num_classes=num_classes, in_channels=in_channels)
        expected = _param_count(net)
        assert space.count_params(arch, num_classes=num_classes, in_channels=in_channels) == (
            expected
        )


def test_nb201_count_params_at_benchmark_size() -> None:
    space = NB201Space()
    for ops in (["nor_conv_3x3"] * 6, ["none"] * 6, ["nor_conv_1x1", "skip_connect"] * 3):
        arch = ops_to_string(ops)
        assert space.count_params(arch) == _param_count(space.build_network(arch))


@pytest.mark.parametrize("resolution", [8, 7, 5])
def test_nb201_flops_match_hooks(nb201: NB201Space, resolution: int) -> None:
    rng = np.random.default_rng(2)
    for _ in range(2):
        arch = nb201.sample(rng)
        net = nb201.build_network(arch, in_channels=1)
        x = torch.randn(2, 1, resolution, resolution)
        expected = _hook_macs(net, x)
        assert nb201.count_flops(arch, in_channels=1, resolution=resolution) == expected
    arch = ops_to_string(["nor_conv_3x3"] * 6)
    assert nb201.count_flops(arch) == _hook_macs(nb201.build_network(arch), torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("resolution", [32, 24, 9])
def test_mobilenet_flops_match_hooks(mobilenet: MobileNetSpace, resolution: int) -> None:
    rng = np.random.default_rng(3)
    arch = mobilenet.sample(rng)
    net = mobilenet.build_network(arch, num_classes=10)
    expected = _hook_macs(net, torch.randn(1, 3, resolution, resolution))
    assert mobilenet.count_flops(arch, resolution=resolution) == expected
    if resolution == 32:
        assert mobilenet.count_flops(arch) == expected


def test_flops_grow_with_the_architecture(nb201: NB201Space, mobilenet: MobileNetSpace) -> None:
    convs = ops_to_string(["nor_conv_3x3"] * 6)
    skips = ops_to_string(["skip_connect"] * 6)
    assert nb201.count_flops(skips) > 0
    assert nb201.count_flops(convs) > nb201.count_flops(skips)
    assert nb201.count_params(convs) > nb201.count_params(skips)
    smallest = mobilenet.decode([0] * len(mobilenet.dims))
    largest = mobilenet.decode([n - 1 for n in mobilenet.dims])
    assert 0 < mobilenet.count_flops(smallest) < mobilenet.count_flops(largest)
    assert mobilenet.count_params(smallest) < mobilenet.count_params(largest)
    # FLOPs scale with resolution; parameters do not.
    assert mobilenet.count_flops(largest, resolution=64) > mobilenet.count_flops(largest)


def test_default_mobilenet_is_ofa_sized() -> None:
    space = MobileNetSpace()
    largest = space.decode([n - 1 for n in space.dims])
    smallest = space.decode([0] * len(space.dims))
    # Once-for-All's MobileNetV3 space spans roughly 100-600 MMACs at 224 (ours has no SE
    # or feature-mix layer, so it sits a little lower).
    assert 50e6 < space.count_flops(smallest, num_classes=1000) < 200e6
    assert 300e6 < space.count_flops(largest, num_classes=1000) < 900e6


def test_bad_network_arguments(nb201: NB201Space, mobilenet: MobileNetSpace) -> None:
    arch = nb201.sample(np.random.default_rng(0))
    with pytest.raises(ValueError, match="num_classes"):
        nb201.count_params(arch, num_classes=0)
    with pytest.raises(ValueError, match="resolution"):
        nb201.count_flops(arch, resolution=0)
    with pytest.raises(ValueError, match="in_channels"):
        mobilenet.count_flops(mobilenet.decode([0] * 45), in_channels=-3)
    with pytest.raises(ValueError, match="must have 3 nodes"):
        nb201.build_network("not an arch")


@pytest.mark.parametrize("space_name", ["nb201", "mobilenet"])
def test_network_trains(space_name: str, nb201: NB201Space, mobilenet: MobileNetSpace) -> None:
    torch.manual_seed(0)
    if space_name == "nb201":
        space: SearchSpace = nb201
        arch = ops_to_string(["nor_conv_3x3", "skip_connect", "nor_conv_1x1"] * 2)
        x = torch.randn(32, 1, 8, 8)
        net = space.build_network(arch, num_classes=4, in_channels=1)
    else:
        space = MobileNetSpace(widths=(16, 24, 32), strides=(2, 2, 2), head_width=64)
        arch = space.decode([0] * len(space.dims))
        x = torch.randn(32, 3, 16, 16)
        net = space.build_network(arch, num_classes=4)
    y = torch.randint(0, 4, (32,))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses
