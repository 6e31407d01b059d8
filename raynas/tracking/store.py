"""MLflow tracking: one parent run per search, a nested child run per trial, artifacts."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from ray.tune.logger import LoggerCallback

from raynas.run.config import check_writable
from raynas.run.placement import RESULT_NODE_ID
from raynas.tracking.spool import (
    TAG_LOCAL_ID,
    Op,
    RunIds,
    Spool,
    TrackingError,
    WriteBuffer,
    apply_op,
    disable_mlflow_http_retries,
    is_transient,
    new_local_id,
)

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from spaces import SearchSpace

logger = logging.getLogger(__name__)

TAG_ROLE = "raynas.role"  # "search" for the parent run, "trial" for a trial's run
TAG_TRIAL_ID = "raynas.trial_id"
TAG_RETRIES = "raynas.retries"  # times Tune restarted the trial after a failure
TAG_TRIAL_INDEX = "raynas.trial_index"  # suggestion order (1, 2, ...) across resumes
TAG_ARCH = "raynas.arch"
TAG_CANONICAL = "raynas.canonical"
TAG_SPACE = "raynas.space"
TAG_SEARCHER = "raynas.searcher"
TAG_NODE_ID = "raynas.node_id"  # the Ray node a trial ran on (its last one, if restarted)
# Tune's bookkeeping keys that are not metrics of the architecture.
_SKIP_RESULT_KEYS = {"done", "trial_id", "pid", "node_ip", "date", "hostname", "timestamp"}
_MAX_BATCH = 900  # below MLflow's 1000-metric limit per log_batch
_MAX_PARAMS = 100  # MLflow's limit of params per log_batch
SPOOL_FILE = "mlflow_spool.jsonl"  # in a search's output folder


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


def check_store_writable(uri: str) -> None:
    """``ConfigError`` naming the file when a sqlite store (or its folder) cannot be written.

    Checked before anything starts: otherwise a read-only store shows up as minutes of
    retried writes once the search runs. Nothing is created; other stores pass.
    """
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :].partition("?")[0]
        if path and path != ":memory:":
            check_writable(path, "MLflow store", folder=False)


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
    """An MLflow experiment and every write a search makes to it, surviving store outages.

    Writes go to the store at once while it answers. When the store stops answering, writes
    are buffered in order (in memory and in ``spool_path``) and return at once, a background
    thread retries with exponential backoff, and runs created meanwhile get placeholder ids
    that later writes may use. After ``max_outage_s`` without a successful write the next
    write raises ``TrackingError`` naming the spool, which ``replay_spool`` writes later.

    Args:
        uri: tracking URI (``sqlite:///abs/path.db`` or ``http://host:port``).
        experiment: experiment name, created when missing.
        spool_path: JSON-lines file for writes the store has not taken (None: memory only).
        max_outage_s: how long writes may keep failing before the search must stop.
        request_timeout_s: how long one MLflow HTTP request may wait for the server.

    Example:
        >>> tracker = Tracker("sqlite:////tmp/m.db", "demo", spool_path="/tmp/spool.jsonl")
        >>> run = tracker.start_search(name="s", params={"seed": 0}, tags={})
        >>> tracker.log_metrics(run, {"val_acc": 0.9}, step=1)
        >>> tracker.end(run)
        >>> tracker.close()
        True
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        *,
        spool_path: str | os.PathLike[str] | None = None,
        max_outage_s: float = 300.0,
        request_timeout_s: float = 30.0,
    ) -> None:
        if isinstance(max_outage_s, bool) or not 0 < max_outage_s < math.inf:
            raise ValueError(f"max_outage_s must be a number of seconds > 0, got {max_outage_s!r}")
        check_tracking_uri(uri)
        disable_mlflow_http_retries(uri, timeout_s=request_timeout_s)
        self.uri = uri
        self.experiment = experiment
        self.spool_path = None if spool_path is None else Path(spool_path)
        self.max_outage_s = float(max_outage_s)
        self.request_timeout_s = float(request_timeout_s)
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
        self._buffer = self._new_buffer(self.spool_path)

    def _new_buffer(self, spool_path: Path | None) -> WriteBuffer:
        return WriteBuffer(
            self.client, uri=self.uri, spool_path=spool_path, max_outage_s=self.max_outage_s,
            experiments={self.experiment: self.experiment_id},
        )

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks: keep the settings, not the client, queue or thread."""
        keys = ("uri", "experiment", "experiment_id", "spool_path", "max_outage_s",
                "request_timeout_s")
        return {k: self.__dict__[k] for k in keys}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A copy writes without a spool, so it never replays the original's buffer."""
        self.__dict__.update(state)
        self.client = MlflowClient(tracking_uri=self.uri)
        self._buffer = self._new_buffer(None)

    @property
    def unreachable_s(self) -> float:
        """Seconds the store has been unreachable (since the first failed write); 0 if not."""
        return self._buffer.unreachable_s

    @property
    def pending(self) -> int:
        """Writes buffered and not yet in the store."""
        return self._buffer.pending

    @property
    def buffered(self) -> dict[str, int]:
        """How many operations, runs, metric values and artifacts went through the buffer."""
        return dict(self._buffer.buffered)

    def resolve(self, run_id: str) -> str:
        """The real MLflow id of a placeholder run id once the run exists, else ``run_id``."""
        return self._buffer.resolve(run_id)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every buffered write is in the store; False if ``timeout_s`` passed.

        Raises ``TrackingError`` when the outage outlasts ``max_outage_s`` meanwhile.
        """
        return self._buffer.flush(timeout_s)

    def close(self, timeout_s: float | None = None) -> bool:
        """Flush for up to ``timeout_s`` and stop the background writer; False if writes are left.

        Raises ``TrackingError`` when the outage outlasts ``max_outage_s`` meanwhile.
        """
        return self._buffer.close(timeout_s)

    def create_run(self, *, name: str, tags: Mapping[str, str]) -> str:
        """Create a run in the experiment; returns its id (a placeholder while buffered)."""
        local = new_local_id()
        op: Op = {
            "op": "create_run", "run": local, "experiment": self.experiment,
            "experiment_id": self.experiment_id, "name": name,
            "tags": {**{str(k): str(v) for k, v in tags.items()}, TAG_LOCAL_ID: local},
            "start_time": _now_ms(),
        }
        return self._buffer.write(op) or local

    def start_search(
        self, *, name: str, params: Mapping[str, Any], tags: Mapping[str, str]
    ) -> str:
        """Create the search's parent run; returns its run id."""
        run_id = self.create_run(name=name, tags={TAG_ROLE: "search", **tags})
        self._buffer.resume_run_id = run_id
        self.log_params(run_id, params)
        return run_id

    def start_child(
        self, parent_run_id: str, *, name: str, params: Mapping[str, Any],
        tags: Mapping[str, str],
    ) -> str:
        """Create a run nested under ``parent_run_id``; returns its run id."""
        run_id = self.create_run(name=name, tags={MLFLOW_PARENT_RUN_ID: parent_run_id, **tags})
        self.log_params(run_id, params)
        return run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params in batches (values as strings, as MLflow stores them)."""
        items = [[str(k), str(v)[:6000]] for k, v in params.items()]
        for i in range(0, len(items), _MAX_PARAMS):
            self._log_batch(run_id, params=items[i : i + _MAX_PARAMS])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int = 0) -> None:
        """Log metrics at one step with one batched call."""
        now = _now_ms()
        items = [[str(k), float(v), now, int(step)] for k, v in metrics.items()]
        for i in range(0, len(items), _MAX_BATCH):
            self._log_batch(run_id, metrics=items[i : i + _MAX_BATCH])

    def log_batch(
        self,
        run_id: str,
        *,
        metrics: Mapping[str, float] | None = None,
        step: int = 0,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Log metrics (at one step), params and tags together: one write when they fit."""
        now = _now_ms()
        m = [[str(k), float(v), now, int(step)] for k, v in (metrics or {}).items()]
        p = [[str(k), str(v)[:6000]] for k, v in (params or {}).items()]
        t = [[str(k), str(v)] for k, v in (tags or {}).items()]
        while m or p or t:
            pc, tc = p[:_MAX_PARAMS], t[:_MAX_PARAMS]
            room = _MAX_BATCH - len(pc) - len(tc)  # MLflow caps the entities of one batch
            self._log_batch(run_id, metrics=m[:room], params=pc, tags=tc)
            m, p, t = m[room:], p[_MAX_PARAMS:], t[_MAX_PARAMS:]

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        """Set one tag of a run."""
        self._log_batch(run_id, tags=[[str(key), str(value)]])

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Store ``text`` as an artifact file of the run."""
        self._buffer.write(
            {"op": "log_text", "run": run_id, "text": text, "artifact_file": artifact_file}
        )

    def log_file(
        self, run_id: str, path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        """Store a local file as an artifact of the run (read when it is uploaded)."""
        self._buffer.write({
            "op": "log_file", "run": run_id, "path": os.path.abspath(path),
            "artifact_path": artifact_path,
        })

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        """Mark a run terminated with ``status`` (FINISHED, FAILED, KILLED)."""
        self._buffer.write({"op": "end", "run": run_id, "status": status, "end_time": _now_ms()})

    def _log_batch(
        self, run_id: str, *, metrics: list[list[Any]] | None = None,
        params: list[list[str]] | None = None, tags: list[list[str]] | None = None,
    ) -> None:
        self._buffer.write({
            "op": "log_batch", "run": run_id, "metrics": metrics or [], "params": params or [],
            "tags": tags or [],
        })


def _now_ms() -> int:
    return int(time.time() * 1000)


class TrialLogger(LoggerCallback):
    """Tune callback logging each trial as a child run nested under the search's parent run.

    Ray's ``MLflowLoggerCallback`` creates flat runs and logs one metric per request; this
    callback nests runs (``mlflow.parentRunId``), tags each with its architecture, and logs a
    result's metrics in one ``log_batch`` call. It runs in the driver only, so a sqlite store
    has a single writer.
    """

    def __init__(
        self,
        tracker: Tracker,
        parent_run_id: str,
        space: SearchSpace,
        *,
        searcher: str,
        parents: Mapping[str, str] | None = None,
        index_offset: int = 0,
    ) -> None:
        self.tracker = tracker
        # Trials of a resumed search continue the numbering of the recorded ones.
        self.index_offset = index_offset
        self.parent_run_id = parent_run_id
        self.space = space
        self.searcher = searcher
        # Portfolio: member label (trial config key "_searcher") -> that member's run id.
        self.parents = dict(parents or {})
        self.trial_runs: dict[str, str] = {}
        self.trial_nodes: dict[str, str] = {}  # trial id -> the Ray node id last tagged
        self._unlogged_params: dict[str, dict[str, Any]] = {}
        self._ended: set[str] = set()  # trial ids whose run was closed

    def log_trial_start(self, trial: Trial) -> None:
        """Create the trial's child run with its architecture as tags and params."""
        if trial.trial_id in self.trial_runs:
            return
        config = dict(trial.config)
        arch = self.space.from_config(config)
        label = str(config.get("_searcher") or self.searcher)
        tags = {
            MLFLOW_PARENT_RUN_ID: self.parents.get(label, self.parent_run_id),
            MLFLOW_RUN_NAME: str(trial),
            TAG_ROLE: "trial",
            TAG_TRIAL_ID: trial.trial_id,
            TAG_ARCH: self.space.to_string(arch),
            TAG_CANONICAL: self.space.canonical(arch),
            TAG_SPACE: self.space.name,
            TAG_SEARCHER: label,
        }
        # Tune numbers trials in suggestion order in their experiment tag ("3_op_0=...").
        head = str(getattr(trial, "experiment_tag", "") or "").split("_", 1)[0]
        if head.isdigit():
            tags[TAG_TRIAL_INDEX] = str(int(head) + self.index_offset)
        run_id = self.tracker.create_run(name=str(trial), tags=tags)
        self.trial_runs[trial.trial_id] = run_id
        # Written with the first result (one write per result), or at the end.
        from raynas.tracking.results import flat_config

        self._unlogged_params[trial.trial_id] = {**flat_config(config), "arch": tags[TAG_ARCH]}

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        """Log a result's numeric metrics at step ``training_iteration``."""
        run_id = self.trial_runs.get(trial.trial_id)
        if run_id is None:
            self.log_trial_start(trial)
            run_id = self.trial_runs[trial.trial_id]
        step = int(result.get("training_iteration") or iteration)
        metrics = {k: v for k, v in numeric_metrics(result).items() if not math.isinf(v)}
        tags = {}
        node = result.get(RESULT_NODE_ID)  # a string: numeric_metrics leaves it out
        if isinstance(node, str) and node and self.trial_nodes.get(trial.trial_id) != node:
            tags[TAG_NODE_ID] = node
            self.trial_nodes[trial.trial_id] = node
        self.tracker.log_batch(run_id, metrics=metrics, step=step, tags=tags,
                               params=self._unlogged_params.pop(trial.trial_id, None))

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial,
                         **info: Any) -> None:
        """Count Tune's retries of a failed trial (``budget.max_failures``) on its run."""
        run_id = self.trial_runs.get(trial.trial_id)
        if run_id is not None:
            self.tracker.set_tag(run_id, TAG_RETRIES, str(trial.num_failures))

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        """Close the trial's run as FINISHED or FAILED."""
        run_id = self.trial_runs.get(trial.trial_id)
        if run_id is not None:
            params = self._unlogged_params.pop(trial.trial_id, None)
            if params:  # a trial that failed before its first result
                self.tracker.log_params(run_id, params)
            self.tracker.end(run_id, "FAILED" if failed else "FINISHED")
            self._ended.add(trial.trial_id)

    def end_open(self, status: str) -> int:
        """Close the runs of trials Tune stopped without ending (a stopped search); how many."""
        open_trials = [t for t in self.trial_runs if t not in self._ended]
        for trial_id in open_trials:
            run_id = self.trial_runs[trial_id]
            params = self._unlogged_params.pop(trial_id, None)
            if params:
                self.tracker.log_params(run_id, params)
            self.tracker.end(run_id, status)
            self._ended.add(trial_id)
        return len(open_trials)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """Write what is still buffered, so ``trial_runs`` holds real MLflow run ids."""
        try:
            self.tracker.flush()
        except TrackingError as exc:  # the runner's next write raises it again
            logger.debug("flush at the end of the experiment failed: %s", exc)
        self.trial_runs.update({t: self.tracker.resolve(r) for t, r in self.trial_runs.items()})


