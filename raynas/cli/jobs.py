"""``raynas submit``: a search as a Ray Job on a running cluster, its config shipped along."""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raynas.run.config import ConfigError, check_tracking_uri_form, load_config
from raynas.run.placement import is_local_store

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

logger = logging.getLogger(__name__)

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def job_client(address: str) -> JobSubmissionClient:
    """A ``JobSubmissionClient`` for the dashboard at ``address`` (``http://HEAD:8265``)."""
    if not re.match(r"^https?://[^/\s]+", address or ""):
        raise ConfigError(
            f"--address must be the Ray dashboard's URL, e.g. http://HEAD:8265, got {address!r}"
        )
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise ImportError(
            f"raynas submit needs Ray's job submission client ({exc}); "
            "pip install 'raynas[cluster]'"
        ) from None
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeError(
            f"cannot reach the Ray job server at {address}: {first} (is the dashboard running "
            "and, with token auth, RAY_AUTH_MODE=token and the cluster's token set?)"
        ) from None


def job_tracking_uri(
    config_uri: str | None, *, override: str | None = None, env_uri: str | None = None
) -> str:
    """The tracking URI the job will use: flag, else config, else ``MLFLOW_TRACKING_URI``.

    The job runs on the head node in a temporary working directory, so a relative local
    path would vanish with it; a URI is required (the job does not inherit this shell's).
    """
    uri = override or config_uri or env_uri
    if not uri:
        raise ConfigError(
            "raynas submit needs a tracking store the cluster can reach: set tracking.uri in "
            "the config or --tracking-uri (an MLflow server, http://HOST:5000)"
        )
    if is_local_store(uri) and not uri.startswith(("sqlite:////", "file:///", "/")):
        raise ConfigError(
            f"tracking URI {uri!r} is a relative path: in a submitted job it would land in "
            "the job's temporary working directory; use an MLflow server (http://HOST:5000) "
            "or an absolute path on the head node (sqlite:////abs/path/mlflow.db)"
        )
    source = ("--tracking-uri" if override else "config field 'tracking.uri'" if config_uri
              else "MLFLOW_TRACKING_URI")
    return check_tracking_uri_form(uri, source)


def build_entrypoint(config_rel: str, tracking_uri: str) -> str:
    """The job's shell command: ``raynas run CONFIG --address auto --tracking-uri URI``."""
    return shlex.join(["raynas", "run", config_rel, "--address", "auto",
                       "--tracking-uri", tracking_uri])


def submit_search(
    config_path: str | Path,
    *,
    address: str,
    working_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    env_vars: Mapping[str, str] | None = None,
    env_uri: str | None = None,
    client: JobSubmissionClient | None = None,
) -> str:
    """Submit ``raynas run CONFIG`` as a Ray Job; returns the job (submission) id.

    The config is validated here first. Without ``working_dir`` it travels alone, in a
    fresh folder uploaded as the job's working directory; with ``working_dir`` (your code
    and data) it must lie inside that folder, which is uploaded whole (Ray's limit: 500 MiB).
    ``env_vars`` are set for the job's driver and its workers (they are visible in the
    dashboard: put no secrets there).
    """
    cfg = load_config(config_path)
    config = Path(config_path).resolve()
    uri = job_tracking_uri(cfg.tracking.uri, override=tracking_uri, env_uri=env_uri)
    root: Path | None = None
    if working_dir is not None:
        root = Path(working_dir).resolve()
        if not root.is_dir():
            raise ConfigError(f"--working-dir {str(working_dir)!r} is not a folder")
        if not config.is_relative_to(root):
            raise ConfigError(
                f"config {str(config_path)!r} must lie inside --working-dir {str(root)!r} "
                "so that the job receives it"
            )
    jobs = client if client is not None else job_client(address)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", cfg.name)[:40]
    with tempfile.TemporaryDirectory(prefix="raynas-submit-") as staged:
        if root is None:  # the config alone, under its own name
            root, rel = Path(staged), config.name
            shutil.copy(config, root / rel)
        else:
            rel = config.relative_to(root).as_posix()
        runtime_env: dict[str, Any] = {"working_dir": str(root)}
        if env_vars:
            runtime_env["env_vars"] = {str(k): str(v) for k, v in env_vars.items()}
        try:
            return str(jobs.submit_job(
                entrypoint=build_entrypoint(rel, uri),
                runtime_env=runtime_env,
                submission_id=f"raynas-{safe}-{uuid.uuid4().hex[:8]}",
                metadata={"raynas.run.config": config.name, "raynas.name": cfg.name},
            ))
        except (ConnectionError, RuntimeError) as exc:
            text = str(exc).strip()
            raise RuntimeError(
                f"job submission to {address} failed: "
                f"{text.splitlines()[0] if text else type(exc).__name__}"
            ) from None


def wait_for_job(
    client: JobSubmissionClient,
    job_id: str,
    *,
    echo: Callable[[str], None] = print,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
) -> str:
    """Stream the job's log lines through ``echo`` until it ends; returns its final status."""
    shown = 0
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(job_id).value)
        chunk = client.get_job_logs(job_id)[shown:]
        if status not in TERMINAL:  # hold a partial last line until it is complete
            chunk = chunk[: chunk.rfind("\n") + 1]
        for line in chunk.splitlines():
            echo(line)
        shown += len(chunk)
        if status in TERMINAL:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {status} after {timeout_s:.0f}s")
        time.sleep(poll_s)
