"""A local run (no --address) listens on loopback only: every socket of its processes, counted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .._procs import is_loopback, kill_run, run_processes, tcp_listeners
from .._store import write_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# A trial that says it started and then waits: the run is certainly up while it is looked at.
# It reports while it waits: Tune's stop reaches a trial's actor between two results, and one
# that never reports is killed only after Tune's fixed 10 s grace.
HOLD = '''
import pathlib, time

def evaluate(config, report):
    pathlib.Path({marker!r}).touch()
    while True:
        report({{"score": 0.0}})
        time.sleep(0.25)
'''


def test_a_local_run_listens_on_loopback_only(tmp_path: Path) -> None:
    marker = tmp_path / "trial-started"
    (tmp_path / "hold.py").write_text(HOLD.format(marker=str(marker)))
    config = write_config(tmp_path, {
        "name": "loopback",
        "space": {"name": "params", "params": {"x": {"randint": [0, 1000]}}},
        "evaluator": "hold:evaluate",
        "searcher": "random",
        "metric": "score",
        "mode": "max",
        "budget": {"trials": 2, "concurrency": 1},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "net"},
        "output_dir": str(tmp_path / "out"),
    })
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = (tmp_path / "driver.txt").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "raynas.cli", "run", str(config)], cwd=tmp_path, env=env,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300  # a bound on a hang, not a timing assertion
        while not marker.exists():
            assert proc.poll() is None, (tmp_path / "driver.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial started"
            time.sleep(0.2)
        processes = run_processes(proc.pid)
        listeners = tcp_listeners(processes)
        # GCS, raylet (two servers), the driver's and the trial worker's core workers at least
        assert len(listeners) >= 4, listeners
        assert [entry for entry in listeners if not is_loopback(entry[0])] == []
        proc.send_signal(signal.SIGTERM)  # the driver alone, as Kubernetes sends it
        assert proc.wait(timeout=120) == 143, (tmp_path / "driver.txt").read_text()[-3000:]
    finally:
        kill_run(proc)  # whatever is left, should an assertion have failed
        log.close()
    out = (tmp_path / "driver.txt").read_text()
    assert "continue with: raynas resume " in out
    assert "SIGTERM received" not in out and "Traceback" not in out
