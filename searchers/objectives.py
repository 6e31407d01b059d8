"""Objectives of a search: metrics and modes, constraints, and scalarisation for 1-D searchers."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_CONSTRAINT = re.compile(r"^\s*([\w./-]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")
SCALARIZATIONS = ("weighted", "mnasnet")


@dataclass(frozen=True)
class Constraint:
    """``metric <= bound`` or ``metric >= bound``."""

    metric: str
    op: str
    bound: float

    def violation(self, value: float) -> float:
        """How far ``value`` is on the wrong side of the bound, relative to it (0 if feasible)."""
        excess = value - self.bound if self.op == "<=" else self.bound - value
        return max(0.0, excess) / max(abs(self.bound), 1e-12)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def parse_constraint(spec: str | Constraint) -> Constraint:
    """Parse ``"latency_pixel3 <= 5"`` into a ``Constraint``."""
    if isinstance(spec, Constraint):
        return spec
    match = _CONSTRAINT.match(spec) if isinstance(spec, str) else None
    if match is None:
        raise ValueError(
            f"constraint {spec!r} must read 'metric <= number' or 'metric >= number'"
        )
    return Constraint(match.group(1), match.group(2), float(match.group(3)))


def parse_constraints(
    constraints: Sequence[str | Constraint] | Mapping[str, float] | None,
) -> tuple[Constraint, ...]:
    """Constraints from strings, or from a mapping of metric to upper bound."""
    if constraints is None:
        return ()
    if isinstance(constraints, Mapping):
        return tuple(Constraint(str(k), "<=", float(v)) for k, v in constraints.items())
    if isinstance(constraints, str):
        constraints = [constraints]
    return tuple(parse_constraint(c) for c in constraints)


@dataclass(frozen=True)
class Outcome:
    """A completed trial seen through the objectives.

    ``signed`` holds each objective turned into "higher is better"; ``scalar`` is the one
    number single-objective searchers optimise (the objective itself when there is one and no
    constraint; else the configured scalarisation minus the constraint penalty).
    """

    values: tuple[float, ...]
    signed: tuple[float, ...]
    violation: float
    scalar: float

    @property
    def feasible(self) -> bool:
        """Whether every constraint holds."""
        return self.violation == 0.0


@dataclass(frozen=True)
class Objectives:
    """Metrics with their modes, constraints and the scalarisation of several objectives.

    Args:
        metrics: result keys to optimise.
        modes: ``"max"`` or ``"min"`` per metric.
        constraints: ``"metric <= bound"`` strings (or ``Constraint``), any result key.
        scalarization: ``{"type": "weighted", "weights": [...]}`` (default: weight 1 on each
            signed objective), or ``{"type": "mnasnet", "target": T, "alpha": -0.07,
            "beta": -0.07}``: MnasNet's reward ``m0 * (m1 / T) ** w`` with ``w = alpha`` when
            ``m1 <= T`` else ``beta`` (Tan et al., CVPR 2019), for (accuracy, latency).
        penalty: weight of the hinge penalty ``sum(relative violation)`` subtracted from the
            scalar when constraints are violated (FP-NAS / MnasNet hard-constraint style).
    """

    metrics: tuple[str, ...]
    modes: tuple[str, ...]
    constraints: tuple[Constraint, ...] = ()
    scalarization: Mapping[str, Any] = field(default_factory=dict)
    penalty: float = 100.0

    @classmethod
    def build(
        cls,
        metric: str | Sequence[str],
        mode: str | Sequence[str],
        *,
        constraints: Sequence[str | Constraint] | Mapping[str, float] | None = None,
        scalarization: Mapping[str, Any] | None = None,
        penalty: float = 100.0,
    ) -> Objectives:
        """Validate and normalise user arguments."""
        metrics = (metric,) if isinstance(metric, str) else tuple(metric)
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
        if not metrics or not all(isinstance(m, str) and m for m in metrics):
            raise ValueError(f"metric must be a name or a list of names, got {metric!r}")
        if len(modes) != len(metrics):
            raise ValueError(f"got {len(metrics)} metrics but {len(modes)} modes: {mode!r}")
        for m in modes:
            if m not in ("min", "max"):
                raise ValueError(f"mode must be 'min' or 'max', got {m!r}")
        parsed = parse_constraints(constraints)
        spec = dict(scalarization or {})
        kind = spec.get("type", "weighted")
        if kind not in SCALARIZATIONS:
            raise ValueError(f"scalarization type must be one of {SCALARIZATIONS}, got {kind!r}")
        if kind == "weighted" and "weights" in spec and len(spec["weights"]) != len(metrics):
            raise ValueError(
                f"scalarization weights {spec['weights']!r} need one weight per metric {metrics}"
            )
        if kind == "mnasnet" and (len(metrics) != 2 or "target" not in spec):
            raise ValueError("mnasnet scalarization needs metrics [accuracy, latency] and target")
        if not math.isfinite(penalty) or penalty < 0:
            raise ValueError(f"penalty must be a finite number >= 0, got {penalty!r}")
        return cls(metrics, modes, parsed, spec, float(penalty))

    @property
    def multi(self) -> bool:
        """Whether there is more than one objective."""
        return len(self.metrics) > 1

    @property
    def keys(self) -> tuple[str, ...]:
        """Every result key needed: the metrics, then constrained keys not among them."""
        extra = tuple(c.metric for c in self.constraints if c.metric not in self.metrics)
        return self.metrics + tuple(dict.fromkeys(extra))

    def signs(self) -> np.ndarray:
        """+1 for maximised metrics, -1 for minimised ones."""
        return np.array([1.0 if m == "max" else -1.0 for m in self.modes])

    def read(self, result: Mapping[str, Any] | None) -> Outcome | str:
        """The trial's ``Outcome``, or the reason it counts as failed."""
        if not result:
            return "reported nothing"
        values: dict[str, float] = {}
        for key in self.keys:
            if key not in result:
                return f"reported no {key!r}"
            raw = result[key]
            try:
                value = float(raw)
            except (TypeError, ValueError):
                return f"reported non-numeric {key}={raw!r}"
            if not math.isfinite(value):
                return f"reported {key}={value}"
            values[key] = value
        objective = tuple(values[m] for m in self.metrics)
        signed = tuple(float(v) for v in np.array(objective) * self.signs())
        violation = sum(c.violation(values[c.metric]) for c in self.constraints)
        return Outcome(objective, signed, violation, self.scalarize(objective, violation))

    def scalarize(self, values: Sequence[float], violation: float = 0.0) -> float:
        """One higher-is-better number from raw metric values and a constraint violation."""
        kind = self.scalarization.get("type", "weighted")
        if kind == "mnasnet":
            acc, lat = values[0], values[1]
            target = float(self.scalarization["target"])
            alpha = float(self.scalarization.get("alpha", -0.07))
            beta = float(self.scalarization.get("beta", -0.07))
            w = alpha if lat <= target else beta
            score = acc * (max(lat, 1e-12) / target) ** w
        else:
            weights = self.scalarization.get("weights", [1.0] * len(values))
            score = float(np.dot(np.array(values) * self.signs(), np.array(weights, float)))
        return float(score - self.penalty * violation)

    def unsign(self, signed: Sequence[float]) -> tuple[float, ...]:
        """Back from higher-is-better to each metric's own sign."""
        return tuple(float(v) for v in np.array(signed) * self.signs())
