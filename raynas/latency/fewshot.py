"""Latency on a new device from a few measured architectures, transferred from known devices.

Devices rank architectures alike: an architecture's latencies on the devices of a table predict
its latency on a new one. The model is a ridge regression of the new device's log latency on
the reference devices' (standardised) log latencies, fitted on the few architectures measured on
the new device (10-20, where HELP, Lee et al., "HELP: Hardware-Adaptive Efficient Latency
Prediction for NAS via Meta-Learning", NeurIPS 2021, meta-learns across devices). A ridge keeps
it well-posed below as many measurements as devices; the penalty is fixed, not fitted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raynas.latency.measure import read_latency_columns, read_latency_table

RIDGE = 1.0  # on standardised features: about one measurement's worth of shrinkage


@dataclass
class FewShotLatency:
    """``log(ms_new) = mean + w . z(log(ms_references))``; ``z`` standardises by the fit rows."""

    references: list[str]
    mean: float
    weights: list[float]
    centre: list[float]
    scale: list[float]
    shots: int
    ridge: float = RIDGE

    @classmethod
    def fit(cls, references: Sequence[str], reference_ms: np.ndarray, target_ms: np.ndarray,
            *, ridge: float = RIDGE) -> FewShotLatency:
        """Fit on ``reference_ms`` (shots x devices) and the new device's ``target_ms``."""
        x = np.log(np.asarray(reference_ms, dtype=float))
        y = np.log(np.asarray(target_ms, dtype=float))
        if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != len(references):
            raise ValueError(f"reference latencies must be (shots, {len(references)}), "
                             f"got {x.shape} for {y.shape[0]} measurements")
        if y.shape[0] < 2:
            raise ValueError(f"few-shot latency needs >= 2 measurements, got {y.shape[0]}")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("latencies must be positive and finite")
        centre, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        z = (x - centre) / scale
        weights = np.linalg.solve(z.T @ z + ridge * np.eye(z.shape[1]), z.T @ (y - y.mean()))
        return cls(list(references), float(y.mean()), weights.tolist(), centre.tolist(),
                   scale.tolist(), int(y.shape[0]), float(ridge))

    def predict(self, reference_ms: np.ndarray) -> np.ndarray:
        """Predicted ms on the new device of rows of reference-device latencies."""
        x = np.log(np.asarray(reference_ms, dtype=float))
        z = (x - np.asarray(self.centre)) / np.asarray(self.scale)
        return np.asarray(np.exp(self.mean + z @ np.asarray(self.weights)))

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON."""
        path = Path(path)
        path.write_text(json.dumps({"kind": "fewshot_latency", **self.__dict__}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FewShotLatency:
        """Read a model written by ``save``."""
        data: dict[str, Any] = json.loads(Path(path).read_text())
        if data.pop("kind", None) != "fewshot_latency":
            raise ValueError(f"{str(path)!r} is not a few-shot latency model")
        return cls(**data)


def read_inputs(
    path: str | Path, device: str, measured: str | Path | None = None
) -> tuple[list[str], dict[str, np.ndarray], list[tuple[str, float]] | None]:
    """The table's architectures and device columns, and the ``measured`` file's rows if given."""
    archs, columns = read_latency_columns(path)
    if not columns:
        raise ValueError(f"latency table {str(path)!r} has no device columns")
    if measured is not None:
        m_archs, m_values = read_latency_table(measured, device)
        return archs, columns, list(zip(m_archs, m_values.tolist(), strict=True))
    if device not in columns:
        raise ValueError(f"device {device!r} is not a column of {str(path)!r}: give its "
                         "measurements with --measured")
    return archs, columns, None


def fit_from_table(path: str | Path, device: str, *, shots: int, seed: int = 0,
                   references: Sequence[str] | None = None,
                   measured: str | Path | None = None) -> tuple[FewShotLatency, list[str]]:
    """``fit_from_columns`` on the table at ``path`` (and ``measured``, a CSV/Parquet file)."""
    archs, columns, pairs = read_inputs(path, device, measured)
    return fit_from_columns(archs, columns, device, shots=shots, seed=seed,
                            references=references, measured=pairs)


def fit_from_columns(
    archs: Sequence[str], columns: Mapping[str, np.ndarray], device: str, *, shots: int,
    seed: int = 0, references: Sequence[str] | None = None,
    measured: Sequence[tuple[str, float]] | None = None,
) -> tuple[FewShotLatency, list[str]]:
    """A model of ``device`` from ``shots`` of its measurements; the architectures used.

    The measurements are ``shots`` seeded ones of ``measured`` (architecture, ms) or of the
    ``device`` column; the references are the other columns (or ``references``), which must
    cover those architectures.
    """
    if shots < 2:
        raise ValueError(f"--few-shot must be >= 2, got {shots}")
    refs = [d for d in (references or columns) if d != device]
    unknown = [d for d in refs if d not in columns]
    if unknown:
        raise ValueError(f"unknown reference device {unknown[0]!r}; devices: "
                         f"{', '.join(columns)}")
    if not refs:
        raise ValueError(f"the latency table has no device besides {device!r}")
    row = {a: i for i, a in enumerate(archs)}
    source = measured if measured is not None else zip(archs, columns[device], strict=True)
    pairs = [(a, float(v)) for a, v in source if math.isfinite(v) and v > 0]
    missing = [a for a, _ in pairs if a not in row]
    if missing:
        raise ValueError(f"measured architecture {missing[0][:60]!r} is not in the table")
    if len(pairs) < shots:
        raise ValueError(f"{len(pairs)} measurements of {device!r}, fewer than --few-shot "
                         f"{shots}")
    order = np.random.default_rng(seed).permutation(len(pairs))[:shots]
    chosen = [pairs[i] for i in order]
    x = np.array([[columns[d][row[a]] for d in refs] for a, _ in chosen])
    if not np.isfinite(x).all():
        raise ValueError("a reference device lacks a measured architecture's latency")
    model = FewShotLatency.fit(refs, x, np.array([v for _, v in chosen]))
    return model, [a for a, _ in chosen]


def predict_columns(model: FewShotLatency, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """The model's ms for every row of ``columns`` (NaN where a reference is missing)."""
    x = np.stack([columns[d] for d in model.references], axis=1)
    out = np.full(len(x), np.nan)
    ok = np.isfinite(x).all(axis=1) & (x > 0).all(axis=1)
    out[ok] = model.predict(x[ok])
    return out


def predict_table(model: FewShotLatency, path: str | Path) -> tuple[list[str], np.ndarray]:
    """The model's ms for every architecture of the table at ``path``."""
    archs, columns = read_latency_columns(path)
    return archs, predict_columns(model, columns)
