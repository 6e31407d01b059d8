"""The fault matrix: what unlucky and hostile users do to a search, run for real and counted.

Every scenario runs ``raynas`` as a user would (``python -m raynas.cli ...`` in its own
process group), hurts it with real signals, a second driver, a CPU-burning load or bad
input, and then counts from the MLflow store (never from the process's own output):

- ``concurrent_resume``: a search (tabular NB201 evaluator, ``--budget`` trials) on a real
  ``mlflow server`` is SIGKILLed mid-search; two ``raynas resume RUN_ID`` start at once.
  ``concurrent_resume_refused``: how many of them refused (target 1), and
  ``concurrent_resume_duplicates``: architectures finished more than once (target 0).
- ``supernet``: a small SPOS supernet search (NB201 cells on the digits data, 300 steps in
  chunks of 25) SIGKILLed once training is over (2 trials finished), and another SIGKILLed
  once the first chunk's checkpoint is in MLflow; each is resumed.
  ``supernet_resume_retrained_steps``: ``supernet/loss`` values the first resume logged
  (target 0: nothing retrained); ``killed_in_training_resumed_from_step``: the step the
  second resume continued from (target > 0); ``supernet_*_duplicate_steps``: steps logged
  twice (0).
- ``end_kill``: a search is SIGKILLed as soon as its last trial run is FINISHED in the
  store, before the driver records the outcome (retried, up to ``--attempts``, when the
  kill came too late); ``raynas resume`` then finalises it: ``end_kill_finalised`` (1) when
  the parent run is FINISHED with its best metric and report.
- ``ctrl_c_portfolio``: a 2-searcher portfolio is sent SIGINT (to its process group, as a
  terminal's Ctrl-C) while ``--burners`` processes keep every core busy:
  ``ctrl_c_portfolio_exit_130`` (1) when it exits 130 with the parent run KILLED; the resume
  then finishes each member's budget.
- ``sigterm``: SIGTERM (what ``timeout``, Kubernetes and systemd send) to a search's
  driver: ``sigterm_status_killed`` (1) when it exits 143, the parent run is KILLED and the
  resume command was printed; the resume then finishes the budget.
- ``bad_inputs``: every case of ``tests/raynas/cli/bad_configs/`` plus four built here
  (a directory, non-UTF-8 bytes, a YAML alias bomb, a table with two different rows for one
  architecture), each through ``raynas run`` in a
  subprocess: ``bad_inputs_one_line_fraction`` is the fraction that exit 2 with exactly one
  stderr line ``raynas: error: ...`` of at most 400 characters, containing the case's
  expected words, with no MLflow store or output folder created.

- ``loopback``: ``raynas demo`` (local Ray, sqlite) with 5 trials finished: every listening
  TCP socket of its processes (the driver's tree and every process of its Ray session, read
  from /proc): ``non_loopback_listeners_local_run`` (target 0).

``lost_trials_total`` (trials of a budget that never finished after the final resume) and
``duplicated_trials_total`` (architectures finished more than once) are summed over the
scenarios that run searches. Data: the NB201 CIFAR-10 table (``--data-dir``) for lookups.

Run: python benchmarks/faults.py [--data-dir ../shared/data/nb201] [--parts ...]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from _common import (
    RESULTS_DIR,
    add_data_dir_argument,
    machine_description,
    merge_results,
    print_table,
    require_file,
)
from resume import Driver, MlflowServer, _env

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "raynas" / "cli" / "bad_configs"
FIRST_LINE = re.compile(r"^raynas: (?:searching|resuming) .* MLflow run (\w+) at ")
PARTS = ("concurrent_resume", "supernet", "end_kill", "ctrl_c_portfolio", "sigterm",
         "bad_inputs", "loopback")


# ------------------------------------------------------------------------ the store
def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def search_run(uri: str) -> Any:
    """The one search (parent) run of the store's ``faults`` experiment."""
    client = _client(uri)
    experiment = client.get_experiment_by_name("faults")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`raynas.role` = 'search'")
    return run


