"""The gradient phase of a search: each configured gradient search a Tune trial, in MLflow.

``searcher: {name: darts, method: [darts, gdas], seed: [0, 1, 2], epochs: 50, ...}`` runs one
Tune trial per combination of the listed values (a grid, as Tune's ``grid_search``); each
reports every epoch, so a scheduler (``scheduler: {name: asha, ...}`` inside the searcher's
options, on epochs) stops weak runs early. Each run is an MLflow child run of the search
(role ``gradient``) with its alpha per epoch as metrics, a Parquet table and a plot; the
architecture of every run that finished, or that the scheduler stopped (its last epoch's), is
then evaluated as one of the search's trials. A resumed search reruns only the gradient runs a
stop or a kill interrupted.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.logger import LoggerCallback
from ray.tune.schedulers import TrialScheduler

from raynas.evaluators.data import resolve_spec
from raynas.gradient.methods import METHODS, options_from_mapping
from raynas.gradient.trial import ARCH_KEY, DERIVED_KEY, PROBABILITIES_KEY, gradient_trial
from raynas.run.config import Component, ConfigError, short
from raynas.tracking.store import (
    TAG_ARCH,
    TAG_CANONICAL,
    TAG_ROLE,
    TAG_SEARCHER,
    TAG_SPACE,
    Tracker,
    numeric_metrics,
)
from spaces import SearchSpace

logger = logging.getLogger(__name__)

SEARCHER_NAME = "darts"
ROLE = "gradient"
TAG_JOB = "raynas.gradient.job"  # the run's options as sorted JSON: which job it is
TAG_DERIVED = "raynas.gradient.derived"  # the architecture the finished run chose
TAG_STOPPED = "raynas.gradient.stopped_by_scheduler"
METRIC = "supernet_val_acc"
_PHASE_KEYS = ("dataset", "scheduler")


@dataclass
class GradientPlan:
    """The gradient runs a config asks for, their data and their scheduler."""

    jobs: list[dict[str, Any]]
    dataset: Any = "digits"
    scheduler: Component | None = None


def job_key(job: Mapping[str, Any]) -> str:
    """A job's identity: its options as sorted JSON."""
    return json.dumps(dict(job), sort_keys=True)


def plan_from_options(options: Mapping[str, Any], *, seed: int,
                      where: str = "searcher") -> GradientPlan:
    """The grid of runs a gradient searcher's options ask for; ``ConfigError`` names a field."""
    values = dict(options)
    dataset = values.pop("dataset", "digits")
    try:
        resolve_spec(dataset)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config field '{where}.dataset': {exc}") from None
    raw_scheduler = values.pop("scheduler", None)
    scheduler = None
    if raw_scheduler is not None:
        if isinstance(raw_scheduler, str):
            raw_scheduler = {"name": raw_scheduler}
        if not isinstance(raw_scheduler, Mapping) or "name" not in raw_scheduler:
            raise ConfigError(f"config field '{where}.scheduler' must be a name or a mapping "
                              f"with 'name', got {short(raw_scheduler)}")
        rest = {k: v for k, v in raw_scheduler.items() if k != "name"}
        scheduler = Component(str(raw_scheduler["name"]), rest)
    values.setdefault("seed", seed)
    for key, value in values.items():
        if isinstance(value, list) and not value:
            raise ConfigError(f"config field '{where}.{key}' is an empty list")
    axes = {k: v for k, v in values.items() if isinstance(v, list)}
    fixed = {k: v for k, v in values.items() if not isinstance(v, list)}
    jobs = []
    for combo in itertools.product(*axes.values()):
        job = {**fixed, **dict(zip(axes, combo, strict=True))}
        try:
            options_from_mapping(job)
        except (TypeError, ValueError) as exc:
            message = str(exc)
            name = message.split()[0].strip("'") if message else ""
            field = f"{where}.{name}" if name in job or name in values else where
            if "unknown option" in message:
                field = where
            raise ConfigError(f"config field {short(field, 100)}: {message}") from None
        jobs.append(job)
    return GradientPlan(jobs, dataset, scheduler)


