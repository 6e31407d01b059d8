"""Trial tables: rows from Tune results and MLflow records, Parquet, best and Pareto rows."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from searchers.objectives import Objectives
from searchers.pareto import pareto_front
from searchers.portfolio import PortfolioSearch
from spaces import SearchSpace

if TYPE_CHECKING:
    from raynas.tracking.resume import RecordedTrial

logger = logging.getLogger(__name__)

TRIALS_FILE = "trials.parquet"
_CONSTANT_CHARS = 500  # a constant logged as text is cut to this length


def flat_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial config as flat ``a/b`` keys (as Tune flattens), values loggable as MLflow params.

    Numbers, strings and booleans stay; other constants (lists, objects) become text.
    """
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            out.update({f"{key}/{k}": v for k, v in flat_config(value).items()})
        elif value is None or isinstance(value, (str, int, float, bool)):
            out[str(key)] = value
        else:
            text = json.dumps(value, default=str) if isinstance(value, (list, tuple)) else str(
                value)
            out[str(key)] = text[:_CONSTANT_CHARS]
    return out


def trial_rows(
    results: Any,
    space: SearchSpace,
    metric: str,
    run_ids: Mapping[str, str],
    *,
    index_offset: int = 0,
    default_searcher: str | None = None,
) -> list[dict[str, Any]]:
    """One row per trial in suggestion order: id, architecture, status, run id, config, metrics."""
    rows = []
    for result in results:
        metrics = dict(result.metrics or {})
        config = dict(result.config or {})
        if not config or (result.error is None and not metrics.get("training_iteration")):
            # Tune stopped the trial before its first result (Ctrl-C or SIGTERM while it
            # was pending, so its Result has no config, or mid-evaluation): it neither
            # succeeded nor failed. Its MLflow run, if any, is KILLED; a resume goes on.
            logger.debug("trial %s never reported; left out of the trial table", result.path)
            continue
        arch = space.from_config(config)
        trial_id = metrics.get("trial_id") or Path(result.path).name
        value = metrics.get(metric)
        ok = result.error is None and isinstance(value, (int, float)) and math.isfinite(value)
        tag = str(metrics.get("experiment_tag") or "")
        index = int(tag.split("_", 1)[0]) if tag.split("_", 1)[0].isdigit() else None
        row: dict[str, Any] = {
            "trial_index": None if index is None else index + index_offset,
            "trial_id": str(trial_id),
            "arch": space.to_string(arch),
            "canonical": space.canonical(arch),
            "searcher": config.get(PortfolioSearch.MEMBER_KEY, default_searcher),
            "status": "ERROR" if result.error is not None else ("OK" if ok else "INVALID"),
            "error": None if result.error is None else error_summary(result.error),
            "mlflow_run_id": run_ids.get(str(trial_id)),
        }
        for key, val in flat_config(config).items():
            row[f"config/{key}"] = val
        for key, val in metrics.items():
            if isinstance(val, (int, float)) and not isinstance(val, bool):
                row[key] = float(val)
        rows.append(row)
    # Tune numbers trials in creation (= suggestion) order in their experiment tag.
    rows.sort(key=lambda r: (r["trial_index"] is None, r["trial_index"] or 0, r["trial_id"]))
    return rows


def error_summary(error: BaseException | str) -> str:
    """The last line of a (remote) traceback, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:500]


def write_trials(rows: list[dict[str, Any]], path: Path) -> None:
    """Write the trial table as Parquet (columns are the union of the rows' keys)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])
    pq.write_table(table, path)


def best_row(rows: list[dict[str, Any]], objectives: Objectives) -> dict[str, Any] | None:
    """The OK row with the best scalar score (the objective itself for one metric)."""
    scored = []
    for row in rows:
        outcome = objectives.read(row) if row["status"] == "OK" else None
        if outcome is not None and not isinstance(outcome, str):
            scored.append((outcome.scalar, row))
    if not scored:
        return None
    return max(scored, key=lambda pair: pair[0])[1]


def feasible_front(rows: list[dict[str, Any]], objectives: Objectives) -> list[dict[str, Any]]:
    """Non-dominated OK rows that meet every constraint (empty for a single objective)."""
    if not objectives.multi:
        return []
    feasible = []
    for row in rows:
        outcome = objectives.read(row) if row["status"] == "OK" else None
        if outcome is not None and not isinstance(outcome, str) and outcome.feasible:
            feasible.append(row)
    front = pareto_front(feasible, objectives.metrics, objectives.modes)
    return sorted(front, key=lambda r: r[objectives.metrics[0]])


def recorded_row(
    trial: RecordedTrial, space: SearchSpace, keys: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A trial-table row for a trial recorded in MLflow by an earlier part of the search.

    A finished trial lacking a finite value for one of ``keys`` (the objectives) is
    ``INVALID``, as a live trial's row would be.
    """
    arch = space.from_string(trial.arch)
    ok = trial.status == "FINISHED"
    valid = all(math.isfinite(trial.metrics.get(k, math.nan)) for k in keys)
    row: dict[str, Any] = {
        "trial_index": trial.trial_index,
        "trial_id": trial.trial_id,
        "arch": space.to_string(arch),
        "canonical": space.canonical(arch),
        "searcher": trial.searcher,
        "status": ("OK" if valid else "INVALID") if ok else "ERROR",
        "error": None if ok else "failed before resume",
        "mlflow_run_id": trial.run_id,
    }
    for key, val in flat_config(trial.config).items():
        row[f"config/{key}"] = val
    row.update({k: float(v) for k, v in trial.metrics.items()})
    return row
