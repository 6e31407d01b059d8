"""Resuming a supernet search reuses its weights: drivers SIGKILLed after and during training.

Each search runs as a user runs it (``python -m raynas.cli run``, its own process group, its
own local Ray), is SIGKILLed at an event read from the MLflow store, and is resumed here
(``raynas resume`` in this process, on the session's Ray). Steps are counted from the
store's ``supernet/loss`` history, never from the processes' output. The search killed after
training runs once per module; each test that resumes it gets a fresh copy.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from raynas.cli.main import main
from raynas.tracking.resume import checkpoint_step

from .._store import runs, search_run

pytestmark = [pytest.mark.ray, pytest.mark.slow]

LOSS = "supernet/loss"
TRIALS = 20  # of the trained search; trials take ~0.1 s each
EVALUATOR_LOG = "raynas.supernet.evaluator"


def _config(tmp_path: Path, *, train_steps: int, trials: int) -> dict[str, Any]:
    return {
        "name": "snresume",
        "space": {"name": "nb201", "channels": 4, "cells_per_stage": 1, "resolution": 8},
        "searcher": {"name": "regularized_evolution", "population_size": 4,
                     "tournament_size": 2},
        "evaluator": {"name": "supernet", "train_steps": train_steps, "chunk_steps": 10,
                      "num_threads": 1, "batch_size": 32},
        "budget": {"trials": trials, "concurrency": 1, "cpus_per_trial": 0.5},
        "seed": 3,
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "snresume"},
        "output_dir": str(tmp_path / "out"),
    }


def _run_until(
    folder: Path, config: dict[str, Any], event: Callable[[str], bool],
    procs: list[subprocess.Popen[bytes]],
) -> str:
    """Run `raynas run` in its own process group in ``folder``; SIGKILL the group at ``event``."""
    path = folder / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    uri = config["tracking"]["uri"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.Popen(
        [sys.executable, "-m", "raynas.cli", "run", str(path)], cwd=folder, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    procs.append(proc)
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        lines.extend(raw.decode(errors="replace") for raw in proc.stdout)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 300  # bounds a hang only
    # The driver's first line is printed once its parent run exists (and the store's
    # tables: a second process creating them would race the driver's migrations).
    while not (any(x.startswith("raynas: searching") for x in lines) and event(uri)):
        assert proc.poll() is None, "".join(lines)[-3000:]
        assert time.monotonic() < deadline, "".join(lines)[-3000:]
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    return str(search_run(uri).info.run_id)


def _kill_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)


@pytest.fixture
def killed(tmp_path: Path) -> Iterator[Callable[[dict[str, Any], Callable[[str], bool]], str]]:
    """Run `raynas run` in its own process group; SIGKILL the group once ``event(uri)``."""
    procs: list[subprocess.Popen[bytes]] = []
    yield lambda config, event: _run_until(tmp_path, config, event, procs)
    _kill_all(procs)


@pytest.fixture(scope="module")
def _trained_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str]]:
    """One search SIGKILLed in its search phase, its supernet trained: (live, template, run id).

    Its folder is kept as a template for the tests that use it (``trained``).
    """
    base = tmp_path_factory.mktemp("trained")
    live, template = base / "live", base / "template"
    live.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        config = _config(live, train_steps=30, trials=TRIALS)
        run_id = _run_until(live, config, _trials_finished(2), procs)
    finally:
        _kill_all(procs)
    shutil.copytree(live, template)
    yield live, template, run_id


@pytest.fixture
def trained(_trained_once: tuple[Path, Path, str], tmp_path: Path) -> tuple[str, str]:
    """A fresh copy of the killed search with a trained supernet: (tracking uri, run id).

    Artifacts and output folder go back to the absolute paths the store records; the store
    itself is copied to a file of this test (MLflow keeps its connections per store path,
    so a file replaced under them would read as read-only). No test sees another's changes.
    """
    live, template, run_id = _trained_once
    shutil.rmtree(live)
    shutil.copytree(template, live, ignore=shutil.ignore_patterns("mlflow.db*"))
    db = tmp_path / "mlflow.db"
    shutil.copyfile(template / "mlflow.db", db)
    return f"sqlite:///{db}", run_id


def _checkpoints(uri: str, run_id: str) -> list[str]:
    return [a.path for a in MlflowClient(uri).list_artifacts(run_id) if a.path.endswith(".pt")]


def _checkpoint_logged(uri: str) -> bool:
    parents = runs(uri, "search")
    return bool(parents) and bool(_checkpoints(uri, parents[0].info.run_id))


def _trials_finished(count: int) -> Callable[[str], bool]:
    return lambda uri: sum(r.info.status == "FINISHED" for r in runs(uri, "trial")) >= count


def _loss_steps(uri: str, run_id: str, *, since_ms: int = 0) -> list[int]:
    """Steps of the logged ``supernet/loss`` values (those logged at or after ``since_ms``)."""
    history = MlflowClient(uri).get_metric_history(run_id, LOSS)
    return sorted(m.step for m in history if m.timestamp >= since_ms)


def _resume(uri: str, run_id: str) -> int:
    """Run `raynas resume` in this process to its end; returns when it started (epoch ms)."""
    started = int(time.time() * 1000)
    assert main(["resume", run_id, "--tracking-uri", uri]) == 0
    return started


def _stored_step(uri: str, run_id: str, dest: Path) -> int | None:
    (name,) = _checkpoints(uri, run_id)
    local = MlflowClient(uri).download_artifacts(run_id, name, dst_path=str(dest))
    return checkpoint_step(local)


def test_resume_after_training_retrains_and_relogs_nothing(
    trained: tuple[str, str], ray_session: None, caplog: pytest.LogCaptureFixture
) -> None:
    uri, run_id = trained  # killed in the search, training done
    assert search_run(uri).info.status == "RUNNING"
    assert _loss_steps(uri, run_id) == list(range(1, 31))
    assert _checkpoints(uri, run_id) == [f"raynas-supernet-{run_id}.pt"]

    caplog.set_level(logging.INFO, logger=EVALUATOR_LOG)
    started = _resume(uri, run_id)
    assert _loss_steps(uri, run_id) == list(range(1, 31))  # each step once
    assert _loss_steps(uri, run_id, since_ms=started) == []  # none logged again
    continued = [r.getMessage() for r in caplog.records if "continuing from step" in r.getMessage()]
    assert len(continued) == 1 and "continuing from step 30 " in continued[0]  # none retrained
    assert _checkpoints(uri, run_id) == [f"raynas-supernet-{run_id}.pt"]  # overwritten
    assert search_run(uri).info.status == "FINISHED"
    assert sum(r.info.status == "FINISHED" for r in runs(uri, "trial")) == TRIALS


def test_kill_during_training_resumes_from_the_last_logged_chunk(
    tmp_path: Path, killed: Any, ray_session: None, caplog: pytest.LogCaptureFixture
) -> None:
    # ~35 ms a step on a loaded 2-core machine: the kill lands seconds before the end
    steps = 150
    config = _config(tmp_path, train_steps=steps, trials=3)
    uri = config["tracking"]["uri"]
    run_id = killed(config, _checkpoint_logged)  # the first chunk's checkpoint is in MLflow
    logged = _loss_steps(uri, run_id)
    assert logged == list(range(1, len(logged) + 1)) and len(logged) < steps  # mid-training
    at_kill = _stored_step(uri, run_id, tmp_path / "dl")
    assert at_kill is not None and 10 <= at_kill <= len(logged) and at_kill % 10 == 0

    caplog.set_level(logging.INFO, logger=EVALUATOR_LOG)
    started = _resume(uri, run_id)
    continued = [r.getMessage() for r in caplog.records if "continuing from step" in r.getMessage()]
    assert len(continued) == 1 and f"continuing from step {at_kill} " in continued[0]
    assert _loss_steps(uri, run_id) == list(range(1, steps + 1))  # every step once
    # Steps the killed driver logged after its last checkpoint were trained again, not logged.
    assert _loss_steps(uri, run_id, since_ms=started) == list(range(len(logged) + 1, steps + 1))
    assert _stored_step(uri, run_id, tmp_path / "dl2") == steps


def test_a_corrupt_checkpoint_is_one_warning_line_and_a_retrain(
    tmp_path: Path, trained: tuple[str, str], ray_session: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    uri, run_id = trained
    (name,) = _checkpoints(uri, run_id)
    corrupt = tmp_path / "corrupt" / name
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\x80\x04not a checkpoint")  # a truncated upload, say
    MlflowClient(uri).log_artifact(run_id, str(corrupt))  # the same artifact path
    assert _stored_step(uri, run_id, tmp_path / "dl") is None

    caplog.set_level(logging.INFO, logger=EVALUATOR_LOG)
    started = _resume(uri, run_id)
    warned = [r for r in caplog.records
              if r.levelno >= logging.WARNING and name in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    message = warned[0].getMessage()
    assert "weights-only loader" in message and "from step 0" in message
    assert "\n" not in message
    assert len(message) < 500 and not any(r.exc_info for r in caplog.records)
    assert _stored_step(uri, run_id, tmp_path / "dl2") == 30  # retrained and logged again
    # The retrained steps were logged by the killed driver already: none twice.
    assert _loss_steps(uri, run_id) == list(range(1, 31))
    assert _loss_steps(uri, run_id, since_ms=started) == []
