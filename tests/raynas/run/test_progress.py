"""The progress printer: lines it prints and that Tune can pickle it."""

from __future__ import annotations

import builtins
from types import SimpleNamespace

import pytest
from ray import cloudpickle

from raynas.run.progress import ProgressPrinter


def _printer(lines: list[str] | None = None) -> ProgressPrinter:
    kwargs = {"echo": lines.append} if lines is not None else {}
    return ProgressPrinter(metric="val_acc", mode="max", budget=10,
                           describe=lambda cfg: cfg["arch"], **kwargs)


def test_lines_track_best_and_failures() -> None:
    lines: list[str] = []
    printer = _printer(lines)
    for value in (0.5, 0.7, float("nan"), 0.6):
        trial = SimpleNamespace(last_result={"val_acc": value}, config={"arch": "a"})
        printer.on_trial_complete(0, [], trial)
    assert len(lines) == 4 and printer.failed == 1
    assert lines[-1].startswith("[ 4/10]") and "best=0.7" in lines[-1]
    assert "invalid(nan)" in lines[2]


def test_default_printer_pickles_when_print_is_patched(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    # Ray's tqdm and train logging replace builtins.print; Tune pickles callbacks.
    monkeypatch.setattr(builtins, "print", lambda *a, **k: None)
    printer = cloudpickle.loads(cloudpickle.dumps(_printer()))
    printer.on_trial_complete(0, [], SimpleNamespace(last_result={"val_acc": 1.0},
                                                     config={"arch": "x"}))
    assert "val_acc=1" in capsys.readouterr().out
