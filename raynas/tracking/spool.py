"""A write-ahead spool of MLflow writes the tracking store has not taken yet.

Each line of the spool is one JSON operation (``create_run``, ``log_batch``, ``log_text``,
``log_file``, ``end``); a companion ``<spool>.done`` file records how many lines the store
has taken and which real run id each local placeholder id became. Every operation is
idempotent when applied again: runs carry a ``raynas.local_id`` tag and are looked up by it
before being created, MLflow drops a metric identical in key, value, timestamp and step, and
params, tags, artifacts and run status overwrite with the same values.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

logger = logging.getLogger(__name__)

Op = dict[str, Any]

LOCAL_ID_PREFIX = "local-"
TAG_LOCAL_ID = "raynas.local_id"  # the client-side id of a run, so creating it is idempotent
_BACKOFF_START_S = 0.25
_BACKOFF_MAX_S = 4.0


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be used; the message says which and why."""


def disable_mlflow_http_retries(uri: str, *, timeout_s: float) -> None:
    """Make MLflow's HTTP client fail at once on a dead server: the caller retries instead.

    MLflow retries a refused connection 7 times with backoff, about 4 minutes per call, which
    would stall Tune's driver loop. The settings are process-wide environment variables; a
    value the user set is kept.
    """
    if not uri.startswith(("http://", "https://")):
        return
    retries = os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, math.ceil(timeout_s))))
    if retries != "0":
        logger.warning(
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES=%s: while the tracking server is down, each MLflow "
            "write can block the search for minutes before raynas buffers it", retries
        )


def new_local_id() -> str:
    """A fresh placeholder run id, distinguishable from MLflow's 32-hex run ids."""
    return LOCAL_ID_PREFIX + uuid.uuid4().hex


def is_local_id(run_id: str) -> bool:
    """True for a placeholder id handed out while the store was unreachable."""
    return run_id.startswith(LOCAL_ID_PREFIX)


def is_transient(exc: BaseException) -> bool:
    """True if ``exc`` says the store is unreachable or overloaded, so a retry may succeed."""
    import requests

    transient: tuple[type[BaseException], ...] = (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.RetryError,  # 429 / 5xx after MLflow's own (disabled) retries
        ConnectionError,
        TimeoutError,
    )
    try:
        from sqlalchemy.exc import OperationalError  # sqlite: "database is locked"

        transient += (OperationalError,)
    except ImportError:  # pragma: no cover - sqlalchemy comes with mlflow
        pass
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, transient):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


class RunIds:
    """Placeholder -> real run id mapping, and the experiment ids of names already seen."""

    def __init__(self, ids: dict[str, str] | None = None) -> None:
        self.ids: dict[str, str] = dict(ids or {})
        self.experiments: dict[str, str] = {}

    def resolve(self, run_id: str) -> str:
        """The real id of ``run_id``; raise ``KeyError`` for a placeholder not yet created."""
        if is_local_id(run_id):
            return self.ids[run_id]
        return run_id


def apply_op(
    client: MlflowClient, op: Op, runs: RunIds, *, sent_before: bool = True, record: bool = True
) -> str | None:
    """Perform one operation on the store; returns the run id for ``create_run``.

    ``sent_before=False`` says the store has never seen the operation, so a run to create
    need not be looked up first; ``record`` keeps the placeholder -> run id of a new run.
    """
    kind = op["op"]
    if kind == "create_run":
        return _create_run(client, op, runs, lookup=sent_before, record=record)
    run_id = runs.resolve(op["run"])
    if kind == "log_batch":
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in op["metrics"]],
            params=[Param(k, v) for k, v in op["params"]],
            tags=[RunTag(k, v) for k, v in op["tags"]],
        )
    elif kind == "log_text":
        client.log_text(run_id, op["text"], op["artifact_file"])
    elif kind == "log_file":
        client.log_artifact(run_id, op["path"], op["artifact_path"])
    elif kind == "end":
        client.set_terminated(run_id, op["status"], end_time=op["end_time"])
    else:
        raise ValueError(f"unknown spool operation {kind!r}")
    return None


