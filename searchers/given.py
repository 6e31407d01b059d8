"""A searcher that suggests architectures handed to it, in order (Tune's ``points_to_evaluate``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from ray.tune.search import Searcher

from searchers._base import NASSearch
from spaces import Arch

logger = logging.getLogger(__name__)


class GivenArchitectures(NASSearch):
    """Suggests the architectures given to it (``extend``) once each, then finishes.

    What another process found (the derived cells of gradient-based searches) is evaluated
    through the same trials, cache, tracking and resume as any searcher's suggestions; an
    architecture equal (by canonical form) to one already suggested is skipped.

    Example:
        >>> from spaces import create_space
        >>> space = create_space("nb201")
        >>> s = GivenArchitectures(space, metric="val_acc", mode="max")
        >>> s.extend([space.decode([3] * 6), space.decode([3] * 6)])
        1
        >>> s.suggest("t1")["op/0"], s.suggest("t2")
        ('nor_conv_3x3', 'FINISHED')
    """

    def __init__(self, space: Any = None, **options: Any) -> None:
        self._queue: list[str] = []
        super().__init__(space, **options)

    def extend(self, archs: Iterable[Arch]) -> int:
        """Queue ``archs`` (validated) after those given before; how many were new."""
        self._require_ready()
        queued = {self.space.canonical(a) for a in self._queue} | set(self._seen)
        added = 0
        for arch in archs:
            text = self.space.to_string(self.space.validate(arch))
            key = self.space.canonical(text)
            if key not in queued:
                queued.add(key)
                self._queue.append(text)
                added += 1
        return added

    @property
    def remaining(self) -> int:
        """Architectures queued and not suggested yet."""
        return sum(self.space.canonical(a) not in self._seen for a in self._queue)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next queued architecture's config, or ``FINISHED`` when none is left."""
        self._require_ready()
        if not self.remaining:
            self._exhausted = True
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's own sentinel
        return super().suggest(trial_id)

    def _propose(self) -> Arch | None:
        for text in self._queue:
            if self.space.canonical(text) not in self._seen:
                return text
        return None

    def _observe(self, arch: Arch, score: float | None) -> None:
        pass

    def _get_state(self) -> dict[str, Any]:
        return {"queue": list(self._queue)}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._queue = list(state.get("queue", []))
