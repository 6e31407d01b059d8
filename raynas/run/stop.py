"""Stop signals: SIGTERM takes Ctrl-C's path (a graceful stop, then a hard one) and its exit code.

Tune handles the first SIGINT during ``fit`` by stopping its trials and returning; a second
one raises ``KeyboardInterrupt``. SIGTERM (what ``timeout``, Kubernetes and systemd send) is
handed to whatever handles SIGINT at that moment, so both signals stop a search the same way:
runs recorded KILLED, the tracking buffer flushed, the resume command printed. Only the exit
code differs: 130 after SIGINT, 143 after SIGTERM (128 + the signal number, as shells report).

``ray.init`` replaces the SIGTERM handler (its core worker's C++ handler prints a stack trace
and aborts), so whoever starts Ray calls ``rearm`` afterwards.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

logger = logging.getLogger(__name__)

EXIT_SIGINT = 128 + int(signal.SIGINT)
EXIT_SIGTERM = 128 + int(signal.SIGTERM)

_installed = False
_received: list[int] = []  # SIGTERMs seen since the last install (SIGINT goes to Tune)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Deliver SIGTERM as SIGINT: Tune's handler stops gracefully, the default raises."""
    _received.append(signum)
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(int(signal.SIGINT), frame)  # default_int_handler raises KeyboardInterrupt
    else:  # SIGINT ignored (a background job) or default: stop all the same
        raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def stop_signals() -> Iterator[None]:
    """Within: SIGTERM stops like Ctrl-C; the previous handler is restored on exit."""
    global _installed
    if not _main_thread():  # signal handlers can only be set there
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _received.clear()
    _installed = True
    try:
        yield
    finally:
        _installed = False
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def rearm() -> None:
    """Take SIGTERM back after ``ray.init`` (whose handler dumps a C++ stack and aborts)."""
    if _installed and _main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def sigterm_received() -> bool:
    """Whether a SIGTERM arrived since ``stop_signals`` was last entered."""
    return bool(_received)


def interrupted_exit_code() -> int:
    """The exit code of a stopped search: 143 after a SIGTERM, else 130 (Ctrl-C)."""
    return EXIT_SIGTERM if sigterm_received() else EXIT_SIGINT


class _TuneResumeHint(logging.Filter):
    """Drops Tune's own lines on a stop that do not apply to raynas.

    Its ``Tuner.restore(...)`` hint (raynas resumes from MLflow: ``raynas resume``), and its
    complaint about trials that never started having no result files.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return "Tuner.restore(" not in text and "Failed to fetch metrics for" not in text


_TUNE_LOGGERS = ("ray.tune.tune", "ray.tune.analysis.experiment_analysis")


@contextmanager
def around_fit() -> Iterator[None]:
    """Around Tune's ``fit``: SIGINT's handler put back afterwards, Tune's resume hint dropped.

    Tune leaves its SIGINT handler installed after ``fit``; a Ctrl-C (or SIGTERM) while the
    results are written would only set Tune's stale event and be lost.
    """
    hint = _TuneResumeHint()
    for name in _TUNE_LOGGERS:
        logging.getLogger(name).addFilter(hint)
    previous = signal.getsignal(signal.SIGINT) if _main_thread() else None
    try:
        yield
    finally:
        for name in _TUNE_LOGGERS:
            logging.getLogger(name).removeFilter(hint)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