def _create_run(
    client: MlflowClient, op: Op, runs: RunIds, *, lookup: bool, record: bool
) -> str:
    """Create the run unless a run with its local id exists (a retry or a second replay)."""
    local = op["run"]
    if local in runs.ids:
        return runs.ids[local]
    experiment_id = _experiment_id(client, op, runs)
    tags = dict(op["tags"])
    parent = tags.get(MLFLOW_PARENT_RUN_ID)
    if parent is not None:
        tags[MLFLOW_PARENT_RUN_ID] = runs.resolve(parent)
    if lookup:
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_LOCAL_ID}` = '{local}'",
            run_view_type=ViewType.ALL,
            max_results=1,
        )
        if found:
            runs.ids[local] = found[0].info.run_id
            return runs.ids[local]
    run = client.create_run(
        experiment_id, start_time=op["start_time"], tags=tags, run_name=op["name"]
    )
    run_id = str(run.info.run_id)
    if record:  # a buffered create: later operations name the run by its placeholder
        runs.ids[local] = run_id
    return run_id


def _experiment_id(client: MlflowClient, op: Op, runs: RunIds) -> str:
    """The experiment of a ``create_run``: by name in the target store, else the recorded id."""
    name = op.get("experiment")
    if not name:
        return str(op["experiment_id"])
    if name not in runs.experiments:
        found = client.get_experiment_by_name(name)
        runs.experiments[name] = (
            found.experiment_id if found is not None else client.create_experiment(name)
        )
    return runs.experiments[name]


class Spool:
    """The JSON-lines file of buffered operations and its ``.done`` progress file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.done_path = self.path.with_name(self.path.name + ".done")

    def read(self, *, repair: bool = False) -> list[Op]:
        """All complete operations in the spool; ``repair`` cuts a torn last line off the file."""
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            logger.warning("spool %s: its last line is incomplete; skipped", self.path)
            if repair:
                with self.path.open("r+b") as f:
                    f.truncate(end)
        return [json.loads(line) for line in data[:end].decode("utf-8").splitlines()]

    def progress(self) -> tuple[int, dict[str, str]]:
        """How many lines the store has taken, and the placeholder -> real id mapping."""
        if not self.done_path.is_file():
            return 0, {}
        state = json.loads(self.done_path.read_text(encoding="utf-8"))
        return int(state["applied"]), dict(state["ids"])

    def append(self, op: Op) -> None:
        """Append one operation as a line and hand it to the OS before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(op, separators=(",", ":")) + "\n")

    def mark(self, applied: int, ids: dict[str, str]) -> None:
        """Record that the first ``applied`` lines are in the store (atomic replace)."""
        tmp = self.done_path.with_name(self.done_path.name + ".tmp")
        tmp.write_text(json.dumps({"applied": applied, "ids": ids}), encoding="utf-8")
        os.replace(tmp, self.done_path)


def _one_line(exc: BaseException) -> str:
    """A short reason: the OS error of a failed connection, else the message's first line."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
    if errno:
        return errno.group(0).strip()
    lines = text.strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


class WriteBuffer:
    """Applies MLflow operations in order; buffers and spools them while the store is down.

    The happy path calls MLflow in the caller's thread, one request per operation. When a
    write fails with a transient error (server down, timeout, 5xx), it and every later write
    go to an in-memory queue and to the spool file, and the call returns at once. A daemon
    thread retries the oldest operation with exponential backoff (0.25 s doubling to 4 s) and
    drains the queue in order once the store answers. When no write has succeeded for
    ``max_outage_s``, the next write (or ``flush``) raises ``TrackingError``; writes after
    that are still spooled, then raise again.
    """

    def __init__(
        self,
        client: MlflowClient,
        *,
        uri: str,
        spool_path: str | os.PathLike[str] | None,
        max_outage_s: float,
        experiments: dict[str, str] | None = None,
    ) -> None:
        self.client = client
        self.uri = uri
        self.spool = None if spool_path is None else Spool(spool_path)
        self.max_outage_s = max_outage_s
        self.resume_run_id: str | None = None  # named in the outage message
        self.runs = RunIds()
        self.runs.experiments.update(experiments or {})
        # Counts of what went through the queue, for logs and tests.
        self.buffered = {"operations": 0, "runs": 0, "metrics": 0, "artifacts": 0}
        self.outages: list[float] = []  # seconds each finished outage lasted
        self._cond = threading.Condition()
        self._producer = threading.Lock()  # one write at a time, so queue order = call order
        # [spool line, operation, sent before]: a failed attempt may have reached the store.
        self._queue: deque[list[Any]] = deque()
        self._lines = 0  # lines in the spool file
        self._busy = False  # an operation is on its way to the store
        self._down_since: float | None = None
        self._backoff = _BACKOFF_START_S
        self._next_try = 0.0
        self._failed: str | None = None
        self._closing = False
        self._thread: threading.Thread | None = None
        if self.spool is not None:
            self._load_spool()

    @property
    def pending(self) -> int:
        """Operations buffered and not yet in the store."""
        with self._cond:
            return len(self._queue)

    @property
    def unreachable_s(self) -> float:
        """Seconds since the first failed write of the current outage (0 when reachable)."""
        down = self._down_since
        return 0.0 if down is None else time.monotonic() - down

    def resolve(self, run_id: str) -> str:
        """The real id of a placeholder run id once its run exists, else ``run_id``."""
        return self.runs.ids.get(run_id, run_id)

    def write(self, op: Op) -> str | None:
        """Apply ``op`` now, or queue it behind earlier ones.

        Returns the new run id of a ``create_run`` applied now; None when it was queued.
        """
        with self._producer:
            with self._cond:
                direct = (
                    not self._queue and not self._busy
                    and self._down_since is None and self._failed is None
                )
                if direct:
                    self._busy = True
            if direct:
                try:
                    return apply_op(self.client, op, self.runs, sent_before=False, record=False)
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    with self._cond:
                        self._note_failure(exc)
                finally:
                    with self._cond:
                        self._busy = False
            with self._cond:
                self._enqueue(op, sent_before=direct)
                self._raise_if_expired()
            return None

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every buffered operation is in the store; False if ``timeout_s`` passed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            if self._queue:
                self._next_try = min(self._next_try, time.monotonic())  # retry now
                self._start_thread()
                self._cond.notify_all()
            while self._queue:
                self._raise_if_expired()
                wait = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
                if wait <= 0:
                    return False
                self._cond.wait(wait)
            if self._failed is not None:
                raise TrackingError(self._failed)
        return True

    def close(self, timeout_s: float | None = None) -> bool:
        """Flush for up to ``timeout_s``, then stop the background thread.

        Returns False, with a warning naming the spool, when writes are left unwritten.
        """
        try:
            drained = self.flush(timeout_s)
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
                thread, self._thread = self._thread, None
            if thread is not None:
                thread.join(timeout=5.0)
        if not drained:
            where = f"they are in {self.spool.path}" if self.spool is not None else "no spool"
            logger.warning(
                "%d MLflow writes to %s are still buffered after %g s; %s",
                len(self._queue), self.uri, timeout_s, where,
            )
        return drained

    # -- internals; the caller holds self._cond unless said otherwise

    def _load_spool(self) -> None:
        """Queue what an earlier writer of the same spool left unwritten."""
        assert self.spool is not None
        ops = self.spool.read(repair=True)
        applied, ids = self.spool.progress()
        self.runs.ids.update(ids)
        self._lines = len(ops)
        self._queue.extend([i, ops[i], True] for i in range(applied, len(ops)))
        if self._queue:
            logger.warning(
                "spool %s holds %d MLflow writes not yet in the store; writing them first",
                self.spool.path, len(self._queue),
            )
            self._start_thread()

    def _enqueue(self, op: Op, *, sent_before: bool) -> None:
        if self.spool is not None:
            self.spool.append(op)
        self._queue.append([self._lines, op, sent_before])
        self._lines += 1
        self.buffered["operations"] += 1
        if op["op"] == "create_run":
            self.buffered["runs"] += 1
        elif op["op"] == "log_batch":
            self.buffered["metrics"] += len(op["metrics"])
        elif op["op"] in ("log_text", "log_file"):
            self.buffered["artifacts"] += 1
        self._cond.notify_all()

    def _note_failure(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._backoff = _BACKOFF_START_S
            where = f"in {self.spool.path}" if self.spool is not None else "in memory"
            logger.warning(
                "MLflow tracking store at %s is unreachable (%s); buffering writes %s and "
                "retrying", self.uri, _one_line(exc), where,
            )
        else:
            self._backoff = min(2 * self._backoff, _BACKOFF_MAX_S)
        self._next_try = now + self._backoff
        self._start_thread()

    def _raise_if_expired(self) -> None:
        if self._failed is None and self._down_since is not None:
            down = time.monotonic() - self._down_since
            if down > self.max_outage_s:
                self._failed = self._outage_message(down)
                self._cond.notify_all()  # the flusher stops: resume replays the spool
        if self._failed is not None:
            raise TrackingError(self._failed)

    def _outage_message(self, down: float) -> str:
        head = (
            f"MLflow tracking store at {self.uri} has been unreachable for {down:.0f} s "
            f"(more than tracking.max_outage_s={self.max_outage_s:g}); the search stopped"
        )
        if self.spool is None:
            return head + " and its unwritten MLflow records are lost (no spool file)"
        run = self.resume_run_id or "RUN_ID"
        return (
            f"{head}; its unwritten MLflow records are in {self.spool.path}: once the store "
            f"is back, run `raynas resume {run} --spool {self.spool.path}`"
        )

    def _start_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._closing = False
            self._thread = threading.Thread(
                target=self._flush_loop, name="raynas-mlflow-flush", daemon=True
            )
            self._thread.start()

    def _flush_loop(self) -> None:
        """The background thread: send the oldest queued operation, in order, with backoff."""
        while True:
            with self._cond:
                while True:
                    if self._failed is not None or self._closing:
                        return
                    wait: float | None = None
                    if self._queue and not self._busy:
                        wait = self._next_try - time.monotonic()
                        if wait <= 0:
                            break
                    self._cond.wait(wait)
                entry = self._queue[0]
                index, op, sent_before = entry
                self._busy = True
            error: Exception | None = None
            try:
                apply_op(self.client, op, self.runs, sent_before=sent_before)
            except Exception as exc:  # classified below; the thread must not die
                error = exc
            with self._cond:
                self._busy = False
                if error is not None and is_transient(error):
                    entry[2] = True
                    self._note_failure(error)
                    continue
                if error is not None:
                    logger.error(
                        "MLflow rejected a buffered %s for run %s (%s); it is dropped",
                        op["op"], op.get("run"), _one_line(error),
                    )
                if self._down_since is not None:
                    down = time.monotonic() - self._down_since
                    self.outages.append(down)
                    logger.warning(
                        "MLflow tracking store at %s is reachable again after %.1f s; writing "
                        "%d buffered operations (buffered so far: %d runs, %d metric values, "
                        "%d artifacts)", self.uri, down, len(self._queue),
                        self.buffered["runs"], self.buffered["metrics"],
                        self.buffered["artifacts"],
                    )
                    self._down_since = None
                    self._backoff = _BACKOFF_START_S
                self._queue.popleft()
                if self.spool is not None:
                    self.spool.mark(index + 1, dict(self.runs.ids))
                self._cond.notify_all()
