"""Helpers the end-to-end tests share: write a config, read back the runs of a store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from mlflow.tracking import MlflowClient

from raynas.tracking.store import TAG_ROLE


def write_config(tmp_path: Path, config: dict[str, Any], name: str = "search") -> Path:
    """Write ``config`` as ``<tmp_path>/<name>.yaml``; returns the path."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def runs(uri: str, role: str | None = None) -> list[Any]:
    """Every run of every experiment at ``uri`` (with tag raynas.role == ``role`` if given)."""
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(ids, max_results=5000)
    return [r for r in found if role is None or r.data.tags.get(TAG_ROLE) == role]


def search_run(uri: str) -> Any:
    """The one search (parent) run at ``uri``."""
    (parent,) = runs(uri, "search")
    return parent
