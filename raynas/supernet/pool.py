"""GreedyNAS candidate pool: the best single paths seen so far, by validation loss."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class CandidatePool:
    """A bounded set of ``(arch_string, loss)`` pairs keeping the lowest losses.

    GreedyNAS (You et al., CVPR 2020) samples a path from this pool with probability
    epsilon and uniformly from the space otherwise. Adding an architecture already in the
    pool keeps its better (lower) loss; when the pool is over ``max_size`` the worst entry
    goes. Non-finite losses are ignored. State is JSON-friendly (``to_state``).

    Example:
        >>> pool = CandidatePool(2)
        >>> [pool.add(a, v) for a, v in [("a", 0.5), ("b", 0.3), ("c", 0.9), ("a", 0.1)]]
        [True, True, False, True]
        >>> pool.top()
        [('a', 0.1), ('b', 0.3)]
    """

    def __init__(self, max_size: int) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"max_size must be a positive integer, got {max_size!r}")
        self.max_size = max_size
        self._loss: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._loss)

    def __contains__(self, arch: object) -> bool:
        return arch in self._loss

    def add(self, arch: str, loss: float) -> bool:
        """Offer one scored path; True if it is in the pool afterwards."""
        loss = float(loss)
        if not math.isfinite(loss):
            return False
        old = self._loss.get(arch)
        if old is not None:
            self._loss[arch] = min(old, loss)
            return True
        if len(self._loss) >= self.max_size:
            worst = self._worst()
            if loss >= self._loss[worst]:
                return False
            del self._loss[worst]
        self._loss[arch] = loss
        return True

    def update(self, scored: Mapping[str, float] | list[tuple[str, float]]) -> None:
        """Offer many scored paths."""
        items = scored.items() if isinstance(scored, Mapping) else scored
        for arch, loss in items:
            self.add(arch, loss)

    def top(self, k: int | None = None) -> list[tuple[str, float]]:
        """The ``k`` best entries (all if None), best first; ties by arch string."""
        ranked = sorted(self._loss.items(), key=lambda item: (item[1], item[0]))
        return ranked if k is None else ranked[: max(k, 0)]

    def sample(self, rng: np.random.Generator) -> str:
        """A uniformly random arch string from the pool (ordered, so seeded draws repeat)."""
        if not self._loss:
            raise RuntimeError("cannot sample from an empty candidate pool")
        keys = sorted(self._loss)
        return keys[int(rng.integers(len(keys)))]

    def _worst(self) -> str:
        return max(self._loss, key=lambda arch: (self._loss[arch], arch))

    # ---------------------------------------------------------------- state
    def to_state(self) -> dict[str, Any]:
        """JSON-friendly state: ``{"max_size": int, "entries": [[arch, loss], ...]}``."""
        return {"max_size": self.max_size, "entries": [[a, v] for a, v in self.top()]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | str) -> CandidatePool:
        """A pool from ``to_state()`` (or its JSON text)."""
        if isinstance(state, str):
            state = json.loads(state)
        pool = cls(int(state["max_size"]))
        for arch, loss in state.get("entries", []):
            pool.add(str(arch), float(loss))
        return pool
