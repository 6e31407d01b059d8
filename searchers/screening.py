"""Zero-cost proxies for searchers: rank combination, screening, a per-architecture score cache.

Proxies (synflow, naswot, zen, ...) score an untrained network; a ``searchers.protocols.Scorer``
computes them (raynas's ``ProxyScorer``; searchers never import it). Several proxies are
combined by their mean rank, the ensemble of Abdelfattah et al., "Zero-Cost Proxies for
Lightweight NAS", ICLR 2021, and Krishnakumar et al., "NAS-Bench-Suite-Zero: Accelerating
Research on Zero Cost Proxies", NeurIPS 2022 Datasets and Benchmarks: ranks make scales that
differ by orders of magnitude (synflow) or hold failure sentinels comparable.
"""

from __future__ import annotations

import copy
import logging
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from searchers._base import NASSearch
from searchers.protocols import Scorer
from spaces import Arch, SearchSpace

logger = logging.getLogger(__name__)

__all__ = ["MissingScorerError", "ProxyCache", "ScoredSearch", "combine_scores", "mean_rank",
           "rank_features", "sample_distinct"]

# consecutive repeats after which sampling distinct architectures gives up (a small space)
_MISSES = 1000


class MissingScorerError(RuntimeError):
    """Proxy scores are needed and no scorer is attached."""


def _ranks(column: np.ndarray) -> np.ndarray:
    """0-based ranks of one column, ties averaged, non-finite values tied lowest."""
    col = np.where(np.isfinite(column), column, -np.inf)
    order = np.argsort(col, kind="stable")
    ordered = col[order]
    ranks = np.empty(len(col), dtype=np.float64)
    start = 0
    for stop in range(1, len(col) + 1):
        if stop == len(col) or ordered[stop] != ordered[start]:
            ranks[order[start:stop]] = (start + stop - 1) / 2.0
            start = stop
    return ranks


def mean_rank(scores: np.ndarray) -> np.ndarray:
    """Mean over proxies (columns) of each row's rank: 0 = worst; ties share their mean rank."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.ndim != 2:
        raise ValueError(f"scores must be a (n, proxies) array, got shape {scores.shape}")
    if scores.size == 0:
        return np.zeros(len(scores))
    ranks = np.stack([_ranks(scores[:, j]) for j in range(scores.shape[1])])
    return ranks.mean(axis=0)  # type: ignore[no-any-return]


def combine_scores(scores: np.ndarray, names: Sequence[str], combine: str) -> np.ndarray:
    """One value per row, higher is better: ``"rank"`` (mean rank) or one proxy's own column."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if combine == "rank":
        return mean_rank(scores)
    names = list(names)
    if combine not in names:
        raise ValueError(f"combine must be 'rank' or one of the scorer's proxies {names}, "
                         f"got {combine!r}")
    return _ranks(scores[:, names.index(combine)])


