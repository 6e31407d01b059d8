"""`raynas resume` after a SIGKILL, Ctrl-C or SIGTERM of the driver; portfolios; warm start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from raynas.cli.main import main
from raynas.tracking.store import TAG_CANONICAL

from .._procs import kill_run
from .._store import runs, search_run

pytestmark = [pytest.mark.ray, pytest.mark.data]

REPO = Path(__file__).resolve().parents[3]


def _config(tmp_path: Path, nb201_dir: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "killme",
        "space": "nb201",
        "searcher": {"name": "regularized_evolution", "population_size": 8, "tournament_size": 3},
        "evaluator": {"name": "tabular", "table_path": str(nb201_dir), "delay_s": 0.4},
        "budget": {"trials": 36, "concurrency": 2},
        "seed": 5,
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "faults",
                     "checkpoint_every": 4},
        "output_dir": str(tmp_path / "out"),
        **extra,
    }


@pytest.fixture
def driver(tmp_path: Path):
    """Start `raynas run` in its own process group; kill it and its Ray node at the end."""
    procs: list[subprocess.Popen] = []

    def start(config: dict[str, Any], **extra_env: str) -> subprocess.Popen:
        path = tmp_path / "search.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
               "MLFLOW_TRACKING_URI": config["tracking"]["uri"], **extra_env}
        proc = subprocess.Popen(
            [sys.executable, "-m", "raynas.cli", "run", str(path)], cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        kill_run(proc)


class _Output(list[str]):
    """The lines a process writes, read by a thread as they come; ``text()`` waits for its end."""

    def __init__(self, proc: subprocess.Popen) -> None:
        super().__init__()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.append(raw.decode(errors="replace"))

    def text(self) -> str:
        """All of it, once the process closed its output."""
        self._thread.join(timeout=120)  # bounds a hang only: the writer has exited
        assert not self._thread.is_alive(), "the process's output stayed open"
        return "".join(self)


def _wait_for_finished(
    uri: str, count: int, proc: subprocess.Popen, timeout: float
) -> _Output:
    """Poll MLflow until ``count`` trial runs finished (after the driver created the store)."""
    lines = _Output(proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "".join(lines)[-3000:]
        # Two processes creating one sqlite store race in its migrations: wait for the
        # driver's first line, printed once its parent run exists.
        if any(line.startswith("raynas: searching") for line in lines):
            if sum(r.info.status == "FINISHED" for r in runs(uri, "trial")) >= count:
                return lines
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} trials finished in {timeout} s")


@pytest.mark.slow
def test_sigkill_then_resume_finishes_the_budget(tmp_path, nb201_dir, driver,
                                                 ray_session, capsys) -> None:
    # 14 trials of 0.4 s at concurrency 2 left when the kill is sent: about 3 s to land
    config = _config(tmp_path, nb201_dir, budget={"trials": 20, "concurrency": 2})
    uri = config["tracking"]["uri"]
    proc = driver(config)
    _wait_for_finished(uri, 6, proc, timeout=240)
    os.kill(proc.pid, signal.SIGKILL)  # the driver only, mid-search
    proc.wait(timeout=30)
    before = runs(uri, "trial")
    finished_before = {r.data.tags[TAG_CANONICAL] for r in before if r.info.status == "FINISHED"}
    assert 6 <= len(finished_before) < 20
    parent = search_run(uri)
    assert parent.info.status == "RUNNING"  # nobody closed it

    # two resumes at once (a retrying wrapper, two operators): exactly one runs
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    rival = subprocess.Popen(
        [sys.executable, "-m", "raynas.cli", "resume", parent.info.run_id, "--tracking-uri",
         uri], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        code = main(["resume", parent.info.run_id, "--tracking-uri", uri])
        rival_out, rival_err = rival.communicate(timeout=600)
    finally:
        if rival.poll() is None:
            os.killpg(rival.pid, signal.SIGKILL)
    captured = capsys.readouterr()
    assert sorted([code, rival.returncode]) == [0, 2], (captured, rival_out, rival_err)
    refused = (captured.err if code == 2 else rival_err.decode()).strip().splitlines()
    assert len(refused) == 1 and "is being run by another driver (pid" in refused[0]
    out = captured.out if code == 0 else rival_out.decode()
    assert f"run {parent.info.run_id}:" in out and "to run" in out

    after = runs(uri, "trial")
    finished = [r for r in after if r.info.status == "FINISHED"]
    canon = Counter(r.data.tags[TAG_CANONICAL] for r in finished)
    assert len(canon) == 20  # distinct evaluated architectures == the budget
    assert max(canon.values()) == 1  # nothing evaluated twice, each finished trial once
    assert finished_before <= set(canon)
    # trials that were running at the kill are closed as KILLED, not left RUNNING
    assert all(r.info.status in ("FINISHED", "KILLED") for r in after)
    parent = search_run(uri)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["num_trials"] == 20
    tables = sorted((tmp_path / "out").rglob("trials.parquet"))
    table = pq.read_table(tables[-1]).to_pylist()
    assert len(table) == 20 and len({r["canonical"] for r in table}) == 20
    assert sorted(r["trial_index"] for r in table) == list(range(1, 21))


def test_resume_of_a_finished_run_says_nothing_to_do(tmp_path, nb201_dir, ray_session,
                                                     capsys) -> None:
    config = _config(tmp_path, nb201_dir, budget={"trials": 6, "concurrency": 2})
    config["evaluator"]["delay_s"] = 0.0
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path)]) == 0
    run_id = search_run(config["tracking"]["uri"]).info.run_id
    capsys.readouterr()
    assert main(["resume", run_id, "--tracking-uri", config["tracking"]["uri"]]) == 2
    err = capsys.readouterr().err.strip()
    assert "nothing to resume" in err and len(err.splitlines()) == 1
    assert main(["resume", "0123abcd", "--tracking-uri", config["tracking"]["uri"]]) == 2
    assert "0123abcd" in capsys.readouterr().err


@pytest.fixture
def cpu_load():
    """A process burning a CPU (a loaded machine); ``stop()`` ends it, by pid."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)

    class Load:
        def stop(self) -> None:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    load = Load()
    yield load
    load.stop()


