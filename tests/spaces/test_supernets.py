from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spaces import SearchSpace
from spaces.mobilenet import MobileNetArch, MobileNetSpace
from spaces.mobilenet.supernet import ElasticMBConv, MobileNetSupernet, SlicedBatchNorm2d
from spaces.nb201 import NB201_OPS, NB201Space
from spaces.nb201.space import EDGES, ops_to_string
from spaces.nb201.supernet import NB201Supernet, SuperCell, live_edges


@pytest.fixture(scope="module")
def mobilenet() -> MobileNetSpace:
    return MobileNetSpace(resolution=32, widths=(16, 24, 32), strides=(2, 2, 2), head_width=64)


def _nb201_supernet(space: NB201Space, seed: int = 0, **kw: int) -> NB201Supernet:
    torch.manual_seed(seed)
    net = space.build_supernet(in_channels=1, **kw)
    assert isinstance(net, NB201Supernet)
    return net


def _warm_up(net: nn.Module, space: SearchSpace, x: torch.Tensor, steps: int = 4) -> None:
    """Move BN running statistics away from their initial values on random paths."""
    rng = np.random.default_rng(123)
    net.train()
    with torch.no_grad():
        for _ in range(steps):
            net(x, space.sample(rng))


def _grads(net: nn.Module) -> dict[str, torch.Tensor | None]:
    return {name: p.grad for name, p in net.named_parameters()}


def _spos_loss_drops(net: nn.Module, space: SearchSpace, x: torch.Tensor) -> None:
    torch.manual_seed(0)
    y = torch.randint(0, 4, (x.shape[0],))
    rng = np.random.default_rng(0)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    archs = [space.sample(rng) for _ in range(3)]

    def mean_loss() -> float:
        net.train()
        with torch.no_grad():
            return float(np.mean([nn.functional.cross_entropy(net(x, a), y).item() for a in archs]))

    before = mean_loss()
    for step in range(30):
        arch = archs[step % len(archs)] if step % 2 else space.sample(rng)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x, arch), y).backward()
        opt.step()
    assert mean_loss() < 0.7 * before


# ------------------------------------------------------------------- NAS-Bench-201


def test_base_space_has_no_supernet() -> None:
    class Bare(NB201Space):
        name = "bare"

    with pytest.raises(NotImplementedError, match="bare"):
        SearchSpace.build_supernet(Bare())


def test_nb201_forward_shape_and_validation(nb201: NB201Space) -> None:
    net = _nb201_supernet(nb201, num_classes=7)
    rng = np.random.default_rng(0)
    for _ in range(3):
        out = net(torch.randn(2, 1, 8, 8), nb201.sample(rng))
        assert out.shape == (2, 7)
        assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="3 nodes"):
        net(torch.randn(2, 1, 8, 8), "not an arch")
    with pytest.raises(ValueError, match="num_classes"):
        nb201.build_supernet(num_classes=0)


def test_nb201_every_edge_holds_every_op(nb201: NB201Space) -> None:
    net = _nb201_supernet(nb201)
    cells = [m for m in net.cells if isinstance(m, SuperCell)]
    assert len(cells) == 3 * nb201.cells_per_stage
    for cell in cells:
        assert len(cell.edges) == len(EDGES)
        assert all(tuple(edge.keys()) == NB201_OPS for edge in cell.edges)


def test_live_edges() -> None:
    assert live_edges(["nor_conv_3x3"] * 6) == (True,) * 6
    assert live_edges(["none"] * 6) == (False,) * 6
    # Node 1 reaches the output only through `none` edges, so its input edge is dead.
    ops = ["nor_conv_3x3", "skip_connect", "none", "nor_conv_1x1", "none", "avg_pool_3x3"]
    assert live_edges(ops) == (False, True, False, True, False, True)


@pytest.mark.parametrize(
    "ops",
    [
        ["nor_conv_3x3", "nor_conv_1x1", "skip_connect", "avg_pool_3x3", "nor_conv_3x3", "none"],
        ["nor_conv_1x1", "none", "nor_conv_3x3", "none", "skip_connect", "nor_conv_3x3"],
        ["nor_conv_3x3", "skip_connect", "none", "nor_conv_1x1", "none", "avg_pool_3x3"],
    ],
)
def test_nb201_single_path_gradients(nb201: NB201Space, ops: list[str]) -> None:
    net = _nb201_supernet(nb201)
    arch = ops_to_string(ops)
    live = live_edges(ops)
    loss = net(torch.randn(4, 1, 8, 8), arch).square().mean()
    loss.backward()
    for cell in (m for m in net.cells if isinstance(m, SuperCell)):
        for k, edge in enumerate(cell.edges):
            for op, module in edge.items():
                used = op == ops[k] and live[k]
                for p in module.parameters():
                    assert (p.grad is not None) == used, (k, op)
    with_grad = {id(p) for p in net.parameters() if p.grad is not None}
    assert with_grad == {id(p) for p in net.path_parameters(arch)}
    # Shared layers always learn.
    assert net.stem[0].weight.grad is not None and net.classifier.weight.grad is not None


