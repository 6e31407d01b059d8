"""Pareto fronts and hypervolume of any set of trials, through pymoo."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def to_minimization(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], modes: Sequence[str]
) -> np.ndarray:
    """Objective matrix with every column turned into "lower is better"."""
    signs = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    matrix: np.ndarray = np.array([[float(r[k]) for k in metrics] for r in rows], dtype=float)
    return np.asarray(matrix * signs, dtype=float)


def pareto_mask(F: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of a minimisation matrix ``F``."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    F = np.asarray(F, dtype=float)
    mask = np.zeros(len(F), dtype=bool)
    if len(F):
        mask[NonDominatedSorting().do(F, only_non_dominated_front=True)] = True
    return mask


def pareto_front(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], modes: Sequence[str]
) -> list[Mapping[str, Any]]:
    """The non-dominated rows (trials) for the given metrics and modes."""
    rows = [r for r in rows if all(np.isfinite(float(r.get(k, np.nan))) for k in metrics)]
    if not rows:
        return []
    mask = pareto_mask(to_minimization(rows, metrics, modes))
    return [r for r, keep in zip(rows, mask) if keep]


def hypervolume(F: np.ndarray, ref_point: Sequence[float]) -> float:
    """Hypervolume (pymoo's HV) of minimisation points ``F`` dominated up to ``ref_point``."""
    from pymoo.indicators.hv import HV

    F = np.asarray(F, dtype=float)
    ref = np.asarray(ref_point, dtype=float)
    if F.size == 0:
        return 0.0
    F = F[np.all(F < ref, axis=1)]
    if len(F) == 0:
        return 0.0
    return float(HV(ref_point=ref)(F))


def trials_hypervolume(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    modes: Sequence[str],
    ref_point: Sequence[float],
) -> float:
    """Hypervolume of trials given in the metrics' own signs; ``ref_point`` in those signs too."""
    signs = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    rows = [r for r in rows if all(np.isfinite(float(r.get(k, np.nan))) for k in metrics)]
    return hypervolume(to_minimization(rows, metrics, modes), np.asarray(ref_point) * signs)
