"""The ``zero_cost`` evaluator: proxies of the untrained network as trial metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raynas.evaluators.base import Evaluator, Report
from raynas.zero_cost.scorer import ProxyScorer, check_proxy_names
from spaces import Arch, SearchSpace


class ZeroCostEvaluator(Evaluator):
    """Scores an architecture by zero-cost proxies at initialisation, no training.

    Every proxy is a metric (higher is better), with ``ms_<proxy>`` its compute time and
    ``zero_cost_ms`` their sum; the default metric is the first proxy. With ``table`` (a
    Parquet file from ``raynas zero-cost score``) rows found there are read, not recomputed,
    and report the milliseconds the table recorded.

    Example:
        >>> from spaces import create_space
        >>> space = create_space("nb201", channels=8, cells_per_stage=1, resolution=8)
        >>> ev = ZeroCostEvaluator(space, proxies=["synflow", "params"], dataset=None)
        >>> sorted(ev.evaluate(space.sample(__import__("numpy").random.default_rng(0))))[:2]
        ['ms_params', 'ms_synflow']
    """

    def __init__(
        self,
        space: SearchSpace,
        proxies: Sequence[str] = ("synflow",),
        *,
        dataset: str | Mapping[str, Any] | None = "digits",
        batch_size: int = 64,
        seed: int = 0,
        device: str = "auto",
        table: str | None = None,
    ) -> None:
        if isinstance(proxies, str):
            proxies = [p.strip() for p in proxies.split(",") if p.strip()]
        self.proxies = check_proxy_names(proxies)
        self.space = space
        self.scorer = ProxyScorer(space, self.proxies, dataset=dataset, batch_size=batch_size,
                                  seed=seed, device=device)
        self.table = None if table is None else str(Path(table).expanduser().resolve())
        if self.table is not None and not Path(self.table).is_file():
            raise ValueError(f"evaluator option 'table': {table!r} does not exist")
        self._lookup: Any = None

    @property
    def metrics(self) -> tuple[str, ...]:
        """Each proxy, its milliseconds, and their sum."""
        return (*self.proxies, *(f"ms_{p}" for p in self.proxies), "zero_cost_ms")

    @property
    def default_metric(self) -> tuple[str, str]:
        """The first proxy, maximised."""
        return self.proxies[0], "max"

    def evaluate(self, arch: Arch, *, report: Report | None = None) -> dict[str, float]:
        """Proxy scores of ``arch`` (from the table when it has the row)."""
        row = None
        if self.table is not None:
            if self._lookup is None:
                from raynas.zero_cost.table import TableScorer

                self._lookup = TableScorer(self.space, self.table, self.proxies,
                                           fallback=self.scorer)
            row = self._lookup.row(arch)
        else:
            row = self.scorer.score(arch)
        out = {p: float(row[p]) for p in self.proxies}
        out.update({f"ms_{p}": float(row.get(f"ms_{p}", 0.0)) for p in self.proxies})
        out["zero_cost_ms"] = sum(out[f"ms_{p}"] for p in self.proxies)
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_lookup"] = None  # rebuilt from the path in each worker
        return state