def test_nb201_extract_matches_supernet(nb201: NB201Space) -> None:
    net = _nb201_supernet(nb201)
    x = torch.randn(4, 1, 8, 8)
    _warm_up(net, nb201, x)
    net.eval()
    rng = np.random.default_rng(1)
    archs = [nb201.sample(rng) for _ in range(6)]
    archs += [ops_to_string(["none"] * 6), ops_to_string(["nor_conv_3x3"] * 6)]
    archs.append(ops_to_string(["nor_conv_3x3", "skip_connect", "none", "none", "none", "none"]))
    with torch.no_grad():
        for arch in archs:
            sub = net.extract(arch)
            assert not sub.training
            torch.testing.assert_close(sub(x), net(x, arch), atol=1e-5, rtol=0)
            n_params = sum(p.numel() for p in sub.parameters())
            assert n_params == nb201.count_params(arch, in_channels=1)
    # The copy is independent: changing it leaves the supernet alone.
    before = net.stem[0].weight.clone()
    with torch.no_grad():
        sub.stem[0].weight.add_(1.0)
    torch.testing.assert_close(net.stem[0].weight, before)


def test_nb201_batchnorms_and_recalibration(nb201: NB201Space) -> None:
    net = _nb201_supernet(nb201)
    convs = ops_to_string(["nor_conv_3x3"] * 6)
    skips = ops_to_string(["skip_connect"] * 6)
    # stem + 2 reductions x 2 + last, plus one per conv edge per cell.
    assert len(net.batchnorms(skips)) == 6
    assert len(net.batchnorms(convs)) == 6 + 6 * 3
    all_bns = {id(m) for m in net.modules() if isinstance(m, nn.BatchNorm2d)}
    assert {id(m) for m in net.batchnorms(convs)} <= all_bns

    x = torch.randn(16, 1, 8, 8)
    _warm_up(net, nb201, torch.randn(16, 1, 8, 8) * 3 + 1)
    bns = net.batchnorms(convs)
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    net.train()
    with torch.no_grad():
        net(x, convs)
    # With momentum=None one batch sets the running mean to that batch's mean exactly.
    first = net.cells[0].edges[0]["nor_conv_3x3"]
    assert int(first[2].num_batches_tracked) == 1
    h = first[1](torch.relu(net.stem(x).detach()))
    torch.testing.assert_close(first[2].running_mean, h.mean(dim=(0, 2, 3)), atol=1e-5, rtol=0)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net.extract(convs)(x), net(x, convs), atol=1e-5, rtol=0)


