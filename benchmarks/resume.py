"""Resuming a search from MLflow: how long it takes, and whether it continues exactly.

Everything runs as a user would run it: ``raynas run CONFIG`` and ``raynas resume RUN_ID
--tracking-uri URI`` in subprocesses. The search is regularized evolution (population
``--population``, sample ``--sample-size``) on the NB201 tabular evaluator, concurrency 1,
seed 0, ``tracking.checkpoint_every: 1`` (searcher state logged after every trial).

1. Reference: one uninterrupted ``raynas run`` of ``--trials`` + ``--extra`` trials
   (1,010) in a sqlite store; its trial sequence (architecture by trial index, from
   trials.parquet) is the reference. The first ``--trials`` entries are also the reference
   of a ``--trials``-trial search (the budget only tells the searcher when to stop).
2. A killed search, per case and per store: the same config in a fresh store, ``raynas run``
   in its own session; the script polls MLflow every 20 ms (after the driver printed its
   first line) until the trial run with index K + 1 exists (trials 1..K finished, trial
   K + 1 started), and then SIGKILLs the driver and its process group (Ray). A tabular
   trial takes about 0.1-0.2 s, so the kill lands somewhere in trial K + 1's cycle:
   usually while it runs (``recorded_finished`` = K, ``recorded_interrupted`` = 1),
   sometimes after it finished (K + 1, 0), and then possibly between the upload of the
   searcher state that includes trial K + 1 and its run's FINISHED write
   (``checkpoint_lag`` = -1). The figures below say where each kill landed. Cases:

   - ``1000``: budget ``--trials`` + ``--extra`` (1,010), K = ``--trials`` (1,000): a
     search with 1,000 trials recorded in MLflow.
   - ``500of1000``: budget ``--trials`` (1,000), K = ``--midpoint`` (500): half done.

3. ``raynas resume RUN_ID --tracking-uri URI`` (subprocess), timed from its start:

   - ``resume_plan_seconds_<case>_<store>``: until it prints ``raynas: run ID: K trials
     finished, ...``: interpreter start, imports, and the resume plan read from MLflow
     (config, the trial runs, the searcher state);
   - ``resume_restored_seconds_<case>_<store>``: until it prints ``raynas: resuming ...``:
     the above plus the searcher restored and the interrupted trial marked KILLED; the
     runner starts Ray before it prints this line, so Ray's start is included too;
   - ``resume_seconds_<case>_<store>``: until its first new trial's progress line
     (``[ 1/10] ...``): the above plus Tune started and one trial run and logged. This is
     "time to resume": the search is searching again. ``resume_seconds_1000_sqlite`` and
     ``resume_seconds_1000_server`` are the headline figures;
   - ``resume_total_seconds_<case>_<store>``: the whole command (remaining trials, trial
     table, report, Ray shutdown).

4. ``resumed_equals_uninterrupted``: 1 when, in every case and store, the resumed search's
   final sequence (its trials.parquet: recorded rows plus new ones, by trial index
   1..budget) equals the reference's first ``budget`` architectures, else 0. Per case:
   ``resumed_equals_uninterrupted_<case>_<store>`` and ``resumed_matching_prefix_<case>_
   <store>`` (how many leading trials agree); ``resumed_matching_prefix`` is the smallest,
   ``resumed_mismatched_cases`` how many cases differ. ``recorded_finished_<case>_<store>``,
   ``recorded_interrupted_<case>_<store>`` (from the resume's plan line) and
   ``checkpoint_lag_<case>_<store>`` (finished trial runs minus the trials the last logged
   searcher state had completed) describe the store the resume started from. The checkpoint
   callback runs before the trial logger closes a trial's run, so a kill between the two
   leaves the state one trial ahead of MLflow (lag -1: a RUNNING trial run with its final
   metrics); the resume closes that run as FINISHED, counts it against the budget and the
   sequence continues exactly.

The ``server`` store is a real ``mlflow server`` (sqlite backend, proxied artifacts,
127.0.0.1, a free port, ``--workers 1``) the script starts and stops, one per case.
Figures are merged into the results file (other scripts' figures there are kept, e.g.
benchmarks/resume_load.py's).

Run: python benchmarks/resume.py [--trials 1000] [--extra 10] [--midpoint 500]
     [--stores sqlite server] [--data-dir DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import _common  # noqa: F401  (puts the repository root on sys.path)
import yaml
from _common import (
    RESULTS_DIR,
    add_data_dir_argument,
    machine_description,
    merge_results,
    print_table,
    require_file,
)

PROGRESS = re.compile(r"^\[\s*\d+/\d+\]")
TRIAL_TABLE = re.compile(r"trial table: (\S+)$")
FIRST_LINE = re.compile(r"^raynas: searching .* MLflow run ([0-9a-f]+) at ")
PLAN_LINE = re.compile(
    r"^raynas: run \S+: (\d+) trials finished, (\d+) failed, (\d+) interrupted; (\d+) to run"
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "RAY_USAGE_STATS_ENABLED": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PYTHONUNBUFFERED": "1",
    })
    return env


class Driver:
    """A ``raynas`` command in its own session; stdout lines kept with their arrival time."""

    def __init__(self, args: list[str], folder: Path, log_name: str) -> None:
        self.log = folder / log_name
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "raynas.cli", *args], cwd=folder, env=_env(),
            stdout=subprocess.PIPE, stderr=open(folder / f"{log_name}.err", "w"),  # noqa: SIM115
            text=True, start_new_session=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log, "w") as log:
            for line in self.proc.stdout:
                now = time.perf_counter() - self.start
                log.write(f"{now:9.3f} {line}")
                with self._cond:
                    self.lines.append((now, line.rstrip("\n")))
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def first(self, pattern: re.Pattern[str]) -> tuple[float, re.Match[str]] | None:
        """Seconds since start of the first line matching ``pattern``, and the match."""
        with self._cond:
            for t, line in self.lines:
                m = pattern.search(line)
                if m:
                    return t, m
        return None

    def wait_line(self, pattern: re.Pattern[str], timeout: float) -> tuple[float, re.Match[str]]:
        """Block until a line matches ``pattern``; SystemExit if the command ends first."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.first(pattern)
            if found:
                return found
            if self.proc.poll() is not None:
                self._reader.join(5)
                found = self.first(pattern)
                if found:
                    return found
                self.fail(f"ended (exit {self.proc.returncode}) before printing "
                          f"{pattern.pattern!r}")
            if time.monotonic() > deadline:
                self.kill()
                self.fail(f"printed no {pattern.pattern!r} in {timeout:.0f}s")
            with self._cond:
                self._cond.wait(0.05)

    def finish(self, timeout: float) -> float:
        """Wait for the command to exit 0; returns its wall time."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.fail(f"did not finish in {timeout:.0f}s")
        wall = time.perf_counter() - self.start
        self._reader.join(10)
        if self.proc.returncode != 0:
            self.fail(f"exited {self.proc.returncode}")
        self.kill_group()  # anything Ray left behind
        return wall

    def kill(self) -> None:
        """SIGKILL the driver (as a crash would), wait for it, then its process group."""
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.kill_group()
        self._reader.join(10)

    def kill_group(self) -> None:
        """SIGKILL what is left of the driver's process group (Ray's processes)."""
        pgid = self.proc.pid  # start_new_session: the driver leads its own group
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.1)

    def fail(self, what: str) -> None:
        tail = "\n".join(line for _, line in self.lines[-15:])
        err = Path(f"{self.log}.err").read_text()[-3000:]
        raise SystemExit(f"error: {' '.join(self.proc.args[3:])} {what}\n"  # type: ignore[index]
                         f"--- stdout (tail) ---\n{tail}\n--- stderr (tail) ---\n{err}")


class MlflowServer:
    """``mlflow server`` over a sqlite file on 127.0.0.1, in its own process group."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server",
             "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
             "--artifacts-destination", str(folder / "artifacts"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            cwd=folder, env=_env(), stdout=open(folder / "server.log", "w"),  # noqa: SIM115
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        start = time.perf_counter()
        while True:
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.perf_counter() - start > 120:
                    self.stop()
                    raise SystemExit(f"error: mlflow server did not start; see "
                                     f"{folder / 'server.log'}") from None
                time.sleep(0.25)
        self.startup_s = time.perf_counter() - start

    def stop(self) -> None:
        """SIGTERM the server's process group; SIGKILL it if it is still there after 15 s."""
        for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue


def write_config(folder: Path, *, budget: int, uri: str, data_dir: Path,
                 args: argparse.Namespace) -> Path:
    """The search's YAML config in ``folder`` (output below ``folder/out``)."""
    cfg = {
        "name": "bench",
        "space": "nb201",
        "searcher": {"name": "regularized_evolution", "population_size": args.population,
                     "tournament_size": args.tournament_size},
        "evaluator": {"name": "tabular", "table_path": str(data_dir)},
        "budget": {"trials": budget, "concurrency": 1},
        "seed": args.seed,
        "tracking": {"uri": uri, "experiment": "bench", "checkpoint_every": 1},
        "output_dir": str(folder / "out"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def read_sequence(driver: Driver) -> list[str]:
    """Architectures by trial index from the trials.parquet the command reported."""
    import pyarrow.parquet as pq

    found = driver.first(TRIAL_TABLE)
    if found is None:
        driver.fail("printed no trial table path")
    assert found is not None
    rows = pq.read_table(found[1].group(1), columns=["trial_index", "arch"]).to_pylist()
    indices = sorted(r["trial_index"] for r in rows)
    if indices != list(range(1, len(rows) + 1)):
        print(f"  warning: trial indices are not 1..{len(rows)}: {indices[:5]}...", flush=True)
    return [r["arch"] for r in sorted(rows, key=lambda r: r["trial_index"])]


def uninterrupted(folder: Path, budget: int, data_dir: Path,
                  args: argparse.Namespace) -> tuple[float, list[str]]:
    """Run the search to its budget; (wall seconds, sequence)."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    config = write_config(folder, budget=budget, uri=uri, data_dir=data_dir, args=args)
    driver = Driver(["run", str(config)], folder, "run.log")
    wall = driver.finish(args.timeout)
    return wall, read_sequence(driver)


def run_and_kill(folder: Path, uri: str, budget: int, kill_after: int, data_dir: Path,
                 args: argparse.Namespace) -> tuple[str, float]:
    """Start the search, SIGKILL it once trial ``kill_after + 1`` is running; (run id, s)."""
    from mlflow.tracking import MlflowClient

    config = write_config(folder, budget=budget, uri=uri, data_dir=data_dir, args=args)
    driver = Driver(["run", str(config)], folder, "run.log")
    # Only now may this process open the store: the driver has created (migrated) it.
    _, match = driver.wait_line(FIRST_LINE, 300)
    run_id = match.group(1)
    client = MlflowClient(uri)
    experiment = client.get_run(run_id).info.experiment_id
    query = (f"tags.`mlflow.parentRunId` = '{run_id}' and "
             f"tags.`raynas.trial_index` = '{kill_after + 1}'")
    deadline = time.monotonic() + args.timeout
    while not client.search_runs([experiment], query, max_results=1):
        if driver.proc.poll() is not None:
            driver.fail(f"ended (exit {driver.proc.returncode}) before trial {kill_after + 1}")
        if time.monotonic() > deadline:
            driver.kill()
            driver.fail(f"did not reach trial {kill_after + 1} in {args.timeout:.0f}s")
        time.sleep(0.02)
    killed_at = time.perf_counter() - driver.start
    driver.kill()
    return run_id, killed_at


def checkpoint_completed(uri: str, run_id: str, folder: Path) -> int:
    """Trials (finished or failed) the searcher state logged with the run had completed."""
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    local = MlflowClient(uri).download_artifacts(run_id, "searcher_state.json", str(folder))
    state = json.loads(Path(local).read_text())
    return int(state["completed"]) + int(state["failed"])


@dataclass
class ResumeTiming:
    plan_s: float
    restored_s: float
    first_trial_s: float
    total_s: float
    finished: int
    interrupted: int
    sequence: list[str] = field(repr=False)


def time_resume(folder: Path, uri: str, run_id: str, args: argparse.Namespace) -> ResumeTiming:
    """Run ``raynas resume`` and time its stages (see the module docstring)."""
    driver = Driver(["resume", run_id, "--tracking-uri", uri], folder, "resume.log")
    plan_s, plan = driver.wait_line(PLAN_LINE, 600)
    restored_s = driver.wait_line(re.compile(r"^raynas: resuming "), 600)[0]
    first_s = driver.wait_line(PROGRESS, 600)[0]
    total_s = driver.finish(args.timeout)
    return ResumeTiming(plan_s, restored_s, first_s, total_s, int(plan.group(1)),
                        int(plan.group(3)), read_sequence(driver))


def matching_prefix(seq: list[str], ref: list[str]) -> int:
    """How many leading entries of ``seq`` equal ``ref``'s."""
    n = 0
    for a, b in zip(seq, ref):
        if a != b:
            break
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    """Run the reference and the killed-and-resumed searches; print and merge the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_dir_argument(parser)
    parser.add_argument("--trials", type=int, default=1000,
                        help="trials recorded before the headline resume (default 1000)")
    parser.add_argument("--extra", type=int, default=10,
                        help="budget beyond --trials for the headline case (default 10)")
    parser.add_argument("--midpoint", type=int, default=500,
                        help="trials finished when the --trials-budget search is killed")
    parser.add_argument("--population", type=int, default=50)
    parser.add_argument("--sample-size", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stores", nargs="+", choices=("sqlite", "server"),
                        default=["sqlite", "server"])
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds one raynas command may take")
    parser.add_argument("--keep", type=Path, help="keep the stores and logs in this folder")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "resume.json")
    args = parser.parse_args(argv)
    require_file(args.data_dir / "cifar10.csv")
    data_dir = args.data_dir.resolve()
    if not 0 < args.midpoint < args.trials or args.extra < 2:
        parser.error("need 0 < --midpoint < --trials and --extra >= 2")
    head_budget = args.trials + args.extra
    cases = {  # name -> (budget, trials finished when killed)
        str(args.trials): (head_budget, args.trials),
        f"{args.midpoint}of{args.trials}": (args.trials, args.midpoint),
    }
    started = time.perf_counter()
    if args.keep:
        root = args.keep.resolve()
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="raynas-resume-bench-"))
    figures: dict[str, float] = {}
    rows = []
    try:
        print(f"reference: uninterrupted raynas run, {head_budget} trials, sqlite", flush=True)
        ref_wall, reference = uninterrupted(root / "reference", head_budget, data_dir, args)
        print(f"  {ref_wall:.1f}s", flush=True)
        figures[f"uninterrupted_run_seconds_{head_budget}_sqlite"] = ref_wall
        mismatched, prefixes = 0, []
        for store in args.stores:
            for case, (budget, kill_after) in cases.items():
                folder = root / f"{store}-{case}"
                server = MlflowServer(folder / "server") if store == "server" else None
                try:
                    uri = server.uri if server else f"sqlite:///{folder / 'mlflow.db'}"
                    print(f"{store} {case}: raynas run (budget {budget}), SIGKILL once trial "
                          f"{kill_after + 1} has started", flush=True)
                    run_id, killed_s = run_and_kill(folder, uri, budget, kill_after,
                                                    data_dir, args)
                    state_done = checkpoint_completed(uri, run_id, folder / "state")
                    print(f"  killed after {killed_s:.1f}s; raynas resume", flush=True)
                    timing = time_resume(folder, uri, run_id, args)
                finally:
                    if server:
                        server.stop()
                want = reference[:budget]
                prefix = matching_prefix(timing.sequence, want)
                equal = int(timing.sequence == want)
                mismatched += 1 - equal
                prefixes.append(prefix)
                key = f"{case}_{store}"
                figures.update({
                    f"resume_plan_seconds_{key}": timing.plan_s,
                    f"resume_restored_seconds_{key}": timing.restored_s,
                    f"resume_seconds_{key}": timing.first_trial_s,
                    f"resume_total_seconds_{key}": timing.total_s,
                    f"killed_run_seconds_{key}": killed_s,
                    f"recorded_finished_{key}": timing.finished,
                    f"recorded_interrupted_{key}": timing.interrupted,
                    f"checkpoint_lag_{key}": timing.finished - state_done,
                    f"resumed_equals_uninterrupted_{key}": equal,
                    f"resumed_matching_prefix_{key}": prefix,
                    f"budget_{key}": budget,
                })
                if server:
                    figures[f"server_startup_seconds_{key}"] = server.startup_s
                rows.append((store, case, timing.finished, timing.plan_s, timing.restored_s,
                             timing.first_trial_s, timing.total_s, f"{prefix}/{budget}"))
                print(f"  resumed: {timing.plan_s:.1f}s to the plan, {timing.restored_s:.1f}s "
                      f"to 'resuming', {timing.first_trial_s:.1f}s to first trial, "
                      f"{timing.total_s:.1f}s "
                      f"total; matches reference on {prefix}/{budget}", flush=True)
                if not equal:
                    print(f"  MISMATCH at trial {prefix + 1}: resumed "
                          f"{timing.sequence[prefix:prefix + 1]} vs reference "
                          f"{want[prefix:prefix + 1]}; {len(timing.sequence)} trials resumed",
                          flush=True)
        figures["resumed_equals_uninterrupted"] = int(mismatched == 0)
        figures["resumed_mismatched_cases"] = mismatched
        figures["resumed_matching_prefix"] = min(prefixes)
        figures["population_size"] = args.population
        figures["resume_benchmark_seconds"] = time.perf_counter() - started
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print_table(rows, ["store", "case", "recorded", "to plan s", "to resuming s",
                       "to 1st trial s",
                       "total s", "matches"])
    print()
    print_table([(k, v) for k, v in sorted(figures.items())], ["figure", "value"])
    merge_results(args.out, figures, machine=machine_description())
    print(f"merged into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
