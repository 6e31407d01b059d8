"""Timing torch modules and real sub-networks: warm-up, interleaved repeats, medians.

Every measurement here is the median of many single forward passes. Items are timed in
interleaved rounds (round 1: every item a few times, round 2: again, ...), so a burst of
load from another process on a shared machine spreads over all items instead of
inflating a few of them. ``torch.set_num_threads(threads)`` holds while timing.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from spaces import Arch, SearchSpace

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


def resolve_device(device: str = "cpu") -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` (CUDA where present) as a device."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        out = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown torch device {device!r}; use cpu, cuda or auto") from None
    if out.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"torch device {device!r} asked for, but CUDA is not available here")
    return out


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (unchanged if None)."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def time_modules(
    items: Sequence[tuple[torch.nn.Module, torch.Tensor]],
    *,
    warmup: int = 5,
    repeats: int = 30,
    rounds: int = 3,
    device: str = "cpu",
    threads: int | None = 1,
) -> np.ndarray:
    """Median latency in ms of ``module(x)`` for each ``(module, x)``, in eval mode.

    Each item runs ``warmup`` untimed passes, then ``repeats`` timed ones spread over
    ``rounds`` interleaved rounds. On CUDA every pass is synchronised before and after.
    """
    import torch

    for label, value, low in (("warmup", warmup, 0), ("repeats", repeats, 1),
                              ("rounds", rounds, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    per_round = math.ceil(repeats / rounds)
    samples: list[list[float]] = [[] for _ in items]
    prepared = [(m.to(dev).eval(), x.to(dev)) for m, x in items]
    gc_was_enabled = gc.isenabled()
    with torch_threads(threads), torch.inference_mode():
        for module, x in prepared:
            for _ in range(warmup):
                module(x)
        gc.disable()  # a collection in the middle of a timed pass is noise
        try:
            for _ in range(rounds):
                for i, (module, x) in enumerate(prepared):
                    for _ in range(per_round):
                        if cuda:
                            torch.cuda.synchronize(dev)
                        start = time.perf_counter()
                        module(x)
                        if cuda:
                            torch.cuda.synchronize(dev)
                        samples[i].append(time.perf_counter() - start)
        finally:
            if gc_was_enabled:
                gc.enable()
    return np.array([1e3 * float(np.median(s)) for s in samples])


def input_tensor(
    space: SearchSpace, *, batch_size: int = 1, in_channels: int = 3, resolution: int | None = None
) -> torch.Tensor:
    """A random input batch ``(batch_size, in_channels, R, R)`` at the space's resolution."""
    import torch

    size = resolution or getattr(space, "resolution", None)
    if not size:
        raise ValueError(f"space {space.name!r} has no resolution: pass resolution=")
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, in_channels, size, size, generator=gen)


def measure_archs(
    space: SearchSpace,
    archs: Sequence[Arch],
    *,
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 30,
    rounds: int = 3,
    device: str = "cpu",
    threads: int | None = 1,
    chunk: int = 25,
    num_classes: int = 10,
    in_channels: int = 3,
) -> np.ndarray:
    """Median forward latency (ms) of ``space.build_network(arch)`` for each architecture.

    Networks are freshly initialised (latency does not depend on the weights) and timed
    ``chunk`` at a time, interleaved, so memory stays bounded for large spaces.

    Example:
        >>> from spaces import create_space
        >>> space = create_space("nb201", channels=4, cells_per_stage=1, resolution=8)
        >>> arch = space.sample(np.random.default_rng(0))
        >>> measure_archs(space, [arch], repeats=3, rounds=1).shape
        (1,)
    """
    import torch

    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    x = input_tensor(space, batch_size=batch_size, in_channels=in_channels)
    out: list[np.ndarray] = []
    for start in range(0, len(archs), chunk):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(start)
            nets = [space.build_network(a, num_classes=num_classes, in_channels=in_channels)
                    for a in archs[start:start + chunk]]
        out.append(time_modules([(n, x) for n in nets], warmup=warmup, repeats=repeats,
                                rounds=rounds, device=device, threads=threads))
        logger.info("measured %d/%d networks", min(start + chunk, len(archs)), len(archs))
    return np.concatenate(out) if out else np.zeros(0)
