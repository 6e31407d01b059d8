"""The report of a search: per-searcher table, JSON, trial table and plots, read from MLflow.

The report reads only what MLflow holds, so it works for finished, crashed and running
searches alike: the parent run (``raynas.role=search``) and its ``config.yaml`` artifact, then
the trial runs nested under it, directly or under one ``raynas.role=searcher`` run per member
of a portfolio. A trial's result is the last value of each of its metrics; its times are
seconds since the parent run started.

Definitions (the same for every searcher of a report, so their figures compare):

* ``status`` of a trial: ``OK`` (finished and reported every objective and constrained
  metric as a finite number), ``INVALID`` (finished without them), ``ERROR`` (MLflow status
  FAILED or KILLED) or ``RUNNING``. ``failed`` counts ERROR and INVALID trials.
* ``best``: the OK trial with the highest ``Objectives`` scalar, as ``raynas run`` chooses it
  (``runner.best_row``): the metric itself for one objective, else the search's
  scalarisation minus the constraint penalty.
* ``hypervolume`` (several objectives only; ``null`` for one): pymoo's HV of the feasible OK
  trials. The reference point is given (in the metrics' own signs, as
  ``searchers.pareto.trials_hypervolume`` takes it) or else chosen from all feasible OK trials
  of the report: per objective, the worst value pushed out by 10% of the observed range, so
  that the extreme trials count too.
* Curves are ordered by trial end time: "trials" on the x-axis counts the searcher's
  finished trials (failed ones included, as they consumed budget).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from raynas.report.source import (
    find_search_run,
    open_client,
    search_config,
    search_objectives,
    trial_row,
    trial_runs,
)
from raynas.tracking.store import TAG_SEARCHER
from searchers.objectives import Objectives
from searchers.pareto import hypervolume, pareto_mask, to_minimization

__all__ = [
    "Report", "SearcherSummary", "find_search_run", "load_report", "log_report",
    "render_table", "write_plots", "write_report", "write_trials_parquet",
]

logger = logging.getLogger(__name__)

SCHEMA = "raynas.report/1"
ALL = "all"  # label of the row that pools every searcher
REF_MARGIN = 0.1  # the chosen reference point lies 10% of the range beyond the worst values
ARTIFACT_DIR = "report"


@dataclass
class SearcherSummary:
    """One row of the report: a searcher's trials, best trial, time span and hypervolume."""

    label: str
    trials: int
    ok: int
    failed: int
    running: int
    best_arch: str | None
    best_trial_id: str | None
    best: dict[str, float]
    best_score: float | None
    time_s: float
    hypervolume: float | None
    pareto_size: int | None
    best_so_far: list[list[float]] = field(default_factory=list)
    hypervolume_curve: list[list[float]] = field(default_factory=list)


@dataclass
class Report:
    """Everything ``raynas report`` shows about one search.

    Example:
        >>> report = load_report("sqlite:////abs/path/mlflow.db", "raynas-demo")
        >>> print(render_table(report))
        >>> write_report(report, "raynas_report")  # PNGs, report.json, trials.parquet
    """

    run_id: str
    run_name: str
    experiment_id: str
    experiment_name: str
    tracking_uri: str
    status: str
    space: str
    searcher: str
    metrics: tuple[str, ...]
    modes: tuple[str, ...]
    constraints: tuple[str, ...]
    score_label: str
    reference_point: list[float] | None
    wall_time_s: float
    searchers: list[SearcherSummary]
    overall: SearcherSummary
    pareto_front: list[dict[str, Any]]
    trials: list[dict[str, Any]] = field(repr=False)
    objectives: Objectives = field(repr=False)

    @property
    def multi(self) -> bool:
        """Whether the search has several objectives."""
        return len(self.metrics) > 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of the report; the trial table goes to ``write_trials_parquet``."""
        out: dict[str, Any] = {"schema": SCHEMA}
        for key in self.__dataclass_fields__:
            if key not in ("trials", "objectives", "searchers", "overall"):
                out[key] = getattr(self, key)
        out["metrics"], out["modes"] = list(self.metrics), list(self.modes)
        out["constraints"] = list(self.constraints)
        out["num_trials"] = len(self.trials)
        out["searchers"] = [asdict(s) for s in self.searchers]
        out["overall"] = asdict(self.overall)
        return out

    def to_json(self) -> str:
        """The report as JSON text (see ``to_dict``)."""
        return json.dumps(self.to_dict(), indent=1, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# -------------------------------------------------------------------- figures of a report
def choose_reference_point(
    rows: Sequence[dict[str, Any]], metrics: Sequence[str], modes: Sequence[str]
) -> list[float] | None:
    """Worst value per objective pushed out by ``REF_MARGIN`` of the range (own signs)."""
    if not rows:
        return None
    F = to_minimization(rows, metrics, modes)
    nadir, ideal = F.max(axis=0), F.min(axis=0)
    span = nadir - ideal
    span = np.where(span > 0, span, np.maximum(np.abs(nadir), 1.0))
    ref_min = nadir + REF_MARGIN * span
    signs = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    return [float(v) for v in ref_min * signs]


def _by_end(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Finished trials in the order their results arrived."""
    done = [r for r in rows if r["status"] != "RUNNING"]
    return sorted(done, key=lambda r: (_end(r), r["trial_index"] or 0))


