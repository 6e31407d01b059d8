"""Reading a search back from MLflow: ``load_trials`` and ``load_resume_plan`` on 1,000 trials.

A sqlite store gets one search run (config.yaml, space.json, a searcher state) and
``--trials`` trial runs written as ``TrialLogger`` writes them: eight tags, the flat config
and the architecture as params, the tabular evaluator's metrics plus Tune's bookkeeping
keys, status FINISHED. Then, each ``--repeats`` times in a fresh client:

- load_trials: paged ``search_runs`` on ``tags.mlflow.parentRunId`` (1,000 runs a page);
- load_resume_plan: the same plus the config, the state (downloaded and checked) and the
  classification of every trial;
- per-run get_run: one ``get_run`` per trial run, for comparison (what a naive loader costs
  before it even asks for metric histories).

    python benchmarks/resume_load.py [--trials 1000] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_description, merge_results, print_table  # noqa: E402

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def write_store(folder: Path, trials: int) -> tuple[str, str, float]:
    """A store with one search of ``trials`` finished trial runs; (uri, run id, seconds)."""
    import numpy as np
    import yaml
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    from raynas.tracking.store import (
        TAG_ARCH,
        TAG_CANONICAL,
        TAG_ROLE,
        TAG_SEARCHER,
        TAG_SPACE,
        TAG_TRIAL_ID,
        default_artifact_location,
    )
    from searchers import create_searcher
    from spaces import create_space

    t0 = time.perf_counter()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("bench", artifact_location=default_artifact_location(uri))
    space = create_space("nb201")
    cfg = {"name": "bench", "space": "nb201", "searcher": "random",
           "evaluator": {"name": "training", "dataset": "digits"}, "metric": "val_acc",
           "budget": {"trials": trials + 100}}
    parent = client.create_run(exp, tags={TAG_ROLE: "search", TAG_SPACE: "nb201",
                                          TAG_SEARCHER: "random"}).info.run_id
    client.log_text(parent, yaml.safe_dump(cfg), "config.yaml")
    client.log_text(parent, json.dumps(space.describe()), "space.json")
    searcher = create_searcher("random", space, metric="val_acc", mode="max", seed=0)
    rng = np.random.default_rng(0)
    for i in range(trials):
        tid = f"{i:08x}"
        config = searcher.suggest(tid)
        arch = space.from_config(config)
        text = space.to_string(arch)
        run = client.create_run(exp, run_name=f"evaluate_trial_{tid}", tags={
            MLFLOW_PARENT_RUN_ID: parent, MLFLOW_RUN_NAME: f"evaluate_trial_{tid}",
            TAG_ROLE: "trial", TAG_TRIAL_ID: tid, TAG_ARCH: text,
            TAG_CANONICAL: space.canonical(arch), TAG_SPACE: "nb201", TAG_SEARCHER: "random"})
        result = {"val_acc": float(rng.uniform(10, 90)), "val_acc_200ep": 80.0,
                  "test_acc_200ep": 79.0, "val_acc_12ep": 60.0, "test_acc_12ep": 59.0,
                  "zen_score": 1.0, "training_iteration": 1.0, "time_this_iter_s": 0.01,
                  "time_total_s": 0.01, "iterations_since_restore": 1.0}
        now = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            params=[Param(k, str(v)) for k, v in {**config, "arch": text}.items()],
            metrics=[Metric(k, v, now, 1) for k, v in result.items()],
        )
        client.set_terminated(run.info.run_id, "FINISHED")
        searcher.on_trial_complete(tid, result)
    client.log_text(parent, json.dumps(searcher.get_state()), "searcher_state.json")
    return uri, parent, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Write the store, time the readers, print a table and merge the figures into --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "resume.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from mlflow.tracking import MlflowClient

    from raynas.tracking.resume import load_resume_plan, load_trials
    from spaces import create_space

    space = create_space("nb201")
    with tempfile.TemporaryDirectory(prefix="raynas-resume-bench-") as tmp:
        uri, parent, write_s = write_store(Path(tmp), args.trials)
        times: dict[str, list[float]] = {"load_trials": [], "load_resume_plan": [],
                                         "per_run_get_run": []}
        for r in range(args.repeats):
            client = MlflowClient(uri)
            t0 = time.perf_counter()
            trials = load_trials(client, parent, space)
            times["load_trials"].append(time.perf_counter() - t0)
            assert len(trials) == args.trials
            t0 = time.perf_counter()
            plan = load_resume_plan(uri, parent, dest_dir=Path(tmp) / f"dl{r}")
            times["load_resume_plan"].append(time.perf_counter() - t0)
            assert len(plan.finished) == args.trials
            t0 = time.perf_counter()
            for t in trials:
                client.get_run(t.run_id)
            times["per_run_get_run"].append(time.perf_counter() - t0)
    rows = [(name, args.trials, min(v), statistics.median(v)) for name, v in times.items()]
    print(f"store written in {write_s:.1f}s")
    print_table(rows, ["reader", "trial runs", "min s", "median s"])
    figures = {f"resume_{name}_{args.trials}_s": statistics.median(v) for name, v in times.items()}
    merge_results(args.out, figures, machine=machine_description())
    return 0


if __name__ == "__main__":
    sys.exit(main())
