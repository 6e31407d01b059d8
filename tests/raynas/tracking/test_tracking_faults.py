"""MLflow logging survives a tracking-server outage: a real ``mlflow server`` stops and starts.

The server runs in its own process group (``setsid``) with ``--workers 1`` and job execution
off (see shared/STACK.md); every fixture stops it by its process group in teardown.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from raynas.tracking.store import (
    SPOOL_FILE,
    TAG_ARCH,
    TAG_ROLE,
    TAG_TRIAL_ID,
    Tracker,
    TrackingError,
    replay_spool,
)

from .. import _gate

REPO = Path(__file__).resolve().parents[3]
PROGRESS = re.compile(r"^\[\s*(\d+)/(\d+)\]\s.*\s(\S+)\s*$")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 that can be stopped and started on the same port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the server on the same port and store, and wait until /health answers."""
        env = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        with (self.root / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
                    "--port", str(self.port), "--workers", "1",
                    "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                    "--artifacts-destination", str(self.root / "artifacts"),
                ],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mlflow server on {self.uri} not healthy after {timeout_s} s")

    def stop(self) -> None:
        """Stop the server's whole process group (TERM, then KILL after 20 s)."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def mlflow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowServer]:
    """A running server with its store under tmp_path; stopped by process group in teardown."""
    # The Tracker sets these for http stores; monkeypatch restores them after the test.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    root = tmp_path / "server"
    root.mkdir()
    server = MlflowServer(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _runs(client: MlflowClient) -> list:
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, run_view_type=ViewType.ALL, max_results=5000)


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_tracker_buffers_through_an_outage(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    spool = tmp_path / SPOOL_FILE
    tracker = Tracker(mlflow_server.uri, "faults", spool_path=spool, max_outage_s=120)
    parent = tracker.start_search(name="s", params={"seed": 1}, tags={"raynas.space": "nb201"})
    tracker.log_metrics(parent, {"m": 0.0}, step=0)
    assert not spool.exists()  # the happy path writes straight to the store

    mlflow_server.stop()
    artifact = tmp_path / "notes.txt"
    artifact.write_text("written during the outage")
    slowest = 0.0
    t0 = time.monotonic()
    child = tracker.start_child(
        parent, name="trial_0", params={"op/0": "conv3x3"}, tags={TAG_ROLE: "trial"}
    )
    assert child.startswith("local-")
    steps = 0
    while time.monotonic() - t0 < 3.0:
        steps += 1
        began = time.monotonic()
        tracker.log_metrics(parent, {"m": float(steps)}, step=steps)
        tracker.log_metrics(child, {"val_acc": steps / 100, "loss": 1 / steps}, step=steps)
        slowest = max(slowest, time.monotonic() - began)
        time.sleep(0.05)
    tracker.set_tag(child, "raynas.note", "outage")
    tracker.log_text(child, "hello", "texts/hello.txt")
    tracker.log_file(child, artifact, "files")
    tracker.end(child)
    assert slowest < 0.5, f"a write blocked for {slowest:.2f} s while the store was down"
    assert tracker.unreachable_s >= 2.0
    assert tracker.pending == 2 * steps + 2 + 4  # create, params, metrics, tag, 2 files, end
    assert len(spool.read_text().splitlines()) == tracker.pending
    assert not tracker.flush(timeout_s=0.5)  # still down: flush gives up, nothing is lost

    mlflow_server.start()
    assert tracker.flush(timeout_s=60)
    assert tracker.unreachable_s == 0.0 and tracker.pending == 0
    real = tracker.resolve(child)
    assert real != child and len(real) == 32
    tracker.end(parent)
    assert tracker.close()

    client = MlflowClient(mlflow_server.uri)

    def check() -> None:
        runs = _runs(client)
        assert sorted(r.info.run_id for r in runs) == sorted([parent, real])
        assert _history(client, parent, "m") == [(s, float(s)) for s in range(steps + 1)]
        assert _history(client, real, "val_acc") == [(s, s / 100) for s in range(1, steps + 1)]
        assert len(client.get_metric_history(real, "loss")) == steps
        run = client.get_run(real)
        assert run.info.status == "FINISHED" and run.info.run_name == "trial_0"
        assert run.data.tags[MLFLOW_PARENT_RUN_ID] == parent
        assert run.data.tags[TAG_ROLE] == "trial" and run.data.tags["raynas.note"] == "outage"
        assert run.data.params == {"op/0": "conv3x3"}
        paths = {a.path for a in client.list_artifacts(real, "texts")}
        paths |= {a.path for a in client.list_artifacts(real, "files")}
        assert paths == {"texts/hello.txt", "files/notes.txt"}
        local = client.download_artifacts(real, "files/notes.txt", str(tmp_path / "dl"))
        assert Path(local).read_text() == "written during the outage"
        assert client.get_run(parent).info.status == "FINISHED"

    check()
    # The tracker recorded its progress: replaying the spool adds nothing ...
    assert replay_spool(spool, mlflow_server.uri) == {child: real}
    check()
    # ... and neither does a replay from the first line, as after a crash before `.done`.
    Path(str(spool) + ".done").unlink()
    assert replay_spool(spool, mlflow_server.uri) == {child: real}
    check()


def test_outage_longer_than_max_outage_s_raises_and_the_spool_replays(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    spool = tmp_path / SPOOL_FILE
    tracker = Tracker(mlflow_server.uri, "faults", spool_path=spool, max_outage_s=1.0)
    parent = tracker.start_search(name="s", params={}, tags={})
    mlflow_server.stop()
    child = tracker.start_child(parent, name="t", params={"a": 1}, tags={TAG_ROLE: "trial"})
    tracker.log_metrics(child, {"val_acc": 0.5}, step=1)
    time.sleep(1.5)
    with pytest.raises(TrackingError) as info:
        tracker.end(child)
    message = str(info.value)
    assert "\n" not in message
    assert f"MLflow tracking store at {mlflow_server.uri} has been unreachable for " in message
    assert f"raynas resume {parent} --spool {spool}" in message
    with pytest.raises(TrackingError, match="unreachable"):
        tracker.flush(timeout_s=1)
    ops = [json.loads(line)["op"] for line in spool.read_text().splitlines()]
    assert ops == ["create_run", "log_batch", "log_batch", "end"]  # the failing write too

    mlflow_server.start()
    ids = replay_spool(spool, mlflow_server.uri)
    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(ids[child])
    assert run.info.status == "FINISHED" and run.data.tags[MLFLOW_PARENT_RUN_ID] == parent
    assert _history(client, ids[child], "val_acc") == [(1, 0.5)]
    assert replay_spool(spool, mlflow_server.uri) == ids
    assert len(_runs(client)) == 2


def test_unreachable_store_at_start_is_one_clear_error() -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(TrackingError, match=f"MLflow tracking server '{uri}' is unreachable"):
        Tracker(uri, "x")


def test_sqlite_happy_path_writes_directly_and_pickles(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool = tmp_path / SPOOL_FILE
    tracker = Tracker(uri, "direct", spool_path=spool)
    parent = tracker.start_search(name="s", params={"a": 1}, tags={})
    child = tracker.start_child(parent, name="t", params={"b": 2}, tags={TAG_ROLE: "trial"})
    tracker.log_metrics(child, {"val_acc": 0.25}, step=1)
    tracker.end(child)
    assert len(child) == 32 and tracker.pending == 0 and not spool.exists()
    copy = pickle.loads(pickle.dumps(tracker))  # Tune pickles its callbacks
    assert (copy.uri, copy.experiment_id, copy.spool_path) == (uri, tracker.experiment_id, spool)
    tracker.close()
    with pytest.raises(ValueError, match="max_outage_s must be a number of seconds > 0"):
        Tracker(uri, "direct", max_outage_s=0)


def test_replay_of_a_missing_spool_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TrackingError, match="no MLflow spool file at"):
        replay_spool(tmp_path / "none.jsonl", f"sqlite:///{tmp_path / 'm.db'}")


# ------------------------------------------------------------------ `raynas run` end to end
def _search_config(tmp_path: Path, uri: str, trials: int, **tracking: object) -> Path:
    """A search whose trials take 0.2 s and wait at ``<tmp_path>/gate`` while the test says."""
    gate = tmp_path / "gate"
    gate.mkdir()
    config = {
        "name": "outage",
        "space": {"name": "params", "params": {"x": {"randint": [0, 1_000_000]}}},
        "searcher": "random",
        "evaluator": {"name": "tests.raynas._gate:evaluate", "gate_dir": str(gate),
                      "delay_s": 0.2},
        "metric": "val_acc",
        "mode": "max",
        "budget": {"trials": trials, "concurrency": 2},
        "seed": 0,
        "tracking": {"uri": uri, "experiment": "x", **tracking},
        "output_dir": str(tmp_path / "out"),
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _start_cli(config: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    # As a user runs it: no Ray address, MLflow HTTP settings or Tune logger switches of pytest.
    drop = ("RAY_ADDRESS", "MLFLOW_HTTP", "MLFLOW_TRACKING_URI", "TUNE_DISABLE_AUTO_CALLBACK")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(RAY_USAGE_STATS_ENABLED="0", MLFLOW_DISABLE_TELEMETRY="true",
               PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "raynas.cli", "run", str(config)],
        cwd=tmp_path, env=env, stdout=(tmp_path / "stdout.txt").open("wb"),
        stderr=(tmp_path / "stderr.txt").open("wb"), start_new_session=True,
    )


def _progress(tmp_path: Path) -> list[str]:
    """Architectures of the trials the CLI reported finished, in order."""
    lines = (tmp_path / "stdout.txt").read_text().splitlines()
    return [m.group(3) for m in map(PROGRESS.match, lines) if m]


def _wait_for_trials(proc: subprocess.Popen[bytes], tmp_path: Path, n: int) -> None:
    deadline = time.monotonic() + 240  # bounds a hang only
    while len(_progress(tmp_path)) < n:
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
        assert time.monotonic() < deadline, f"the search did not reach {n} trials"
        time.sleep(0.1)


@pytest.fixture
def cli_process() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Holds the `raynas run` subprocess of a test; killed by process group in teardown."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _trial_children(client: MlflowClient) -> tuple[object, list]:
    runs = _runs(client)
    (parent,) = [r for r in runs if r.data.tags.get(TAG_ROLE) == "search"]
    children = [
        r for r in runs
        if r.data.tags.get(TAG_ROLE) == "trial"
        and r.data.tags.get(MLFLOW_PARENT_RUN_ID) == parent.info.run_id
    ]
    return parent, children


@pytest.mark.slow
@pytest.mark.ray
def test_search_survives_a_server_outage(
    mlflow_server: MlflowServer, tmp_path: Path, cli_process: list
) -> None:
    # Trials are held while the server stops and while it starts again, so the budget need
    # not outlast a restart (seconds to tens of seconds, by the machine's load): trials
    # finish during the outage, and the search goes on, logging directly, once it is over.
    trials = 30
    gate = tmp_path / "gate"
    proc = _start_cli(_search_config(tmp_path, mlflow_server.uri, trials), tmp_path)
    cli_process.append(proc)
    _wait_for_trials(proc, tmp_path, 4)
    _gate.hold(gate)
    mlflow_server.stop()
    stopped_at = len(_progress(tmp_path))
    _gate.release(gate)
    _wait_for_trials(proc, tmp_path, stopped_at + 6)
    _gate.hold(gate)
    during = len(_progress(tmp_path)) - stopped_at
    assert proc.poll() is None, "the search stopped during the outage"
    assert during >= 6, f"only {during} trials finished while the store was down"
    mlflow_server.start()
    restarted_at = len(_progress(tmp_path))
    _gate.release(gate)
    assert restarted_at < trials, "the search ended before the store came back"
    assert proc.wait(timeout=400) == 0, (tmp_path / "stderr.txt").read_text()[-3000:]

    err = (tmp_path / "stderr.txt").read_text()
    assert "is unreachable" in err and "is reachable again after" in err
    (out_dir,) = (tmp_path / "out").glob("outage-*")
    assert (out_dir / SPOOL_FILE).is_file()
    table = pq.read_table(out_dir / "trials.parquet").to_pylist()
    assert len(table) == trials
    client = MlflowClient(mlflow_server.uri)
    parent, children = _trial_children(client)
    assert parent.info.status == "FINISHED"
    assert len(children) == trials  # every trial exactly once
    assert len({c.data.tags[TAG_TRIAL_ID] for c in children}) == trials
    by_id = {c.info.run_id: c for c in children}
    assert {r["mlflow_run_id"] for r in table} == set(by_id)
    for row in table:
        child = by_id[row["mlflow_run_id"]]
        assert child.info.status == "FINISHED"
        assert child.data.tags[TAG_ARCH] == row["arch"]
        assert child.data.metrics["val_acc"] == pytest.approx(row["val_acc"])
        history = client.get_metric_history(child.info.run_id, "val_acc")
        assert len(history) == int(row["training_iteration"])  # no value lost or doubled
    assert {"trials.parquet", "config.yaml"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }


@pytest.mark.slow
@pytest.mark.ray
def test_search_stops_after_max_outage_and_the_spool_recovers_it(
    mlflow_server: MlflowServer, tmp_path: Path, cli_process: list, ray_session: None,
) -> None:
    # Held while the server stops and once two trials finished during the outage, the
    # search never gets near its budget before the outage outlasts max_outage_s.
    trials = 18
    gate = tmp_path / "gate"
    config = _search_config(tmp_path, mlflow_server.uri, trials, max_outage_s=3)
    proc = _start_cli(config, tmp_path)
    cli_process.append(proc)
    _wait_for_trials(proc, tmp_path, 6)
    _gate.hold(gate)  # no trial finishes (nor writes) while the server stops
    mlflow_server.stop()
    stopped_at = len(_progress(tmp_path))
    _gate.release(gate)
    _wait_for_trials(proc, tmp_path, stopped_at + 2)  # written to the spool only
    # Held trials keep reporting: the driver keeps writing until the outage is too long.
    _gate.hold(gate, reporting=True)
    t0 = time.monotonic()
    code = proc.wait(timeout=120)
    stopped_after = time.monotonic() - t0
    _gate.release(gate)  # for the resume below
    err = (tmp_path / "stderr.txt").read_text()
    assert code == 2, err[-3000:]
    assert stopped_after < 60
    (out_dir,) = (tmp_path / "out").glob("outage-*")
    spool = out_dir / SPOOL_FILE
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        f"raynas: error: MLflow tracking store at {mlflow_server.uri} has been unreachable for "
    ), last
    assert f"--spool {spool}`" in last and "raynas resume " in last
    assert spool.is_file()

    finished = _progress(tmp_path)
    mlflow_server.start()
    ids = replay_spool(spool, mlflow_server.uri)
    client = MlflowClient(mlflow_server.uri)
    parent, children = _trial_children(client)
    assert f"raynas resume {parent.info.run_id} " in last
    assert parent.info.status == "FAILED"
    done = [c for c in children if c.info.status == "FINISHED"]
    # Every trial the CLI reported finished is in MLflow with its metrics; the trial whose
    # end raised the error is recorded too, but was not reported.
    missing = Counter(finished) - Counter(c.data.tags[TAG_ARCH] for c in done)
    assert not missing and len(finished) <= len(done) <= len(finished) + 2
    assert all("val_acc" in c.data.metrics for c in done)
    assert len({c.data.tags[TAG_TRIAL_ID] for c in children}) == len(children)
    assert set(ids.values()) <= {c.info.run_id for c in children}
    # A second replay changes nothing.
    assert replay_spool(spool, mlflow_server.uri) == ids
    assert len(_trial_children(client)[1]) == len(children)
    # The command the error printed finishes the search (the spool is written already).
    from raynas.cli.main import main

    command = last.split("`")[1].split()
    assert command[:2] == ["raynas", "resume"]
    assert main([*command[1:], "--tracking-uri", mlflow_server.uri]) == 0
    parent, children = _trial_children(client)
    assert parent.info.status == "FINISHED"
    assert sum(c.info.status == "FINISHED" for c in children) == trials
    assert len({c.data.tags["raynas.canonical"] for c in children
                if c.info.status == "FINISHED"}) == trials
