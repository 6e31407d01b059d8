"""The one place where space, searcher, evaluator, Ray Tune and MLflow meet."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray import tune

from raynas.config import ConfigError, ExperimentConfig
from raynas.evaluators import Evaluator, create_evaluator
from raynas.progress import ProgressPrinter, echo_stdout
from raynas.tracking import TAG_SEARCHER, TAG_SPACE, Tracker, TrialLogger, flatten
from searchers import NASSearch, create_searcher, get_searcher_class
from searchers.objectives import Objectives
from searchers.pareto import pareto_front
from spaces import SearchSpace, create_space

logger = logging.getLogger(__name__)

TRIALS_FILE = "trials.parquet"
STATE_FILE = "searcher_state.json"
CONFIG_FILE = "config.yaml"


@dataclass
class SearchResult:
    """What a finished search produced and where it is recorded."""

    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    metric: str
    mode: str
    best_arch: str | None
    best_metrics: dict[str, float]
    trials_path: Path
    num_trials: int
    num_failed: int
    wall_time_s: float
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    pareto: list[dict[str, Any]] = field(default_factory=list, repr=False)
    objective_keys: list[str] = field(default_factory=list)


@dataclass
class Components:
    """The built pieces of a search."""

    space: SearchSpace
    searcher: NASSearch
    evaluator: Evaluator
    metric: str
    mode: str


def build_components(cfg: ExperimentConfig) -> Components:
    """Build space, evaluator and searcher from a config; errors name the failing field."""
    try:
        space = create_space(cfg.space.name, **cfg.space.options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config field 'space': {exc}") from None
    try:
        evaluator = create_evaluator(cfg.evaluator.name, space, **cfg.evaluator.options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config field 'evaluator': {exc}") from None
    metric: Any = cfg.metric or evaluator.default_metric[0]
    mode: Any = cfg.mode if cfg.metric else evaluator.default_metric[1]
    metrics = [metric] if isinstance(metric, str) else list(metric)
    constrained = [c.split()[0] for c in cfg.constraints]
    for field_name, names in (("metric", metrics), ("constraints", constrained)):
        for name in names:
            if name not in evaluator.metrics:
                raise ConfigError(
                    f"config field '{field_name}' names {name!r}, which evaluator "
                    f"{cfg.evaluator.name!r} does not report; it reports: "
                    f"{', '.join(evaluator.metrics)}"
                )
            if name.startswith("test_"):
                raise ConfigError(
                    f"config field '{field_name}' names {name!r}: test metrics are for "
                    "reporting only; search on a validation metric"
                )
    options = {
        "metric": metric if isinstance(metric, str) else list(metric),
        "mode": mode if isinstance(mode, str) else list(mode),
        "seed": cfg.seed,
        **({"constraints": list(cfg.constraints)} if cfg.constraints else {}),
        **cfg.searcher.options,
    }
    options.setdefault("max_trials", cfg.budget.trials)
    source = getattr(evaluator, "candidate_source", None)
    if source is not None and "candidate_source" in _keyword_options(cfg.searcher.name):
        # GreedyNAS-style searchers seed their population from the supernet's candidate pool.
        options.setdefault("candidate_source", source())
    try:
        searcher = create_searcher(cfg.searcher.name, space, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config field 'searcher': {exc}") from None
    # Tune's own metric (schedulers, progress) is the first objective.
    first_mode = mode if isinstance(mode, str) else mode[0]
    return Components(space, searcher, evaluator, metrics[0], first_mode)


def _keyword_options(searcher: str) -> set[str]:
    """Keyword parameters the searcher class accepts (empty for unknown names)."""
    import inspect

    try:
        cls = get_searcher_class(searcher)
    except ValueError:
        return set()
    return set(inspect.signature(cls.__init__).parameters)


def evaluate_trial(config: dict[str, Any], *, space: SearchSpace, evaluator: Evaluator) -> None:
    """Tune function trainable: decode the architecture, evaluate it, report its metrics."""
    arch = space.from_config(config)
    held: dict[str, float] | None = None

    # Each intermediate result is held until the next one, so the evaluator's final dict
    # (with test metrics) merges into the last report instead of adding an iteration.
    def report(metrics: dict[str, float]) -> None:
        nonlocal held
        if held is not None:
            tune.report(held)
        held = dict(metrics)

    final = evaluator.evaluate(arch, report=report)
    tune.report({**(held or {}), **final})


def ensure_ray(address: str | None, *, num_cpus: int | None = None, quiet: bool = True) -> bool:
    """Connect to ``address`` or start local Ray; returns True if this call started it."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": not quiet}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = num_cpus
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot connect to Ray at {address or 'local'}: {exc}") from None
    return True


