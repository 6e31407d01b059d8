"""Gradient search methods on small networks and the digits data: each rule and term."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from raynas.evaluators.data import load_dataset
from raynas.gradient import METHODS, GradientOptions, GradientSearch, options_from_mapping
from raynas.gradient.search import dominant_eigenvalue, hessian_stop
from spaces import create_space


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.fixture
def space():
    return create_space("nb201", channels=4, cells_per_stage=1, resolution=8)


def _search(space, digits, **options) -> GradientSearch:
    torch.set_num_threads(1)
    opts = options_from_mapping({"epochs": 2, "batch_size": 128, **options})
    return GradientSearch(space, opts, num_classes=digits.num_classes,
                          in_channels=digits.in_channels)


@pytest.mark.parametrize("method", sorted(m for m, spec in METHODS.items()
                                          if spec.sampling is None))
def test_every_method_searches_and_records_each_epoch(method, space, digits) -> None:
    search = _search(space, digits, method=method, hessian_window=1, hessian_lag=1,
                     hessian_iterations=3, stable_epochs=5, max_skip=7)
    seen = []
    result = search.run(digits, report=seen.append)
    assert [r.epoch for r in result.epochs] == [1, 2] == [r.epoch for r in seen]
    last = seen[-1]
    assert last.derived_arch == result.arch and space.validate(result.arch)
    assert last.chosen_epoch == result.chosen_epoch and last.search_s > 0
    for record in result.epochs:
        assert 0.0 <= record.supernet_val_acc <= 100.0
        assert record.param_free_fraction == space.parameter_free_fraction(record.arch)
        assert 0.0 < record.alpha_entropy <= np.log(5) + 1e-6
        assert np.array(record.alpha).shape == (6, 5) and np.isfinite(record.alpha).all()
    assert (last.tau is not None) == (method == "gdas")
    assert (last.aux_skip is not None) == (method == "dartsminus")
    assert (last.eigenvalue is not None) == (method == "darts_es")
    assert (last.eval_val_acc is not None) == (method == "cdarts")
    assert result.peak_memory_mb is None  # CPU


def test_darts_learns_on_digits(space, digits) -> None:
    result = _search(space, digits, method="darts", epochs=4, a_lr=3e-3).run(digits)
    assert result.epochs[-1].supernet_val_acc > 40.0  # 10 classes: chance is 10
    assert result.epochs[-1].alpha_entropy < result.epochs[0].alpha_entropy < np.log(5)


def test_gdas_temperature_and_dartsminus_skip_weight_decay(space, digits) -> None:
    gdas = _search(space, digits, method="gdas", epochs=3, tau_max=10, tau_min=1).run(digits)
    assert [r.tau for r in gdas.epochs] == pytest.approx([10.0, 5.5, 1.0])
    minus = _search(space, digits, method="dartsminus", epochs=4).run(digits)
    assert [r.aux_skip for r in minus.epochs] == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_dartsplus_stops_when_the_architecture_holds(space, digits) -> None:
    # alpha barely moves at this learning rate: the derived cell holds from epoch 1 on
    search = _search(space, digits, method="dartsplus", epochs=6, stable_epochs=2,
                     max_skip=7, a_lr=1e-5)
    with torch.no_grad():  # a margin the small learning rate cannot close
        search.net.alpha[:, 3] = 1.0
    result = search.run(digits)
    assert result.stopped_at == 3 and len(result.epochs) == 3 and result.chosen_epoch == 3


def test_dartsplus_stops_at_too_many_skip_connections(space, digits) -> None:
    search = _search(space, digits, method="dartsplus", epochs=4, max_skip=2, a_lr=1e-9)
    with torch.no_grad():  # the derived cell starts with three skip connections
        search.net.alpha[:3, 1] = 1.0
    result = search.run(digits)
    assert result.stopped_at == 1 and space.skip_connections(result.arch) >= 2


def test_fairdarts_zero_one_loss_pushes_sigmoids_apart(space, digits) -> None:
    def spread(weight: float) -> float:
        search = _search(space, digits, method="fairdarts", epochs=1, a_lr=0.05,
                         zero_one_weight=weight)
        search.run(digits)
        return float((torch.sigmoid(search.net.alpha.detach()) - 0.5).abs().mean())

    assert spread(100.0) > 1.3 * spread(0.0)


def test_zero_one_loss_gradient_pushes_each_weight_towards_0_or_1(space, digits) -> None:
    search = _search(space, digits, method="fairdarts")
    with torch.no_grad():
        search.net.alpha.copy_(torch.linspace(-2, 2, 30).view(6, 5))
    logits = torch.zeros(4, 10)  # cross-entropy of constant logits has no alpha gradient
    loss = search._arch_objective(logits, torch.zeros(4, dtype=torch.long), torch.zeros(1))
    (grad,) = torch.autograd.grad(loss, search.net.alpha)
    alpha = search.net.alpha.detach()
    # descent moves positive alpha up (sigmoid towards 1) and negative alpha down (towards 0)
    assert bool((grad[alpha > 0] < 0).all()) and bool((grad[alpha < 0] > 0).all())


def test_cdarts_evaluation_network_is_deeper_and_shares_alpha(space, digits) -> None:
    search = _search(space, digits, method="cdarts", eval_cells=2)
    assert search.eval_net is not None and search.eval_net.alpha is search.net.alpha
    assert len(search.eval_net.cells) == len(search.net.cells) + 3  # one more cell per stage
    result = search.run(digits)
    assert all(r.eval_val_acc is not None for r in result.epochs)


def _smooth(module: torch.nn.Module) -> None:
    """ReLU -> Softplus everywhere: finite differences of gradients need a smooth network."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.ReLU):
            setattr(module, name, torch.nn.Softplus(beta=4.0))
        else:
            _smooth(child)


