"""Proxy tables: score many architectures in parallel Ray tasks into Parquet, and read them back.

A table has one row per architecture: ``arch_str`` (the space's string form), one column per
proxy and ``ms_<proxy>`` (the CPU or GPU milliseconds it took), plus the scoring settings in
the file's metadata, so a search backed by the table charges what the scores cost.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from raynas.zero_cost.scorer import ProxyScorer
from spaces import Arch, SearchSpace

META_KEY = b"raynas.zero_cost"


def sample_archs(space: SearchSpace, count: int | None, seed: int) -> list[Arch]:
    """``count`` distinct seeded architectures (by canonical form), or every one when None."""
    if count is None:
        if not space.finite:
            raise ValueError(f"space {space.name!r} is not finite: pass a number of architectures")
        return list(space.enumerate())
    if count < 1:
        raise ValueError(f"number of architectures must be >= 1, got {count}")
    rng = np.random.default_rng(seed)
    seen: dict[str, Arch] = {}
    misses = 0
    while len(seen) < count and misses < 100 * count:
        arch = space.sample(rng)
        key = space.canonical(arch)
        if key in seen:
            misses += 1
            continue
        seen[key] = arch
    return list(seen.values())


def _score_chunk(scorer: ProxyScorer, texts: list[str], threads: int) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(threads)
    rows = []
    for text in texts:
        row: dict[str, Any] = {"arch_str": text}
        row.update(scorer.score(scorer.space.from_string(text)))
        rows.append(row)
    return rows


def score_archs(
    scorer: ProxyScorer,
    archs: Sequence[Arch],
    *,
    chunk: int = 8,
    threads: int = 1,
    gpus_per_task: float = 0.0,
    progress: Callable[[int, int, float], None] | None = None,
) -> list[dict[str, Any]]:
    """Rows of proxy scores for ``archs``, computed in parallel Ray tasks (Ray must be up).

    Each task scores ``chunk`` architectures with ``threads`` torch threads; ``progress(done,
    total, elapsed_s)`` is called as chunks finish. Rows come back in the order of ``archs``.
    """
    import ray

    texts = [scorer.space.to_string(a) for a in archs]
    remote = ray.remote(num_cpus=threads, num_gpus=gpus_per_task)(_score_chunk)
    scorer_ref = ray.put(scorer)
    chunks = [texts[i:i + chunk] for i in range(0, len(texts), chunk)]
    futures = {remote.remote(scorer_ref, part, threads): i for i, part in enumerate(chunks)}
    results: dict[int, list[dict[str, Any]]] = {}
    start = time.monotonic()
    done = 0
    pending = list(futures)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                index = futures[ref]
                results[index] = ray.get(ref)
                done += len(results[index])
            if progress is not None:
                progress(done, len(texts), time.monotonic() - start)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return [row for i in range(len(chunks)) for row in results[i]]


def progress_bar(stream: Any = None) -> Callable[[int, int, float], None]:
    """A one-line ``[####....] done/total  rate  ETA`` bar redrawn on ``stream`` (stderr)."""
    out = stream or sys.stderr

    def draw(done: int, total: int, elapsed: float) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else math.inf
        eta_text = f"{eta:.0f}s" if math.isfinite(eta) else "?"
        out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                  f"{rate:.1f} archs/s ETA {eta_text}   ")
        if done >= total:
            out.write("\n")
        out.flush()

    return draw


def write_table(rows: Sequence[dict[str, Any]], path: str | Path,
                settings: dict[str, Any]) -> Path:
    """Write proxy rows to a Parquet file with the scoring ``settings`` in its metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        raise ValueError("no rows to write")
    columns = list(rows[0])
    data = {c: [row.get(c) for row in rows] for c in columns}
    table = pa.table(data)
    table = table.replace_schema_metadata({META_KEY: json.dumps(settings).encode()})
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(out)
    return out


def read_table(path: str | Path) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Rows by ``arch_str`` and the scoring settings of a table ``write_table`` wrote."""
    import pyarrow.parquet as pq

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"proxy table {str(file)!r} does not exist")
    try:
        table = pq.read_table(file)
    except Exception as exc:  # pyarrow raises its own error types for a corrupt file
        raise ValueError(f"proxy table {str(file)!r} is not a Parquet file: {exc}") from None
    if "arch_str" not in table.column_names:
        raise ValueError(f"proxy table {str(file)!r} has no 'arch_str' column")
    meta = (table.schema.metadata or {}).get(META_KEY)
    settings = json.loads(meta) if meta else {}
    data = table.to_pydict()
    keys = data.pop("arch_str")
    rows: dict[str, dict[str, float]] = {}
    for i, key in enumerate(keys):
        rows[str(key)] = {c: _float(values[i]) for c, values in data.items()}
    return rows, settings


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class TableScorer:
    """A ``searchers.protocols.Scorer`` that reads proxy scores from a table.

    Each distinct architecture is charged once, at the milliseconds the table recorded for
    the proxies asked (``seconds``), as if it had been scored now; an architecture missing
    from the table is scored by ``fallback`` (a ``ProxyScorer``) when given.
    """

    def __init__(self, space: SearchSpace, path: str | Path,
                 proxies: Sequence[str] | None = None,
                 fallback: ProxyScorer | None = None) -> None:
        self.space = space
        self.path = str(path)
        rows, self.settings = read_table(path)
        available = sorted(c for c in next(iter(rows.values()), {}) if not c.startswith("ms_"))
        names = list(proxies) if proxies else available
        missing = [n for n in names if n not in available]
        if missing:
            raise ValueError(f"proxy table {self.path!r} has no column {missing[0]!r}; "
                             f"it has: {', '.join(available)}")
        self._names = names
        self._rows = rows
        self.fallback = fallback
        self._charged: set[str] = set()
        self.seconds = 0.0

    @property
    def names(self) -> list[str]:
        """The proxies, one column each in what ``__call__`` returns."""
        return list(self._names)

    def row(self, arch: Arch) -> dict[str, float]:
        """The proxy values and ``ms_<proxy>`` of ``arch`` (charged once per architecture)."""
        key = self.space.to_string(arch)
        row = self._rows.get(key)
        if row is None:
            if self.fallback is None:
                raise ValueError(f"architecture {key[:80]!r} is not in proxy table {self.path!r}")
            row = self.fallback.score(arch)
            self._rows[key] = row
        if key not in self._charged:
            self._charged.add(key)
            self.seconds += sum(row.get(f"ms_{n}", 0.0) for n in self._names) / 1000.0
        return row

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        """Proxy scores, shape ``(len(archs), len(names))``."""
        out = np.full((len(archs), len(self._names)), np.nan)
        for i, arch in enumerate(archs):
            row = self.row(arch)
            out[i] = [row.get(n, math.nan) for n in self._names]
        return out
