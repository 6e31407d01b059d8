"""MLflow tracking: one parent run per search, a nested child run per trial, artifacts."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from ray.tune.logger import LoggerCallback

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from spaces import SearchSpace

logger = logging.getLogger(__name__)

TAG_ROLE = "raynas.role"  # "search" for the parent run, "trial" for a trial's run
TAG_TRIAL_ID = "raynas.trial_id"
TAG_ARCH = "raynas.arch"
TAG_CANONICAL = "raynas.canonical"
TAG_SPACE = "raynas.space"
TAG_SEARCHER = "raynas.searcher"
# Tune's bookkeeping keys that are not metrics of the architecture.
_SKIP_RESULT_KEYS = {"done", "trial_id", "pid", "node_ip", "date", "hostname", "timestamp"}
_MAX_BATCH = 900  # below MLflow's 1000-metric limit per log_batch


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be used; the message says which and why."""


def check_tracking_uri(uri: str, *, timeout_s: float = 5.0) -> None:
    """Raise ``TrackingError`` if the tracking store at ``uri`` cannot be reached."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"cannot create folder for MLflow store {uri!r}: {exc}") from None
        return
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
                return
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(
                f"MLflow tracking server {uri!r} is unreachable ({exc}); start it or fix "
                "tracking.uri / MLFLOW_TRACKING_URI"
            ) from None


def default_artifact_location(uri: str) -> str | None:
    """Artifacts of a sqlite store go beside the database file, not into the cwd."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    return None


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings with ``.``-joined keys (``searcher.population_size``)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def numeric_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a Tune result (nested keys joined with ``/``)."""
    out: dict[str, float] = {}
    for key, value in result.items():
        if key in _SKIP_RESULT_KEYS or key == "config":
            continue
        if isinstance(value, Mapping):
            for sub, v in numeric_metrics(value).items():
                out[f"{key}/{sub}"] = v
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


class Tracker:
    """An MLflow experiment and the client that writes to it.

    Args:
        uri: tracking URI (``sqlite:///abs/path.db`` or ``http://host:port``).
        experiment: experiment name, created when missing.
    """

    def __init__(self, uri: str, experiment: str) -> None:
        check_tracking_uri(uri)
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        try:
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=default_artifact_location(uri)
                )
            else:
                self.experiment_id = found.experiment_id
        except Exception as exc:  # mlflow raises several types for a broken store
            raise TrackingError(
                f"cannot open MLflow experiment {experiment!r} at {uri!r}: {exc}"
            ) from None

    def start_search(
        self, *, name: str, params: Mapping[str, Any], tags: Mapping[str, str]
    ) -> str:
        """Create the search's parent run; returns its run id."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={TAG_ROLE: "search", **tags},
        )
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params in batches (values as strings, as MLflow stores them)."""
        items = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int = 0) -> None:
        """Log metrics at one step with one batched call."""
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), _MAX_BATCH):
            self.client.log_batch(run_id, metrics=items[i : i + _MAX_BATCH])

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Store ``text`` as an artifact file of the run."""
        self.client.log_text(run_id, text, artifact_file)

    def log_file(
        self, run_id: str, path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        """Store a local file as an artifact of the run."""
        self.client.log_artifact(run_id, str(path), artifact_path)

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        """Mark a run terminated with ``status`` (FINISHED, FAILED, KILLED)."""
        self.client.set_terminated(run_id, status)


class TrialLogger(LoggerCallback):
    """Tune callback logging each trial as a child run nested under the search's parent run.

    Ray's ``MLflowLoggerCallback`` creates flat runs and logs one metric per request; this
    callback nests runs (``mlflow.parentRunId``), tags each with its architecture, and logs a
    result's metrics in one ``log_batch`` call. It runs in the driver only, so a sqlite store
    has a single writer.
    """

    def __init__(
        self, tracker: Tracker, parent_run_id: str, space: SearchSpace, *, searcher: str
    ) -> None:
        self.tracker = tracker
        self.parent_run_id = parent_run_id
        self.space = space
        self.searcher = searcher
        self.trial_runs: dict[str, str] = {}

    def log_trial_start(self, trial: Trial) -> None:
        """Create the trial's child run with its architecture as tags and params."""
        if trial.trial_id in self.trial_runs:
            return
        config = {k: v for k, v in trial.config.items() if not isinstance(v, Mapping)}
        arch = self.space.from_config(config)
        tags = {
            MLFLOW_PARENT_RUN_ID: self.parent_run_id,
            MLFLOW_RUN_NAME: str(trial),
            TAG_ROLE: "trial",
            TAG_TRIAL_ID: trial.trial_id,
            TAG_ARCH: self.space.to_string(arch),
            TAG_CANONICAL: self.space.canonical(arch),
            TAG_SPACE: self.space.name,
            TAG_SEARCHER: self.searcher,
        }
        run = self.tracker.client.create_run(
            self.tracker.experiment_id,
            run_name=str(trial),
            tags=tags,
        )
        self.trial_runs[trial.trial_id] = run.info.run_id
        self.tracker.log_params(run.info.run_id, {**config, "arch": tags[TAG_ARCH]})

    def log_trial_result(self, iteration: int, trial: Trial, result: dict) -> None:
        """Log a result's numeric metrics at step ``training_iteration``."""
        run_id = self.trial_runs.get(trial.trial_id)
        if run_id is None:
            self.log_trial_start(trial)
            run_id = self.trial_runs[trial.trial_id]
        step = int(result.get("training_iteration") or iteration)
        metrics = {k: v for k, v in numeric_metrics(result).items() if not math.isinf(v)}
        self.tracker.log_metrics(run_id, metrics, step=step)

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        """Close the trial's run as FINISHED or FAILED."""
        run_id = self.trial_runs.get(trial.trial_id)
        if run_id is not None:
            self.tracker.end(run_id, "FAILED" if failed else "FINISHED")
