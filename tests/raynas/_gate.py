"""A trial function that end-to-end tests can hold at a known point, by files in a folder.

A test that stops a real process part-way (a tracking server, a driver) holds the search's
trials while it does, so a budget never has to outlast how long that takes on a loaded
machine. Used as the evaluator ``tests.raynas._gate:evaluate`` (the repository root on the
Python path) with the options below.

- ``<gate_dir>/hold``: trials wait before returning, silently.
- ``<gate_dir>/hold-reporting``: trials wait and report their metrics every 0.1 s meanwhile,
  so the driver keeps writing to its tracking store (and Tune's stop reaches them between
  two results instead of after its 10 s grace).
- ``free``: the first ``free`` trials to start (counted across processes) are never held.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HOLD = "hold"
HOLD_REPORTING = "hold-reporting"


def hold(gate_dir: Path, *, reporting: bool = False) -> None:
    """Hold trials from now on (reporting meanwhile if ``reporting``)."""
    (gate_dir / (HOLD_REPORTING if reporting else HOLD)).touch()


def release(gate_dir: Path) -> None:
    """Let held trials return and later ones run through."""
    for name in (HOLD, HOLD_REPORTING):
        (gate_dir / name).unlink(missing_ok=True)


def _slot(gate_dir: Path) -> int:
    """This trial's start order (1, 2, ...), claimed by creating ``started-<n>`` atomically."""
    n = 1
    while True:
        try:
            os.close(os.open(gate_dir / f"started-{n}", os.O_CREAT | os.O_EXCL))
            return n
        except FileExistsError:
            n += 1


def _held(gate_dir: Path, report: Callable[[dict[str, float]], None],
          metrics: dict[str, float]) -> None:
    """Wait while a hold file exists."""
    while True:
        if (gate_dir / HOLD_REPORTING).exists():
            report(metrics)
        elif not (gate_dir / HOLD).exists():
            return
        time.sleep(0.1)


def evaluate(
    config: dict[str, Any], report: Callable[[dict[str, float]], None], *, gate_dir: str,
    delay_s: float = 0.2, free: int = 0, target: str | None = None,
) -> dict[str, float]:
    """Metrics of ``config`` after ``delay_s`` (or of ``target``'s function), held by the gate.

    Without ``target`` the metrics come from ``config["x"]``; with it the trial first waits
    at the gate (unless it is one of the ``free`` first), then runs ``target``.
    """
    gate = Path(gate_dir)
    if target is not None:
        from raynas.evaluators.function import resolve_target

        if _slot(gate) > free:
            _held(gate, lambda m: None, {})
        return dict(resolve_target(target)(config, report))
    time.sleep(delay_s)  # stands in for training
    x = float(config["x"])
    metrics = {"val_acc": x / 1000.0, "test_acc": x / 2000.0, "params": x}
    if _slot(gate) > free:
        _held(gate, report, metrics)
    return metrics