def replay_spool(
    path: str | os.PathLike[str], uri: str, *, attempts: int = 4
) -> dict[str, str]:
    """Write a spool's unwritten operations into the store at ``uri``, in order, once.

    Progress goes to ``<path>.done`` after every operation, and every operation is idempotent,
    so an interrupted or repeated replay neither loses nor duplicates runs or metrics.
    Returns the placeholder -> real run id mapping of every run the spool created.
    """
    spool = Spool(path)
    if not spool.path.is_file():
        raise TrackingError(f"no MLflow spool file at {spool.path}")
    check_tracking_uri(uri)
    disable_mlflow_http_retries(uri, timeout_s=30.0)
    ops = spool.read()
    applied, ids = spool.progress()
    runs = RunIds(ids)
    client = MlflowClient(tracking_uri=uri)
    for index in range(applied, len(ops)):
        for attempt in range(attempts):
            try:
                apply_op(client, ops[index], runs)
                break
            except Exception as exc:  # classified: transient ones are retried
                if not is_transient(exc):
                    logger.warning(
                        "spool %s line %d: MLflow rejected %s (%s); skipped", spool.path,
                        index + 1, ops[index]["op"], str(exc).splitlines()[0][:300],
                    )
                    break
                if attempt == attempts - 1:
                    raise TrackingError(
                        f"replaying {spool.path} into {uri} stopped at line {index + 1} of "
                        f"{len(ops)}: the store is unreachable; run it again once it is back"
                    ) from None
                time.sleep(0.5 * 2**attempt)
        spool.mark(index + 1, runs.ids)
    return dict(runs.ids)
