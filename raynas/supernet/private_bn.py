"""Per-thread batch-norm statistics, so evaluations of a shared supernet can run concurrently.

Evaluating a path re-estimates its batch norms' running statistics on calibration batches
(SPOS practice). Written into the supernet's own buffers, two evaluations at once would mix
their statistics. Instead, ``route_batchnorms`` makes every batch norm of the supernet defer,
inside ``private_batchnorms``, to a copy that belongs to the calling thread: each evaluation
recalibrates and reads its own copies, and the supernet's buffers are never written. The
copies are made when the evaluation starts, from the supernet's current affine weights.
Outside ``private_batchnorms`` (training, GreedyNAS path scoring, ``extract``) a batch norm
runs as it always did.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

_LOCAL = threading.local()  # .copies: {id(shared batch norm): this thread's copy}


def _router(own: Callable[[torch.Tensor], torch.Tensor], key: int) -> Callable[..., Any]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        copies = getattr(_LOCAL, "copies", None)
        private = copies.get(key) if copies else None
        return own(x) if private is None else private(x)

    return forward


def route_batchnorms(module: nn.Module) -> int:
    """Let each batch norm in ``module`` defer to the calling thread's copy; how many were set."""
    count = 0
    for bn in module.modules():
        if isinstance(bn, _BatchNorm) and "forward" not in bn.__dict__:
            # An instance attribute: nn.Module.__call__ finds it before the class's forward.
            bn.forward = _router(type(bn).forward.__get__(bn), id(bn))  # type: ignore[method-assign]
            count += 1
    return count


def _copy(bn: _BatchNorm) -> _BatchNorm:
    private = copy.deepcopy(bn)
    private.__dict__.pop("forward", None)  # the copy runs its class's forward, not a router
    return private


@contextmanager
def private_batchnorms(bns: Sequence[_BatchNorm]) -> Iterator[list[_BatchNorm]]:
    """Within the block, this thread's forward passes use fresh copies of ``bns``; yields them.

    The copies start in the state of the originals (weights, buffers, mode); the caller
    resets and recalibrates them. Other threads, and this one after the block, see the
    originals.
    """
    if getattr(_LOCAL, "copies", None):
        raise RuntimeError("private_batchnorms does not nest within one thread")
    with torch.no_grad():
        copies = [_copy(bn) for bn in bns]
    _LOCAL.copies = {id(bn): c for bn, c in zip(bns, copies, strict=True)}
    try:
        yield copies
    finally:
        _LOCAL.copies = None


def recalibrate(supernet: nn.Module, bns: Sequence[nn.Module], arch: Any,
                inputs: Iterable[torch.Tensor]) -> None:
    """Reset ``bns`` and re-estimate their statistics by running ``arch`` on each of ``inputs``.

    The statistics become the cumulative average over the batches (momentum None); the batch
    norms are left in train mode.
    """
    for bn in bns:
        bn.reset_running_stats()  # type: ignore[operator]
        bn.momentum = None
        bn.train()
    with torch.no_grad():
        for x in inputs:
            supernet(x, arch)


@contextmanager
def recalibrated_copies(supernet: nn.Module, arch: Any,
                        inputs: Iterable[torch.Tensor]) -> Iterator[None]:
    """Within the block, this thread runs ``arch`` with its own copies of the path's batch
    norms, re-estimated on ``inputs`` and in eval mode; the supernet's are never written."""
    with private_batchnorms(supernet.batchnorms(arch)) as bns:  # type: ignore[operator]
        recalibrate(supernet, bns, arch, inputs)
        for bn in bns:
            bn.eval()
        yield
