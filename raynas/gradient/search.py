"""One gradient-based architecture search: bi-level training of weights and alpha, per epoch.

Weights learn on the first half of the training split, alpha on the second (DARTS's
bi-level optimisation, Liu et al. 2019); after each epoch the search records the supernet's
accuracy on the validation split, the derived architecture, its fraction of parameter-free
operations and alpha's entropy, and applies the method's stopping rule if it has one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from raynas.evaluators.data import DatasetSplits, batches
from raynas.gradient.methods import GradientOptions, check_options
from spaces import SearchSpace

logger = logging.getLogger(__name__)


@dataclass
class EpochRecord:
    """What one epoch of a gradient search measured."""

    epoch: int  # 1-based
    arch: str  # the derived architecture after this epoch
    supernet_val_acc: float  # percent, on the data's validation split
    param_free_fraction: float | None  # None where the space has no parameter-free choices
    alpha_entropy: float  # nats, mean over edges
    train_loss: float
    arch_loss: float  # the architecture objective on the second half (NaN before alpha moves)
    seconds: float
    alpha: list[list[float]]  # per edge, per operation
    probabilities: list[list[float]]  # alpha under the method's relaxation, normalised per edge
    tau: float | None = None  # GDAS's temperature this epoch
    aux_skip: float | None = None  # DARTS-'s auxiliary skip weight this epoch
    eigenvalue: float | None = None  # DARTS-ES: dominant Hessian eigenvalue w.r.t. alpha
    eval_val_acc: float | None = None  # CDARTS: the evaluation network's accuracy
    expected_latency_ms: float | None = None  # single-path methods with a latency table
    latency_ms: float | None = None  # the derived architecture's lookup-table latency
    samples: int | None = None  # architectures drawn so far (single-path methods)
    samples_per_step: float | None = None  # their mean number per step this epoch
    arch_parameters: int | None = None  # the distribution's parameters
    # Set on the search's last epoch only: its answer and the epoch that answer is from.
    derived_arch: str | None = None
    chosen_epoch: int | None = None
    search_s: float | None = None

    def metrics(self) -> dict[str, float]:
        """The numeric fields, as Tune and MLflow metrics."""
        out = {k: float(v) for k, v in asdict(self).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None}
        return out


@dataclass
class GradientResult:
    """A finished gradient search: the chosen architecture and every epoch's record."""

    arch: str
    epochs: list[EpochRecord] = field(default_factory=list)
    stopped_at: int | None = None  # the epoch a stopping rule ended the search at
    chosen_epoch: int = 0  # the epoch whose derived architecture is the result
    seconds: float = 0.0
    peak_memory_mb: float | None = None  # CUDA only


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when this process sees a GPU, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def dominant_eigenvalue(loss_fn: Callable[[], torch.Tensor], alpha: torch.Tensor, *,
                        iterations: int, seed: int) -> float:
    """Largest-magnitude eigenvalue of the Hessian of ``loss_fn()`` w.r.t. ``alpha``.

    Power iteration on Hessian-vector products (double backward), as Zela et al. (2020)
    track for DARTS-ES.
    """
    loss = loss_fn()
    (grad,) = torch.autograd.grad(loss, alpha, create_graph=True)
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(alpha.shape, generator=gen).to(alpha.device)
    v = v / v.norm()
    value = 0.0
    for _ in range(iterations):
        (hv,) = torch.autograd.grad(grad, alpha, grad_outputs=v, retain_graph=True)
        value = float((hv * v).sum())
        norm = hv.norm()
        if float(norm) == 0.0:
            return 0.0
        v = (hv / norm).detach()
    return value


def hessian_stop(values: Sequence[float], window: int, lag: int, ratio: float) -> bool:
    """DARTS-ES: the mean eigenvalue of ``lag`` epochs ago over the current one fell below."""
    if len(values) < window + lag:
        return False
    current = float(np.mean(values[-window:]))
    earlier = float(np.mean(values[-window - lag:-lag]))
    return current > 0 and earlier / current < ratio


