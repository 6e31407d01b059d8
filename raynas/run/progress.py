"""A one-line-per-trial progress printer for Tune runs."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

logger = logging.getLogger(__name__)


def echo_stdout(line: str) -> None:
    """Write one line to standard output."""
    # Not builtins.print: Ray's tqdm/print patching can replace it, and Tune
    # pickles callbacks, which fails for a stale reference to the original.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class ProgressPrinter(Callback):
    """Prints ``[done/budget] metric=... best=... arch`` as trials finish."""

    def __init__(
        self,
        *,
        metric: str,
        mode: str,
        budget: int,
        describe: Callable[[dict[str, Any]], str],
        echo: Callable[[str], None] = echo_stdout,
    ) -> None:
        self.metric = metric
        self.sign = 1.0 if mode == "max" else -1.0
        self.budget = budget
        self.describe = describe
        self.echo = echo
        self.done = 0
        self.failed = 0
        self.best: float | None = None
        self.start = time.monotonic()

    def _line(self, trial: Trial, text: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.start
        best = "n/a" if self.best is None else f"{self.best:.4g}"
        self.echo(
            f"[{self.done:>{len(str(self.budget))}}/{self.budget}] {elapsed:6.1f}s "
            f"{text}  best={best}  {self.describe(trial.config)}"
        )

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Print the finished trial's metric and the best so far."""
        value = (trial.last_result or {}).get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            if self.best is None or self.sign * value > self.sign * self.best:
                self.best = float(value)
            self._line(trial, f"{self.metric}={value:.4g}")
        else:
            self.failed += 1
            self._line(trial, f"{self.metric}=invalid({value!r})")

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Print that the trial failed."""
        self.failed += 1
        self._line(trial, "ERROR")