def trial_rows(
    results: Any, space: SearchSpace, metric: str, run_ids: Mapping[str, str]
) -> list[dict[str, Any]]:
    """One row per trial in suggestion order: id, architecture, status, run id, config, metrics."""
    rows = []
    for result in results:
        metrics = dict(result.metrics or {})
        config = {k: v for k, v in (result.config or {}).items() if not isinstance(v, Mapping)}
        arch = space.from_config(config)
        trial_id = metrics.get("trial_id") or Path(result.path).name
        value = metrics.get(metric)
        ok = result.error is None and isinstance(value, (int, float)) and math.isfinite(value)
        tag = str(metrics.get("experiment_tag") or "")
        index = int(tag.split("_", 1)[0]) if tag.split("_", 1)[0].isdigit() else None
        row: dict[str, Any] = {
            "trial_index": index,
            "trial_id": str(trial_id),
            "arch": space.to_string(arch),
            "canonical": space.canonical(arch),
            "status": "ERROR" if result.error is not None else ("OK" if ok else "INVALID"),
            "error": None if result.error is None else error_summary(result.error),
            "mlflow_run_id": run_ids.get(str(trial_id)),
        }
        for key, val in config.items():
            row[f"config/{key}"] = val
        for key, val in metrics.items():
            if isinstance(val, (int, float)) and not isinstance(val, bool):
                row[key] = float(val)
        rows.append(row)
    # Tune numbers trials in creation (= suggestion) order in their experiment tag.
    rows.sort(key=lambda r: (r["trial_index"] is None, r["trial_index"] or 0, r["trial_id"]))
    return rows