def trial_runs(uri: str, experiment_name: str = "faults") -> list[Any]:
    """Every trial run of an experiment of the store (portfolio members included)."""
    client = _client(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:  # not created yet
        return []
    runs, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], "tags.`raynas.role` = 'trial'",
                                  max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs


def count(uri: str, budget: int) -> tuple[int, int, Counter[str]]:
    """(lost, duplicated, finished per searcher) of a search's trial runs."""
    finished = [r for r in trial_runs(uri) if r.info.status == "FINISHED"]
    canon = Counter(r.data.tags["raynas.canonical"] for r in finished)
    duplicated = sum(c - 1 for c in canon.values())
    lost = max(0, budget - len(canon))
    return lost, duplicated, Counter(r.data.tags.get("raynas.searcher", "") for r in finished)


def wait_finished(uri: str, driver: Driver, n: int, timeout: float, poll: float = 0.2) -> None:
    """Block until ``n`` trial runs are FINISHED (the driver having created the store)."""
    driver.wait_line(FIRST_LINE, timeout)
    deadline = time.monotonic() + timeout
    while sum(r.info.status == "FINISHED" for r in trial_runs(uri)) < n:
        if driver.proc.poll() is not None:
            driver.fail(f"ended (exit {driver.proc.returncode}) before {n} trials finished")
        if time.monotonic() > deadline:
            driver.kill()
            driver.fail(f"fewer than {n} trials finished in {timeout:.0f}s")
        time.sleep(poll)


