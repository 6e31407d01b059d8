"""MLflow runs of a portfolio's searchers: one nested run per member, failures, summaries."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ray.tune.search import Searcher

from raynas.run.config import ExperimentConfig
from raynas.tracking.results import best_row
from raynas.tracking.store import TAG_ROLE, TAG_SEARCHER, Tracker
from searchers.objectives import Objectives
from searchers.portfolio import PortfolioSearch

if TYPE_CHECKING:
    from raynas.tracking.resume import ResumePlan


def member_runs(
    tracker: Tracker, parent: str, cfg: ExperimentConfig, resume: ResumePlan | None
) -> dict[str, str]:
    """One nested MLflow run per portfolio member (found again when resuming)."""
    if not cfg.portfolio:
        return {}
    runs: dict[str, str] = {}
    if resume is not None:
        found = tracker.client.search_runs(
            [tracker.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent}' "
            f"and tags.`{TAG_ROLE}` = 'searcher'",
            max_results=1000,
        )
        runs = {r.data.tags[TAG_SEARCHER]: r.info.run_id for r in found
                if TAG_SEARCHER in r.data.tags}
    for member in cfg.portfolio:
        if member.label in runs:
            tracker.client.update_run(runs[member.label], status="RUNNING")
            continue
        runs[member.label] = tracker.start_child(
            parent,
            name=member.label,
            params={"name": member.searcher.name, "trials": member.trials,
                    "share": member.share, **member.searcher.options},
            tags={TAG_ROLE: "searcher", TAG_SEARCHER: member.label},
        )
    return runs


def member_failure(
    tracker: Tracker, runs: Mapping[str, str], echo: Callable[[str], None]
) -> Callable[[str, str], None]:
    """Record a portfolio member's crash on its MLflow run, at once."""

    def record(label: str, message: str) -> None:
        echo(f"raynas: searcher {label!r} failed and stopped; the others go on: {message}")
        run = runs.get(label)
        if run is not None:
            tracker.set_tag(run, "raynas.error", message[:5000])
            tracker.end(run, "FAILED")

    return record


def finish_members(
    tracker: Tracker,
    searcher: Searcher,
    objectives: Objectives,
    runs: Mapping[str, str],
    rows: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Log each member's counters and best value and close its run; returns the counters."""
    if not isinstance(searcher, PortfolioSearch):
        return []
    metric = objectives.metrics[0]
    summary = searcher.summary()
    for member in summary:
        run = runs.get(member["label"])
        mine = [r for r in rows if r.get("searcher") == member["label"]]
        best = best_row(mine, objectives)
        member["best"] = None if best is None else best[metric]
        member["best_arch"] = None if best is None else best["arch"]
        if run is None:
            continue
        metrics = {k: float(member[k]) for k in ("evaluations", "cache_hits", "shared_in")}
        metrics["num_trials"] = float(len(mine))
        if member["best"] is not None:
            metrics[f"best_{metric}"] = float(member["best"])
            tracker.set_tag(run, "raynas.best_arch", member["best_arch"])
        tracker.log_metrics(run, metrics)
        if member["status"] != "failed":
            tracker.end(run, "FINISHED")
    return summary
