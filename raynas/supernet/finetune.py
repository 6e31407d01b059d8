"""Fine-tune a path extracted from the supernet, in the trial process (imports torch).

The fidelity of ``SupernetEvaluator(finetune_steps=...)``: a trial gets its architecture's
inherited weights from the host (``SupernetHost.extract``), trains that stand-alone network
for a number of SGD steps on the host's training split and measures it after every chunk of
steps, so ASHA / HyperBand can stop it at a rung (time attribute ``finetune_steps``).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from raynas.evaluators.data import load_dataset
from raynas.supernet.trainer import calibration_batches
from spaces import Arch, SearchSpace

logger = logging.getLogger(__name__)

# numpy seed streams: the trainer draws calibration batches from [seed, 1] and its training
# batches from [seed, 2, epoch]; fine-tuning batches come from [seed, 3, epoch].
_BATCH_STREAM = 3
_DATA_KEYS = ("dataset", "data_seed", "train_subset", "val_subset", "seed", "batch_size",
              "calib_batches")
_LOCK = threading.Lock()
_DATA: dict[str, FinetuneData] = {}


@dataclass(frozen=True, eq=False)
class FinetuneData:
    """The host's training and validation tensors and its BN calibration batches."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    calib: list[torch.Tensor]


def finetune_data(recipe: Mapping[str, Any]) -> FinetuneData:
    """The data a host with this ``recipe`` trains on, loaded once per process."""
    missing = [k for k in _DATA_KEYS if k not in recipe]
    if missing:
        raise ValueError(f"fine-tuning recipe lacks {', '.join(missing)}; "
                         "use SupernetTrainer.recipe()")
    key = json.dumps({k: recipe[k] for k in _DATA_KEYS}, sort_keys=True, default=str)
    with _LOCK:
        if key not in _DATA:
            # The same spec, seed and subsets as SupernetTrainer._load_data: the same arrays.
            splits = load_dataset(recipe["dataset"], seed=recipe["data_seed"])
            y_train = torch.as_tensor(splits.y_train[: recipe["train_subset"]])
            _DATA[key] = FinetuneData(
                x_train=torch.as_tensor(splits.x_train[: recipe["train_subset"]]),
                y_train=y_train,
                x_val=torch.as_tensor(splits.x_val[: recipe["val_subset"]]),
                y_val=torch.as_tensor(splits.y_val[: recipe["val_subset"]]),
                calib=calibration_batches(len(y_train), recipe["batch_size"],
                                          recipe["calib_batches"], recipe["seed"]),
            )
        return _DATA[key]


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of fine-tuning batch ``step`` (0-based): a slice of a per-epoch permutation."""
    per_epoch = max(1, n // batch_size)
    epoch, index = divmod(step, per_epoch)
    order = np.random.default_rng([seed, _BATCH_STREAM, epoch]).permutation(n)
    return torch.from_numpy(order[index * batch_size : (index + 1) * batch_size])


def recalibrate(net: nn.Module, data: FinetuneData, device: torch.device) -> None:
    """Re-estimate every batch norm's statistics on the calibration batches (as the host does)."""
    bns = [m for m in net.modules() if isinstance(m, _BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    net.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
        bn.train()
    with torch.no_grad():
        for idx in data.calib:
            net(data.x_train[idx].to(device))
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum
    net.eval()


def validate(
    net: nn.Module, data: FinetuneData, device: torch.device, batch_size: int
) -> tuple[float, float]:
    """Validation accuracy (%) and mean cross-entropy of ``net`` in eval mode."""
    net.eval()
    correct, total = 0, 0.0
    with torch.no_grad():
        for start in range(0, len(data.y_val), batch_size):
            xb = data.x_val[start : start + batch_size].to(device)
            yb = data.y_val[start : start + batch_size].to(device)
            logits = net(xb)
            total += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    n = len(data.y_val)
    return 100.0 * correct / n, total / n


@contextmanager
def _one_thread() -> Iterator[None]:
    # One torch thread per trial: trials run side by side and results do not depend on it.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def finetune(
    space: SearchSpace,
    arch: Arch,
    extracted: Mapping[str, Any],
    *,
    steps: int,
    chunk: int,
    lr: float | None = None,
    device: str = "cpu",
    report: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Fine-tune a path extracted by the host for ``steps`` steps; measure after every chunk.

    ``extracted`` is what ``SupernetHost.extract`` returns. After every ``chunk`` steps the
    network's batch norms are recalibrated on the host's calibration batches and it is
    measured on the host's validation split; each measurement but the last goes to
    ``report`` as ``{"val_acc", "val_loss", "finetune_steps"}``. Returns the last one plus
    ``inherited_val_acc`` / ``inherited_val_loss`` (before any step) and ``finetune_time_s``.
    SGD uses the supernet's momentum, weight decay, batch size and gradient clipping, at
    ``lr`` (default: the supernet's). Seeded by the supernet's ``seed``: the same arch and
    weights give the same numbers. A non-finite loss stops training; the metrics read NaN.
    """
    for label, value in (("steps", steps), ("chunk", chunk)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    if lr is not None and not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    recipe = extracted["recipe"]
    target = torch.device(device)
    data = finetune_data(recipe)
    with _one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe["seed"])
        net = space.build_network(
            arch, num_classes=recipe["num_classes"], in_channels=recipe["in_channels"]
        )
        net.load_state_dict(extracted["state"])
        net.to(target)
        start = time.perf_counter()
        # The host's state holds recalibrated statistics: this is its evaluate's number.
        inherited = validate(net, data, target, recipe["eval_batch_size"])
        metrics = _train(net, data, recipe, steps=steps, chunk=chunk,
                         lr=lr or recipe["lr"], device=target, report=report)
    return {**metrics, "inherited_val_acc": inherited[0], "inherited_val_loss": inherited[1],
            "finetune_time_s": time.perf_counter() - start}


def _train(
    net: nn.Module,
    data: FinetuneData,
    recipe: Mapping[str, Any],
    *,
    steps: int,
    chunk: int,
    lr: float,
    device: torch.device,
    report: Callable[[dict[str, float]], None] | None,
) -> dict[str, float]:
    momentum = recipe["momentum"]
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum,
                                weight_decay=recipe["weight_decay"], nesterov=momentum > 0)
    n, batch_size, seed = len(data.y_train), recipe["batch_size"], recipe["seed"]
    metrics: dict[str, float] = {}
    for done in range(1, steps + 1):
        net.train()
        idx = batch_indices(done - 1, n, batch_size, seed)
        loss = nn.functional.cross_entropy(net(data.x_train[idx].to(device)),
                                           data.y_train[idx].to(device))
        if not torch.isfinite(loss):
            logger.warning("non-finite fine-tuning loss at step %d: stopped", done)
            return {"val_acc": math.nan, "val_loss": math.nan, "finetune_steps": float(done)}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe["grad_clip"] is not None:
            nn.utils.clip_grad_norm_(net.parameters(), recipe["grad_clip"])
        optimizer.step()
        if done % chunk == 0 or done == steps:
            recalibrate(net, data, device)
            acc, val_loss = validate(net, data, device, recipe["eval_batch_size"])
            metrics = {"val_acc": acc, "val_loss": val_loss, "finetune_steps": float(done)}
            if report is not None and done < steps:
                report(dict(metrics))  # the last one is the returned dict
    return metrics