def test_second_order_gradient_matches_the_exact_unrolled_gradient(space, digits) -> None:
    # DARTS's finite-difference Hessian-vector product against autograd through the virtual
    # step, in float64 on a smooth network (a ReLU's kinks make gradients jump, so the
    # difference quotient of gradients has no limit there).
    torch.manual_seed(0)
    search = _search(space, digits, method="darts2", w_momentum=0.0, a_weight_decay=0.0)
    net = search.net.double()
    _smooth(net)
    x = torch.as_tensor(digits.x_train[:32]).double()
    y = torch.as_tensor(digits.y_train[:32])
    xv = torch.as_tensor(digits.x_train[32:64]).double()
    yv = torch.as_tensor(digits.y_train[32:64])
    names = [n for n, p in net.named_parameters() if n != "_alpha"]
    params = dict(net.named_parameters())
    weights = [params[n] for n in names]
    xi, wd = search.w_opt.param_groups[0]["lr"], search.options.w_weight_decay
    grads = torch.autograd.grad(F.cross_entropy(net(x), y), weights, create_graph=True)
    virtual = {n: w - xi * (g + wd * w) for n, w, g in zip(names, weights, grads, strict=True)}
    val = F.cross_entropy(functional_call(net, virtual, (xv,)), yv)
    (exact,) = torch.autograd.grad(val, net.alpha)
    first = _first_order(search, xv, yv)
    search._arch_step(x, y, xv, yv)
    approx = net.alpha.grad
    assert approx is not None
    cosine = F.cosine_similarity(exact.flatten(), approx.flatten(), dim=0)
    assert float(cosine) > 0.999
    direct = F.cosine_similarity(exact.flatten(), first.flatten(), dim=0)
    assert float(direct) < float(cosine)  # the second-order term is not negligible here


def _first_order(search: GradientSearch, xv: torch.Tensor, yv: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(F.cross_entropy(search.net(xv), yv), search.net.alpha)
    return grad


def test_power_iteration_finds_the_largest_eigenvalue() -> None:
    h = torch.diag(torch.tensor([3.0, -1.0, 0.5, 7.0]))
    a = torch.zeros(2, 2, requires_grad=True)

    def loss() -> torch.Tensor:
        v = a.flatten()
        return 0.5 * v @ h @ v

    assert dominant_eigenvalue(loss, a, iterations=100, seed=0) == pytest.approx(7.0, rel=1e-4)


def test_hessian_stop_rule() -> None:
    flat = [1.0] * 10
    assert not hessian_stop(flat, window=2, lag=2, ratio=0.75)
    rising = [1.0, 1.0, 1.0, 1.0, 2.0, 2.0]  # mean 1 two epochs ago, mean 2 now: ratio 0.5
    assert hessian_stop(rising, window=2, lag=2, ratio=0.75)
    assert not hessian_stop(rising[:3], window=2, lag=2, ratio=0.75)  # too few epochs


@pytest.mark.parametrize(("options", "message"), [
    ({"method": "enas"}, "method 'enas' is unknown; known: darts"),
    ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
    ({"w_lr": -1}, "w_lr must be > 0, got -1"),
    ({"a_beta1": 1.5}, r"a_beta1 must be in \(0, 1\), got 1.5"),
    ({"tau_min": 20}, r"tau_min \(20\) must be <= tau_max \(10.0\)"),
    ({"warmup_epochs": 50}, r"warmup_epochs \(50\) must be < epochs \(50\)"),
    ({"lr": 0.1}, "unknown option 'lr'; known: a_beta1"),
    ({"device": "tpu"}, "device must be auto, cpu or cuda"),
])
def test_bad_options_are_one_line_naming_the_key(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        options_from_mapping(options)


def test_a_space_without_a_differentiable_supernet_is_refused(digits) -> None:
    with pytest.raises(ValueError, match="space 'mobilenet' has no differentiable supernet"):
        GradientSearch(create_space("mobilenet"), GradientOptions(), num_classes=10,
                       in_channels=1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_short_search_runs_on_cuda(space, digits) -> None:
    search = _search(space, digits, method="gdas", device="cuda")
    assert next(search.net.parameters()).is_cuda
    result = search.run(digits)
    assert result.peak_memory_mb is not None and result.peak_memory_mb > 0
    assert space.validate(result.arch)
