"""Your own model through the CLI: a YAML param space and a function evaluator, run and resumed.

The example package examples/own_model (a small torch CNN on scikit-learn's digits) is put on
PYTHONPATH, as a `pip install -e` would, and searched with `raynas run`; the run is stopped
with Ctrl-C (SIGINT) part-way and finished with `raynas resume`, each in its own process, as
a user would. Its trials go through ``tests.raynas._gate``, which holds all but the first
three until the stop has reached Tune, so the stop always lands before the budget is spent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from raynas.tracking.store import TAG_ARCH, TAG_CANONICAL

from .. import _gate
from .._store import runs, search_run

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "own_model"


BUDGET = 8
FREE = 3  # trials that run before the stop; the others wait at the gate until it landed


def _config(tmp_path: Path) -> dict[str, Any]:
    config = yaml.safe_load((EXAMPLE / "search.yaml").read_text())
    config["space"]["params"].update({"epochs": 2, "width": {"choice": [4, 8]}})
    gate = tmp_path / "gate"
    gate.mkdir()
    config["evaluator"] = {"name": "tests.raynas._gate:evaluate", "target": config["evaluator"],
                           "gate_dir": str(gate), "free": FREE}
    config["budget"] = {"trials": BUDGET, "concurrency": 2}
    config["scheduler"].update({"max_t": 2, "grace_period": 1})
    config["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "own",
                          "checkpoint_every": 2}
    config["output_dir"] = str(tmp_path / "out")
    return config


def _raynas(args: list[str], tmp_path: Path, uri: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_TRACKING_URI": uri,
           "PYTHONPATH": os.pathsep.join([str(EXAMPLE), str(REPO)])}
    return subprocess.Popen(
        [sys.executable, "-m", "raynas.cli", *args], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )


def _collect(proc: subprocess.Popen[bytes]) -> list[str]:
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw.decode(errors="replace"))

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_own_model_run_stopped_and_resumed(tmp_path: Path) -> None:
    config = _config(tmp_path)
    uri = config["tracking"]["uri"]
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    gate = tmp_path / "gate"
    _gate.hold(gate)
    proc = _raynas(["run", str(path)], tmp_path, uri)
    try:
        lines = _collect(proc)
        deadline = time.monotonic() + 240  # bounds a hang only
        while time.monotonic() < deadline:  # until the free trials finished (in the store)
            assert proc.poll() is None, "".join(lines)[-3000:]
            if any(line.startswith("raynas: searching") for line in lines) and sum(
                r.info.status == "FINISHED" for r in runs(uri, "trial")
            ) >= FREE:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("".join(lines)[-3000:])
        proc.send_signal(signal.SIGINT)
        # Tune says when its loop took the signal; from then on it starts no trial, and the
        # held ones, let go, end their current step, so Tune's stop reaches them at once.
        while not any("Stop signal received" in line for line in lines):
            assert proc.poll() is None, "".join(lines)[-3000:]
            assert time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.05)
        _gate.release(gate)
        assert proc.wait(timeout=120) == 130, "".join(lines)[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert any("raynas resume" in line for line in lines), "".join(lines)[-3000:]
    parent = search_run(uri)
    assert parent.info.status == "KILLED"

    resume = _raynas(["resume", parent.info.run_id, "--tracking-uri", uri], tmp_path, uri)
    out, _ = resume.communicate(timeout=300)
    assert resume.returncode == 0, out.decode()[-3000:]

    finished = [r for r in runs(uri, "trial") if r.info.status == "FINISHED"]
    canon = Counter(r.data.tags[TAG_CANONICAL] for r in finished)
    assert len(canon) == BUDGET and max(canon.values()) == 1
    some = finished[0]
    # the trial run carries the nested config flat, constants included, and per-epoch results
    assert some.data.params["epochs"] == "2" and some.data.params["batch_size"] == "64"
    arch = json.loads(some.data.tags[TAG_ARCH])
    assert set(arch) == {"depth", "width", "kernel", "lr"}
    assert "val_acc" in some.data.metrics and "train_loss" in some.data.metrics
    parent = search_run(uri)
    assert parent.info.status == "FINISHED" and parent.data.metrics["num_trials"] == BUDGET
    assert 0 < parent.data.metrics["best_val_acc"] <= 100


@pytest.fixture
def example_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example importable, with its entry point declared as pip would write it."""
    dist = tmp_path / "raynas_digits_cnn-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: raynas-digits-cnn\n"
                                   "Version: 0.1.0\n")
    (dist / "entry_points.txt").write_text(
        "[raynas.evaluators]\ndigits_cnn = digits_cnn.train:evaluate\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    return tmp_path


@pytest.mark.parametrize("name", ["digits_cnn", "digits_cnn.train:evaluate"])
def test_function_evaluator_by_entry_point_or_path(name: str, example_installed: Path) -> None:
    from raynas.evaluators.base import create_evaluator
    from raynas.evaluators.function import FunctionEvaluator
    from spaces import create_space

    params = yaml.safe_load((EXAMPLE / "search.yaml").read_text())["space"]["params"]
    space = create_space("params", params={**params, "epochs": 2, "width": {"choice": [4]}})
    evaluator = create_evaluator(name, space)
    assert isinstance(evaluator, FunctionEvaluator)
    reports: list[dict[str, float]] = []
    arch = space.sample(__import__("numpy").random.default_rng(0))
    final = evaluator.evaluate(arch, report=reports.append)
    assert [r["epoch"] for r in reports] == [1.0, 2.0]  # one report per epoch, as it arrives
    assert {"val_acc", "test_acc", "params"} <= set(final)
    import pickle

    clone = pickle.loads(pickle.dumps(evaluator))  # what Tune ships to a worker: the name
    assert clone._fn is None and clone.evaluate(arch) == final


def test_function_evaluator_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from raynas.evaluators.function import FunctionEvaluator
    from spaces import create_space

    (tmp_path / "user_fns.py").write_text(
        "def no_report(config, scale=1.0):\n    return {'y': config['x'] * scale}\n"
        "def reports_only(config, report):\n    report({'y': 1.0})\n"
        "def bad(config, report):\n    report({'y': 'high'})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    space = create_space("params", params={"x": {"uniform": [1.0, 2.0]}, "k": 7})
    arch = space.from_config({"x": 1.5})
    assert FunctionEvaluator(space, target="user_fns:no_report",
                             options={"scale": 2.0}).evaluate(arch) == {"y": 3.0}
    seen: list[dict[str, float]] = []
    assert FunctionEvaluator(space, target="user_fns:reports_only").evaluate(
        arch, report=seen.append) == {}
    assert seen == [{"y": 1.0}]
    with pytest.raises(TypeError, match="'user_fns:bad': report metric 'y' must be a number"):
        FunctionEvaluator(space, target="user_fns:bad").evaluate(arch)
    with pytest.raises(ValueError, match="cannot take options"):
        FunctionEvaluator(space, target="user_fns:no_report", options={"epochs": 3})
