"""raynas: orchestration of architecture search on Ray Tune and MLflow."""

__version__ = "0.1.0"
