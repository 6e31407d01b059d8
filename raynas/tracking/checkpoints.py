"""Searcher state checkpoints: JSON files logged to MLflow every N finished trials."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

if TYPE_CHECKING:
    from ray.tune.experiment import Trial
    from ray.tune.search import Searcher

logger = logging.getLogger(__name__)


class SearcherCheckpoint(Callback):
    """Save the searcher's state (its JSON ``save``) every ``every`` finished trials.

    Tune tells the searcher of a finished trial before it calls callbacks, so a checkpoint
    written here already holds that trial, and no later suggestion (the next one is made
    after the callbacks return).

    Args:
        searcher: the searcher Tune drives (a ``NASSearch`` or ``PortfolioSearch``).
        path: local file the state is written to (overwritten each time).
        upload: called with ``path`` after each write (logs it to MLflow).
        every: finished trials between checkpoints; 0 writes only on ``write()``.
    """

    def __init__(
        self, searcher: Searcher, path: Path, upload: Callable[[Path], None], every: int
    ) -> None:
        self.searcher = searcher
        self.path = Path(path)
        self.upload = upload
        self.every = every
        self.finished = 0
        self.written = 0

    def write(self) -> Path:
        """Save the state now and upload it."""
        self.searcher.save(str(self.path))
        self.upload(self.path)
        self.written += 1
        return self.path

    def _count(self) -> None:
        self.finished += 1
        if self.every and self.finished % self.every == 0:
            self.write()

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial,
                          **info: Any) -> None:
        """Count a finished trial; write a checkpoint every ``every``."""
        self._count()

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        """Count a failed trial; write a checkpoint every ``every``."""
        self._count()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with its experiment state; the uploader holds live clients.
        state = self.__dict__.copy()
        state["upload"] = None
        return state
