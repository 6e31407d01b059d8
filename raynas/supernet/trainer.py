"""Train a weight-sharing supernet (SPOS, GreedyNAS, OFA) and evaluate its paths (imports torch)."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raynas.evaluators.data import load_dataset, resolve_spec
from raynas.supernet.ofa import distillation_loss, ofa_schedule
from raynas.supernet.pool import CandidatePool
from raynas.supernet.private_bn import recalibrate, recalibrated_copies, route_batchnorms
from spaces import Arch, SearchSpace, create_space

logger = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("spos", "greedynas", "ofa")
CHECKPOINT_FORMAT = 1
_CACHE_SIZE = 100_000


def space_of(space: SearchSpace | Mapping[str, Any]) -> SearchSpace:
    """A space object, or one built from ``{"name": ..., **options}`` (what actors receive)."""
    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, Mapping):
        spec = dict(space)
        if "name" not in spec:
            raise ValueError(f"a space spec needs a 'name', got keys {sorted(spec)}")
        name = spec.pop("name")
        options = spec.pop("options", {})
        return create_space(name, **{**spec, **options})
    raise TypeError(f"space must be a SearchSpace or a mapping, got {type(space).__name__}")


def cosine_lr(base: float, step: int, total_steps: int | None) -> float:
    """Learning rate at 0-based ``step``: constant if ``total_steps`` is None, else cosine to 0."""
    if total_steps is None:
        return base
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def greedy_epsilon(step: int, eps_max: float, eps_steps: int) -> float:
    """GreedyNAS exploitation probability: linear from 0 to ``eps_max`` over ``eps_steps``."""
    return eps_max * min(1.0, step / eps_steps) if eps_steps > 0 else eps_max


def calibration_batches(n: int, batch_size: int, batches: int, seed: int) -> list[torch.Tensor]:
    """Indices of the BN calibration batches: fixed by ``seed``, so one arch gets one set of stats.

    Trial processes that fine-tune an extracted path (``raynas.supernet.finetune``) call it
    with the host's numbers and recalibrate on the very batches the host uses.
    """
    order = np.random.default_rng([seed, 1]).permutation(n)
    return [
        torch.from_numpy(np.sort(order[i : i + batch_size]))
        for i in range(0, min(batches * batch_size, n), batch_size)
    ]


def _check_positive(**values: Any) -> None:
    for label, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan


class SupernetTrainer:
    """One supernet, its data and optimizer: train single paths, evaluate inherited weights.

    ``method="spos"`` trains one uniformly sampled path per step (Guo et al., "Single Path
    One-Shot NAS with Uniform Sampling", ECCV 2020). ``method="greedynas"`` (You et al.,
    "GreedyNAS", CVPR 2020) samples ``greedy_m`` paths per step, each from the candidate
    pool with probability epsilon (linear from 0 to ``greedy_eps_max`` over
    ``greedy_eps_steps`` steps) else uniformly; scores them by loss on one batch of
    ``greedy_val_batch`` images drawn from the *validation split* (no grad, batch
    statistics); accumulates the gradients of the ``greedy_k`` best on the step's training
    batch (each loss divided by k) into one SGD step; and offers those k to the pool.

    ``method="ofa"`` is Once-for-All's progressive shrinking (Cai et al., "Once-for-All:
    Train One Network and Specialize it for Efficient Deployment", ICLR 2020) with in-place
    distillation (Yu et al., "BigNAS", ECCV 2020). Phase 0 trains the space's ``largest()``
    network only; phase ``p >= 1`` enables the first ``p`` dimensions of the space's
    ``shrinking_order()`` (MobileNet: kernel, then depth, then expansion) and begins at the
    0-based step ``ofa_phase_steps[p - 1]`` (default: ``total_steps`` split evenly into
    ``len(order) + 1`` phases). Every step back-propagates the largest network's cross
    entropy; from phase 1 on it also samples ``ofa_subnets`` sub-networks with
    ``space.sample_shrunk(rng, enabled)`` and back-propagates each one's cross entropy plus
    ``ofa_kd_weight`` times its distillation loss against the largest network's logits of
    the same step (detached, temperature ``ofa_kd_temperature``); the losses are summed (as
    in OFA and BigNAS, not averaged) into one SGD step. Its step records add ``phase``,
    ``elastic_dims`` (enabled dimensions), ``subnet_loss``, ``subnet_acc`` and ``kd_loss``
    (NaN in phase 0); ``loss`` and ``acc`` are the largest network's.

    ``evaluate`` recalibrates copies of the path's batch norms on ``calib_batches`` fixed
    training batches (chosen once from ``seed``) and measures the validation split with
    them, so evaluation neither changes training state nor depends on what was evaluated
    before, and several threads may evaluate at once. The supernet is in eval mode except
    inside ``train``. Steps, RNG states and pool survive ``save`` / ``load``; batches are a
    function of the step counter, so a resumed run sees what an uninterrupted one would.

    Example:
        >>> t = SupernetTrainer({"name": "nb201", "channels": 8, "cells_per_stage": 1},
        ...                     dataset="digits", num_threads=1)
        >>> records = t.train(2)
        >>> [r["step"] for r in records]
        [1, 2]
        >>> sorted(t.evaluate(t.space.sample(np.random.default_rng(0))))
        ['supernet_step', 'val_acc', 'val_loss']
    """

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any],
        *,
        dataset: str | Mapping[str, Any] = "digits",
        method: str = "spos",
        seed: int = 0,
        data_seed: int = 0,
        batch_size: int = 64,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 4e-5,
        total_steps: int | None = None,
        grad_clip: float | None = 5.0,
        num_threads: int | None = None,
        train_subset: int | None = None,
        val_subset: int | None = None,
        greedy_m: int = 10,
        greedy_k: int = 5,
        greedy_eps_max: float = 0.8,
        greedy_eps_steps: int = 1000,
        pool_size: int = 1000,
        greedy_val_batch: int = 128,
        ofa_phase_steps: Sequence[int] | None = None,
        ofa_subnets: int = 2,
        ofa_kd_weight: float = 1.0,
        ofa_kd_temperature: float = 1.0,
        calib_batches: int = 4,
        eval_batch_size: int = 512,
        checkpoint_path: str | os.PathLike[str] | None = None,
        device: str = "cpu",
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        _check_positive(batch_size=batch_size, greedy_m=greedy_m, greedy_k=greedy_k,
                        pool_size=pool_size, greedy_val_batch=greedy_val_batch,
                        calib_batches=calib_batches, eval_batch_size=eval_batch_size,
                        ofa_subnets=ofa_subnets)
        if greedy_k > greedy_m:
            raise ValueError(f"greedy_k must be <= greedy_m, got {greedy_k} > {greedy_m}")
        if not 0.0 <= greedy_eps_max <= 1.0:
            raise ValueError(f"greedy_eps_max must be in [0, 1], got {greedy_eps_max!r}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        for label, number, zero_ok in (("ofa_kd_weight", ofa_kd_weight, True),
                                       ("ofa_kd_temperature", ofa_kd_temperature, False)):
            if (isinstance(number, bool) or not isinstance(number, (int, float))
                    or not math.isfinite(number) or number < 0 or (number == 0 and not zero_ok)):
                bound = ">= 0" if zero_ok else "> 0"
                raise ValueError(f"{label} must be a finite number {bound}, got {number!r}")
        for label, value in (("total_steps", total_steps), ("num_threads", num_threads),
                             ("train_subset", train_subset), ("val_subset", val_subset)):
            if value is not None:
                _check_positive(**{label: value})
        self.space = space_of(space)
        if not self.space.provides("build_supernet"):
            raise ValueError(f"space {self.space.name!r} has no supernet (build_supernet)")
        self.ofa_phase_steps: tuple[int, ...] = ()
        if method == "ofa":
            self.ofa_phase_steps = ofa_schedule(self.space, ofa_phase_steps, total_steps)
        self.ofa_subnets, self.ofa_kd_weight = ofa_subnets, float(ofa_kd_weight)
        self.ofa_kd_temperature = float(ofa_kd_temperature)
        self.method, self.seed = method, seed
        self.batch_size, self.lr, self.total_steps = batch_size, lr, total_steps
        self.grad_clip, self.num_threads = grad_clip, num_threads
        self.greedy_m, self.greedy_k = greedy_m, greedy_k
        self.greedy_eps_max, self.greedy_eps_steps = greedy_eps_max, greedy_eps_steps
        self.greedy_val_batch, self.eval_batch_size = greedy_val_batch, eval_batch_size
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        self.dataset = resolve_spec(dataset)
        self._config = {
            "space": self.space.describe(), "dataset": self.dataset, "data_seed": data_seed,
            "method": method, "seed": seed, "batch_size": batch_size, "lr": lr,
            "momentum": momentum, "weight_decay": weight_decay, "total_steps": total_steps,
            "greedy_m": greedy_m, "greedy_k": greedy_k, "greedy_eps_max": greedy_eps_max,
            "greedy_eps_steps": greedy_eps_steps, "pool_size": pool_size,
            "calib_batches": calib_batches, "train_subset": train_subset,
            "val_subset": val_subset, "ofa_phase_steps": list(self.ofa_phase_steps),
            "ofa_subnets": ofa_subnets, "ofa_kd_weight": self.ofa_kd_weight,
            "ofa_kd_temperature": self.ofa_kd_temperature,
        }
        self._load_data(data_seed, train_subset, val_subset, calib_batches)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.supernet: nn.Module = self.space.build_supernet(  # type: ignore[attr-defined]
                num_classes=self.num_classes, in_channels=self.in_channels
            ).to(self.device)
            self._torch_rng = torch.get_rng_state()
        route_batchnorms(self.supernet)
        self.supernet.eval()
        self.optimizer = torch.optim.SGD(
            self.supernet.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay,
            nesterov=momentum > 0,
        )
        self.rng = np.random.default_rng(seed)
        self.pool = CandidatePool(pool_size)
        self.step = 0
        self.evaluations = 0
        self.cache_hits = 0
        self.train_time_s = 0.0
        self.eval_time_s = 0.0
        self._cache: dict[str, dict[str, float]] = {}
        self._counts = threading.Lock()  # cache and counters, shared by concurrent evaluations
        self._perm: tuple[int, np.ndarray] | None = None

    # ------------------------------------------------------------------ data
    def _load_data(
        self, data_seed: int, train_subset: int | None, val_subset: int | None, calib: int
    ) -> None:
        data = load_dataset(self.dataset, seed=data_seed)
        self.num_classes, self.in_channels = data.num_classes, data.in_channels
        self.x_train = torch.as_tensor(data.x_train[:train_subset])
        self.y_train = torch.as_tensor(data.y_train[:train_subset])
        self.x_val = torch.as_tensor(data.x_val[:val_subset])
        self.y_val = torch.as_tensor(data.y_val[:val_subset])
        if len(self.y_train) == 0 or len(self.y_val) == 0:
            raise ValueError(
                f"dataset {self.dataset['name']!r} needs non-empty train and val splits, "
                f"got {len(self.y_train)} and {len(self.y_val)} examples"
            )
        self.batches_per_epoch = max(1, len(self.y_train) // self.batch_size)
        self._calib = calibration_batches(len(self.y_train), self.batch_size, calib, self.seed)

    def _train_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch of 0-based ``step``: a slice of a per-epoch permutation seeded by the epoch."""
        epoch, index = divmod(step, self.batches_per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            n = len(self.y_train)
            self._perm = (epoch, np.random.default_rng([self.seed, 2, epoch]).permutation(n))
        idx = torch.from_numpy(self._perm[1][index * self.batch_size:(index + 1) * self.batch_size])
        return self.x_train[idx].to(self.device), self.y_train[idx].to(self.device)

    def _arch(self, arch: Arch | str) -> Arch:
        return self.space.from_string(arch) if isinstance(arch, str) else self.space.validate(arch)

    @contextmanager
    def _threads(self) -> Iterator[None]:
        previous = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            yield
        finally:
            if self.num_threads is not None:
                torch.set_num_threads(previous)

    # ------------------------------------------------------------------ training
    def train(self, steps: int) -> list[dict[str, float]]:
        """Run ``steps`` more optimizer steps; one record per step (``step`` counts from 1)."""
        _check_positive(steps=steps)
        records = []
        start = time.perf_counter()
        self._cache.clear()  # the weights change: evaluations so far are stale
        with self._threads(), torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._torch_rng)
            self.supernet.train()
            for _ in range(steps):
                lr = cosine_lr(self.lr, self.step, self.total_steps)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                xb, yb = self._train_batch(self.step)
                if self.method == "spos":
                    record = self._update([self._arch(self.space.sample(self.rng))], xb, yb)
                elif self.method == "ofa":
                    record = self._ofa_step(xb, yb)
                else:
                    record = self._greedy_step(xb, yb)
                self.step += 1
                records.append({"step": self.step, **record, "lr": lr})
            self._torch_rng = torch.get_rng_state()
            self.supernet.eval()
        self.train_time_s += time.perf_counter() - start
        return records

    def ofa_phase(self, step: int | None = None) -> int:
        """OFA phase of 0-based ``step`` (default: the next one): its number of elastic dims."""
        step = self.step if step is None else step
        return sum(start <= step for start in self.ofa_phase_steps)

    def _ofa_step(self, xb: torch.Tensor, yb: torch.Tensor) -> dict[str, float]:
        """Largest network's CE, plus CE and in-place distillation of sampled sub-networks."""
        phase = self.ofa_phase()
        elastic = self.space.shrinking_order()[:phase]
        students = [self._arch(self.space.sample_shrunk(self.rng, elastic))
                    for _ in range(self.ofa_subnets if phase else 0)]
        info = {"phase": float(phase), "elastic_dims": float(len(elastic))}
        failed = {"loss": math.nan, "acc": math.nan, "subnet_loss": math.nan,
                  "subnet_acc": math.nan, "kd_loss": math.nan, **info}
        self.optimizer.zero_grad(set_to_none=True)
        largest = self._arch(self.space.largest())
        logits = self.supernet(xb, largest)
        loss = nn.functional.cross_entropy(logits, yb)
        if not torch.isfinite(loss):
            logger.warning("non-finite loss of the largest network at step %d: update skipped",
                           self.step)
            self.optimizer.zero_grad(set_to_none=True)
            return failed
        loss.backward()
        teacher = logits.detach()
        sub_losses, sub_accs, kd_losses = [], [], []
        for arch in students:
            out = self.supernet(xb, arch)
            kd = distillation_loss(out, teacher, self.ofa_kd_temperature)
            total = nn.functional.cross_entropy(out, yb) + self.ofa_kd_weight * kd
            if not torch.isfinite(total):
                logger.warning("non-finite loss on %s at step %d: update skipped", arch,
                               self.step)
                self.optimizer.zero_grad(set_to_none=True)
                return failed
            total.backward()
            sub_losses.append(float(total.detach()))
            kd_losses.append(float(kd.detach()))
            sub_accs.append(100.0 * float((out.argmax(1) == yb).float().mean()))
        self._clip_and_step()
        return {"loss": float(loss.detach()),
                "acc": 100.0 * float((teacher.argmax(1) == yb).float().mean()),
                "subnet_loss": _mean(sub_losses), "subnet_acc": _mean(sub_accs),
                "kd_loss": _mean(kd_losses), **info}

    def _clip_and_step(self) -> None:
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.supernet.parameters(), self.grad_clip)
        # Parameters off the path have grad None, so SGD leaves them (and their momentum) alone.
        self.optimizer.step()

    def _update(
        self, archs: Sequence[Arch], xb: torch.Tensor, yb: torch.Tensor
    ) -> dict[str, float]:
        """One SGD step on the gradients of ``archs`` (accumulated, each loss divided by k)."""
        self.optimizer.zero_grad(set_to_none=True)
        losses, accs = [], []
        for arch in archs:
            logits = self.supernet(xb, arch)
            loss = nn.functional.cross_entropy(logits, yb)
            if not torch.isfinite(loss):
                logger.warning("non-finite loss on %s at step %d: update skipped", arch, self.step)
                self.optimizer.zero_grad(set_to_none=True)
                return {"loss": math.nan, "acc": math.nan}
            (loss / len(archs)).backward()
            losses.append(float(loss.detach()))
            accs.append(100.0 * float((logits.argmax(1) == yb).float().mean()))
        self._clip_and_step()
        return {"loss": float(np.mean(losses)), "acc": float(np.mean(accs))}

    def _greedy_step(self, xb: torch.Tensor, yb: torch.Tensor) -> dict[str, float]:
        eps = greedy_epsilon(self.step, self.greedy_eps_max, self.greedy_eps_steps)
        candidates: dict[str, Arch] = {}
        for _ in range(self.greedy_m):
            if len(self.pool) and self.rng.random() < eps:
                arch = self._arch(self.pool.sample(self.rng))
            else:
                arch = self._arch(self.space.sample(self.rng))
            candidates.setdefault(self.space.to_string(arch), arch)
        n_val = len(self.y_val)
        idx = torch.from_numpy(np.sort(self.rng.choice(
            n_val, size=min(self.greedy_val_batch, n_val), replace=False)))
        xv, yv = self.x_val[idx].to(self.device), self.y_val[idx].to(self.device)
        scores: dict[str, float] = {}
        # Scoring runs in train mode (batch statistics) as in GreedyNAS: the supernet's
        # running statistics mean nothing for an arbitrary path. Those running statistics
        # feed nothing here (evaluate recalibrates its own), so their updates are harmless.
        with torch.no_grad():
            for key, arch in candidates.items():
                loss = float(nn.functional.cross_entropy(self.supernet(xv, arch), yv))
                scores[key] = loss if math.isfinite(loss) else math.inf
        best = sorted(scores, key=lambda k: (scores[k], k))[: self.greedy_k]
        record = self._update([candidates[k] for k in best], xb, yb)
        self.pool.update([(k, scores[k]) for k in best])
        return {**record, "score": float(np.mean([scores[k] for k in best])), "eps": eps}

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, arch: Arch | str, *, use_cache: bool = True) -> dict[str, float]:
        """Validation accuracy (%) and loss of ``arch`` with inherited, recalibrated weights.

        Results are cached per arch until the weights change (``train`` / ``load``);
        ``use_cache=False`` recomputes (the numbers are the same).

        Several threads may evaluate at once (with ``num_threads=None``; never while
        ``train`` or ``load`` runs): the path's batch norms are recalibrated in copies
        private to the calling thread (``private_bn``), the supernet's weights and buffers
        are only read, and the cache and counters are updated under a lock.
        """
        arch = self._arch(arch)
        key = self.space.to_string(arch)
        with self._counts:
            if use_cache and key in self._cache:
                self.cache_hits += 1
                return dict(self._cache[key])
        start = time.perf_counter()
        with self._threads(), self._private_recalibration(arch):
            acc, loss = self._validate(arch)
        result = {"val_acc": acc, "val_loss": loss, "supernet_step": float(self.step)}
        with self._counts:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = dict(result)
            self.evaluations += 1
            self.eval_time_s += time.perf_counter() - start
        return result

    def evaluate_many(
        self, archs: Sequence[Arch | str], *, use_cache: bool = True
    ) -> list[dict[str, float]]:
        """``evaluate`` of each architecture, in order."""
        return [self.evaluate(a, use_cache=use_cache) for a in archs]

    def extract(self, arch: Arch | str) -> dict[str, Any]:
        """The path as a stand-alone network: state dict, ``supernet_step`` and ``recipe()``.

        ``state`` (CPU tensors, batch norms recalibrated as ``evaluate`` does) loads into
        ``space.build_network(arch, num_classes=..., in_channels=...)``; in eval mode that
        network computes what ``evaluate`` measures (up to float rounding). The supernet's
        weights and statistics are left as they were.
        """
        arch = self._arch(arch)
        with self._threads(), self._recalibrated(arch):
            net = self.supernet.extract(arch)  # type: ignore[operator]
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        return {"arch": self.space.to_string(arch), "state": state,
                "supernet_step": float(self.step), "recipe": self.recipe()}

    def recipe(self) -> dict[str, Any]:
        """Data spec, split sizes, seeds and SGD settings (primitives) to fine-tune a path."""
        keys = ("dataset", "data_seed", "train_subset", "val_subset", "seed", "batch_size",
                "calib_batches", "lr", "momentum", "weight_decay")
        return {**{k: self._config[k] for k in keys}, "grad_clip": self.grad_clip,
                "eval_batch_size": self.eval_batch_size, "num_classes": self.num_classes,
                "in_channels": self.in_channels}

    @contextmanager
    def _private_recalibration(self, arch: Arch) -> Iterator[None]:
        """This thread's copies of the path's batch norms, recalibrated; the supernet in eval.

        Nothing shared is written but the supernet's mode: evaluations all want eval mode
        (the batch norm copies carry their own), and ``train`` sets train mode again.
        """
        if self.supernet.training:
            self.supernet.eval()
        with recalibrated_copies(self.supernet, arch, self._calibration_inputs()):
            yield

    def _calibration_inputs(self) -> Iterator[torch.Tensor]:
        """The calibration batches' images, on the trainer's device."""
        return (self.x_train[idx].to(self.device) for idx in self._calib)

    @contextmanager
    def _recalibrated(self, arch: Arch) -> Iterator[None]:
        """Path BNs reset and re-estimated on the calibration batches; restored on exit.

        Training never reads running statistics (it runs in train mode), but they are part
        of the checkpoint and of what later evaluations start from: restoring them keeps
        ``state_dict()`` bit-identical around an evaluation.
        """
        bns = self.supernet.batchnorms(arch)  # type: ignore[operator]
        saved = [(bn.momentum, {k: v.clone() for k, v in bn.state_dict().items()
                                if k.startswith(("running_", "num_batches"))}) for bn in bns]
        was_training = self.supernet.training
        try:
            self.supernet.eval()
            recalibrate(self.supernet, bns, arch, self._calibration_inputs())
            self.supernet.eval()
            yield
        finally:
            for bn, (momentum, buffers) in zip(bns, saved):
                bn.momentum = momentum
                for name, value in buffers.items():
                    getattr(bn, name).copy_(value)
            self.supernet.train(was_training)

    def _validate(self, arch: Arch) -> tuple[float, float]:
        correct, total_loss = 0, 0.0
        with torch.no_grad():
            for start in range(0, len(self.y_val), self.eval_batch_size):
                xb = self.x_val[start : start + self.eval_batch_size].to(self.device)
                yb = self.y_val[start : start + self.eval_batch_size].to(self.device)
                logits = self.supernet(xb, arch)
                total_loss += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
                correct += int((logits.argmax(1) == yb).sum())
        n = len(self.y_val)
        return 100.0 * correct / n, total_loss / n

    # ------------------------------------------------------------------ state
    def candidate_pool(self, k: int | None = None) -> list[tuple[str, float]]:
        """The GreedyNAS pool's ``k`` best (all if None) ``(arch_string, loss)``, best first."""
        return self.pool.top(k)

    def stats(self) -> dict[str, Any]:
        """Counters: steps, evaluations, cache hits, pool size, method, timings."""
        return {
            "method": self.method, "steps": self.step, "evaluations": self.evaluations,
            "cache_hits": self.cache_hits, "pool_size": len(self.pool),
            "train_time_s": self.train_time_s, "eval_time_s": self.eval_time_s,
            "num_params": sum(p.numel() for p in self.supernet.parameters()),
            "torch_threads": torch.get_num_threads(),
        }

    def state(self) -> dict[str, Any]:
        """Everything ``save`` writes: tensors, primitives, dicts and lists only."""
        return {
            "format": CHECKPOINT_FORMAT,
            "supernet": self.supernet.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "evaluations": self.evaluations,
            "rng": json.dumps(self.rng.bit_generator.state),
            "torch_rng": self._torch_rng.clone(),
            "pool": json.dumps(self.pool.to_state()),
            "config": json.dumps(self._config, sort_keys=True, default=str),
        }

    def save(self, path: str | os.PathLike[str] | None = None) -> str:
        """Write the state to ``path`` (default ``checkpoint_path``) atomically; return it."""
        target = Path(path) if path is not None else self.checkpoint_path
        if target is None:
            raise ValueError("save needs a path: pass one or set checkpoint_path")
        target = target.expanduser().absolute()
        target.parent.mkdir(parents=True, exist_ok=True)
        # Same directory, then rename: a reader (a restarting replica) sees old or new, never half.
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".{uuid.uuid4().hex[:6]}",
                                   dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(self.state(), f)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        logger.debug("supernet checkpoint at step %d written to %s", self.step, target)
        return str(target)

    def load(self, path: str | os.PathLike[str] | None = None) -> None:
        """Restore weights, optimizer, step, RNG states and pool from a ``save`` file."""
        source = Path(path) if path is not None else self.checkpoint_path
        if source is None:
            raise ValueError("load needs a path: pass one or set checkpoint_path")
        state = torch.load(source, map_location=self.device, weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{str(source)!r} is not a supernet checkpoint of format "
                             f"{CHECKPOINT_FORMAT}")
        config = json.loads(state["config"])
        for key in ("method", "seed", "batch_size", "dataset", "data_seed"):
            mine = json.loads(json.dumps(self._config[key], default=str))
            if config.get(key) != mine:
                logger.warning("checkpoint %s has %s=%r, this trainer %r", source, key,
                               config.get(key), mine)
        self.supernet.load_state_dict(state["supernet"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.evaluations = int(state["evaluations"])
        self.rng.bit_generator.state = json.loads(state["rng"])
        self._torch_rng = state["torch_rng"].cpu()
        self.pool = CandidatePool.from_state(state["pool"])
        self._cache.clear()
