"""Single-path, hardware-aware searches on a weight-sharing supernet: ProxylessNAS, PARSEC, FP-NAS.

Each keeps a distribution over architectures and trains the space's supernet
(``build_supernet``) one sampled path at a time, so memory stays that of one sub-network:

- ``proxyless`` (Cai et al., "ProxylessNAS", ICLR 2019): one logit vector per decision;
  a weight step trains one binarised path; an architecture step samples two candidates per
  decision, makes one active, and moves their logits by the binary-gate gradients
  ``dL/dg`` (``supernet.gate_gradients``), rescaled so the other candidates keep their
  probabilities. A latency term on the expected latency (a lookup table's entries weighted
  by the probabilities, ``LatencyTable.expected``) is differentiated exactly.
- ``parsec`` (Casale et al., "Probabilistic Neural Architecture Search", 2019): each step
  samples ``samples_max`` architectures, trains the weights on their mean loss and moves the
  distribution towards the samples weighted by their likelihood on held-out data
  (importance weights ``softmax(-sum of losses)``), the latency term entering each sample's
  weight.
- ``fpnas`` (Yan et al., "FP-NAS: Fast Probabilistic Neural Architecture Search", CVPR 2021):
  PARSEC with the number of samples proportional to the distribution's entropy (all of
  ``samples_max`` at the uniform start, down to ``samples_min``), and coarse to fine: a
  factorised distribution (one per decision) first, then joint distributions over the
  decisions that choose one layer together (``space.decision_groups()``), initialised to the
  product of the factors.

Weights learn on the first half of the training split, the distribution on the second;
after each epoch the derived (most probable) architecture is measured on the validation
split with its batch norms re-estimated, and its lookup-table latency recorded beside the
distribution's expected latency. With a latency target the derived architecture is the most
probable one found within ``target_tolerance`` of the target (the mode of a factorised
distribution can sit far from its expected latency).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raynas.evaluators.data import DatasetSplits, batches
from raynas.gradient.methods import GradientOptions, check_options
from raynas.gradient.search import EpochRecord, GradientResult, resolve_device
from raynas.supernet.private_bn import recalibrated_copies, route_batchnorms
from spaces import Arch, SearchSpace

logger = logging.getLogger(__name__)


def latency_penalty(latency: Any, target: float, weight: float, kind: str) -> Any:
    """The latency term: ``hinge`` w*max(0, L/T-1), ``absolute`` w*|L/T-1|, ``linear`` w*L/T."""
    ratio = latency / target
    if kind == "linear":
        return weight * ratio
    if kind == "absolute":
        return weight * abs(ratio - 1.0)
    if isinstance(ratio, torch.Tensor):
        return weight * torch.relu(ratio - 1.0)
    return weight * max(0.0, float(ratio) - 1.0)


def two_path_gradient(gate_grads: dict[int, float], logits: torch.Tensor) -> torch.Tensor:
    """ProxylessNAS's logit gradient from the gate gradients of the sampled candidates.

    With ``p`` the softmax of the sampled candidates' logits (renormalised over them),
    ``dL/d alpha_i = sum_j dL/dg_j * p_j * (delta_ij - p_i)`` (Cai et al. 2019, Eq. 3);
    candidates not sampled get 0.
    """
    grad = torch.zeros_like(logits)
    involved = sorted(gate_grads)
    p = torch.softmax(logits.detach()[involved], dim=0)
    for a, i in enumerate(involved):
        grad[i] = sum(gate_grads[j] * float(p[b]) * ((a == b) - float(p[a]))
                      for b, j in enumerate(involved))
    return grad


def entropy_samples(entropy: float, full: float, smallest: int, largest: int) -> int:
    """FP-NAS's sample count: ``largest`` at the uniform distribution's entropy ``full``,
    proportionally fewer as it sharpens, never under ``smallest``."""
    if full <= 0:
        return largest
    return int(min(largest, max(smallest, math.ceil(largest * entropy / full))))


def load_latency(path: str) -> Any:
    """A lookup table (``.parquet``) or a learned ``LatencyMLP`` (``.pt``): both predict index
    vectors and give a differentiable expected latency."""
    if str(path).endswith((".pt", ".pth")):
        from raynas.latency.predictor import LatencyMLP

        return LatencyMLP.load(path)
    from raynas.latency.lut import LatencyTable

    return LatencyTable.load(path)


def _which(options: GradientOptions) -> str:
    return "latency_table" if options.latency_table is not None else "latency_model"


class Distribution:
    """Categorical distributions over groups of a space's decisions, one logit per combination.

    Groups of one decision make a factorised distribution; ``joint(groups)`` switches to
    joint distributions over larger groups, initialised to the product of the current
    marginals (FP-NAS's coarse-to-fine step).
    """

    def __init__(self, space: SearchSpace, device: torch.device) -> None:
        self.space = space
        self.sizes = [d.size for d in space.decisions]
        self.groups: tuple[tuple[int, ...], ...] = tuple((k,) for k in range(len(self.sizes)))
        self.logits = [torch.zeros(n, device=device, requires_grad=True) for n in self.sizes]

    @property
    def num_parameters(self) -> int:
        """Architecture parameters (logits) of the current parametrisation."""
        return sum(int(t.numel()) for t in self.logits)

    def joint(self, groups: Sequence[Sequence[int]]) -> None:
        """Replace the factorised logits by joint ones over ``groups`` (same distribution)."""
        marginals = [torch.log_softmax(t.detach(), 0) for t in self.logits_by_decision()]
        new = []
        for group in groups:
            value = marginals[group[0]]
            for k in group[1:]:
                value = (value[..., None] + marginals[k]).reshape(-1)
            new.append(value.clone().requires_grad_(True))
        self.groups = tuple(tuple(g) for g in groups)
        self.logits = new

    def logits_by_decision(self) -> list[torch.Tensor]:
        """Per decision, the log of its marginal (its logits when factorised)."""
        out: list[torch.Tensor] = [torch.empty(0)] * len(self.sizes)
        for group, logits in zip(self.groups, self.logits, strict=True):
            if len(group) == 1:
                out[group[0]] = logits
                continue
            p = torch.softmax(logits, 0).reshape([self.sizes[k] for k in group])
            for axis, k in enumerate(group):
                others = tuple(a for a in range(len(group)) if a != axis)
                out[k] = p.sum(dim=others).clamp_min(1e-12).log()
        return out

    def probabilities(self) -> list[torch.Tensor]:
        """Per decision, its marginal distribution (differentiable)."""
        return [torch.softmax(t, 0) for t in self.logits_by_decision()]

    def entropy(self) -> float:
        """Entropy (nats) of the whole distribution: the sum over its groups."""
        total = 0.0
        for logits in self.logits:
            p = torch.softmax(logits.detach(), 0)
            total -= float((p * p.clamp_min(1e-12).log()).sum())
        return total

    def full_entropy(self) -> float:
        """Entropy of the uniform distribution over all decisions."""
        return float(sum(math.log(n) for n in self.sizes))

    def _unravel(self, group: tuple[int, ...], index: int) -> list[int]:
        return [int(i) for i in np.unravel_index(index, [self.sizes[k] for k in group])]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
        """An index vector drawn from the distribution, and the combination drawn per group."""
        vector = np.zeros(len(self.sizes), dtype=np.int64)
        drawn = []
        for group, logits in zip(self.groups, self.logits, strict=True):
            p = torch.softmax(logits.detach(), 0).cpu().double().numpy()
            index = int(rng.choice(len(p), p=p / p.sum()))
            drawn.append(index)
            vector[list(group)] = self._unravel(group, index)
        return vector, drawn

    def most_probable(self) -> np.ndarray:
        """The index vector of each group's most probable combination."""
        vector = np.zeros(len(self.sizes), dtype=np.int64)
        for group, logits in zip(self.groups, self.logits, strict=True):
            vector[list(group)] = self._unravel(group, int(torch.argmax(logits.detach())))
        return vector

    def log_prob(self, vectors: np.ndarray) -> np.ndarray:
        """Log-probability of each index vector (rows) under the distribution."""
        vectors = np.asarray(vectors, dtype=np.int64).reshape(-1, len(self.sizes))
        total = np.zeros(len(vectors))
        for group, logits in zip(self.groups, self.logits, strict=True):
            logp = torch.log_softmax(logits.detach(), 0).cpu().double().numpy()
            index = np.ravel_multi_index(tuple(vectors[:, k] for k in group),
                                         [self.sizes[k] for k in group])
            total += logp[index]
        return total

    def log_prob_gradient(self, drawn: Sequence[int]) -> list[torch.Tensor]:
        """``d log p(a) / d logits`` of a drawn architecture: one-hot minus the probabilities."""
        out = []
        for index, logits in zip(drawn, self.logits, strict=True):
            g = -torch.softmax(logits.detach(), 0)
            g[index] += 1.0
            out.append(g)
        return out


class SampledPathSearch:
    """Run ``proxyless``, ``parsec`` or ``fpnas`` (``options.method``) on ``space``'s supernet."""

    def __init__(self, space: SearchSpace, options: GradientOptions, *,
                 num_classes: int, in_channels: int) -> None:
        self.options = check_options(options)
        self.spec = options.spec
        if self.spec.sampling is None:
            raise ValueError(f"method {options.method!r} is not a single-path method")
        if not space.provides("build_supernet"):
            raise ValueError(f"space {space.name!r} has no weight-sharing supernet; "
                             f"{options.method} needs one (e.g. mobilenet)")
        self.space = space
        self.device = resolve_device(options.device)
        torch.manual_seed(options.seed)
        self.supernet: nn.Module = space.build_supernet(  # type: ignore[attr-defined]
            num_classes=num_classes, in_channels=in_channels).to(self.device)
        if self.spec.sampling == "proxyless" and not hasattr(self.supernet, "gate_gradients"):
            raise ValueError(f"space {space.name!r}'s supernet has no gate_gradients; "
                             "proxyless needs them (mobilenet has)")
        route_batchnorms(self.supernet)
        self.table: Any = None  # a lookup table or a learned model: predict_vectors, expected
        source = options.latency_table or options.latency_model
        if source is not None:
            self.table = load_latency(source)
            if [d.choices for d in self.table.space.decisions] != \
                    [d.choices for d in space.decisions]:
                raise ValueError(f"{_which(options)} {source!r} is for space "
                                 f"{self.table.space.spec()}, not {space.spec()}")
        self.dist = Distribution(space, self.device)
        self.w_opt = torch.optim.SGD(self.supernet.parameters(), lr=options.w_lr,
                                     momentum=options.w_momentum,
                                     weight_decay=options.w_weight_decay, nesterov=True)
        self.a_opt = self._arch_optimizer()
        self.rng = np.random.default_rng([options.seed, 3])
        self.samples = 0  # architectures drawn so far (weight and architecture steps)
        # Calibration batches (indices) of the training split, chosen once per split size.
        self._calib: tuple[int, list[np.ndarray]] | None = None

    def _arch_optimizer(self) -> torch.optim.Optimizer:
        o = self.options
        return torch.optim.Adam(self.dist.logits, lr=o.a_lr, betas=(o.a_beta1, o.a_beta2),
                                weight_decay=o.a_weight_decay)

    # ------------------------------------------------------------------ pieces of a step
    def _arch(self, vector: np.ndarray) -> Arch:
        return self.space.decode(vector)

    def _weight_step(self, x: torch.Tensor, y: torch.Tensor, count: int) -> float:
        """Train the weights on ``count`` sampled paths' mean loss, one path in memory at once."""
        self.w_opt.zero_grad(set_to_none=True)
        losses = []
        for _ in range(count):
            vector, _ = self.dist.sample(self.rng)
            loss = F.cross_entropy(self.supernet(x, self._arch(vector)), y)
            (loss / count).backward()
            losses.append(float(loss.detach()))
        self.samples += count
        nn.utils.clip_grad_norm_(self.supernet.parameters(), self.options.grad_clip)
        self.w_opt.step()
        return float(np.mean(losses))

    def _latency_of(self, vectors: np.ndarray) -> np.ndarray:
        assert self.table is not None
        return np.asarray(self.table.predict_vectors(vectors), dtype=float)

    def _latency_term(self) -> torch.Tensor | None:
        """The latency loss on the expected latency, differentiable in the logits."""
        o = self.options
        if self.table is None or o.target_ms is None or o.latency_weight == 0:
            return None
        expected = self.table.expected(self.dist.probabilities())
        return latency_penalty(expected, o.target_ms, o.latency_weight, o.latency_loss)

    def _proxyless_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Two candidates per decision, one active; logits moved by their gate gradients."""
        vector = np.zeros(len(self.dist.sizes), dtype=np.int64)
        pairs: dict[int, list[int]] = {}
        for k, logits in enumerate(self.dist.logits):
            p = torch.softmax(logits.detach(), 0).cpu().double().numpy()
            two = self.rng.choice(len(p), size=min(2, len(p)), replace=False, p=p / p.sum())
            q = p[two] / p[two].sum()
            vector[k] = int(two[int(self.rng.choice(len(two), p=q))])
            pairs[k] = [int(c) for c in two]
        alternatives = {k: [c for c in two if c != vector[k]] for k, two in pairs.items()}
        loss, gates = self.supernet.gate_gradients(  # type: ignore[operator]
            x, y, self._arch(vector), alternatives)
        self.samples += 2
        self.a_opt.zero_grad(set_to_none=True)
        for logits in self.dist.logits:
            logits.grad = torch.zeros_like(logits)
        term = self._latency_term()
        if term is not None:
            term.backward()
        involved: dict[int, list[int]] = {}
        for k, scores in gates.items():
            logits = self.dist.logits[k]
            assert logits.grad is not None
            logits.grad += two_path_gradient(scores, logits).to(logits.device)
            involved[k] = sorted(scores)
        before = {k: torch.logsumexp(self.dist.logits[k].detach()[c], 0)
                  for k, c in involved.items()}
        self.a_opt.step()
        with torch.no_grad():  # the candidates not sampled keep their probabilities
            for k, c in involved.items():
                logits = self.dist.logits[k]
                logits[c] -= torch.logsumexp(logits[c], 0) - before[k]
        return loss

    def _sampled_step(self, x: torch.Tensor, y: torch.Tensor, count: int) -> float:
        """PARSEC: move towards ``count`` samples weighted by their held-out likelihood."""
        o = self.options
        draws = [self.dist.sample(self.rng) for _ in range(count)]
        self.samples += count
        losses = []
        with torch.no_grad():  # batch statistics, as the weight step sees them
            for vector, _ in draws:
                logits = self.supernet(x, self._arch(vector))
                losses.append(float(F.cross_entropy(logits, y, reduction="sum")))
        scores = -np.asarray(losses)
        if self.table is not None and o.target_ms is not None and o.latency_weight > 0:
            latency = self._latency_of(np.stack([v for v, _ in draws]))
            scores -= len(y) * np.array([latency_penalty(v, o.target_ms, o.latency_weight,
                                                         o.latency_loss) for v in latency])
        weights = np.exp(scores - scores.max())
        weights /= weights.sum()
        self.a_opt.zero_grad(set_to_none=True)
        grads = [torch.zeros_like(t) for t in self.dist.logits]
        for w, (_, drawn) in zip(weights, draws, strict=True):
            for g, step in zip(grads, self.dist.log_prob_gradient(drawn), strict=True):
                g -= float(w) * step  # ascend the log-likelihood: descend its negative
        for logits, g in zip(self.dist.logits, grads, strict=True):
            logits.grad = g
        self.a_opt.step()
        return float(np.mean(losses)) / len(y)

    def sample_count(self) -> int:
        """Architectures this step draws: fixed for PARSEC and ProxylessNAS, adaptive for FP-NAS."""
        o = self.options
        if self.spec.sampling != "fpnas":
            return o.samples_max if self.spec.sampling == "parsec" else 1
        return entropy_samples(self.dist.entropy(), self.dist.full_entropy(), o.samples_min,
                               o.samples_max)

    # ------------------------------------------------------------------ measuring
    @torch.no_grad()
    def accuracy(self, arch: Arch, data: DatasetSplits) -> float:
        """Validation accuracy (percent) of ``arch``'s path, batch norms re-estimated first."""
        o = self.options
        if self._calib is None or self._calib[0] != len(data.y_train):
            order = np.random.default_rng([o.seed, 4]).permutation(len(data.y_train))
            count = min(o.calib_batches, max(1, len(order) // o.batch_size))
            self._calib = (len(data.y_train), [order[i * o.batch_size:(i + 1) * o.batch_size]
                                               for i in range(count)])
        inputs = (torch.as_tensor(data.x_train[idx]).to(self.device) for idx in self._calib[1])
        was = self.supernet.training
        self.supernet.eval()
        try:
            with recalibrated_copies(self.supernet, arch, inputs):
                correct = 0
                for xb, yb in batches(data.x_val, data.y_val, 256):
                    logits = self.supernet(xb.to(self.device), arch)
                    correct += int((logits.argmax(dim=1).cpu() == yb).sum())
        finally:
            self.supernet.train(was)
        return 100.0 * correct / max(len(data.y_val), 1)

    def derive(self) -> np.ndarray:
        """The answer: the most probable architecture, or with a target, the most probable of
        ``derive_samples`` draws (and the mode) within ``target_tolerance`` of it (else the
        closest to it)."""
        o = self.options
        mode = self.dist.most_probable()
        if self.table is None or o.target_ms is None:
            return mode
        rng = np.random.default_rng([o.seed, 7])
        draws = np.stack([mode] + [self.dist.sample(rng)[0] for _ in range(o.derive_samples)])
        error = np.abs(self._latency_of(draws) / o.target_ms - 1.0)
        logp = self.dist.log_prob(draws)
        inside = error <= o.target_tolerance
        if inside.any():
            return draws[int(np.argmax(np.where(inside, logp, -np.inf)))]
        return draws[int(np.argmin(error))]

    def expected_latency(self) -> float | None:
        """The distribution's expected lookup-table latency (ms), exact when factorised."""
        if self.table is None:
            return None
        if all(len(g) == 1 for g in self.dist.groups) and hasattr(self.table, "entries"):
            with torch.no_grad():
                return float(self.table.expected(self.dist.probabilities()))
        draws = np.stack([self.dist.sample(np.random.default_rng([self.options.seed, 5, i]))[0]
                          for i in range(256)])
        return float(self._latency_of(draws).mean())

    # ------------------------------------------------------------------ the search
    def run(self, data: DatasetSplits,
            report: Callable[[EpochRecord], bool | None] | None = None) -> GradientResult:
        """Search for ``options.epochs`` epochs; ``report`` after each, True from it stops."""
        o = self.options
        half = len(data.y_train) // 2
        if half < 1 or len(data.y_val) < 1:
            raise ValueError(f"dataset {data.name!r} is too small for a search ({data.sizes()})")
        xw, yw = data.x_train[:half], data.y_train[:half]
        xa, ya = data.x_train[half:], data.y_train[half:]
        steps = math.ceil(half / o.batch_size)
        total = o.epochs * steps
        coarse = o.coarse_epochs if o.coarse_epochs is not None else o.epochs // 2
        result = GradientResult(arch="")
        started = time.monotonic()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.supernet.train()
        for epoch in range(1, o.epochs + 1):
            t0 = time.monotonic()
            if self.spec.sampling == "fpnas" and epoch == coarse + 1 and epoch > 1:
                self.dist.joint(self.space.decision_groups())
                self.a_opt = self._arch_optimizer()
                logger.info("fpnas: joint distributions from epoch %d (%d parameters)", epoch,
                            self.dist.num_parameters)
            train_losses, arch_losses, drawn = [], [], []
            rng = np.random.default_rng([o.seed, 6, epoch])
            alpha_batches = batches(xa, ya, o.batch_size, shuffle=True, rng=rng)
            for i, (xb, yb) in enumerate(batches(xw, yw, o.batch_size, shuffle=True, rng=rng)):
                step = (epoch - 1) * steps + i
                lr = o.w_lr_min + 0.5 * (o.w_lr - o.w_lr_min) * (1 + math.cos(math.pi * step
                                                                               / total))
                for group in self.w_opt.param_groups:
                    group["lr"] = lr
                count = self.sample_count()
                drawn.append(count)
                if epoch > o.warmup_epochs:
                    va = next(alpha_batches, None)
                    if va is None:
                        alpha_batches = batches(xa, ya, o.batch_size, shuffle=True, rng=rng)
                        va = next(alpha_batches)
                    xv, yv = va[0].to(self.device), va[1].to(self.device)
                    arch_losses.append(self._proxyless_step(xv, yv)
                                       if self.spec.sampling == "proxyless"
                                       else self._sampled_step(xv, yv, count))
                train_losses.append(self._weight_step(xb.to(self.device), yb.to(self.device),
                                                      count))
            record = self._record(epoch, data, train_losses, arch_losses, drawn)
            record.seconds = time.monotonic() - t0
            result.epochs.append(record)
            if epoch == o.epochs:
                result.chosen_epoch = epoch
                result.arch = record.arch
                result.seconds = time.monotonic() - started
                record.derived_arch, record.chosen_epoch = result.arch, epoch
                record.search_s = result.seconds
            if report is not None and report(record):
                break
        if not result.arch:
            result.chosen_epoch = result.epochs[-1].epoch
            result.arch = result.epochs[-1].arch
            result.seconds = time.monotonic() - started
        result.peak_memory_mb = self.peak_memory_mb()
        return result

    def _record(self, epoch: int, data: DatasetSplits, train_losses: list[float],
                arch_losses: list[float], drawn: list[int]) -> EpochRecord:
        vector = self.derive()
        arch = self.space.to_string(self._arch(vector))
        probabilities = [p.detach().cpu() for p in self.dist.probabilities()]
        alpha = [t.detach().cpu().tolist() for t in self.dist.logits_by_decision()]
        entropy = float(np.mean([-(p * p.clamp_min(1e-12).log()).sum() for p in probabilities]))
        return EpochRecord(
            epoch=epoch, arch=arch, supernet_val_acc=self.accuracy(self._arch(vector), data),
            param_free_fraction=None, alpha_entropy=entropy,
            train_loss=float(np.mean(train_losses)),
            arch_loss=float(np.mean(arch_losses)) if arch_losses else float("nan"),
            seconds=0.0, alpha=alpha, probabilities=[p.tolist() for p in probabilities],
            expected_latency_ms=self.expected_latency(),
            latency_ms=None if self.table is None else float(self._latency_of(vector[None])[0]),
            samples=self.samples, samples_per_step=float(np.mean(drawn)),
            arch_parameters=self.dist.num_parameters,
        )

    def peak_memory_mb(self) -> float | None:
        """Peak CUDA memory of this search so far (None on CPU)."""
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**20