def _end(row: dict[str, Any]) -> float:
    value = row["end_s"] if row["end_s"] is not None else row["start_s"]
    return float(value) if value is not None else 0.0


def best_so_far(rows: Sequence[dict[str, Any]], report_value: str) -> list[list[float]]:
    """``[trials done, end time s, best value]`` at each improvement of the best score."""
    curve: list[list[float]] = []
    best = -math.inf
    for n, row in enumerate(_by_end(rows), start=1):
        if row["status"] == "OK" and row["score"] > best:
            best = row["score"]
            curve.append([float(n), _end(row), float(row[report_value])])
    return curve


def hypervolume_curve(
    rows: Sequence[dict[str, Any]], objectives: Objectives, ref_point: Sequence[float]
) -> list[list[float]]:
    """``[trials done, end time s, hypervolume]`` each time a feasible trial grows the front."""
    signs = np.array([-1.0 if m == "max" else 1.0 for m in objectives.modes])
    ref_min = np.asarray(ref_point, dtype=float) * signs
    front = np.empty((0, len(objectives.metrics)))
    curve: list[list[float]] = []
    for n, row in enumerate(_by_end(rows), start=1):
        if row["status"] != "OK" or not row["feasible"]:
            continue
        point = to_minimization([row], objectives.metrics, objectives.modes)
        if len(front) and np.any(np.all(front <= point, axis=1)):
            continue  # weakly dominated: the hypervolume cannot grow
        front = np.vstack([front, point])
        front = front[pareto_mask(front)]
        curve.append([float(n), _end(row), hypervolume(front, ref_min)])
    return curve


def summarize(
    label: str,
    rows: Sequence[dict[str, Any]],
    objectives: Objectives,
    ref_point: Sequence[float] | None,
    report_value: str,
) -> SearcherSummary:
    """The report row of ``rows`` (one searcher's trials, or all of them)."""
    ok = [r for r in rows if r["status"] == "OK"]
    best = max(ok, key=lambda r: r["score"]) if ok else None
    starts = [r["start_s"] for r in rows if r["start_s"] is not None]
    ends = [_end(r) for r in rows]
    hv_curve = (
        hypervolume_curve(rows, objectives, ref_point)
        if objectives.multi and ref_point is not None else []
    )
    feasible = [r for r in ok if r["feasible"]]
    front_size = None
    if objectives.multi:
        F = to_minimization(feasible, objectives.metrics, objectives.modes) if feasible else None
        front_size = 0 if F is None else int(pareto_mask(F).sum())
    return SearcherSummary(
        label=label,
        trials=len(rows),
        ok=len(ok),
        failed=sum(r["status"] in ("ERROR", "INVALID") for r in rows),
        running=sum(r["status"] == "RUNNING" for r in rows),
        best_arch=None if best is None else best["arch"],
        best_trial_id=None if best is None else best["trial_id"],
        best={} if best is None else {k: float(best[k]) for k in objectives.keys},
        best_score=None if best is None else float(best["score"]),
        time_s=max(ends) - min(starts) if starts and ends else 0.0,
        hypervolume=(hv_curve[-1][2] if hv_curve else 0.0) if objectives.multi else None,
        pareto_size=front_size,
        best_so_far=best_so_far(rows, report_value),
        hypervolume_curve=hv_curve,
    )


