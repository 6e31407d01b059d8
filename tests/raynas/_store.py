"""Helpers the end-to-end tests share: write a config, read back the runs of a store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from mlflow.tracking import MlflowClient

from raynas.tracking.store import TAG_ROLE

REPO = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, config: dict[str, Any], name: str = "search") -> Path:
    """Write ``config`` as ``<tmp_path>/<name>.yaml``; returns the path."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def runs(uri: str, role: str | None = None) -> list[Any]:
    """Every run of every experiment at ``uri`` (with tag raynas.role == ``role`` if given)."""
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(ids, max_results=5000)
    return [r for r in found if role is None or r.data.tags.get(TAG_ROLE) == role]


def search_run(uri: str) -> Any:
    """The one search (parent) run at ``uri``."""
    (parent,) = runs(uri, "search")
    return parent


def kill_driver_when(config: Path, uri: str, ready: Callable[[list[str]], bool]) -> list[str]:
    """Start ``raynas run config`` in its own process group; SIGKILL it all once ``ready``.

    ``ready`` sees the driver's output lines so far (and may read the store at ``uri``); it is
    polled until true. The driver exiting first, or 300 s passing (a hang), fails the test.
    Returns the output read.
    """
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_TRACKING_URI": uri,
           "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "raynas.cli", "run", str(config)],
                            cwd=config.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        lines.extend(raw.decode(errors="replace") for raw in proc.stdout)

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 300  # bounds a hang only
        while not ready(lines):
            assert proc.poll() is None, "".join(lines)[-3000:]
            assert time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, its Ray and the running trials
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    return lines
