"""Latency of architectures on named devices: lookup tables, learned predictors, services.

- ``lut``: layer-wise lookup tables timed on this machine (``build_table``, ``LatencyTable``).
- ``predictor``: a learned network-level MLP (``LatencyMLP``) and the memoised
  architecture encoder (``ArchEncoder``).
- ``measure``: timing real sub-networks (``measure_archs``), measured tables
  (``MeasuredLatency``) and comparison statistics (``latency_stats``).
- ``service``: the ``LatencyService`` named Ray actor per device and its client
  (``LatencyPredictor``, the searchers' ``Predictor`` protocol).
- ``evaluator``: ``LatencyEvaluator``, adding ``latency_<device>`` to any evaluator's metrics.
"""

from raynas.latency.evaluator import LatencyEvaluator
from raynas.latency.lut import LatencyTable, build_table
from raynas.latency.measure import MeasuredLatency, latency_stats, measure_archs
from raynas.latency.predictor import ArchEncoder, LatencyMLP
from raynas.latency.service import (
    LatencyPredictor,
    LatencyService,
    get_latency_service,
    list_latency_services,
    start_latency_service,
    stop_latency_service,
)

__all__ = [
    "ArchEncoder",
    "LatencyEvaluator",
    "LatencyMLP",
    "LatencyPredictor",
    "LatencyService",
    "LatencyTable",
    "MeasuredLatency",
    "build_table",
    "latency_stats",
    "get_latency_service",
    "list_latency_services",
    "measure_archs",
    "start_latency_service",
    "stop_latency_service",
]
