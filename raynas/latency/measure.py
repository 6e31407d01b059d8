"""Measured latency: timing torch modules and real sub-networks, measured tables, statistics.

Every measurement here is a statistic (by default the 10th percentile, see
``DEFAULT_STATISTIC``) of many single forward passes after warm-up. Items are timed in
interleaved rounds (round 1: every item a few times, round 2: again, ...), so a burst of
load from another process on a shared machine spreads over all items instead of
inflating a few of them. ``torch.set_num_threads(threads)`` holds while timing.

Clock: on a CPU with one torch thread all work runs in the calling thread, so by default
(``clock="auto"``) a pass is timed by that thread's CPU time, which does not count the time
the thread waits while other processes hold the cores. On a shared 2-core machine under a
load of 8, wall-clock medians of a 17-cell NB201 network came out 2x its CPU time and
long passes were inflated more than short ones (the scheduler preempts them more often),
which skews a sum of layer timings against whole networks. CUDA and multi-threaded CPU
timing use the wall clock.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spaces import Arch, SearchSpace

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# The 10th percentile of many passes, not the median: on the shared 2-core machine under a
# load of about 8, a re-measurement of the same 30 networks ranked them with Spearman 0.83
# (NB201) and 0.79 (MobileNet) by medians, 0.98 and 0.94 by 10th percentiles. Slow passes
# are other processes' doing (a sibling hyper-thread, evicted caches); the fast tail is the
# network's own cost. On a quiet machine the two agree.
DEFAULT_STATISTIC = "p10"


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


def time_samples(
    items: Sequence[tuple[torch.nn.Module, torch.Tensor]],
    *,
    warmup: int = 5,
    repeats: int = 30,
    rounds: int = 3,
    device: str = "cpu",
    threads: int | None = 1,
    clock: str = "auto",
) -> list[np.ndarray]:
    """Per-pass latencies in ms of ``module(x)`` for each ``(module, x)``, in eval mode.

    Each item runs ``warmup`` untimed passes, then ``repeats`` timed ones spread over
    ``rounds`` interleaved rounds. On CUDA every pass is synchronised before and after.
    ``clock`` is ``"auto"``, ``"cpu"`` (calling thread's CPU time) or ``"wall"``.
    """
    import torch

    for label, value, low in (("warmup", warmup, 0), ("repeats", repeats, 1),
                              ("rounds", rounds, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    timer = time.thread_time if resolve_clock(clock, dev.type, threads) == "cpu" else (
        time.perf_counter)
    per_round = math.ceil(repeats / rounds)
    if not cuda:
        settle_allocator()
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
                        start = timer()
                        module(x)
                        if cuda:
                            torch.cuda.synchronize(dev)
                        samples[i].append(timer() - start)
        finally:
            if gc_was_enabled:
                gc.enable()
    return [1e3 * np.array(s) for s in samples]


def settle_allocator() -> None:
    """Allocate and free one 16 MiB tensor, so later timings see a settled ``malloc``.

    glibc serves large blocks with mmap until it frees one, then raises its mmap and trim
    thresholds to that size. Until then a buffer of a few MiB may be mapped and unmapped
    (page faults) on every pass: in a fresh process the MobileNet blocks with the largest
    activations timed 2-3x slower in the first lookup table built than in a second one,
    and built tables ranked networks with Spearman 0.73 against each other; after this
    call, entries of two builds agree within 5%.
    """
    import torch

    torch.empty(4 << 20).fill_(0.0)


def summarize(samples: Sequence[np.ndarray], statistic: str = DEFAULT_STATISTIC) -> np.ndarray:
    """One number per sample array: ``"median"``, ``"min"``, ``"mean"`` or ``"p<q>"``."""
    if statistic in ("median", "min", "mean"):
        f = {"median": np.median, "min": np.min, "mean": np.mean}[statistic]
        return np.array([float(f(s)) for s in samples])
    q = statistic[1:] if statistic.startswith("p") else ""
    if not q.replace(".", "", 1).isdigit() or not 0 <= float(q) <= 100:
        raise ValueError(f"statistic must be median, min, mean or p<0-100> (e.g. p10), "
                         f"got {statistic!r}")
    return np.array([float(np.percentile(s, float(q))) for s in samples])


def time_modules(
    items: Sequence[tuple[torch.nn.Module, torch.Tensor]],
    *,
    statistic: str = DEFAULT_STATISTIC,
    **options: Any,
) -> np.ndarray:
    """Latency in ms of each ``(module, x)``: ``summarize(time_samples(items, ...))``."""
    summarize([np.zeros(1)], statistic)  # a bad statistic fails before any timing
    return summarize(time_samples(items, **options), statistic)


def resolve_clock(clock: str, device_type: str, threads: int | None) -> str:
    """``"cpu"`` or ``"wall"``: the clock ``time_modules`` uses for ``clock`` on a device."""
    if clock not in ("auto", "cpu", "wall"):
        raise ValueError(f"clock must be 'auto', 'cpu' or 'wall', got {clock!r}")
    if clock == "cpu" and (device_type != "cpu" or threads != 1):
        raise ValueError("clock='cpu' needs a CPU device and threads=1 (work in one thread)")
    if clock == "auto":
        return "cpu" if device_type == "cpu" and threads == 1 else "wall"
    return clock


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


def measure_arch_samples(
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
    clock: str = "auto",
) -> list[np.ndarray]:
    """Per-pass forward latencies (ms) of ``space.build_network(arch)`` for each arch.

    Networks are freshly initialised (latency does not depend on the weights) and timed
    ``chunk`` at a time, interleaved, so memory stays bounded for large spaces.

    Example:
        >>> from spaces import create_space
        >>> space = create_space("nb201", channels=4, cells_per_stage=1, resolution=8)
        >>> arch = space.sample(np.random.default_rng(0))
        >>> len(measure_arch_samples(space, [arch], repeats=3, rounds=1)[0])
        3
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
        out += time_samples([(n, x) for n in nets], warmup=warmup, repeats=repeats,
                            rounds=rounds, device=device, threads=threads, clock=clock)
        logger.info("measured %d/%d networks", min(start + chunk, len(archs)), len(archs))
    return out


def measure_archs(
    space: SearchSpace, archs: Sequence[Arch], *, statistic: str = DEFAULT_STATISTIC,
    **options: Any,
) -> np.ndarray:
    """Latency (ms) of each architecture's network: ``summarize`` of its timed passes.

    Options are those of ``measure_arch_samples``.

    Example:
        >>> from spaces import create_space
        >>> space = create_space("nb201", channels=4, cells_per_stage=1, resolution=8)
        >>> arch = space.sample(np.random.default_rng(0))
        >>> measure_archs(space, [arch], repeats=3, rounds=1).shape
        (1,)
    """
    summarize([np.zeros(1)], statistic)
    return summarize(measure_arch_samples(space, archs, **options), statistic)


# --------------------------------------------------------------------------- measured tables
def read_latency_columns(path: str | Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """``(arch strings, {device: latencies in ms, NaN where empty})`` of a CSV or Parquet table."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"latency table {str(path)!r} does not exist")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        data = pq.read_table(path).to_pydict()
    else:
        import pyarrow.csv as pacsv

        data = pacsv.read_csv(path).to_pydict()
    if "arch_str" not in data:
        raise ValueError(f"latency table {str(path)!r} has no 'arch_str' column")
    columns = {
        name: np.array([math.nan if v is None else float(v) for v in values])
        for name, values in data.items() if name not in ("index", "arch_str")
    }
    return [str(a) for a in data["arch_str"]], columns


def read_latency_table(
    path: str | Path, column: str
) -> tuple[list[str], np.ndarray]:
    """``(arch strings, latencies in ms)`` of a CSV or Parquet table with ``arch_str``."""
    archs, columns = read_latency_columns(path)
    if column not in columns:
        raise ValueError(
            f"unknown device {column!r} in {str(path)!r}; devices: {', '.join(columns)}"
        )
    return archs, columns[column]


class MeasuredLatency:
    """Exact lookup in a table of measured latencies; NaN for architectures it lacks.

    Example:
        >>> from spaces import create_space
        >>> arch = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
        >>> MeasuredLatency(create_space("nb201"), [arch], [0.5]).predict([arch]).tolist()
        [0.5]
    """

    def __init__(self, space: SearchSpace, archs: Sequence[Arch], latencies: Sequence[float],
                 *, device: str = "") -> None:
        if len(archs) != len(latencies):
            raise ValueError(f"{len(archs)} architectures but {len(latencies)} latencies")
        self.space, self.device = space, device
        self._values = {self._key(space.encode(a)): float(v)
                        for a, v in zip(archs, latencies, strict=True)}

    @classmethod
    def from_file(cls, space: SearchSpace, path: str | Path, column: str) -> MeasuredLatency:
        """Read ``column`` of a CSV/Parquet table with an ``arch_str`` column."""
        archs, values = read_latency_table(path, column)
        return cls(space, archs, values, device=column)

    def _key(self, vector: np.ndarray) -> tuple[int, ...]:
        return tuple(int(v) for v in vector)

    def __len__(self) -> int:
        return len(self._values)

    def predict_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Latency (ms) of each index vector; NaN where the table has no entry."""
        get = self._values.get
        return np.array([get(self._key(v), math.nan) for v in vectors], dtype=np.float64)

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Latency (ms) of each architecture; NaN where the table has no entry."""
        from raynas.latency.predictor import ArchEncoder

        return self.predict_vectors(ArchEncoder(self.space, prefill=False).encode(archs))


def latency_stats(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """RMSE (ms), Spearman's rho, share within +-10% of measured (nn-Meter), mean abs % error."""
    from scipy.stats import spearmanr

    p = np.asarray(predicted, dtype=np.float64)
    m = np.asarray(measured, dtype=np.float64)
    if p.shape != m.shape or len(m) < 2:
        raise ValueError(f"need two equal-length series of >= 2 values, got {p.shape}, {m.shape}")
    rel = np.abs(p - m) / np.abs(m)
    return {"rmse": float(np.sqrt(np.mean((p - m) ** 2))),
            "spearman": float(spearmanr(p, m)[0]),
            "within10pct": float(np.mean(rel <= 0.1)),
            "mape": float(100 * np.mean(rel))}
