"""Weight-sharing supernets: training (SPOS, GreedyNAS, OFA), the SupernetHost actor, evaluation.

Names load lazily, so ``import raynas.supernet`` imports neither torch nor ray.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS: dict[str, str] = {
    "CandidatePool": "raynas.supernet.pool",
    "SupernetTrainer": "raynas.supernet.trainer",
    "SupernetHost": "raynas.supernet.host",
    "SupernetHostImpl": "raynas.supernet.host",
    "start_hosts": "raynas.supernet.host",
    "get_host": "raynas.supernet.host",
    "stop_hosts": "raynas.supernet.host",
    "sync_replicas": "raynas.supernet.host",
    "SupernetEvaluator": "raynas.supernet.evaluator",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'raynas.supernet' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