def test_nb201_deterministic(nb201: NB201Space) -> None:
    a, b = _nb201_supernet(nb201, seed=3), _nb201_supernet(nb201, seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    arch = nb201.sample(np.random.default_rng(0))
    torch.manual_seed(5)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(a(x, arch), b(x, arch))
    c = _nb201_supernet(nb201, seed=4)
    assert not torch.equal(a.stem[0].weight, c.stem[0].weight)


def test_nb201_spos_training_reduces_loss(nb201: NB201Space) -> None:
    net = _nb201_supernet(nb201, num_classes=4)
    torch.manual_seed(1)
    _spos_loss_drops(net, nb201, torch.randn(32, 1, 8, 8))


# ------------------------------------------------------------------------ MobileNet


def _mobilenet_supernet(space: MobileNetSpace, seed: int = 0, **kw: int) -> MobileNetSupernet:
    torch.manual_seed(seed)
    net = space.build_supernet(**kw)
    assert isinstance(net, MobileNetSupernet)
    return net


def _arch(
    space: MobileNetSpace, depths: tuple[int, ...], kernel: int, expand: int
) -> MobileNetArch:
    slots = space.num_stages * space.max_depth
    return space.validate(MobileNetArch(depths, (kernel,) * slots, (expand,) * slots))


def test_mobilenet_structure_and_sliced_shapes(mobilenet: MobileNetSpace) -> None:
    net = _mobilenet_supernet(mobilenet)
    assert len(net.blocks) == mobilenet.num_stages * mobilenet.max_depth
    block = net.blocks[1]  # second block of stage 0: 16 -> 16 channels
    assert isinstance(block, ElasticMBConv)
    assert block.depth_conv.weight.shape == (16 * 6, 1, 7, 7)
    expand_w, depth_w, project_w = block.sliced_weights(3, 3)
    assert expand_w is not None
    assert expand_w.shape == (48, 16, 1, 1)
    assert depth_w.shape == (48, 1, 3, 3)
    assert project_w.shape == (16, 48, 1, 1)
    torch.testing.assert_close(depth_w, block.depth_conv.weight[:48, :, 2:5, 2:5])
    _, depth_w, project_w = block.sliced_weights(5, 4)
    assert depth_w.shape == (64, 1, 5, 5) and project_w.shape == (16, 64, 1, 1)
    torch.testing.assert_close(depth_w, block.depth_conv.weight[:64, :, 1:6, 1:6])
    _, depth_w, _ = block.sliced_weights(7, 6)
    assert depth_w.shape == (96, 1, 7, 7)
    assert isinstance(block.depth_bn, SlicedBatchNorm2d) and block.depth_bn.num_features == 96


def test_mobilenet_forward_shape_and_validation(mobilenet: MobileNetSpace) -> None:
    net = _mobilenet_supernet(mobilenet, num_classes=5)
    rng = np.random.default_rng(0)
    for _ in range(2):
        out = net(torch.randn(2, 3, 32, 32), mobilenet.sample(rng))
        assert out.shape == (2, 5)
        assert torch.isfinite(out).all()
    arch = mobilenet.sample(rng)
    assert torch.isfinite(net(torch.randn(2, 3, 32, 32), mobilenet.to_string(arch))).all()
    with pytest.raises(ValueError, match="depths"):
        net(torch.randn(2, 3, 32, 32), MobileNetArch((2,), (3,) * 12, (3,) * 12))


def test_mobilenet_single_path_gradients(mobilenet: MobileNetSpace) -> None:
    net = _mobilenet_supernet(mobilenet)
    slots = mobilenet.num_stages * mobilenet.max_depth
    kernels = tuple(3 if b % 2 else 5 for b in range(slots))
    expands = tuple(3 if b % 3 else 4 for b in range(slots))
    arch = mobilenet.validate(MobileNetArch((2, 4, 3), kernels, expands))
    net(torch.randn(4, 3, 32, 32), arch).square().mean().backward()
    active = set(mobilenet.active_blocks(arch))
    assert active == {0, 1, 4, 5, 6, 7, 8, 9, 10}
    for b, block in enumerate(net.blocks):
        assert isinstance(block, ElasticMBConv)
        if b not in active:
            assert all(p.grad is None for p in block.parameters()), b
            continue
        k, mid = kernels[b], block.in_channels * expands[b]
        start = (7 - k) // 2
        grad = block.depth_conv.weight.grad
        assert grad is not None
        inside = torch.zeros_like(grad, dtype=torch.bool)
        inside[:mid, :, start : start + k, start : start + k] = True
        assert grad[inside].abs().sum() > 0
        assert torch.count_nonzero(grad[~inside]) == 0
        for tensor, dim in (
            (block.expand_conv.weight, 0),
            (block.project_conv.weight, 1),
            (block.expand_bn.weight, 0),
            (block.depth_bn.bias, 0),
        ):
            assert tensor.grad is not None
            assert torch.count_nonzero(tensor.grad.narrow(dim, mid, tensor.shape[dim] - mid)) == 0
            assert tensor.grad.narrow(dim, 0, mid).abs().sum() > 0
    with_grad = {id(p) for p in net.parameters() if p.grad is not None}
    assert with_grad == {id(p) for p in net.path_parameters(arch)}


def test_mobilenet_expand_one_skips_the_expansion() -> None:
    space = MobileNetSpace(resolution=32, widths=(16, 24), strides=(2, 1), expand_choices=(1, 3))
    net = _mobilenet_supernet(space)
    arch = _arch(space, (4, 4), 5, 1)
    net(torch.randn(2, 3, 32, 32), arch).sum().backward()
    block = net.blocks[0]
    assert isinstance(block, ElasticMBConv)
    assert block.expand_conv.weight.grad is None and block.depth_conv.weight.grad is not None
    assert block.expand_conv not in net.path_modules(arch)
    assert block.expand_bn not in net.batchnorms(arch) and block.depth_bn in net.batchnorms(arch)


def _check_extract(
    net: MobileNetSupernet, space: MobileNetSpace, archs: list[MobileNetArch]
) -> None:
    x = torch.randn(4, 3, 32, 32)
    net.eval()
    with torch.no_grad():
        for arch in archs:
            sub = net.extract(arch)
            assert not sub.training
            torch.testing.assert_close(sub(x), net(x, arch), atol=1e-5, rtol=0)
            assert sum(p.numel() for p in sub.parameters()) == space.count_params(
                arch, num_classes=net.num_classes, in_channels=net.in_channels
            )


def test_mobilenet_extract_matches_supernet(mobilenet: MobileNetSpace) -> None:
    net = _mobilenet_supernet(mobilenet, num_classes=7)
    _warm_up(net, mobilenet, torch.randn(8, 3, 32, 32) * 2 + 0.5)
    rng = np.random.default_rng(2)
    archs = [mobilenet.sample(rng) for _ in range(4)]
    archs += [_arch(mobilenet, (2, 2, 2), 3, 3), _arch(mobilenet, (4, 4, 4), 7, 6)]
    _check_extract(net, mobilenet, archs)
    # Expansion 1 and a single-channel input take other code paths.
    space = MobileNetSpace(resolution=32, widths=(16, 24), strides=(2, 1), expand_choices=(1, 3))
    net = _mobilenet_supernet(space, in_channels=1)
    x = torch.randn(4, 1, 32, 32)
    rng = np.random.default_rng(3)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(x, space.sample(rng))
    net.eval()
    archs = [space.sample(rng) for _ in range(2)] + [_arch(space, (3, 2), 7, 1)]
    with torch.no_grad():
        for arch in archs:
            torch.testing.assert_close(net.extract(arch)(x), net(x, arch), atol=1e-5, rtol=0)
            n_params = sum(p.numel() for p in net.extract(arch).parameters())
            assert n_params == space.count_params(arch, in_channels=1)


def test_mobilenet_extract_default_widths() -> None:
    space = MobileNetSpace(resolution=32)
    net = _mobilenet_supernet(space)
    _warm_up(net, space, torch.randn(4, 3, 32, 32), steps=2)
    _check_extract(net, space, [space.sample(np.random.default_rng(4)) for _ in range(2)])


def test_mobilenet_recalibration_updates_only_the_slice(mobilenet: MobileNetSpace) -> None:
    net = _mobilenet_supernet(mobilenet)
    arch = _arch(mobilenet, (3, 2, 2), 5, 3)
    _warm_up(net, mobilenet, torch.randn(8, 3, 32, 32) * 3 + 1)
    bns = net.batchnorms(arch)
    # stem, first block (2), head, and 2 or 3 per active block.
    assert len(bns) == 1 + 2 + 1 + 3 * 7
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    block = net.blocks[0]
    assert isinstance(block, ElasticMBConv)
    bn = block.expand_bn
    seen: list[torch.Tensor] = []
    handle = bn.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    net.train()
    with torch.no_grad():
        net(torch.randn(8, 3, 32, 32), arch)
        net(torch.randn(8, 3, 32, 32) * 2 + 1, arch)
    handle.remove()
    mid = block.in_channels * 3
    assert [h.shape[1] for h in seen] == [mid, mid]
    assert int(bn.num_batches_tracked) == 2
    assert bn.running_mean is not None and bn.running_var is not None
    # With momentum=None the statistics average the batches', in the path's entries only.
    mean = torch.stack([h.mean(dim=(0, 2, 3)) for h in seen]).mean(0)
    torch.testing.assert_close(bn.running_mean[:mid], mean, atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(bn.running_mean[mid:]) == 0
    assert torch.equal(bn.running_var[mid:], torch.ones_like(bn.running_var[mid:]))
    _check_extract(net, mobilenet, [arch])


def test_sliced_batchnorm_matches_batchnorm() -> None:
    torch.manual_seed(0)
    sliced, plain = SlicedBatchNorm2d(12), nn.BatchNorm2d(5)
    with torch.no_grad():
        sliced.weight.normal_()
        plain.weight.copy_(sliced.weight[:5])
    x = torch.randn(4, 5, 3, 3)
    torch.testing.assert_close(sliced(x), plain(x))
    torch.testing.assert_close(sliced.running_mean[:5], plain.running_mean)
    sliced.eval(), plain.eval()
    torch.testing.assert_close(sliced(x), plain(x))
    with pytest.raises(ValueError, match="13 channels"):
        sliced(torch.randn(2, 13, 3, 3))


def test_mobilenet_deterministic(mobilenet: MobileNetSpace) -> None:
    a, b = _mobilenet_supernet(mobilenet, seed=3), _mobilenet_supernet(mobilenet, seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    arch = mobilenet.sample(np.random.default_rng(0))
    torch.manual_seed(5)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a(x, arch), b(x, arch))


def test_mobilenet_spos_training_reduces_loss() -> None:
    space = MobileNetSpace(resolution=16, widths=(16, 24), strides=(2, 2), head_width=32)
    net = _mobilenet_supernet(space, num_classes=4)
    torch.manual_seed(1)
    _spos_loss_drops(net, space, torch.randn(32, 3, 16, 16))