def rank_features(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each value's mid-rank among ``reference`` (per column), scaled to mean 0 and variance 1.

    A proxy means something only up to a monotone map, and may hold failure sentinels
    (NASLib writes -1e8): its rank is a standardisation that neither can distort. Non-finite
    values rank below everything.
    """
    values = np.asarray(values, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    out = np.empty_like(values)
    for j in range(values.shape[1]):
        ref = np.sort(np.where(np.isfinite(reference[:, j]), reference[:, j], -np.inf))
        col = np.where(np.isfinite(values[:, j]), values[:, j], -np.inf)
        below = np.searchsorted(ref, col, side="left")
        upto = np.searchsorted(ref, col, side="right")
        out[:, j] = (below + upto) / (2.0 * max(len(ref), 1))
    return (out - 0.5) * math.sqrt(12.0)  # uniform on [0, 1] -> unit variance


def sample_distinct(
    space: SearchSpace, count: int, rng: np.random.Generator,
    skip: Callable[[Arch], bool] | None = None,
) -> list[Arch]:
    """Up to ``count`` uniformly sampled architectures, distinct by canonical form.

    ``skip(arch)`` leaves architectures out (e.g. ones already suggested); sampling stops
    early when 1,000 draws in a row bring nothing new (a small or nearly exhausted space).
    """
    chosen: dict[str, Arch] = {}
    misses = 0
    while len(chosen) < count and misses < _MISSES:
        arch = space.sample(rng)
        key = space.canonical(arch)
        if key in chosen or (skip is not None and skip(arch)):
            misses += 1
            continue
        misses = 0
        chosen[key] = arch
    return list(chosen.values())


class ProxyCache:
    """Proxy scores by canonical architecture: each computation is scored at most once.

    ``seconds`` adds up what the scorer charged for the calls made through this cache.
    """

    def __init__(self) -> None:
        self.rows: dict[str, list[float]] = {}
        self.seconds = 0.0

    def __len__(self) -> int:
        return len(self.rows)

    def scores(self, space: SearchSpace, scorer: Scorer | None, archs: Sequence[Arch],
               keys: Sequence[str] | None = None) -> np.ndarray:
        """Scores of ``archs`` (one row each), computing only those never scored."""
        keys = [space.canonical(a) for a in archs] if keys is None else list(keys)
        todo: dict[str, Arch] = {}
        for key, arch in zip(keys, archs):
            if key not in self.rows and key not in todo:
                todo[key] = arch
        if todo:
            if scorer is None:
                raise MissingScorerError("proxy scores needed but no scorer is attached")
            width = len(scorer.names)
            before = float(getattr(scorer, "seconds", 0.0))
            values = np.asarray(scorer(list(todo.values())), dtype=np.float64)
            self.seconds += max(0.0, float(getattr(scorer, "seconds", 0.0)) - before)
            if values.shape != (len(todo), width):
                raise ValueError(f"scorer returned shape {values.shape} for {len(todo)} "
                                 f"architectures and {width} proxies")
            for key, row in zip(todo, values):
                self.rows[key] = [float(v) if math.isfinite(v) else math.nan for v in row]
        return np.array([self.rows[k] for k in keys], dtype=np.float64).reshape(len(keys), -1)

    def to_json(self) -> dict[str, list[float | None]]:
        """Canonical form -> scores, JSON-friendly (NaN as null)."""
        return {k: [None if math.isnan(v) else v for v in row] for k, row in self.rows.items()}

    @classmethod
    def from_json(cls, rows: Mapping[str, Sequence[float | None]], seconds: float) -> ProxyCache:
        """Inverse of ``to_json``, with the seconds charged so far."""
        cache = cls()
        cache.rows = {str(k): [math.nan if v is None else float(v) for v in row]
                      for k, row in rows.items()}
        cache.seconds = float(seconds)
        return cache


def _picklable(obj: Any) -> bool:
    try:
        pickle.dumps(obj)
    except Exception:  # any failure means: leave it out of the pickle
        return False
    return True


class ScoredSearch(NASSearch):
    """A ``NASSearch`` with an optional zero-cost ``scorer`` that may be attached at any time.

    The scorer is never part of ``save`` (JSON); it is part of a pickle only when it pickles
    itself (raynas's ``ProxyScorer`` does: it pickles as options). One that does not is
    left out with a warning (``copy.deepcopy`` shares the scorer instead). A searcher that
    still needs it (a screening not done yet, candidates to score) then raises
    ``MissingScorerError`` (a ``RuntimeError``) until it is re-attached:
    ``searcher.scorer = scorer``. The same holds after ``restore`` into an instance built
    without one: the state keeps every score computed, never the scorer.
    """

    def __init__(self, space: SearchSpace | Mapping[str, Any] | None = None, *,
                 scorer: Scorer | None = None, **kwargs: Any) -> None:
        self._scorer: Scorer | None = None
        self._proxy_names: list[str] | None = None  # the names the state was built with
        self._cache = ProxyCache()
        self.scorer = scorer
        super().__init__(space, **kwargs)

    @property
    def scorer(self) -> Scorer | None:
        """The zero-cost scorer, or None (left out of pickles it cannot be part of)."""
        return self._scorer

    @scorer.setter
    def scorer(self, scorer: Scorer | None) -> None:
        if scorer is None:
            self._scorer = None
            return
        if not isinstance(scorer, Scorer):
            raise ValueError(f"scorer must be callable with 'names' and 'seconds' attributes "
                             f"(searchers.protocols.Scorer), got {type(scorer).__name__}")
        names = [str(n) for n in scorer.names]
        if not names:
            raise ValueError("scorer.names must name at least one proxy")
        if self._proxy_names is not None and names != self._proxy_names:
            raise ValueError(f"scorer computes {names}, this searcher's state was built on "
                             f"{self._proxy_names}")
        self._scorer = scorer
        self._proxy_names = names

    @property
    def proxy_names(self) -> list[str] | None:
        """The proxies in use (None without a scorer ever attached)."""
        return None if self._proxy_names is None else list(self._proxy_names)

    @property
    def proxy_seconds(self) -> float:
        """Compute the scorer charged this searcher so far, in seconds."""
        return self._cache.seconds

    @property
    def num_scored(self) -> int:
        """Architectures (canonical forms) scored by the proxies so far."""
        return len(self._cache)

    def _proxy_scores(self, archs: Sequence[Arch]) -> np.ndarray:
        """Cached proxy scores of ``archs``; ``RuntimeError`` when a scorer must be re-attached."""
        try:
            return self._cache.scores(self.space, self._scorer, archs)
        except MissingScorerError:
            raise MissingScorerError(
                f"{type(self).__name__}: its zero-cost scorer was left out of a pickle or a "
                f"saved state; re-attach one computing {self._proxy_names}: "
                "searcher.scorer = scorer"
            ) from None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if state.get("_scorer") is not None and not _picklable(state["_scorer"]):
            logger.warning("%s: its scorer (%s) does not pickle and is left out; re-attach "
                           "it with searcher.scorer = scorer", self,
                           type(state["_scorer"]).__name__)
            state["_scorer"] = None
        return state

    def __deepcopy__(self, memo: dict[int, Any]) -> ScoredSearch:
        # a copy shares the scorer (a model, a table, remote handles) instead of copying it
        if self._scorer is not None:
            memo[id(self._scorer)] = self._scorer
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        clone.__dict__.update(copy.deepcopy(NASSearch.__getstate__(self), memo))
        return clone

    def _scorer_state(self) -> dict[str, Any]:
        return {"proxy_names": self._proxy_names, "proxy_seconds": self._cache.seconds,
                "proxies": self._cache.to_json()}

    def _set_scorer_state(self, state: Mapping[str, Any]) -> None:
        names = state["proxy_names"]
        names = None if names is None else [str(n) for n in names]
        if names is not None and self._scorer is not None and [
                str(n) for n in self._scorer.names] != names:
            raise ValueError(f"state was built on proxies {names}, this searcher's scorer "
                             f"computes {list(self._scorer.names)}")
        self._proxy_names = names if names is not None else self._proxy_names
        self._cache = ProxyCache.from_json(state["proxies"], float(state["proxy_seconds"]))