class GradientSearch:
    """Run one method (``options.method``) on ``space``'s differentiable supernet."""

    def __init__(self, space: SearchSpace, options: GradientOptions, *,
                 num_classes: int, in_channels: int) -> None:
        if not space.provides("build_differentiable"):
            raise ValueError(f"space {space.name!r} has no differentiable supernet; "
                             "gradient search needs one (e.g. nb201)")
        self.space = space
        self.options = check_options(options)
        self.spec = options.spec
        self.device = resolve_device(options.device)
        torch.manual_seed(options.seed)
        self.net = space.build_differentiable(
            num_classes=num_classes, in_channels=in_channels, channels=options.channels,
            cells_per_stage=options.cells_per_stage, partial_channels=options.partial,
        ).to(self.device)
        self.eval_net: nn.Module | None = None
        if self.spec.cyclic:
            depth = options.eval_cells or 2 * self.net.cells_per_stage
            self.eval_net = space.build_differentiable(
                num_classes=num_classes, in_channels=in_channels, channels=options.channels,
                cells_per_stage=depth, alpha=self.net.alpha,
            ).to(self.device)
        arch_ids = {id(p) for p in self.net.arch_parameters()}
        # Names and tensors of the weights, in one order (the unrolled step overrides them).
        self.w_named = [(n, p) for n, p in self.net.named_parameters() if id(p) not in arch_ids]
        self.w_params = [p for _, p in self.w_named]
        self.w_opt = torch.optim.SGD(self.w_params, lr=options.w_lr,
                                     momentum=options.w_momentum,
                                     weight_decay=options.w_weight_decay)
        self.e_params = [] if self.eval_net is None else self.eval_net.weight_parameters()
        self.e_opt = None if self.eval_net is None else torch.optim.SGD(
            self.e_params, lr=options.w_lr, momentum=options.w_momentum,
            weight_decay=options.w_weight_decay)
        self.a_opt = torch.optim.Adam(self.net.arch_parameters(), lr=options.a_lr,
                                      betas=(options.a_beta1, options.a_beta2),
                                      weight_decay=options.a_weight_decay)
        self.gumbel = torch.Generator().manual_seed(options.seed + 1)
        self.tau = options.tau_max
        self.aux = 0.0

    # ------------------------------------------------------------------ pieces of a step
    def _logits(self, x: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        net = self.net if net is None else net
        return net(x, self.spec.relaxation, tau=self.tau, aux_skip=self.aux,
                    generator=self.gumbel)

    def _arch_objective(self, logits: torch.Tensor, y: torch.Tensor,
                        x: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, y)
        if self.spec.zero_one:  # FairDARTS: push every sigmoid towards 0 or 1
            loss = loss - self.options.zero_one_weight * (
                (torch.sigmoid(self.net.alpha) - 0.5) ** 2).mean()
        if self.eval_net is not None:  # CDARTS: the search network mimics the evaluation one
            loss = loss + self._distill(logits, self._eval_logits(x).detach())
        return loss

    def _eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        assert self.eval_net is not None
        return self.eval_net(x, "derived")

    def _distill(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        t = self.options.distill_temperature
        kl = F.kl_div(F.log_softmax(student / t, dim=-1), F.softmax(teacher / t, dim=-1),
                      reduction="batchmean")
        return self.options.distill_weight * t * t * kl

    def _weight_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.w_opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self._logits(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(self.w_params, self.options.grad_clip)
        self.w_opt.step()
        if self.eval_net is not None and self.e_opt is not None:
            # CDARTS: the evaluation network trains on the current derived architecture,
            # distilling from the search network (the cycle's other direction).
            self.e_opt.zero_grad(set_to_none=True)
            logits = self._eval_logits(x)
            with torch.no_grad():
                teacher = self._logits(x)
            e_loss = F.cross_entropy(logits, y) + self._distill(logits, teacher)
            e_loss.backward()
            nn.utils.clip_grad_norm_(self.e_params, self.options.grad_clip)
            self.e_opt.step()
        return loss.item()

    def _arch_step(self, xt: torch.Tensor, yt: torch.Tensor, xv: torch.Tensor,
                   yv: torch.Tensor) -> float:
        self.a_opt.zero_grad(set_to_none=True)
        if self.spec.order == 2:
            return self._unrolled_step(xt, yt, xv, yv)
        loss = self._arch_objective(self._logits(xv), yv, xv)
        loss.backward()
        self.a_opt.step()
        return loss.item()

    def _unrolled_step(self, xt: torch.Tensor, yt: torch.Tensor, xv: torch.Tensor,
                       yv: torch.Tensor) -> float:
        """DARTS's second-order architecture gradient (Liu et al. 2019, eq. 7 and 8).

        The validation loss at one virtual SGD step w' = w - xi * grad_w L_train (with the
        optimizer's momentum and weight decay), minus xi times the Hessian-vector product,
        approximated by finite differences at w +- eps * grad_w' L_val.
        """
        net = self.net
        names = [n for n, _ in self.w_named]
        weights = self.w_params
        arch = net.arch_parameters()
        xi = self.w_opt.param_groups[0]["lr"]
        wd, momentum = self.options.w_weight_decay, self.options.w_momentum
        train_loss = F.cross_entropy(self._logits(xt), yt)
        grads = torch.autograd.grad(train_loss, weights, allow_unused=True)
        virtual = {}
        for name, w, g in zip(names, weights, grads, strict=True):
            g = torch.zeros_like(w) if g is None else g
            buf = self.w_opt.state.get(w, {}).get("momentum_buffer")
            step = g + wd * w if buf is None else momentum * buf + g + wd * w
            virtual[name] = (w - xi * step).detach().requires_grad_(True)
        logits = functional_call(net, virtual, (xv, self.spec.relaxation),
                                 {"tau": self.tau, "aux_skip": self.aux,
                                  "generator": self.gumbel})
        val_loss = self._arch_objective(logits, yv, xv)
        outs = torch.autograd.grad(val_loss, arch + list(virtual.values()), allow_unused=True)
        d_arch, d_w = outs[: len(arch)], outs[len(arch):]
        d_w = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, d_w, strict=True)]
        norm = torch.sqrt(sum((g * g).sum() for g in d_w))
        eps = 0.01 / max(float(norm), 1e-12)

        def arch_grad_at(sign: float) -> tuple[torch.Tensor | None, ...]:
            with torch.no_grad():
                for w, g in zip(weights, d_w, strict=True):
                    w.add_(sign * eps * g)
            loss = F.cross_entropy(self._logits(xt), yt)
            return torch.autograd.grad(loss, arch, allow_unused=True)

        plus = arch_grad_at(1.0)
        minus = arch_grad_at(-2.0)
        with torch.no_grad():
            for w, g in zip(weights, d_w, strict=True):
                w.add_(eps * g)  # back to w
        for p, d, gp, gm in zip(arch, d_arch, plus, minus, strict=True):
            grad = torch.zeros_like(p) if d is None else d.clone()
            if gp is not None and gm is not None:
                grad -= xi * (gp - gm) / (2 * eps)
            p.grad = grad
        self.a_opt.step()
        return val_loss.item()

    @torch.no_grad()
    def _accuracy(self, x: np.ndarray, y: np.ndarray, net: nn.Module | None = None,
                  relaxation: str | None = None) -> float:
        net = self.net if net is None else net
        relaxation = relaxation or ("derived" if self.spec.relaxation == "gumbel"
                                    else self.spec.relaxation)
        was = net.training
        net.eval()
        correct = 0
        for xb, yb in batches(x, y, 256):
            logits = net(xb.to(self.device), relaxation, aux_skip=self.aux)
            correct += int((logits.argmax(dim=1).cpu() == yb).sum())
        net.train(was)
        return 100.0 * correct / max(len(y), 1)

    def _eigenvalue(self, x: np.ndarray, y: np.ndarray, epoch: int) -> float:
        # In eval mode: batch norm uses its running statistics and leaves them unchanged.
        was = self.net.training
        self.net.eval()
        try:
            return self._eigenvalue_of(x, y, epoch)
        finally:
            self.net.train(was)

    def _eigenvalue_of(self, x: np.ndarray, y: np.ndarray, epoch: int) -> float:
        alpha = self.net.alpha
        parts = list(batches(x, y, self.options.batch_size))[: self.options.hessian_batches]

        def loss() -> torch.Tensor:
            total = sum(F.cross_entropy(self.net(xb.to(self.device), "softmax",
                                                 aux_skip=self.aux), yb.to(self.device))
                        for xb, yb in parts)
            return total / len(parts)

        return dominant_eigenvalue(loss, alpha, iterations=self.options.hessian_iterations,
                                   seed=self.options.seed + epoch)

    # ------------------------------------------------------------------ the search
    def run(self, data: DatasetSplits,
            report: Callable[[EpochRecord], bool | None] | None = None) -> GradientResult:
        """Search for ``options.epochs`` epochs (less if a stopping rule or ``report`` stops it).

        ``report`` is called after each epoch; returning True ends the search there.
        """
        o = self.options
        half = len(data.y_train) // 2
        if half < 1 or len(data.y_val) < 1:
            raise ValueError(f"dataset {data.name!r} is too small for a gradient search "
                             f"({data.sizes()})")
        xw, yw = data.x_train[:half], data.y_train[:half]
        xa, ya = data.x_train[half:], data.y_train[half:]
        rng = np.random.default_rng(o.seed)
        steps = math.ceil(half / o.batch_size)
        total = o.epochs * steps
        result = GradientResult(arch="")
        eigen: list[float] = []
        history: list[str] = []
        started = time.monotonic()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.net.train()
        for epoch in range(1, o.epochs + 1):
            t0 = time.monotonic()
            progress = (epoch - 1) / max(o.epochs - 1, 1)
            self.tau = o.tau_max - (o.tau_max - o.tau_min) * progress
            self.aux = o.aux_skip_start * (1 - (epoch - 1) / o.epochs) if self.spec.aux_skip \
                else 0.0
            train_losses, arch_losses = [], []
            alpha_batches = batches(xa, ya, o.batch_size, shuffle=True, rng=rng)
            for i, (xb, yb) in enumerate(batches(xw, yw, o.batch_size, shuffle=True, rng=rng)):
                step = (epoch - 1) * steps + i
                lr = o.w_lr_min + 0.5 * (o.w_lr - o.w_lr_min) * (1 + math.cos(math.pi * step
                                                                               / total))
                for opt in (self.w_opt, self.e_opt):
                    if opt is not None:
                        for group in opt.param_groups:
                            group["lr"] = lr
                xb, yb = xb.to(self.device), yb.to(self.device)
                if epoch > o.warmup_epochs:
                    va = next(alpha_batches, None)
                    if va is None:
                        alpha_batches = batches(xa, ya, o.batch_size, shuffle=True, rng=rng)
                        va = next(alpha_batches)
                    arch_losses.append(self._arch_step(xb, yb, va[0].to(self.device),
                                                       va[1].to(self.device)))
                train_losses.append(self._weight_step(xb, yb))
            arch = self.space.to_string(self.net.derive())
            history.append(arch)
            probabilities = self.net.probabilities(self.spec.relaxation)
            record = EpochRecord(
                epoch=epoch, arch=arch,
                supernet_val_acc=self._accuracy(data.x_val, data.y_val),
                param_free_fraction=self.space.parameter_free_fraction(arch),
                alpha_entropy=_entropy(probabilities),
                train_loss=float(np.mean(train_losses)),
                arch_loss=float(np.mean(arch_losses)) if arch_losses else float("nan"),
                seconds=0.0,
                alpha=self.net.alpha.detach().cpu().tolist(),
                probabilities=probabilities.cpu().tolist(),
                tau=self.tau if self.spec.relaxation == "gumbel" else None,
                aux_skip=self.aux if self.spec.aux_skip else None,
            )
            if self.spec.stop == "hessian":
                record.eigenvalue = self._eigenvalue(xa, ya, epoch)
                eigen.append(record.eigenvalue)
            if self.eval_net is not None:
                record.eval_val_acc = self._accuracy(data.x_val, data.y_val, self.eval_net,
                                                     "derived")
            record.seconds = time.monotonic() - t0
            result.epochs.append(record)
            stop_here, chosen = self._stop_rule(history, eigen)
            if stop_here:
                result.stopped_at = epoch
                logger.info("%s stopped at epoch %d (architecture of epoch %d)", o.method,
                            epoch, chosen)
            if stop_here or epoch == o.epochs:
                result.chosen_epoch = chosen or epoch
                result.arch = result.epochs[result.chosen_epoch - 1].arch
                result.seconds = time.monotonic() - started
                record.derived_arch = result.arch
                record.chosen_epoch = result.chosen_epoch
                record.search_s = result.seconds
            if report is not None and report(record):
                stop_here = True
            if stop_here:
                break
        if not result.arch:  # ended by ``report``: the last epoch's architecture
            result.chosen_epoch = result.epochs[-1].epoch
            result.arch = result.epochs[-1].arch
            result.seconds = time.monotonic() - started
        result.peak_memory_mb = self.peak_memory_mb()
        return result

    def peak_memory_mb(self) -> float | None:
        """Peak CUDA memory of this search so far (None on CPU)."""
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**20

    def _stop_rule(self, history: list[str], eigen: list[float]) -> tuple[bool, int]:
        """Whether the method's rule stops after this epoch, and whose architecture it keeps."""
        o = self.options
        epoch = len(history)
        if self.spec.stop == "dartsplus":
            skips = self.space.skip_connections(history[-1])
            if skips >= o.max_skip and epoch > o.warmup_epochs:
                return True, epoch
            # Alpha does not move in the warm-up: its cell holding then says nothing.
            settled = epoch - o.warmup_epochs > o.stable_epochs
            if settled and len(set(history[-o.stable_epochs - 1:])) == 1:
                return True, epoch
        if self.spec.stop == "hessian" and hessian_stop(eigen, o.hessian_window, o.hessian_lag,
                                                         o.hessian_ratio):
            return True, epoch - o.hessian_lag
        return False, 0


def _entropy(probabilities: torch.Tensor) -> float:
    p = probabilities.clamp_min(1e-12)
    return float(-(p * p.log()).sum(dim=-1).mean())