def check_space(space: SearchSpace, plan: GradientPlan, *, where: str = "searcher") -> None:
    """A ``ConfigError`` unless ``space`` has what each planned method runs on."""
    for job in plan.jobs:
        method = str(job.get("method", "darts"))
        if METHODS[method].sampling is None:
            if not space.provides("build_differentiable"):
                raise ConfigError(f"config field '{where}.method': {method} needs a space with "
                                  f"a differentiable supernet; space {space.name!r} has none "
                                  "(nb201 has)")
            continue
        if not space.provides("build_supernet"):
            raise ConfigError(f"config field '{where}.method': {method} needs a space with a "
                              f"weight-sharing supernet; space {space.name!r} has none")
        if METHODS[method].sampling == "proxyless" and not hasattr(
                space.build_supernet(), "gate_gradients"):
            raise ConfigError(f"config field '{where}.method': proxyless needs binary-gate "
                              f"gradients of the supernet; space {space.name!r}'s has none "
                              "(mobilenet's has)")
        key = "latency_table" if job.get("latency_table") is not None else "latency_model"
        source = job.get(key)
        if source is not None:
            from raynas.gradient.paths import load_latency

            try:
                latency = load_latency(source)
            except (OSError, ValueError, KeyError) as exc:
                raise ConfigError(f"config field '{where}.{key}': {short(str(exc), 160)}"
                                  ) from None
            if [d.choices for d in latency.space.decisions] != \
                    [d.choices for d in space.decisions]:
                raise ConfigError(f"config field '{where}.{key}': {short(source)} is for "
                                  f"space {latency.space.name!r} with other choices than this "
                                  "search's space; build it for this space")


