"""Zero-cost proxies: scores of an untrained network, computed at initialisation in milliseconds.

Definitions follow Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS" (ICLR 2021) and
NASLib's ``predictors/pruners/measures`` implementations, which NAS-Bench-Suite-Zero
(Krishnakumar et al., NeurIPS 2022 Datasets and Benchmarks) used, so the figures compare:

- ``synflow``: Tanaka et al., "Pruning neural networks without any data by iteratively
  conserving synaptic flow", NeurIPS 2020.
- ``snip``: Lee et al., "SNIP: Single-shot network pruning based on connection sensitivity",
  ICLR 2019.
- ``grasp``: Wang et al., "Picking winning tickets before training by preserving gradient
  flow", ICLR 2020.
- ``fisher``: Turner et al., "BlockSwap: Fisher-guided block substitution for network
  compression on a budget", ICLR 2020 (after Theis et al., "Faster gaze prediction with dense
  networks and Fisher pruning", 2018).
- ``grad_norm``: Abdelfattah et al., ICLR 2021.
- ``jacov``: Mellor et al., "Neural Architecture Search without Training", arXiv v1 2020
  (Jacobian covariance).
- ``naswot``: Mellor et al., "Neural Architecture Search without Training", ICML 2021
  (log-determinant of the kernel of binary ReLU codes).
- ``zen``: Lin et al., "Zen-NAS: A Zero-Shot NAS for High-Performance Image Recognition",
  ICCV 2021.
- ``gradsign``: Zhang & Jia, "GradSign: Model Performance Inference with Theoretical
  Insights", ICLR 2022.
- ``params`` and ``flops``: trainable parameters and multiply-accumulates of one image.

Every proxy is "higher is better". ``DATA_FREE`` proxies need no data (synflow feeds ones,
zen Gaussian noise); the others take a labelled batch.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DATA_FREE = frozenset({"synflow", "zen", "params", "flops"})
ProxyFn = Callable[..., float]

_WEIGHTED = (nn.Conv2d, nn.Linear)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# NASLib codes every module whose type name holds "ReLU"; Hardswish (the MobileNet space) is
# coded the same way, by the sign of its input.
_CODED_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish)
_ZEN_BATCH = 64


def _layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, _WEIGHTED)]


def _sum_layers(net: nn.Module, metric: Callable[[nn.Module], torch.Tensor | None]) -> float:
    total = 0.0
    for layer in _layers(net):
        value = metric(layer)
        if value is not None:
            total += float(value.detach().double().sum())
    return total


def _ce(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(net(x), y)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


# ------------------------------------------------------------------- data-free
def synflow(net: nn.Module, *, input_shape: Sequence[int], device: torch.device, **_: Any) -> float:
    """Sum over conv/linear weights of |w * dR/dw|, R the summed output of the |w| network.

    As NASLib: batch norm is skipped, every parameter and buffer made positive, and one
    all-ones input passed in float64 (products along deep paths can overflow float32).
    """
    for m in net.modules():
        if isinstance(m, _BATCHNORMS):
            m.forward = _identity  # type: ignore[method-assign]
    net.double()
    with torch.no_grad():
        for value in net.state_dict().values():
            if value.is_floating_point():
                value.abs_()
    net.zero_grad()
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    torch.sum(net(ones)).backward()
    return _sum_layers(net, lambda m: None if m.weight.grad is None
                       else (m.weight * m.weight.grad).abs())


def _gaussian_init(net: nn.Module) -> None:
    """N(0, 1) conv/linear weights, zero biases, unit batch-norm affine (Zen-NAS's init).

    Draws on the CPU and copies, so a seed gives the same weights on every device.
    """
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, _WEIGHTED):
                m.weight.copy_(torch.randn(m.weight.shape, dtype=m.weight.dtype))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (*_BATCHNORMS, nn.GroupNorm)) and m.weight is not None:
                m.weight.fill_(1.0)
                m.bias.zero_()


def features_before_pooling(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The network's feature map before global pooling.

    ``net.forward_features(x)`` when the network has it, else the input of its last
    ``nn.AdaptiveAvgPool2d`` during ``net(x)`` (NASLib's hook); a ValueError if neither.
    """
    forward = getattr(net, "forward_features", None)
    if callable(forward):
        return forward(x)  # type: ignore[no-any-return]
    pools = [m for m in net.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if not pools:
        raise ValueError(f"{type(net).__name__} has neither forward_features(x) nor a global "
                         "AdaptiveAvgPool2d: zen cannot find its features")
    seen: list[torch.Tensor] = []
    handle = pools[-1].register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    try:
        net(x)
    finally:
        handle.remove()
    return seen[-1]


def zen(net: nn.Module, *, input_shape: Sequence[int], device: torch.device,
        batch_size: int | None = None, mixup_gamma: float = 1e-2, **_: Any) -> float:
    """log E_n ||f(x) - f(x + g e)||_1 + sum over BN layers of log sqrt(mean running var).

    f is the feature map before global pooling of the Gaussian-initialised network in train
    mode; x, e are N(0, 1) batches, g = ``mixup_gamma``. Both forward passes update the
    running variances the correction reads, as in NASLib's ``compute_zen_score``.
    """
    _gaussian_init(net)
    net.train()
    shape = (batch_size or _ZEN_BATCH, *input_shape)
    x = torch.randn(shape).to(device)
    e = torch.randn(shape).to(device)
    with torch.no_grad():
        out = features_before_pooling(net, x)
        mixed = features_before_pooling(net, x + mixup_gamma * e)
        score = torch.abs(out - mixed).sum(dim=tuple(range(1, out.dim()))).mean()
        log_bn = 0.0
        for m in net.modules():
            # BN layers without running statistics carry no scale to correct for.
            if isinstance(m, nn.BatchNorm2d) and m.running_var is not None:
                log_bn += float(torch.log(torch.sqrt(torch.mean(m.running_var))))
        return float(torch.log(score)) + log_bn


def params(net: nn.Module, **_: Any) -> float:
    """Number of trainable parameters."""
    return float(sum(p.numel() for p in net.parameters() if p.requires_grad))


def flops(net: nn.Module, *, input_shape: Sequence[int], device: torch.device, **_: Any) -> float:
    """Multiply-accumulates of the convolutions and linear layers for one input image."""
    total = [0]

    def count(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total[0] += output.numel() * (module.in_channels // module.groups) * k
        else:
            total[0] += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in _layers(net)]
    try:
        with torch.no_grad():
            net.eval()(torch.zeros((1, *input_shape), device=device))
    finally:
        for h in hooks:
            h.remove()
    return float(total[0])


# ------------------------------------------------------------------- data-dependent
def grad_norm(net: nn.Module, *, inputs: torch.Tensor, targets: torch.Tensor, **_: Any) -> float:
    """Sum over conv/linear layers of the L2 norm of the loss gradient of the layer's weight."""
    net.train().zero_grad()
    _ce(net, inputs, targets).backward()
    return _sum_layers(net, lambda m: None if m.weight.grad is None else m.weight.grad.norm())


def snip(net: nn.Module, *, inputs: torch.Tensor, targets: torch.Tensor, **_: Any) -> float:
    """Connection sensitivity: sum over conv/linear weights of |w * dL/dw|."""
    net.train().zero_grad()
    _ce(net, inputs, targets).backward()
    return _sum_layers(net, lambda m: None if m.weight.grad is None
                       else (m.weight * m.weight.grad).abs())


def grasp(net: nn.Module, *, inputs: torch.Tensor, targets: torch.Tensor, **_: Any) -> float:
    """Gradient-flow preservation: sum over conv/linear weights of -w * (H g).

    g is the loss gradient, H the loss Hessian; Hg is the gradient of g.detach() . dL/dw
    from a second forward pass, as in NASLib.
    """
    net.train().zero_grad()
    weights = [m.weight for m in _layers(net)]
    first = torch.autograd.grad(_ce(net, inputs, targets), weights, allow_unused=True)
    again = torch.autograd.grad(_ce(net, inputs, targets), weights, create_graph=True,
                                allow_unused=True)
    terms = [(g0.detach() * g).sum() for g0, g in zip(first, again)
             if g0 is not None and g is not None]
    if not terms:
        return 0.0
    hg = torch.autograd.grad(torch.stack(terms).sum(), weights, allow_unused=True)
    return float(sum(float((-w.detach() * h).double().sum()) for w, h in zip(weights, hg)
                     if h is not None))


def fisher(net: nn.Module, *, inputs: torch.Tensor, targets: torch.Tensor, **_: Any) -> float:
    """Fisher channel saliency of every conv/linear output, summed over its weights.

    Channel k of a layer: 0.5 * mean_n (sum_hw a * dL/da)^2 with a the layer's output
    (before batch norm); NASLib spreads it to each of the channel's weights, so a layer adds
    its channel saliencies times ``weight[0].numel()``.
    """
    total = [0.0]

    def keep(module: nn.Module, inp: Any, out: torch.Tensor) -> None:
        per_weight = module.weight[0].numel()
        act = out.detach()  # the hook must not hold ``out``: that cycle would leak the graph

        def saliency(grad: torch.Tensor) -> None:
            g = (act * grad).double()
            g_nk = g.sum(dim=tuple(range(2, g.dim()))) if g.dim() > 2 else g
            total[0] += float(g_nk.pow(2).mean(0).mul(0.5).sum()) * per_weight

        if out.requires_grad:
            out.register_hook(saliency)

    hooks = [m.register_forward_hook(keep) for m in _layers(net)]
    try:
        net.train().zero_grad()
        _ce(net, inputs, targets).backward()
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def jacov(net: nn.Module, *, inputs: torch.Tensor, **_: Any) -> float:
    """Jacobian covariance: -sum(log(v + k) + 1/(v + k)), k = 1e-5.

    v are the eigenvalues of the correlation matrix, over the batch, of the gradients of each
    input's summed outputs with respect to that input.
    """
    net.train().zero_grad()
    x = inputs.clone().requires_grad_(True)
    out = net(x)
    out.backward(torch.ones_like(out))
    assert x.grad is not None
    jac = x.grad.reshape(x.shape[0], -1).double().cpu().numpy()
    with np.errstate(all="ignore"):
        corr = np.corrcoef(jac)
    if not np.all(np.isfinite(corr)):
        return math.nan  # an input whose gradient is constant (e.g. a disconnected cell)
    v = np.linalg.eigvalsh(corr)
    k = 1e-5
    return float(-np.sum(np.log(v + k) + 1.0 / (v + k)))


def naswot(net: nn.Module, *, inputs: torch.Tensor, **_: Any) -> float:
    """log|K_H|, K_H[i, j] the number of ReLUs on which inputs i and j agree (on or off).

    Every ReLU-like activation adds its binary code c of the batch: K += c c^T + (1-c)(1-c)^T.
    """
    n = inputs.shape[0]
    kernel = torch.zeros((n, n), dtype=torch.float64, device=inputs.device)

    def code(module: nn.Module, inp: Any) -> None:
        c = (inp[0].detach().reshape(n, -1) > 0).double()
        kernel.add_(c @ c.t() + (1.0 - c) @ (1.0 - c).t())

    # A pre-hook reads the input before an in-place activation overwrites it.
    hooks = [m.register_forward_pre_hook(code) for m in net.modules()
             if isinstance(m, _CODED_ACTIVATIONS)]
    if not hooks:
        raise ValueError(f"{type(net).__name__} has no ReLU-like activation for naswot")
    try:
        net.train()
        with torch.no_grad():
            net(inputs)
    finally:
        for h in hooks:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) != 0.0 else math.nan


def gradsign(net: nn.Module, *, inputs: torch.Tensor, targets: torch.Tensor, **_: Any) -> float:
    """Sum over conv/linear weights of |sum_n sign(dL_n/dw)|, one backward pass per example."""
    net.train()
    layers = _layers(net)
    signs: torch.Tensor | None = None
    for i in range(inputs.shape[0]):
        net.zero_grad()
        _ce(net, inputs[i:i + 1], targets[i:i + 1]).backward()
        flat = torch.cat([torch.zeros(m.weight.numel(), device=inputs.device)
                          if m.weight.grad is None else m.weight.grad.reshape(-1)
                          for m in layers])
        s = torch.sign(flat).double()
        signs = s if signs is None else signs + s
    return 0.0 if signs is None else float(signs.abs().sum())


PROXIES: dict[str, ProxyFn] = {
    "synflow": synflow, "naswot": naswot, "jacov": jacov, "snip": snip,
    "grad_norm": grad_norm, "fisher": fisher, "grasp": grasp, "zen": zen,
    "gradsign": gradsign, "params": params, "flops": flops,
}


def check_proxy_names(names: Sequence[str] | str) -> list[str]:
    """The proxy names as a list (a string is split on commas), or a one-line ValueError."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names)
    if not names:
        raise ValueError(f"proxies: none named; known: {', '.join(PROXIES)}")
    for name in names:
        if name not in PROXIES:
            raise ValueError(f"unknown proxy {str(name)[:40]!r}; known: {', '.join(PROXIES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"proxies: a name is listed twice in {str(names)[:80]}")
    return names


@contextlib.contextmanager
def _exact_cuda(device: torch.device) -> Iterator[None]:
    """Full float32 precision and deterministic kernels on CUDA (TF32 would move the scores)."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) = saved


def compute_proxies(
    build: Callable[[], nn.Module],
    names: Sequence[str],
    *,
    inputs: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    input_shape: tuple[int, ...] = (3, 32, 32),
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Each named proxy of a freshly built, seeded network: (values, milliseconds) by name.

    Every proxy gets its own network, ``build()`` under ``torch.manual_seed(seed)`` and moved
    to ``device`` (synflow and zen rewrite weights). Data-dependent proxies read the labelled
    batch ``inputs``/``targets``; data-free ones shape their input by ``input_shape`` (zen draws
    ``batch_size`` Gaussian images, default ``len(inputs)`` or 64). A non-finite score is NaN.
    """
    names = check_proxy_names(names)
    dev = torch.device(device)
    need_data = [n for n in names if n not in DATA_FREE]
    if need_data and (inputs is None or targets is None):
        raise ValueError(f"proxy {need_data[0]!r} needs a labelled batch (inputs, targets)")
    if inputs is not None:
        inputs = inputs.to(dev)
        targets = None if targets is None else targets.to(dev)
    if batch_size is None:
        batch_size = _ZEN_BATCH if inputs is None else int(inputs.shape[0])
    values: dict[str, float] = {}
    millis: dict[str, float] = {}
    with _exact_cuda(dev):
        for name in names:
            torch.manual_seed(seed)
            net = build().to(dev)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            try:
                value = PROXIES[name](net, inputs=inputs, targets=targets,
                                      input_shape=tuple(input_shape), device=dev,
                                      batch_size=batch_size)
            except (np.linalg.LinAlgError, torch.linalg.LinAlgError, FloatingPointError):
                value = math.nan  # a degenerate network: the proxy says nothing of it
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            millis[name] = (time.perf_counter() - start) * 1000.0
            values[name] = float(value) if math.isfinite(value) else math.nan
    return values, millis