def _stopped_cleanly(uri: str, out: str) -> Any:
    """The stopped search's parent run, after checking what a stop must leave behind."""
    parent = search_run(uri)
    assert parent.info.status == "KILLED"
    assert f"continue with: raynas resume {parent.info.run_id} --tracking-uri {uri}" in out
    for noise in ("SIGTERM received", "logging.cc", "PC: @", "Traceback", "Tuner.restore"):
        assert noise not in out, out[-3000:]
    # trials Tune stopped are KILLED, none left RUNNING; an interrupted trial is no failure
    assert {r.info.status for r in runs(uri, "trial")} <= {"FINISHED", "KILLED"}
    assert parent.data.metrics["num_failed"] == 0
    return parent


@pytest.mark.slow
def test_ctrl_c_then_resume_continues_each_portfolio_member(tmp_path, nb201_dir, driver,
                                                            ray_session, cpu_load,
                                                            capsys) -> None:
    config = _config(tmp_path, nb201_dir, budget={"concurrency": 4})
    config.pop("searcher")
    config["searchers"] = [
        {"name": "regularized_evolution", "trials": 10, "label": "evo", "population_size": 4},
        {"name": "random", "trials": 8},
    ]
    config["tracking"]["checkpoint_every"] = 3
    uri = config["tracking"]["uri"]
    # Two CPUs for four concurrent trials: two trials always wait, never started, as on the
    # loaded machine where Ctrl-C once exited 2 (`config for space 'nb201' lacks key 'op/0'`).
    proc = driver(config, RAY_OVERRIDE_RESOURCES='{"CPU": 2}')
    lines = _wait_for_finished(uri, 6, proc, timeout=240)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: Tune stops its trials, raynas records KILLED
    code = proc.wait(timeout=120)
    cpu_load.stop()
    out = lines.text()
    assert code == 130, out[-3000:]
    parent = _stopped_cleanly(uri, out)
    finished_before = sum(r.info.status == "FINISHED" for r in runs(uri, "trial"))
    assert finished_before < 18
    assert main(["resume", parent.info.run_id, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "searcher evo: 10 evaluated" in out and "searcher random: 8 evaluated" in out
    finished = [r for r in runs(uri, "trial") if r.info.status == "FINISHED"]
    assert Counter(r.data.tags["raynas.searcher"] for r in finished) == {"evo": 10, "random": 8}
    assert max(Counter(r.data.tags[TAG_CANONICAL] for r in finished).values()) == 1
    assert search_run(uri).info.status == "FINISHED"


@pytest.mark.slow
def test_sigterm_stops_as_ctrl_c_does_then_resume_completes(tmp_path, nb201_dir, driver,
                                                             ray_session, capsys) -> None:
    config = _config(tmp_path, nb201_dir, budget={"trials": 16, "concurrency": 2})
    uri = config["tracking"]["uri"]
    proc = driver(config)
    lines = _wait_for_finished(uri, 4, proc, timeout=240)
    os.killpg(proc.pid, signal.SIGTERM)  # as `timeout` sends it: to the whole process group
    code = proc.wait(timeout=120)
    out = lines.text()
    assert code == 143, out[-3000:]
    parent = _stopped_cleanly(uri, out)
    finished_before = {r.data.tags[TAG_CANONICAL] for r in runs(uri, "trial")
                       if r.info.status == "FINISHED"}
    assert 4 <= len(finished_before) < 16
    capsys.readouterr()
    assert main(["resume", parent.info.run_id, "--tracking-uri", uri]) == 0
    finished = [r for r in runs(uri, "trial") if r.info.status == "FINISHED"]
    canon = Counter(r.data.tags[TAG_CANONICAL] for r in finished)
    assert len(canon) == 16 and max(canon.values()) == 1  # the budget, nothing twice
    assert finished_before <= set(canon)
    assert search_run(uri).info.status == "FINISHED"


def test_warm_start_seeds_a_new_search(tmp_path, nb201_dir, ray_session, capsys) -> None:
    first = _config(tmp_path, nb201_dir, budget={"trials": 12, "concurrency": 2})
    first["evaluator"]["delay_s"] = 0.0
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(first))
    assert main(["run", str(path)]) == 0
    old = search_run(first["tracking"]["uri"]).info.run_id
    old_archs = {r.data.tags[TAG_CANONICAL] for r in runs(first["tracking"]["uri"], "trial")}
    second = {**first, "name": "warm", "searcher": {"name": "reinforce"}}
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(second))
    capsys.readouterr()
    assert main(["run", str(path), "--warm-start", old]) == 0
    assert "warm start from 12 trials" in capsys.readouterr().out
    trials = runs(first["tracking"]["uri"], "trial")
    new = [r for r in trials if r.data.tags[TAG_CANONICAL] not in old_archs]
    # the warm-started searcher proposes none of the architectures it was told about
    assert len(new) == 12