def _gradient_runs(client: MlflowClient, parent: str) -> list[Any]:
    return client.search_runs(  # type: ignore[no-any-return]
        [client.get_run(parent).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and tags.`{TAG_ROLE}` = '{ROLE}'",
        max_results=5000,
    )


def finished_runs(client: MlflowClient, parent: str) -> dict[str, str]:
    """Job key -> derived architecture of the gradient runs of ``parent`` that are done.

    Done: finished, or stopped by the scheduler (its last epoch's architecture); a run a
    stop signal or a kill interrupted is not, and runs again.
    """
    return {r.data.tags[TAG_JOB]: r.data.tags[TAG_DERIVED] for r in _gradient_runs(client, parent)
            if TAG_DERIVED in r.data.tags and (r.info.status == "FINISHED"
                                               or r.data.tags.get(TAG_STOPPED) == "true")}


def close_interrupted(tracker: Tracker, parent: str) -> int:
    """Mark KILLED the gradient runs a killed driver left RUNNING (this driver holds the lease)."""
    left = [r for r in _gradient_runs(tracker.client, parent) if r.info.status == "RUNNING"]
    for run in left:
        tracker.end(run.info.run_id, "KILLED")
    return len(left)


def write_alpha(space: SearchSpace, method: str,
                history: list[tuple[int, np.ndarray, np.ndarray]], folder: Path) -> list[Path]:
    """Alpha and its probabilities over epochs: a Parquet table and a plot (a panel a decision).

    ``history`` holds ``(epoch, alpha, probabilities)``, both ``(decisions, choices)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for epoch, alpha, prob in history:
        for k, d in enumerate(space.decisions):
            for j, choice in enumerate(d.choices):
                rows.append({"epoch": epoch, "decision": d.name, "choice": str(choice),
                             "alpha": float(alpha[k, j]), "probability": float(prob[k, j])})
    table = folder / "alpha.parquet"
    pq.write_table(pa.Table.from_pylist(rows), table)
    decisions = space.decisions
    cols = min(3, len(decisions))
    nrows = -(-len(decisions) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    epochs = [e for e, _, _ in history]
    for k, d in enumerate(decisions):
        ax = axes[k // cols][k % cols]
        for j, choice in enumerate(d.choices):
            ax.plot(epochs, [p[k, j] for _, _, p in history], label=str(choice))
        ax.set_title(d.name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("probability")
    for k in range(len(decisions), nrows * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].legend(fontsize="small")
    fig.suptitle(f"{method}: probability of each choice, per decision")
    fig.tight_layout()
    plot = folder / "alpha.png"
    fig.savefig(plot, dpi=80)
    plt.close(fig)
    return [table, plot]


def _matrix(rows: list[list[float]]) -> np.ndarray:
    """Rows of unequal length (decisions with fewer choices) as a NaN-padded matrix."""
    out = np.full((len(rows), max((len(r) for r in rows), default=0)), np.nan)
    for k, row in enumerate(rows):
        out[k, :len(row)] = row
    return out


class GradientLogger(LoggerCallback):
    """Tune callback: each gradient run an MLflow child run with its epochs and alpha."""

    def __init__(self, tracker: Tracker, parent: str, space: SearchSpace, out_dir: Path) -> None:
        self.tracker = tracker
        self.parent = parent
        self.space = space
        self.out_dir = out_dir
        self.runs: dict[str, str] = {}
        self.history: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        self.derived: dict[str, str] = {}
        self.last_arch: dict[str, str] = {}
        self.ended: set[str] = set()

    def log_trial_start(self, trial: Trial) -> None:
        """Create the run, its options as params and the job as a tag."""
        if trial.trial_id in self.runs:
            return
        job = dict(trial.config["job"])
        tags = {TAG_ROLE: ROLE, TAG_SEARCHER: SEARCHER_NAME, TAG_JOB: job_key(job),
                TAG_SPACE: self.space.name, "raynas.gradient.method": str(job["method"])}
        name = f"{job['method']}-seed{job.get('seed', 0)}-{trial.trial_id}"
        self.runs[trial.trial_id] = self.tracker.start_child(self.parent, name=name,
                                                             params=job, tags=tags)
        self.history[trial.trial_id] = []

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        """Log an epoch's metrics (alpha included) and its derived architecture."""
        if trial.trial_id not in self.runs:
            self.log_trial_start(trial)
        run = self.runs[trial.trial_id]
        epoch = int(result.get("epoch") or result.get("training_iteration") or iteration)
        metrics = {k: v for k, v in numeric_metrics(result).items() if np.isfinite(v)}
        tags = {}
        arch = result.get(ARCH_KEY)
        if isinstance(arch, str):
            tags = {TAG_ARCH: arch, TAG_CANONICAL: self.space.canonical(arch)}
            self.last_arch[trial.trial_id] = arch
        if isinstance(result.get(DERIVED_KEY), str):
            self.derived[trial.trial_id] = result[DERIVED_KEY]
            tags[TAG_DERIVED] = result[DERIVED_KEY]
        self.tracker.log_batch(run, metrics=metrics, step=epoch, tags=tags)
        alpha = _matrix([[result.get(f"alpha/{d.name}/{c}", np.nan) for c in d.choices]
                         for d in self.space.decisions])
        history = self.history.setdefault(trial.trial_id, [])
        if not history or history[-1][0] != epoch:
            history.append((epoch, alpha, _matrix(result[PROBABILITIES_KEY])))

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        """Attach the alpha table and plot; close the run (FINISHED only with an answer)."""
        run = self.runs.get(trial.trial_id)
        if run is None:
            return
        history = self.history.get(trial.trial_id) or []
        if history:
            folder = self.out_dir / "gradient" / trial.trial_id
            for path in write_alpha(self.space, str(trial.config["job"]["method"]), history,
                                    folder):
                self.tracker.log_file(run, path, "alpha")
        if failed:
            status = "FAILED"
        elif trial.trial_id in self.derived:
            status = "FINISHED"
        else:  # stopped by the scheduler (tagged) or by a stop signal
            status = "KILLED"
        self.tracker.end(run, status)
        self.ended.add(trial.trial_id)

    def end_open(self) -> None:
        """Close as KILLED the runs of trials a stop ended without Tune ending them."""
        for trial_id, run in self.runs.items():
            if trial_id not in self.ended:
                self.tracker.end(run, "KILLED")
                self.ended.add(trial_id)


def _recording(scheduler: TrialScheduler | None, stopped: set[str]) -> TrialScheduler | None:
    """``scheduler`` noting the trials it stops (to tell them from a Ctrl-C's)."""
    if scheduler is None:
        return None
    decide = scheduler.on_trial_result

    def on_trial_result(controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        decision = decide(controller, trial, result)
        if decision == TrialScheduler.STOP:
            stopped.add(trial.trial_id)
        return decision

    scheduler.on_trial_result = on_trial_result  # type: ignore[method-assign]
    return scheduler


def _trainable(config: dict[str, Any], *, space_spec: dict[str, Any], dataset: Any,
               data_seed: int) -> None:
    gradient_trial(dict(config["job"]), space_spec=space_spec, dataset=dataset,
                   data_seed=data_seed)


def run_gradient_phase(
    plan: GradientPlan, *, space: SearchSpace, tracker: Tracker, parent: str, out_dir: Path,
    name: str, data_seed: int, concurrency: int, cpus_per_trial: float, gpus_per_trial: float,
    echo: Callable[[str], None],
) -> list[str]:
    """Run the plan's gradient runs not yet done on Tune; every done run's architecture.

    Raises ``KeyboardInterrupt`` when a stop signal ended runs that would have finished.
    """
    from raynas.run import stop
    from raynas.run.schedulers import create_scheduler

    tracker.flush()
    close_interrupted(tracker, tracker.resolve(parent))
    done = finished_runs(tracker.client, tracker.resolve(parent))
    todo = [job for job in plan.jobs if job_key(job) not in done]
    if done:
        echo(f"raynas: {len(done)} of {len(plan.jobs)} gradient runs already done")
    stopped: set[str] = set()
    scheduler = _recording(create_scheduler(plan.scheduler), stopped)
    logger_cb = GradientLogger(tracker, parent, space, out_dir)
    if todo:
        methods = ", ".join(sorted({str(j["method"]) for j in todo}))
        echo(f"raynas: {len(todo)} gradient runs ({methods})")
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, space_spec=space.spec(), dataset=plan.dataset,
                                 data_seed=data_seed),
            {"cpu": cpus_per_trial, "gpu": gpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"job": tune.grid_search(todo)},
            tune_config=tune.TuneConfig(metric=METRIC, mode="max", scheduler=scheduler,
                                        max_concurrent_trials=concurrency),
            run_config=tune.RunConfig(name=f"{name}-gradient",
                                      storage_path=str(out_dir / "tune"),
                                      callbacks=[logger_cb], verbose=0),
        )
        try:
            with stop.around_fit():
                grid = tuner.fit()
        finally:
            logger_cb.end_open()
        interrupted = 0
        for result in grid:
            metrics = result.metrics or {}
            if result.error is None and DERIVED_KEY not in metrics:
                trial_id = str(metrics.get("trial_id") or Path(result.path).name)
                if trial_id not in stopped:
                    interrupted += 1
                elif trial_id in logger_cb.runs and trial_id in logger_cb.last_arch:
                    # Stopped by the scheduler: done, its answer the last epoch's cell.
                    tracker.log_batch(logger_cb.runs[trial_id], tags={
                        TAG_STOPPED: "true", TAG_DERIVED: logger_cb.last_arch[trial_id]})
        if interrupted:
            raise KeyboardInterrupt(f"{interrupted} gradient runs stopped before finishing")
    tracker.flush()
    done = finished_runs(tracker.client, tracker.resolve(parent))
    return [done[job_key(job)] for job in plan.jobs if job_key(job) in done]
