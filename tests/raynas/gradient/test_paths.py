"""ProxylessNAS, PARSEC and FP-NAS on a small MobileNet supernet and the digits data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from raynas.evaluators.data import load_dataset
from raynas.gradient import options_from_mapping
from raynas.gradient.paths import (
    Distribution,
    SampledPathSearch,
    entropy_samples,
    latency_penalty,
    two_path_gradient,
)
from raynas.latency.lut import LatencyTable
from spaces import create_space
from spaces.mobilenet.supernet import ElasticMBConv


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def space():
    return create_space("mobilenet", resolution=8, stem_width=8, widths=(8, 16),
                        strides=(1, 2), depth_choices=(1, 2), kernel_choices=(3, 5),
                        expand_choices=(2, 3), head_width=16)


@pytest.fixture(scope="module")
def lut(space, tmp_path_factory) -> tuple[str, np.ndarray]:
    """A lookup table with made-up but structured entries (bigger blocks cost more)."""
    layout = space.latency_layout()
    entries = {}
    for key in layout.keys():
        parts = key.split("/")
        entries[key] = 0.5 if len(parts) == 1 else \
            float(parts[2][1:]) * float(parts[3][1:]) / 10 * (2 if parts[1] == "first" else 1)
    path = tmp_path_factory.mktemp("lut") / "lut.parquet"
    LatencyTable(space, entries, metadata={"device": "test"}).save(path)
    table = LatencyTable.load(path)
    lat = table.predict([space.sample(np.random.default_rng(i)) for i in range(500)])
    return str(path), np.asarray(lat)


def _search(space, digits, **options) -> SampledPathSearch:
    torch.set_num_threads(1)
    opts = options_from_mapping({"epochs": 2, "batch_size": 64, "device": "cpu", **options})
    return SampledPathSearch(space, opts, num_classes=digits.num_classes,
                             in_channels=digits.in_channels)


def test_two_path_gradient_raises_the_candidate_whose_gate_lowers_the_loss() -> None:
    logits = torch.tensor([0.0, 0.3, -0.2])
    # Opening candidate 2's gate lowers the loss (negative dL/dg); candidate 0's raises it.
    grad = two_path_gradient({0: 0.8, 2: -0.5}, logits)
    assert grad[2] < 0 < grad[0] and grad[1] == 0  # descent raises logit 2, lowers logit 0
    assert float(grad.sum()) == pytest.approx(0.0, abs=1e-7)
    # Equal gate gradients carry no preference.
    assert torch.allclose(two_path_gradient({0: 0.4, 1: 0.4}, logits), torch.zeros(3))


def test_latency_penalties() -> None:
    assert latency_penalty(12.0, 10.0, 2.0, "hinge") == pytest.approx(0.4)
    assert latency_penalty(8.0, 10.0, 2.0, "hinge") == 0.0
    assert latency_penalty(8.0, 10.0, 2.0, "absolute") == pytest.approx(0.4)
    assert latency_penalty(8.0, 10.0, 2.0, "linear") == pytest.approx(1.6)


def test_entropy_schedule_draws_fewer_samples_as_the_distribution_sharpens(space) -> None:
    dist = Distribution(space, torch.device("cpu"))
    counts = []
    for sharpness in (0.0, 1.0, 2.0, 4.0, 8.0):
        with torch.no_grad():
            for logits in dist.logits:
                logits.zero_()
                logits[0] = sharpness
        counts.append(entropy_samples(dist.entropy(), dist.full_entropy(), 2, 16))
    assert counts[0] == 16 and counts[-1] == 2
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False)) and len(set(counts)) > 2


def test_joint_distribution_starts_as_the_product_of_the_factors(space) -> None:
    dist = Distribution(space, torch.device("cpu"))
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for logits in dist.logits:
            logits.copy_(torch.as_tensor(rng.normal(size=logits.numel())))
    before = [p.detach().clone() for p in dist.probabilities()]
    vectors = np.stack([dist.sample(rng)[0] for _ in range(20)])
    logp = dist.log_prob(vectors)
    factorised = dist.num_parameters
    dist.joint(space.decision_groups())
    # 2 stages x 2 depths; 4 slots x (2 kernels + 2 expansions), then x (2 x 2) pairs.
    assert (factorised, dist.num_parameters) == (2 * 2 + 4 * (2 + 2), 2 * 2 + 4 * 2 * 2)
    for a, b in zip(before, dist.probabilities(), strict=True):
        assert torch.allclose(a, b.detach(), atol=1e-6)
    assert np.allclose(dist.log_prob(vectors), logp, atol=1e-6)
    # Every drawn architecture is a valid one and the mode is among the most probable.
    mode = dist.most_probable()
    assert dist.log_prob(mode[None])[0] >= dist.log_prob(vectors).max() - 1e-9
    space.decode(mode)


def test_binarised_paths_run_exactly_one_candidate_per_block(space, digits) -> None:
    search = _search(space, digits, method="proxyless")
    calls: dict[int, list[tuple[int, int]]] = {}
    hooks = [block.register_forward_pre_hook(
        lambda mod, args, i=i: calls.setdefault(i, []).append((args[1], args[2])))
        for i, block in enumerate(search.supernet.blocks) if isinstance(block, ElasticMBConv)]
    x = torch.as_tensor(digits.x_train[:32])
    y = torch.as_tensor(digits.y_train[:32])
    search._weight_step(x, y, 1)
    for h in hooks:
        h.remove()
    assert calls and all(len(v) == 1 for v in calls.values())  # one variant, once, per block
    active = {b for b, _ in calls.items()}
    used = {id(p) for p in search.supernet.parameters() if p.grad is not None}
    for b, block in enumerate(search.supernet.blocks):
        assert any(id(p) in used for p in block.parameters()) == (b in active)


@pytest.mark.parametrize("method", ["proxyless", "parsec", "fpnas"])
def test_each_method_searches_towards_a_latency_target(method, space, digits, lut) -> None:
    path, latencies = lut
    target = float(np.percentile(latencies, 40))
    search = _search(space, digits, method=method, epochs=3, a_lr=0.05, latency_table=path,
                     target_ms=target, latency_weight=5.0, samples_max=4, coarse_epochs=1)
    seen = []
    result = search.run(digits, report=seen.append)
    assert [r.epoch for r in seen] == [1, 2, 3] and seen[-1].derived_arch == result.arch
    table = LatencyTable.load(path)
    for record in seen:
        assert 0 <= record.supernet_val_acc <= 100 and record.param_free_fraction is None
        assert record.latency_ms == pytest.approx(float(table.predict([record.arch])[0]))
        assert record.expected_latency_ms is not None and record.expected_latency_ms > 0
        assert len(record.probabilities) == len(space.decisions)
        assert all(abs(sum(p) - 1) < 1e-5 for p in record.probabilities)
    # The derived architecture meets the target within the tolerance (10%).
    assert abs(seen[-1].latency_ms / target - 1) <= 0.1
    assert seen[-1].supernet_val_acc > 20  # 10 classes: chance is 10
    if method == "fpnas":  # coarse (factorised) for one epoch, then joint
        assert seen[0].arch_parameters == seen[1].arch_parameters == 20  # (equal here)
        assert search.dist.groups == space.decision_groups()
    if method == "proxyless":
        steps = -(-(len(digits.y_train) // 2) // 64)
        # One binarised path per weight step, two candidates per architecture step.
        assert seen[-1].samples == 3 * steps * 3 and seen[0].samples_per_step == 1.0


def test_a_learned_latency_model_drives_the_latency_term(space, digits, lut, tmp_path) -> None:
    from raynas.latency.predictor import LatencyMLP

    path, latencies = lut
    table = LatencyTable.load(path)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(300)]
    model = LatencyMLP(space, hidden=(32,), ensemble=1, seed=0, device="test")
    model.fit(archs, table.predict(archs), epochs=60)
    saved = str(model.save(tmp_path / "mlp.pt"))
    # At a one-hot distribution the relaxation is the model's prediction of that architecture.
    vector = space.encode(archs[0])
    hot = [torch.nn.functional.one_hot(torch.tensor(int(v)), d.size).float()
           for v, d in zip(vector, space.decisions, strict=True)]
    assert float(model.expected(hot)) == pytest.approx(float(model.predict([archs[0]])[0]),
                                                       rel=1e-5)
    soft = [torch.full((d.size,), 1.0 / d.size, requires_grad=True) for d in space.decisions]
    model.expected(soft).backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in soft)
    target = float(np.percentile(latencies, 40))
    search = _search(space, digits, method="proxyless", epochs=2, a_lr=0.05,
                     latency_model=saved, target_ms=target, latency_weight=5.0)
    last = search.run(digits).epochs[-1]
    assert last.latency_ms == pytest.approx(float(model.predict([last.arch])[0]))
    assert abs(last.latency_ms / target - 1) <= 0.1 and last.expected_latency_ms is not None


def test_fpnas_draws_fewer_samples_than_parsec_once_the_distribution_sharpens(
        space, digits) -> None:
    runs = {}
    for method in ("parsec", "fpnas"):
        search = _search(space, digits, method=method, epochs=3, a_lr=0.3, samples_max=8,
                         samples_min=1, coarse_epochs=3)
        runs[method] = search.run(digits).epochs
    assert [r.samples_per_step for r in runs["parsec"]] == [8.0, 8.0, 8.0]
    fp = [r.samples_per_step for r in runs["fpnas"]]
    assert fp[-1] < fp[0] <= 8.0 and runs["fpnas"][-1].samples < runs["parsec"][-1].samples
    assert runs["fpnas"][-1].alpha_entropy < runs["fpnas"][0].alpha_entropy


def test_options_and_spaces_are_checked(space, digits, tmp_path: Path, lut) -> None:
    with pytest.raises(ValueError, match="latency_table 'nope.parquet' is not a file"):
        options_from_mapping({"method": "proxyless", "latency_table": "nope.parquet"})
    with pytest.raises(ValueError, match="give latency_table or latency_model, not both"):
        options_from_mapping({"method": "fpnas", "latency_table": lut[0],
                              "latency_model": lut[0]})
    with pytest.raises(ValueError, match="latency_model .* must be a LatencyMLP file"):
        options_from_mapping({"method": "fpnas", "latency_model": lut[0]})
    with pytest.raises(ValueError, match="target_ms needs a latency_table"):
        options_from_mapping({"method": "fpnas", "target_ms": 3.0})
    with pytest.raises(ValueError, match="latency_loss must be one of"):
        options_from_mapping({"method": "fpnas", "latency_loss": "square"})
    with pytest.raises(ValueError, match="samples_min .* must be <= samples_max"):
        options_from_mapping({"method": "fpnas", "samples_min": 9, "samples_max": 4})
    with pytest.raises(ValueError, match="are for proxyless, parsec and fpnas"):
        options_from_mapping({"method": "darts", "latency_table": lut[0]})
    nb201 = create_space("nb201", channels=4, cells_per_stage=1, resolution=8)
    with pytest.raises(ValueError, match="proxyless needs them"):
        _search(nb201, digits, method="proxyless")
    other = create_space("mobilenet", resolution=8, stem_width=8, widths=(8, 16),
                         strides=(1, 2), head_width=16)
    with pytest.raises(ValueError, match="is for space"):
        _search(other, digits, method="fpnas", latency_table=lut[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_single_path_methods_run_on_cuda_in_one_paths_memory(space, digits, lut) -> None:
    path, latencies = lut
    peaks = {}
    for method, samples in (("proxyless", 1), ("parsec", 8), ("fpnas", 8)):
        search = _search(space, digits, method=method, device="cuda", latency_table=path,
                         target_ms=float(np.percentile(latencies, 40)), samples_max=samples,
                         samples_min=1)
        assert next(search.supernet.parameters()).is_cuda
        result = search.run(digits)
        space.validate(result.arch)
        assert result.peak_memory_mb is not None and result.peak_memory_mb > 0
        peaks[method] = result.peak_memory_mb
    # Eight sampled architectures a step, each trained and released in turn: the peak stays
    # that of one path (ProxylessNAS's and PARSEC's point), not eight.
    assert peaks["parsec"] < 1.5 * peaks["proxyless"]
    assert peaks["fpnas"] < 1.5 * peaks["proxyless"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_learned_latency_model_drives_a_cuda_search(space, digits, lut, tmp_path) -> None:
    from raynas.latency.predictor import LatencyMLP

    path, latencies = lut
    table = LatencyTable.load(path)
    archs = [space.sample(np.random.default_rng(i)) for i in range(200)]
    model = LatencyMLP(space, hidden=(32,), ensemble=1, seed=0, device="test")
    model.fit(archs, table.predict(archs), epochs=30)
    search = _search(space, digits, method="proxyless", epochs=1, device="cuda",
                     latency_model=str(model.save(tmp_path / "mlp.pt")),
                     target_ms=float(np.percentile(latencies, 40)))
    last = search.run(digits).epochs[-1]
    assert last.latency_ms is not None and last.expected_latency_ms is not None