def load_report(
    client_or_uri: MlflowClient | str,
    run_id_or_experiment: str,
    *,
    ref_point: Sequence[float] | None = None,
) -> Report:
    """Read a search from MLflow (a run id, or an experiment's latest search) into a ``Report``."""
    client = open_client(client_or_uri) if isinstance(client_or_uri, str) else client_or_uri
    parent = find_search_run(client, run_id_or_experiment)
    cfg = search_config(client, parent.info.run_id)
    objectives = search_objectives(cfg)
    names = ", ".join(objectives.metrics)
    if ref_point is not None and not objectives.multi:
        raise ValueError(f"a hypervolume reference point needs several objectives; this "
                         f"search has one ({names})")
    if ref_point is not None and len(ref_point) != len(objectives.metrics):
        raise ValueError(f"reference point {list(ref_point)} needs one value per objective "
                         f"({names})")
    t0 = int(parent.info.start_time)
    rows = [trial_row(run, label, objectives, t0) for run, label in trial_runs(client, parent)]
    rows.sort(key=lambda r: (r["start_s"] is None, r["start_s"] or 0.0, r["trial_id"]))
    for i, row in enumerate(rows):
        row["trial_index"] = i
    feasible = [r for r in rows if r["status"] == "OK" and r["feasible"]]
    if objectives.multi and ref_point is None:
        ref_point = choose_reference_point(feasible, objectives.metrics, objectives.modes)
    plain = not objectives.multi and not objectives.constraints
    report_value = objectives.metrics[0] if plain else "score"
    labels = list(cfg.searcher_labels)
    labels += sorted({r["searcher"] for r in rows} - set(labels))
    summaries = [
        summarize(lb, [r for r in rows if r["searcher"] == lb], objectives, ref_point, report_value)
        for lb in labels
    ]
    front: list[dict[str, Any]] = []
    if objectives.multi and feasible:
        mask = pareto_mask(to_minimization(feasible, objectives.metrics, objectives.modes))
        keys = ["searcher", "trial_id", "arch", *objectives.keys]
        front = [{k: r[k] for k in keys} for r, keep in zip(feasible, mask) if keep]
        front.sort(key=lambda r: r[objectives.metrics[0]])
    end_ms = parent.info.end_time or int(time.time() * 1000)
    experiment = client.get_experiment(parent.info.experiment_id)
    return Report(
        run_id=parent.info.run_id,
        run_name=parent.info.run_name or "",
        experiment_id=parent.info.experiment_id,
        experiment_name=experiment.name,
        tracking_uri=client.tracking_uri,
        status=parent.info.status,
        space=parent.data.tags.get("raynas.space", cfg.space.name),
        searcher=parent.data.tags.get(TAG_SEARCHER, cfg.searcher.name),
        metrics=objectives.metrics,
        modes=objectives.modes,
        constraints=tuple(str(c) for c in objectives.constraints),
        score_label=report_value if plain else _score_label(objectives),
        reference_point=None if ref_point is None else [float(v) for v in ref_point],
        wall_time_s=(end_ms - t0) / 1000.0,
        searchers=summaries,
        overall=summarize(ALL, rows, objectives, ref_point, report_value),
        pareto_front=front,
        trials=rows,
        objectives=objectives,
    )


def _score_label(objectives: Objectives) -> str:
    kind = objectives.scalarization.get("type", "weighted")
    terms = ", ".join(f"{m} ({mode})" for m, mode in zip(objectives.metrics, objectives.modes))
    penalty = " minus constraint penalty" if objectives.constraints else ""
    return f"score: {kind} scalarisation of {terms}{penalty}"


