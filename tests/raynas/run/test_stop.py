"""SIGTERM takes Ctrl-C's path: real signals sent to this process, no Ray."""

from __future__ import annotations

import os
import signal
from types import FrameType

import pytest

from raynas.run.stop import around_fit, interrupted_exit_code, rearm, stop_signals


def test_sigterm_goes_to_the_sigint_handler_then_a_second_one_stops_hard() -> None:
    before = signal.getsignal(signal.SIGTERM)
    original_sigint = signal.getsignal(signal.SIGINT)
    seen: list[str] = []

    def tune_like(signum: int, frame: FrameType | None) -> None:
        seen.append("tune")  # Tune's first-signal handler: a graceful stop, then it steps aside
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def ray_like(signum: int, frame: FrameType | None) -> None:
        seen.append("ray")  # ray.init's handler (its C++ one prints a stack and aborts)

    try:
        with stop_signals():
            assert interrupted_exit_code() == 130
            signal.signal(signal.SIGINT, tune_like)
            signal.signal(signal.SIGTERM, ray_like)  # what ray.init leaves behind
            rearm()
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == ["tune"]
            assert interrupted_exit_code() == 143
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGINT, original_sigint)
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_ctrl_c_after_fit_is_not_swallowed_by_tunes_stale_handler() -> None:
    original_sigint = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with around_fit():
            signal.signal(signal.SIGINT, lambda signum, frame: None)  # as Tune leaves it
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, original_sigint)
