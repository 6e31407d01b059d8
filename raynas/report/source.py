"""Where a report's data comes from: the search's runs and config in MLflow.

A search is a parent run (``raynas.role=search``) with a ``config.yaml`` artifact. Its trial
runs (``raynas.role=trial``) are nested under it, or, in a portfolio, under one
``raynas.role=searcher`` run per member. Runs are listed page by page, so searches with
thousands of trials read in full.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from raynas.run.config import ConfigError, ExperimentConfig, parse_config
from raynas.tracking.store import TAG_ARCH, TAG_CANONICAL, TAG_ROLE, TAG_SEARCHER, TAG_TRIAL_ID
from searchers.objectives import Objectives

logger = logging.getLogger(__name__)

_PARENT = "mlflow.parentRunId"
_PAGE = 1000


def open_client(uri: str) -> MlflowClient:
    """An ``MlflowClient`` for ``uri``; a sqlite file that does not exist is an error."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise ValueError(f"no MLflow store at {uri!r}; pass --tracking-uri or MLFLOW_TRACKING_URI")
    return MlflowClient(tracking_uri=uri)


def find_search_run(client: MlflowClient, run_id_or_experiment: str) -> Any:
    """The search's parent run: a run id (trial and searcher runs lead to it) or an experiment."""
    key = run_id_or_experiment
    try:
        run = client.get_run(key)
    except MlflowException:
        run = None
    hops = 0
    while run is not None and run.data.tags.get(TAG_ROLE) != "search" and hops < 3:
        parent = run.data.tags.get(_PARENT)
        if parent is None:
            raise ValueError(f"MLflow run {key!r} is not part of a raynas search")
        run, hops = client.get_run(parent), hops + 1
    if run is not None:
        return run
    experiment = client.get_experiment_by_name(key)
    if experiment is None and key.isdigit():
        try:
            experiment = client.get_experiment(key)
        except MlflowException:
            experiment = None
    if experiment is None:
        raise ValueError(
            f"no MLflow run or experiment named {key!r} at {client.tracking_uri}"
        )
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{TAG_ROLE}` = 'search'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise ValueError(f"MLflow experiment {experiment.name!r} holds no raynas search run")
    return runs[0]


def _children(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Any]:
    """Every run nested directly under ``parent_id`` (all pages)."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{_PARENT}` = '{parent_id}'",
            max_results=_PAGE,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def trial_runs(client: MlflowClient, parent: Any) -> list[tuple[Any, str | None]]:
    """Trial runs of a search with the label of the searcher run they sit under (if any)."""
    experiment_id = parent.info.experiment_id
    found: list[tuple[Any, str | None]] = []
    for child in _children(client, experiment_id, parent.info.run_id):
        role = child.data.tags.get(TAG_ROLE)
        if role == "trial":
            found.append((child, None))
        elif role == "searcher":
            label = child.data.tags.get(TAG_SEARCHER) or child.info.run_name
            nested = _children(client, experiment_id, child.info.run_id)
            found.extend((run, label) for run in nested)
    return [(run, label) for run, label in found if run.data.tags.get(TAG_ROLE) == "trial"]


def search_config(client: MlflowClient, run_id: str) -> ExperimentConfig:
    """The ``config.yaml`` artifact of a search run, parsed."""
    with tempfile.TemporaryDirectory(prefix="raynas-report-") as tmp:
        try:
            path = client.download_artifacts(run_id, "config.yaml", tmp)
        except (MlflowException, OSError) as exc:
            raise ValueError(f"search run {run_id} has no readable config.yaml ({exc})") from None
        text = Path(path).read_text()
    try:
        return parse_config(yaml.safe_load(text))
    except (ConfigError, yaml.YAMLError) as exc:
        raise ValueError(f"config.yaml of search run {run_id} is invalid: {exc}") from None


def search_objectives(cfg: ExperimentConfig) -> Objectives:
    """The search's ``Objectives``: metric(s), mode(s), constraints and scalarisation."""
    metric, mode = cfg.metric, cfg.mode
    if metric is None:
        # The runner falls back to the evaluator's default metric; building an evaluator only
        # stores its options, but it may need files that this machine lacks.
        from raynas.evaluators.base import create_evaluator
        from spaces import create_space

        try:
            space = create_space(cfg.space.name, **cfg.space.options)
            metric, mode = create_evaluator(cfg.evaluator.name, space, **cfg.evaluator.options
                                            ).default_metric
        except (TypeError, ValueError, OSError) as exc:
            raise ValueError(
                f"the search's config names no metric and its evaluator's default cannot be "
                f"found here ({exc})"
            ) from None
    options = [cfg.searcher.options] + [m.searcher.options for m in cfg.portfolio]
    # A portfolio's members may scalarise differently; only a shared choice is used.
    scalar = [o for o in options if "scalarization" in o or "penalty" in o]
    chosen = scalar[0] if scalar and all(o == scalar[0] for o in scalar) else {}
    return Objectives.build(
        metric,
        mode,
        constraints=cfg.constraints,
        scalarization=chosen.get("scalarization"),
        penalty=float(chosen.get("penalty", 100.0)),
    )


def _parse_param(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def trial_row(
    run: Any, label: str | None, objectives: Objectives, t0_ms: int
) -> dict[str, Any]:
    """One trial as a flat row: identity, searcher, status, times, config and last metrics."""
    tags, info = run.data.tags, run.info
    metrics = dict(run.data.metrics)
    outcome = objectives.read(metrics)
    if info.status in ("FAILED", "KILLED"):
        status = "ERROR"
    elif info.status != "FINISHED":
        status = "RUNNING"
    else:
        status = "INVALID" if isinstance(outcome, str) else "OK"
    ok = status == "OK" and not isinstance(outcome, str)
    row: dict[str, Any] = {
        "trial_index": None,
        "searcher": tags.get(TAG_SEARCHER) or label or "unknown",
        "trial_id": tags.get(TAG_TRIAL_ID, info.run_name),
        "arch": tags.get(TAG_ARCH),
        "canonical": tags.get(TAG_CANONICAL),
        "status": status,
        "run_status": info.status,
        "feasible": bool(outcome.feasible) if ok else None,  # type: ignore[union-attr]
        "score": float(outcome.scalar) if ok else None,  # type: ignore[union-attr]
        "mlflow_run_id": info.run_id,
        "start_s": (info.start_time - t0_ms) / 1000.0 if info.start_time else None,
        "end_s": (info.end_time - t0_ms) / 1000.0 if info.end_time else None,
    }
    for key, value in run.data.params.items():
        if key != "arch":
            row[f"config/{key}"] = _parse_param(value)
    for key, value in metrics.items():  # a metric never overwrites the trial's own columns
        row[f"metric/{key}" if key in row else key] = value
    return row
