"""LatencyEvaluator: any evaluator's metrics plus ``latency_<device>`` from latency services."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from raynas.evaluators.base import Evaluator, Report, create_evaluator
from raynas.latency.service import (
    DEFAULT_PREFIX,
    LatencyPredictor,
    check_device,
    is_uri,
    normalize_sources,
    start_latency_service,
    stop_latency_service,
)
from spaces import Arch, SearchSpace

logger = logging.getLogger(__name__)

LogMetrics = Callable[[dict[str, float], int], None]


class LatencyEvaluator(Evaluator):
    """Wrap an evaluator; each trial's metrics gain ``latency_<device>`` per device.

    ``evaluator`` is the inner evaluator: a registered name or a mapping with ``name`` and
    its options. ``devices`` maps a device name to its latency sources: a path or MLflow
    URI (kind from the suffix: ``.csv`` measured table with a column named like the device,
    ``.parquet`` lookup table, ``.pt`` learned model), a mapping ``{table|lut|model: path}``
    (a table may add ``column``), or a list of these tried in order.

    ``setup`` (driver) starts one ``LatencyService`` actor per device and ``teardown``
    stops the ones it started; ``evaluate`` (trial workers) asks each service by name, once
    per trial, and adds its answer to every report. Searchers can then minimise
    ``latency_<device>`` (``metric: [val_acc, latency_pixel3]``, ``mode: [max, min]``) or
    constrain it (``constraints: ["latency_pixel3 <= 5"]``).

    Config form::

        evaluator:
          name: latency
          evaluator: {name: tabular, table_path: ../shared/data/nb201}
          devices:
            pixel3: ../shared/data/nb201/latency_ms.csv
            cpu: {lut: nb201_cpu.parquet}
            raspi4: {model: "runs:/<run_id>/raspi4.pt"}

    Example:
        >>> from spaces import create_space
        >>> ev = LatencyEvaluator(create_space("nb201"),
        ...     evaluator={"name": "tabular", "table_path": "../shared/data/nb201"},
        ...     devices={"pixel3": "../shared/data/nb201/latency_ms.csv"})
        >>> "latency_pixel3" in ev.metrics
        True
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        evaluator: str | Mapping[str, Any],
        devices: Mapping[str, Any],
        prefix: str | None = None,
        namespace: str | None = None,
        num_cpus: float = 0,
        timeout_s: float = 60.0,
    ) -> None:
        if isinstance(evaluator, str):
            name, options = evaluator, {}
        elif isinstance(evaluator, Mapping) and isinstance(evaluator.get("name"), str):
            options = dict(evaluator)
            name = options.pop("name")
            options.update(options.pop("options", None) or {})
        else:
            raise ValueError("evaluator must name the inner evaluator or be a mapping with "
                             f"'name', got {evaluator!r}")
        if name.lower() == "latency":
            raise ValueError("the inner evaluator of 'latency' cannot be 'latency'")
        if not isinstance(devices, Mapping) or not devices:
            raise ValueError("devices must map device names to latency sources, e.g. "
                             "{pixel3: ../shared/data/nb201/latency_ms.csv}")
        self.space = space
        self.inner = create_evaluator(name, space, **options)
        self.inner_name = name
        self.sources = {check_device(d): normalize_sources(s, device=d)
                        for d, s in devices.items()}
        # A fresh owner token per search: teardown stops only the services this one started.
        self.owner = uuid.uuid4().hex
        self.prefix = prefix or DEFAULT_PREFIX
        self.namespace, self.num_cpus, self.timeout_s = namespace, num_cpus, timeout_s
        self._started: list[str] = []

    @property
    def devices(self) -> tuple[str, ...]:
        """The device names, in config order."""
        return tuple(self.sources)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The inner evaluator's metrics, then ``latency_<device>`` for each device."""
        added = tuple(f"latency_{d}" for d in self.devices)
        return tuple(m for m in self.inner.metrics if m not in added) + added

    @property
    def default_metric(self) -> tuple[str, str]:
        """The inner evaluator's default metric and mode."""
        return self.inner.default_metric

    def setup(self, *, log_metrics: LogMetrics | None = None,
              checkpoint_dir: str | None = None, search_id: str | None = None,
              log_artifact: Callable[[str], None] | None = None,
              restore_from: str | None = None) -> None:
        """Set up the inner evaluator, then start (or find) one service per device."""
        import ray

        self.inner.setup(log_metrics=log_metrics, checkpoint_dir=checkpoint_dir,
                         search_id=search_id, log_artifact=log_artifact,
                         restore_from=restore_from)
        for device, sources in self.sources.items():
            # Measured tables are read in the search's space; tables and models must match it.
            handle = start_latency_service(
                device, sources, space=self.space.spec(), prefix=self.prefix,
                namespace=self.namespace, num_cpus=self.num_cpus, owner=self.owner,
            )
            if ray.get(handle.info.remote())["owner"] == self.owner:
                self._started.append(device)
            logger.info("latency service for %s ready", device)

    def artifacts(self) -> list[str]:
        """The inner evaluator's files, plus local lookup tables and models."""
        own = [s["path"] for srcs in self.sources.values() for s in srcs
               if s["kind"] != "table" and not is_uri(s["path"])]
        return [*self.inner.artifacts(), *own]

    def teardown(self) -> None:
        """Stop the services ``setup`` started, then tear the inner evaluator down."""
        try:
            for device in self._started:
                stop_latency_service(device, prefix=self.prefix, namespace=self.namespace)
            self._started = []
        finally:
            self.inner.teardown()

    def latency(self, arch: Arch) -> dict[str, float]:
        """``{"latency_<device>": ms}`` of one architecture from the running services."""
        text = self.space.to_string(arch)
        return {
            f"latency_{d}": float(LatencyPredictor(
                d, prefix=self.prefix, namespace=self.namespace, timeout_s=self.timeout_s
            ).predict([text])[0])
            for d in self.devices
        }

    def evaluate(self, arch: Arch, *, report: Report | None = None) -> dict[str, float]:
        """The inner evaluator's metrics with the latencies added (to each report as well)."""
        latency = self.latency(arch)

        def forward(metrics: dict[str, float]) -> None:
            if report is not None:
                report({**metrics, **latency})

        final = self.inner.evaluate(arch, report=forward if report is not None else None)
        return {**final, **latency}