# ----------------------------------------------------------------------------- outputs
def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_table(report: Report) -> str:
    """The report as plain text: a header and one row per searcher, then the pooled row."""
    objectives = ", ".join(f"{m} ({mode})" for m, mode in zip(report.metrics, report.modes))
    lines = [
        f"search {report.run_name} (run {report.run_id}, experiment {report.experiment_name}): "
        f"{report.status}, space {report.space}, searcher {report.searcher}, "
        f"{len(report.trials)} trials in {report.wall_time_s:.1f}s",
        f"objectives: {objectives}"
        + (f"; constraints: {', '.join(report.constraints)}" if report.constraints else ""),
    ]
    if report.reference_point is not None:
        ref = [round(v, 6) for v in report.reference_point]
        lines.append(f"hypervolume reference point: {ref}")
    keys = list(report.objectives.keys)
    header = ["searcher", "trials", "ok", "failed", "running"]
    header += [f"best {k}" for k in keys] + ["time_s"]
    header += ["hypervolume", "pareto"] if report.multi else []
    header.append("best arch")
    body = []
    for s in [*report.searchers, report.overall]:
        cells: list[Any] = [s.label, s.trials, s.ok, s.failed, s.running]
        cells += [s.best.get(k) for k in keys] + [round(s.time_s, 1)]
        cells += [s.hypervolume, s.pareto_size] if report.multi else []
        cells.append(s.best_arch)
        body.append([_fmt(c) for c in cells])
    table: list[list[str]] = [header, *body]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    for line in table:
        text = [c.ljust(w) if i in (0, len(line) - 1) else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths))]
        lines.append("  ".join(text).rstrip())
    return "\n".join(lines)


def write_trials_parquet(report: Report, path: str | Path) -> Path:
    """Write the trial table (one row per trial run) as Parquet; returns the path."""
    columns: dict[str, None] = {}
    for row in report.trials:
        columns.update(dict.fromkeys(row))
    records = [{c: row.get(c) for c in columns} for row in report.trials]
    for c in columns:  # a param column mixing numbers and text stays text
        values = [r[c] for r in records if r[c] is not None]
        if any(isinstance(v, str) for v in values) and not all(isinstance(v, str) for v in values):
            for r in records:
                r[c] = None if r[c] is None else str(r[c])
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(records) if records else pa.table({c: [] for c in columns})
    pq.write_table(table, out)
    return out


def write_plots(report: Report, out_dir: str | Path) -> list[Path]:
    """Write the report's PNG figures into ``out_dir`` (see ``raynas.report.plots``)."""
    from raynas.report.plots import write_plots as _write

    return _write(report, Path(out_dir))


def write_report(report: Report, out_dir: str | Path) -> list[Path]:
    """Write plots, ``report.json`` and ``trials.parquet`` into ``out_dir``; returns the files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = write_plots(report, out)
    (out / "report.json").write_text(report.to_json())
    paths.append(out / "report.json")
    paths.append(write_trials_parquet(report, out / "trials.parquet"))
    return paths


def log_report(
    tracker_or_client: Any, run_id: str, out_dir: str | Path, *, flush_timeout_s: float = 120.0
) -> list[Path]:
    """Write the report of search ``run_id`` and log it as artifacts under ``report/``.

    Given a ``raynas.tracking.Tracker``, its buffered writes are flushed first (the report
    reads the store) and the files go through it, so a store outage spools them too.
    """
    tracker = tracker_or_client if hasattr(tracker_or_client, "flush") else None
    client: MlflowClient = getattr(tracker_or_client, "client", tracker_or_client)
    if tracker is not None:
        if not tracker.flush(flush_timeout_s):
            raise RuntimeError(
                f"the MLflow store did not take the search's writes within {flush_timeout_s}s; "
                "the report can be made later with `raynas report`"
            )
        run_id = tracker.resolve(run_id)
    report = load_report(client, run_id)
    paths = write_report(report, out_dir)
    for path in paths:
        if tracker is not None:
            tracker.log_file(report.run_id, path, ARTIFACT_DIR)
        else:
            client.log_artifact(report.run_id, str(path), ARTIFACT_DIR)
    return paths
