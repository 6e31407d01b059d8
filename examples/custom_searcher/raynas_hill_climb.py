"""A raynas plug-in searcher: first-improvement hill climbing with random restarts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from searchers import NASSearch
from spaces import Arch, SearchSpace

logger = logging.getLogger(__name__)


class HillClimbSearch(NASSearch):
    """First-improvement hill climbing over ``space.neighbours`` with random restarts.

    Starts from a random architecture and tries its neighbours (one decision changed) in
    random order; the first finished trial that beats the current architecture becomes
    the current one, and its neighbours are tried next. When every neighbour was handed
    out without an improvement (a local optimum), it restarts from a random architecture.
    Under concurrency, any finished trial better than the current one is moved to.

    Example:
        >>> from spaces import create_space
        >>> s = HillClimbSearch(create_space("nb201"), metric="val_acc", mode="max", seed=0)
        >>> config = s.suggest("t1")
        >>> s.on_trial_complete("t1", {"val_acc": 90.0})
    """

    def __init__(self, space: SearchSpace | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(space, **kwargs)
        self._current: tuple[str, float] | None = None  # arch string, score (higher better)
        self._queue: list[str] | None = None  # current's neighbours not handed out yet

    def _propose(self) -> Arch:
        if self._current is None:
            return self.space.sample(self._rng)
        if self._queue is None:
            neighbours = self.space.neighbours(self.space.from_string(self._current[0]))
            order = self._rng.permutation(len(neighbours))
            self._queue = [self.space.to_string(neighbours[i]) for i in order]
        if self._queue:
            return self.space.from_string(self._queue.pop(0))
        logger.debug("%s: local optimum %s; restarting", self, self._current[0])
        self._current, self._queue = None, None
        return self.space.sample(self._rng)

    def _observe(self, arch: Arch, score: float | None) -> None:
        if score is None:  # failed trial: nothing learned
            return
        if self._current is None or score > self._current[1]:
            self._current, self._queue = (self.space.to_string(arch), score), None

    def _get_state(self) -> dict[str, Any]:
        return {"current": list(self._current) if self._current else None, "queue": self._queue}

    def _set_state(self, state: dict[str, Any]) -> None:
        current = state["current"]
        self._current = (str(current[0]), float(current[1])) if current else None
        self._queue = None if state["queue"] is None else [str(t) for t in state["queue"]]
