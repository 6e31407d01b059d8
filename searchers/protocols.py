"""Interfaces that searchers consume and ``raynas`` implements (often with Ray actors).

Dependencies point ``raynas -> searchers -> spaces``: a searcher that needs a service
(the supernet's candidate pool, an evaluator, an accuracy or latency predictor) states
here what it needs, and ``raynas`` passes in an object that provides it. Searchers never
import ``raynas`` or ``ray`` handles; tests pass plain Python objects.

The protocols are ``runtime_checkable``: ``isinstance(obj, Predictor)`` checks that the
method exists (not its signature).

Example:
    >>> class FixedPool:
    ...     def candidates(self, k=None):
    ...         pool = [("arch-a", 0.31), ("arch-b", 0.35)]
    ...         return pool if k is None else pool[:k]
    >>> isinstance(FixedPool(), CandidateSource)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from spaces import Arch

__all__ = ["CandidateFn", "CandidateSource", "Evaluator", "Predictor", "Scorer"]


@runtime_checkable
class CandidateSource(Protocol):
    """A ranked pool of promising architectures, e.g. a GreedyNAS supernet's candidate pool.

    ``candidates(k)`` returns up to ``k`` (all if ``None``) pairs ``(arch_string, loss)``,
    best first: LOWER ``loss`` is better (a supernet validation loss). The strings are the
    space's ``to_string`` form. Called rarely (once per search), so it may be a remote call.
    """

    def candidates(self, k: int | None = None) -> list[tuple[str, float]]:
        """Up to ``k`` ``(arch_string, loss)`` pairs, lowest loss first."""
        ...


# A plain function works as well as an object: ``lambda k: host_pool(k)``.
CandidateFn = Callable[[int | None], Sequence[tuple[str, float]]]


@runtime_checkable
class Evaluator(Protocol):
    """Measures one architecture: ``evaluate(arch)`` -> metrics such as ``{"val_acc": 91.2}``."""

    def evaluate(self, arch: Arch) -> dict[str, float]:
        """Metric name -> value for ``arch``; raises on failure (bounded retries inside)."""
        ...


@runtime_checkable
class Predictor(Protocol):
    """A batched surrogate: ``predict(archs)`` -> one predicted value per architecture."""

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Array of shape ``(len(archs),)`` (or ``(len(archs), n_outputs)``), in order."""
        ...


@runtime_checkable
class Scorer(Protocol):
    """Zero-cost proxies of architectures: ``scorer(archs)`` -> shape ``(len(archs), k)``.

    One column per name in ``names``, higher is better in each (NaN where a proxy failed);
    ``seconds`` is the compute charged so far, so searches report what screening cost.
    raynas's ``ProxyScorer`` (networks at initialisation) and ``TableScorer`` (a Parquet
    table of precomputed scores) provide it.
    """

    names: Sequence[str]
    seconds: float

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        """Scores of ``archs``, one row each, in order."""
        ...
