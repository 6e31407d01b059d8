"""Latency of architectures on named devices: lookup tables, learned predictors, services.

- ``lut``: layer-wise lookup tables timed on this machine (``build_table``, ``LatencyTable``).
- ``predictor``: a learned network-level MLP (``LatencyMLP``) and the memoised
  architecture encoder (``ArchEncoder``).
- ``additive``: per-operation costs times a boosted residual (``AdditiveLatency``), the
  sample-efficient choice where measurements are noisy.
- ``measure``: timing real sub-networks (``measure_archs``), measured tables
  (``MeasuredLatency``) and comparison statistics (``latency_stats``).
- ``service``: the ``LatencyService`` named Ray actor per device and its client
  (``LatencyPredictor``, the searchers' ``Predictor`` protocol).
- ``evaluator``: ``LatencyEvaluator``, adding ``latency_<device>`` to any evaluator's metrics.

Names load lazily, so reading a lookup table imports neither ray nor the service.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS: dict[str, str] = {
    "AdditiveLatency": "raynas.latency.additive",
    "ArchEncoder": "raynas.latency.predictor",
    "LatencyEvaluator": "raynas.latency.evaluator",
    "LatencyMLP": "raynas.latency.predictor",
    "LatencyPredictor": "raynas.latency.service",
    "LatencyService": "raynas.latency.service",
    "LatencyTable": "raynas.latency.lut",
    "MeasuredLatency": "raynas.latency.measure",
    "build_table": "raynas.latency.lut",
    "latency_stats": "raynas.latency.measure",
    "get_latency_service": "raynas.latency.service",
    "list_latency_services": "raynas.latency.service",
    "measure_archs": "raynas.latency.measure",
    "start_latency_service": "raynas.latency.service",
    "stop_latency_service": "raynas.latency.service",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'raynas.latency' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