def test_trial_closed_after_the_checkpoint_counts_once_and_sequence_continues(
    tmp_path, nb201_dir, ray_session
) -> None:
    """The driver died after a trial's checkpoint but before its MLflow run was closed.

    That window is milliseconds wide, so the record is put in that state by hand: the last
    trial's run back to RUNNING, the parent run KILLED, a larger budget in its config.
    """
    base = _config(tmp_path, nb201_dir, budget={"trials": 12, "concurrency": 1})
    base["evaluator"]["delay_s"] = 0.0
    base["tracking"]["checkpoint_every"] = 1
    full = {**base, "tracking": {**base["tracking"],
                                 "uri": f"sqlite:///{tmp_path / 'full.db'}"}}
    path = tmp_path / "full.yaml"
    path.write_text(yaml.safe_dump(full))
    assert main(["run", str(path)]) == 0
    short = {**base, "budget": {"trials": 8, "concurrency": 1}}
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(short))
    assert main(["run", str(path)]) == 0
    uri = short["tracking"]["uri"]
    client = MlflowClient(uri)
    parent = search_run(uri).info.run_id
    last = max(runs(uri, "trial"), key=lambda r: int(r.data.tags["raynas.trial_index"]))
    client.update_run(last.info.run_id, status="RUNNING")
    client.update_run(parent, status="KILLED")
    client.log_text(parent, yaml.safe_dump({**short, "budget": {"trials": 12,
                                                                "concurrency": 1}}),
                    "config.yaml")
    assert main(["resume", parent, "--tracking-uri", uri]) == 0
    trials = runs(uri, "trial")
    assert client.get_run(last.info.run_id).info.status == "FINISHED"
    assert sum(r.info.status == "FINISHED" for r in trials) == 12 and len(trials) == 12

    def sequence(u: str) -> list[str]:
        rows = sorted(runs(u, "trial"), key=lambda r: int(r.data.tags["raynas.trial_index"]))
        return [r.data.tags["raynas.arch"] for r in rows]

    assert sequence(uri) == sequence(full["tracking"]["uri"])


def test_a_search_stopped_by_a_full_disk_says_how_to_resume_and_is_finalised(
    tmp_path, nb201_dir, ray_session, capsys, monkeypatch
) -> None:
    import errno

    from raynas.run import runner

    config = _config(tmp_path, nb201_dir, budget={"trials": 6, "concurrency": 2})
    config["evaluator"]["delay_s"] = 0.0
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(config))
    uri = config["tracking"]["uri"]

    def full(*args: Any, **kwargs: Any) -> None:  # a full disk cannot be made without root
        raise OSError(errno.ENOSPC, "No space left on device", "trials.parquet")

    monkeypatch.setattr(runner, "write_trials", full)
    assert main(["run", str(path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines()
           if not line.split(" ", 2)[-1].startswith("INFO mlflow")]  # store creation
    run_id = search_run(uri).info.run_id
    assert len(err) == 1 and "no space left on device" in err[0]
    assert err[0].endswith(f"continue with: raynas resume {run_id} --tracking-uri {uri}")
    monkeypatch.undo()  # space freed
    assert main(["resume", run_id, "--tracking-uri", uri]) == 0
    parent = search_run(uri)
    assert parent.info.status == "FINISHED" and parent.data.metrics["num_trials"] == 6
    assert sum(r.info.status == "FINISHED" for r in runs(uri, "trial")) == 6  # none re-run