def error_summary(error: BaseException | str) -> str:
    """The last line of a (remote) traceback, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:500]


def write_trials(rows: list[dict[str, Any]], path: Path) -> None:
    """Write the trial table as Parquet (columns are the union of the rows' keys)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])
    pq.write_table(table, path)


def best_row(rows: list[dict[str, Any]], objectives: Objectives) -> dict[str, Any] | None:
    """The OK row with the best scalar score (the objective itself for one metric)."""
    scored = []
    for row in rows:
        outcome = objectives.read(row) if row["status"] == "OK" else None
        if outcome is not None and not isinstance(outcome, str):
            scored.append((outcome.scalar, row))
    if not scored:
        return None
    return max(scored, key=lambda pair: pair[0])[1]


def feasible_front(rows: list[dict[str, Any]], objectives: Objectives) -> list[dict[str, Any]]:
    """Non-dominated OK rows that meet every constraint (empty for a single objective)."""
    if not objectives.multi:
        return []
    feasible = []
    for row in rows:
        outcome = objectives.read(row) if row["status"] == "OK" else None
        if outcome is not None and not isinstance(outcome, str) and outcome.feasible:
            feasible.append(row)
    front = pareto_front(feasible, objectives.metrics, objectives.modes)
    return sorted(front, key=lambda r: r[objectives.metrics[0]])


def run_search(
    cfg: ExperimentConfig,
    *,
    address: str | None = None,
    echo: Callable[[str], None] = echo_stdout,
    quiet: bool = True,
) -> SearchResult:
    """Run a configured search on Ray Tune, recording everything in MLflow."""
    comps = build_components(cfg)
    uri = cfg.resolved_tracking_uri()
    tracker = Tracker(uri, cfg.tracking.experiment)
    out_dir = (Path(cfg.output_dir) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_FILE).write_text(cfg.to_yaml())

    parent = tracker.start_search(
        name=cfg.name,
        params=flatten(cfg.to_dict()),
        tags={TAG_SPACE: comps.space.name, TAG_SEARCHER: cfg.searcher.name},
    )
    tracker.log_text(parent, cfg.to_yaml(), CONFIG_FILE)
    tracker.log_text(parent, json.dumps(comps.space.describe(), indent=1), "space.json")
    echo(
        f"raynas: searching {comps.space.name} with {cfg.searcher.name} on "
        f"{cfg.evaluator.name} for {cfg.budget.trials} trials ({comps.metric}, {comps.mode}); "
        f"MLflow run {parent} at {uri}"
    )
    started = ensure_ray(address, num_cpus=None, quiet=quiet)
    status = "FAILED"
    t0 = time.monotonic()
    try:
        prep = time.monotonic()

        def log_setup(metrics: dict[str, float], step: int) -> None:
            tracker.log_metrics(parent, metrics, step=step)
            if step % 100 == 0:
                shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items())
                echo(f"raynas: {cfg.evaluator.name} setup step {step}: {shown}")

        comps.evaluator.setup(log_metrics=log_setup, checkpoint_dir=str(out_dir))
        if comps.evaluator.artifacts():
            echo(f"raynas: {cfg.evaluator.name} evaluator ready in {time.monotonic() - prep:.1f}s")
        for path in comps.evaluator.artifacts():
            tracker.log_file(parent, path)
        trial_logger = TrialLogger(tracker, parent, comps.space, searcher=cfg.searcher.name)
        printer = ProgressPrinter(
            metric=comps.metric,
            mode=comps.mode,
            budget=cfg.budget.trials,
            describe=lambda c: comps.space.to_string(comps.space.from_config(c)),
            echo=echo,
        )
        trainable = tune.with_resources(
            tune.with_parameters(evaluate_trial, space=comps.space, evaluator=comps.evaluator),
            {"cpu": cfg.budget.cpus_per_trial, "gpu": cfg.budget.gpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=comps.searcher,
                metric=comps.metric,
                mode=comps.mode,
                num_samples=cfg.budget.trials,
                max_concurrent_trials=cfg.budget.concurrency,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=cfg.name,
                storage_path=str(out_dir / "tune"),
                callbacks=[trial_logger, printer],
                failure_config=tune.FailureConfig(max_failures=cfg.budget.max_failures),
                verbose=0,
            ),
        )
        grid = tuner.fit()
        wall = time.monotonic() - t0
        rows = trial_rows(grid, comps.space, comps.metric, trial_logger.trial_runs)
        trials_path = out_dir / TRIALS_FILE
        write_trials(rows, trials_path)
        tracker.log_file(parent, trials_path)
        state_path = out_dir / STATE_FILE
        comps.searcher.save(str(state_path))
        tracker.log_file(parent, state_path)
        best = best_row(rows, comps.searcher.objectives)
        front = feasible_front(rows, comps.searcher.objectives)
        if front:
            keys = ["trial_id", "arch", *comps.searcher.objectives.keys]
            tracker.log_text(
                parent, json.dumps([{k: r.get(k) for k in keys} for r in front], indent=1),
                "pareto_front.json",
            )
        failed = sum(r["status"] != "OK" for r in rows)
        summary = {"num_trials": len(rows), "num_failed": failed, "wall_time_s": wall}
        if best is not None:
            summary[f"best_{comps.metric}"] = best[comps.metric]
            for key in ("test_acc", "test_acc_200ep"):
                if key in best:
                    summary[f"best_{key}"] = best[key]
            tracker.client.set_tag(parent, "raynas.best_arch", best["arch"])
        tracker.log_metrics(parent, summary)
        status = "FINISHED"
        return SearchResult(
            parent_run_id=parent,
            experiment_id=tracker.experiment_id,
            tracking_uri=uri,
            metric=comps.metric,
            mode=comps.mode,
            best_arch=None if best is None else best["arch"],
            best_metrics={} if best is None else {
                k: v for k, v in best.items() if isinstance(v, float)
            },
            trials_path=trials_path,
            num_trials=len(rows),
            num_failed=failed,
            wall_time_s=wall,
            rows=rows,
            pareto=front,
            objective_keys=list(comps.searcher.objectives.keys),
        )
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        comps.evaluator.teardown()
        tracker.end(parent, status)
        if started:
            ray.shutdown()
