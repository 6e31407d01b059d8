"""Shared fixtures: the NB201 data folder, an isolated MLflow store, one Ray session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NB201_DIR = Path(os.environ.get("RAYNAS_NB201_DIR", REPO.parent / "shared" / "data" / "nb201"))

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


@pytest.fixture(scope="session")
def nb201_dir() -> Path:
    """The NAS-Bench-201 tables, or a skip saying where they are expected."""
    if not (NB201_DIR / "cifar10.csv").is_file():
        pytest.skip(f"NAS-Bench-201 tables not found at {NB201_DIR} (set RAYNAS_NB201_DIR)")
    return NB201_DIR


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes an mlflow.db into the working tree."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray instance shared by every test that needs it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