def config(folder: Path, uri: str, data_dir: Path, *, budget: int, delay_s: float,
           **extra: Any) -> Path:
    """A tabular NB201 search's YAML in ``folder``."""
    cfg: dict[str, Any] = {
        "name": "faults",
        "space": "nb201",
        "searcher": {"name": "regularized_evolution", "population_size": 8,
                     "tournament_size": 3},
        "evaluator": {"name": "tabular", "table_path": str(data_dir), "delay_s": delay_s},
        "budget": {"trials": budget, "concurrency": 2},
        "seed": 0,
        "tracking": {"uri": uri, "experiment": "faults", "checkpoint_every": 2},
        "output_dir": str(folder / "out"),
        **extra,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "search.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def stop(driver: Driver, send: Callable[[], None], timeout: float) -> int:
    """Send a signal with ``send()``; the driver's exit code (-1: SIGKILLed after ``timeout``)."""
    send()
    try:
        code = driver.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        driver.kill()
        code = -1
    driver._reader.join(10)
    driver.kill_group()
    return code


def resume(folder: Path, uri: str, run_id: str, log: str, timeout: float) -> Driver:
    """``raynas resume`` run to its end (SystemExit unless it exits 0)."""
    driver = Driver(["resume", run_id, "--tracking-uri", uri], folder, log)
    driver.finish(timeout)
    return driver


# ------------------------------------------------------------------------ scenarios
def part_concurrent_resume(root: Path, args: argparse.Namespace) -> dict[str, float]:
    """Two resumes of one killed search at once, on a real mlflow server."""
    folder = root / "concurrent"
    server = MlflowServer(folder / "server")
    try:
        uri = server.uri
        path = config(folder, uri, args.data_dir, budget=args.budget, delay_s=0.2)
        driver = Driver(["run", str(path)], folder, "run.log")
        wait_finished(uri, driver, args.budget // 4, args.timeout)
        driver.kill()
        run_id = search_run(uri).info.run_id
        rivals = [Driver(["resume", run_id, "--tracking-uri", uri], folder, f"resume{i}.log")
                  for i in range(2)]
        for rival in rivals:
            rival.proc.wait(args.timeout)
            rival._reader.join(10)
            rival.kill_group()
        codes = sorted(r.proc.returncode for r in rivals)
        errs = [Path(f"{r.log}.err").read_text() for r in rivals]
        refused = sum(r.proc.returncode == 2 and "another driver" in e
                      for r, e in zip(rivals, errs))
        lost, duplicated, _ = count(uri, args.budget)
        status = search_run(uri).info.status
    finally:
        server.stop()
    print(f"  concurrent resume: exit codes {codes}, refused {refused}, duplicates "
          f"{duplicated}, lost {lost}, parent {status}", flush=True)
    return {"concurrent_resume_refused": refused, "concurrent_resume_duplicates": duplicated,
            "concurrent_resume_lost": lost, "concurrent_resume_finished": int(
                status == "FINISHED")}


def part_end_kill(root: Path, args: argparse.Namespace) -> dict[str, float]:
    """SIGKILL right after the last trial, then resume: the run is finalised."""
    budget = 12
    for attempt in range(1, args.attempts + 1):
        folder = root / f"end_kill{attempt}"
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        path = config(folder, uri, args.data_dir, budget=budget, delay_s=0.0)
        driver = Driver(["run", str(path)], folder, "run.log")
        wait_finished(uri, driver, budget, args.timeout, poll=0.02)
        driver.kill()
        parent = search_run(uri)
        if parent.info.status == "RUNNING" and "best_val_acc" not in parent.data.metrics:
            break
        print(f"  end kill attempt {attempt}: the outcome was recorded first; again",
              flush=True)
    else:
        return {"end_kill_produced": 0, "end_kill_finalised": 0}
    resume(folder, uri, parent.info.run_id, "resume.log", args.timeout)
    parent = search_run(uri)
    artifacts = {a.path for a in _client(uri).list_artifacts(parent.info.run_id)}
    finalised = (parent.info.status == "FINISHED" and "best_val_acc" in parent.data.metrics
                 and "report" in artifacts)
    lost, duplicated, _ = count(uri, budget)
    print(f"  end kill (attempt {attempt}): finalised {finalised}, lost {lost}, "
          f"duplicates {duplicated}", flush=True)
    return {"end_kill_produced": 1, "end_kill_attempts": attempt,
            "end_kill_finalised": int(finalised), "end_kill_lost": lost,
            "end_kill_duplicates": duplicated}


def _burners(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def part_ctrl_c_portfolio(root: Path, args: argparse.Namespace) -> dict[str, float]:
    """Ctrl-C (SIGINT to the process group) of a portfolio search on a loaded machine."""
    folder = root / "ctrl_c"
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    budgets = {"evo": 12, "random": 10}
    path = config(folder, uri, args.data_dir, budget=sum(budgets.values()), delay_s=0.4,
                  searchers=[
                      {"name": "regularized_evolution", "trials": budgets["evo"],
                       "label": "evo", "population_size": 4},
                      {"name": "random", "trials": budgets["random"]}])
    data = yaml.safe_load(path.read_text())
    data.pop("searcher")
    data["budget"].pop("trials")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    burners = _burners(args.burners)
    try:
        driver = Driver(["run", str(path)], folder, "run.log")
        wait_finished(uri, driver, 7, args.timeout)
        code = stop(driver, lambda: os.killpg(driver.proc.pid, signal.SIGINT), args.timeout)
    finally:
        for proc in burners:
            proc.kill()
            proc.wait()
    status = search_run(uri).info.status
    printed = any("raynas resume" in line for _, line in driver.lines)
    ok = code == 130 and status == "KILLED" and printed
    resume(folder, uri, search_run(uri).info.run_id, "resume.log", args.timeout)
    lost, duplicated, per = count(uri, sum(budgets.values()))
    members_done = int(per == Counter(budgets))
    print(f"  ctrl-c portfolio under {args.burners} burners: exit {code}, parent {status}, "
          f"resume command printed {printed}; after resume {dict(per)}, lost {lost}, "
          f"duplicates {duplicated}", flush=True)
    return {"ctrl_c_portfolio_exit_130": int(ok), "ctrl_c_portfolio_exit_code": code,
            "ctrl_c_portfolio_members_done": members_done, "ctrl_c_portfolio_lost": lost,
            "ctrl_c_portfolio_duplicates": duplicated}


def part_sigterm(root: Path, args: argparse.Namespace) -> dict[str, float]:
    """SIGTERM to the driver mid-search, then resume."""
    folder = root / "sigterm"
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    budget = 30
    path = config(folder, uri, args.data_dir, budget=budget, delay_s=0.3)
    driver = Driver(["run", str(path)], folder, "run.log")
    wait_finished(uri, driver, 8, args.timeout)
    code = stop(driver, lambda: driver.proc.send_signal(signal.SIGTERM), args.timeout)
    err = Path(f"{driver.log}.err").read_text()
    status = search_run(uri).info.status
    printed = any("raynas resume" in line for _, line in driver.lines)
    stack = "*** SIGTERM received" in err or "Stack trace" in err or "Traceback" in err
    ok = code == 143 and status == "KILLED" and printed and not stack
    resume(folder, uri, search_run(uri).info.run_id, "resume.log", args.timeout)
    lost, duplicated, _ = count(uri, budget)
    print(f"  sigterm: exit {code}, parent {status}, resume command printed {printed}, stack "
          f"dumped {stack}; after resume lost {lost}, duplicates {duplicated}", flush=True)
    return {"sigterm_status_killed": int(ok), "sigterm_exit_code": code,
            "sigterm_stack_dumped": int(stack), "sigterm_lost": lost,
            "sigterm_duplicates": duplicated}


def _supernet_config(folder: Path, uri: str, *, train_steps: int, trials: int) -> Path:
    """A small NB201 supernet search on the digits data (SPOS, chunks of 25 steps)."""
    cfg = {
        "name": "faults",
        "space": {"name": "nb201", "channels": 8, "cells_per_stage": 1, "resolution": 8},
        "searcher": {"name": "regularized_evolution", "population_size": 8,
                     "tournament_size": 3},
        "evaluator": {"name": "supernet", "dataset": "digits", "train_steps": train_steps,
                      "chunk_steps": 25},
        "budget": {"trials": trials, "concurrency": 1, "cpus_per_trial": 0.5},
        "seed": 0,
        "tracking": {"uri": uri, "experiment": "faults"},
        "output_dir": str(folder / "out"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "search.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _kill_when(driver: Driver, uri: str, event: Callable[[], bool], timeout: float) -> str:
    """SIGKILL the driver's process group once ``event()``; the search's run id."""
    driver.wait_line(FIRST_LINE, timeout)
    deadline = time.monotonic() + timeout
    while not event():
        if driver.proc.poll() is not None or time.monotonic() > deadline:
            driver.kill()
            driver.fail("ended or timed out before the kill event")
        time.sleep(0.1)
    driver.kill()
    return str(search_run(uri).info.run_id)


def _loss_steps(uri: str, run_id: str, since_ms: int = 0) -> list[int]:
    history = _client(uri).get_metric_history(run_id, "supernet/loss")
    return sorted(m.step for m in history if m.timestamp >= since_ms)


def _checkpointed(uri: str) -> bool:
    parent = search_run(uri)
    return any(a.path.endswith(".pt") for a in _client(uri).list_artifacts(parent.info.run_id))


def _two_trials(uri: str) -> bool:
    return sum(r.info.status == "FINISHED" for r in trial_runs(uri)) >= 2


def part_supernet(root: Path, args: argparse.Namespace) -> dict[str, float]:
    """A supernet search killed after and during training, then resumed."""
    steps, figures = 300, {}
    for case in ("after_training", "in_training"):
        folder = root / f"supernet_{case}"
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        driver = Driver(["run", str(_supernet_config(folder, uri, train_steps=steps,
                                                     trials=40))], folder, "run.log")

        event = _two_trials if case == "after_training" else _checkpointed
        run_id = _kill_when(driver, uri, lambda u=uri, e=event: e(u), args.timeout)
        before = _loss_steps(uri, run_id)
        started_ms = int(time.time() * 1000)
        resume(folder, uri, run_id, "resume.log", args.timeout)
        new = _loss_steps(uri, run_id, since_ms=started_ms)
        every = _loss_steps(uri, run_id)
        duplicates = len(every) - len(set(every))
        lost, trial_duplicates, _ = count(uri, 40)
        if case == "after_training":
            figures["supernet_resume_retrained_steps"] = len(new)
        else:
            figures["killed_in_training_resumed_from_step"] = (min(new) - 1) if new else steps
            figures["killed_in_training_steps_before_kill"] = len(before)
        figures[f"supernet_{case}_duplicate_steps"] = duplicates
        figures[f"supernet_{case}_lost"] = lost
        figures[f"supernet_{case}_duplicates"] = trial_duplicates
        print(f"  supernet killed {case.replace('_', ' ')}: {len(before)} steps logged before, "
              f"{len(new)} by the resume (from step {min(new) - 1 if new else '-'}), "
              f"{duplicates} steps logged twice; trials lost {lost}, duplicated "
              f"{trial_duplicates}", flush=True)
    return figures


def part_loopback(root: Path, args: argparse.Namespace) -> dict[str, float]:
    """``raynas demo`` (a local run): listening sockets of its processes not on loopback."""
    from tests.raynas._procs import is_loopback, kill_run, run_processes, tcp_listeners

    folder = root / "loopback"
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'demo' / 'mlflow.db'}"
    driver = Driver(["demo", "--output-dir", str(folder / "demo")], folder, "demo.log")
    try:
        driver.wait_line(FIRST_LINE, args.timeout)
        deadline = time.monotonic() + args.timeout
        while sum(r.info.status == "FINISHED" for r in trial_runs(uri, "raynas-demo")) < 5:
            if driver.proc.poll() is not None or time.monotonic() > deadline:
                driver.fail("ended or timed out before 5 trials")
            time.sleep(0.5)
        listeners = tcp_listeners(run_processes(driver.proc.pid))
    finally:
        kill_run(driver.proc)
        driver._reader.join(10)
    exposed = [entry for entry in listeners if not is_loopback(entry[0])]
    for address, port, pid, command in exposed:
        print(f"    not on loopback: {address}:{port} pid {pid} {command}", flush=True)
    print(f"  local run (raynas demo): {len(listeners)} listening sockets, {len(exposed)} not on "
          "loopback", flush=True)
    return {"non_loopback_listeners_local_run": len(exposed),
            "listeners_local_run": len(listeners)}


def _expected(path: Path) -> str:
    first = path.read_text(errors="replace").splitlines()[0]
    return first.removeprefix("# expect: ").strip()


def _built_cases(folder: Path, data_dir: Path) -> list[tuple[str, Path, str]]:
    """Bad inputs that are not a YAML file of the corpus: (name, path, expected words)."""
    folder.mkdir(parents=True, exist_ok=True)
    directory = folder / "a_directory.yaml"
    directory.mkdir(exist_ok=True)
    binary = folder / "latin1.yaml"
    binary.write_bytes(b"name: caf\xe9\nspace: nb201\n")
    bomb = folder / "alias_bomb.yaml"
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb.write_text("\n".join(lines) + "\n")
    table = folder / "conflicting.csv"
    header, first, *_ = (data_dir / "cifar10.csv").read_text().splitlines()[:3]
    cells = first.split(",")
    changed = ",".join(cells[:-1] + [str(float(cells[-1] or 0) + 1.0)])
    table.write_text("\n".join([header, first, changed]) + "\n")
    conflicting = folder / "conflicting_table.yaml"
    conflicting.write_text(yaml.safe_dump({
        "space": "nb201", "searcher": "random",
        "evaluator": {"name": "tabular", "table_path": str(table)}}))
    return [("directory", directory, str(directory)), ("non_utf8", binary, str(binary)),
            ("alias_bomb", bomb, str(bomb)),
            ("conflicting_table", conflicting, "two different rows for arch_str")]


def part_bad_inputs(root: Path, args: argparse.Namespace) -> dict[str, float]:
    """Each bad input through ``raynas run`` in a subprocess: one line, exit 2, nothing made."""
    folder = root / "bad_inputs"
    cases = [(p.stem, p, _expected(p)) for p in sorted(CORPUS.glob("*.yaml"))]
    cases += _built_cases(folder / "built", args.data_dir)
    rows, good = [], 0
    for name, path, expected in cases:
        work = folder / "cwd" / name
        work.mkdir(parents=True, exist_ok=True)
        env = {**_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
        proc = subprocess.run([sys.executable, "-m", "raynas.cli", "run", str(path)], cwd=work,
                              env=env, capture_output=True, text=True, timeout=300)
        lines = proc.stderr.splitlines()
        checks = {
            "exit 2": proc.returncode == 2,
            "one line": len(lines) == 1 and lines[0].startswith("raynas: error: "),
            "short": len(proc.stderr) <= 400,
            "names it": bool(lines) and expected in lines[0],
            "nothing made": list(work.iterdir()) == [],
        }
        ok = all(checks.values())
        good += ok
        if not ok:
            failed = ", ".join(k for k, v in checks.items() if not v)
            rows.append([name, failed, (lines[0] if lines else "")[:100]])
    if rows:
        print_table(rows, ["case", "failed", "stderr"])
    print(f"  bad inputs: {good} of {len(cases)} one clear line", flush=True)
    return {"bad_inputs_cases": len(cases), "bad_inputs_one_line": good,
            "bad_inputs_one_line_fraction": good / len(cases)}


SCENARIOS: dict[str, Callable[[Path, argparse.Namespace], dict[str, float]]] = {
    "concurrent_resume": part_concurrent_resume,
    "supernet": part_supernet,
    "end_kill": part_end_kill,
    "ctrl_c_portfolio": part_ctrl_c_portfolio,
    "sigterm": part_sigterm,
    "bad_inputs": part_bad_inputs,
    "loopback": part_loopback,
}

TARGETS = {
    "concurrent_resume_duplicates": ("==", 0), "concurrent_resume_refused": ("==", 1),
    "supernet_resume_retrained_steps": ("==", 0),
    "killed_in_training_resumed_from_step": (">", 0), "end_kill_finalised": ("==", 1),
    "sigterm_status_killed": ("==", 1),
    "ctrl_c_portfolio_exit_130": ("==", 1), "bad_inputs_one_line_fraction": ("==", 1.0),
    "bad_inputs_cases": (">=", 40), "non_loopback_listeners_local_run": ("==", 0),
    "lost_trials_total": ("==", 0),
    "duplicated_trials_total": ("==", 0),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line of the fault matrix."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_dir_argument(parser)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--budget", type=int, default=60, help="trials of concurrent_resume")
    parser.add_argument("--attempts", type=int, default=5, help="tries of end_kill")
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2,
                        help="CPU-burning processes during ctrl_c_portfolio")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "faults.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios, print their figures and the targets, merge the JSON."""
    args = parse_args(argv)
    require_file(args.data_dir / "cifar10.csv")
    machine = machine_description()
    print(f"{machine}; scenarios {args.parts}", flush=True)
    figures: dict[str, float] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="raynas-faults-") as tmp:
        for name in args.parts:
            t0 = time.perf_counter()
            print(f"{name}:", flush=True)
            figures.update(SCENARIOS[name](Path(tmp), args))
            figures[f"{name}_wall_s"] = time.perf_counter() - t0
    figures["lost_trials_total"] = sum(v for k, v in figures.items() if k.endswith("_lost"))
    figures["duplicated_trials_total"] = sum(
        v for k, v in figures.items() if k.endswith("_duplicates"))
    rows = []
    for key, (op, want) in TARGETS.items():
        if key in figures:
            value = figures[key]
            met = {"==": value == want, ">=": value >= want, ">": value > want}[op]
            rows.append([key, value, f"{op} {want}", "met" if met else "NOT met"])
    print()
    print_table(rows, ["target", "value", "wanted", "verdict"])
    print(f"total {time.perf_counter() - start:.1f} s")
    merge_results(args.out, figures, machine=machine)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
