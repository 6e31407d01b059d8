"""Continue a recorded search: restore or replay its searcher, warm-start from other runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ray.tune.search import Searcher

from raynas.tracking.results import recorded_row
from raynas.tracking.resume import RecordedTrial, ResumePlan, mark_interrupted, replay_into
from raynas.tracking.store import Tracker
from searchers import NASSearch
from searchers.portfolio import PortfolioSearch
from spaces import SearchSpace


def restore_searcher(
    searcher: Searcher, space: SearchSpace, plan: ResumePlan, tracker: Tracker
) -> list[dict[str, Any]]:
    """Bring the searcher to where the recorded search stopped; returns the recorded rows.

    The saved state is restored when there is a usable one; trials it was still waiting
    for get their recorded result, or are dropped when they were interrupted (their MLflow
    runs are marked KILLED and their architectures are not evaluated again: a searcher
    does not propose what it already proposed). Recorded trials the state does not know
    (finished after the last checkpoint) are told with ``add_evaluated_point``; without a
    state, all of them are, in trial order.
    """
    recorded = {t.trial_id: t for t in plan.replay_trials()}
    state = saved_state(searcher, plan)
    known: set[str] = set()
    if state is not None:
        searcher.set_state(state)  # type: ignore[attr-defined]
        completed = searcher.completed_trial_ids  # type: ignore[attr-defined]
        # A trial the searcher recorded whose MLflow run was not closed yet: its metrics
        # were logged before Tune completed it, so it finished.
        for trial in list(plan.interrupted):
            if trial.trial_id in completed and trial.metrics:
                ok = all(math.isfinite(trial.metrics.get(k, math.nan))
                         for k in plan.objective_keys)
                closed = replace(trial, status="FINISHED" if ok else "FAILED")
                tracker.end(trial.run_id, closed.status)
                plan.interrupted.remove(trial)
                (plan.finished if ok else plan.failed).append(closed)
                recorded[trial.trial_id] = closed
                plan.remaining -= 1  # it spent its budget after all
                if trial.searcher in plan.remaining_by_searcher:
                    plan.remaining_by_searcher[trial.searcher] -= 1
        for trial_id in searcher.pending_trial_ids:  # type: ignore[attr-defined]
            trial = recorded.get(trial_id)
            if trial is not None:
                searcher.on_trial_complete(trial_id, dict(trial.metrics),
                                           error=trial.status != "FINISHED")
            elif isinstance(searcher, PortfolioSearch):
                searcher.interrupt(trial_id)
            else:
                searcher.on_trial_complete(trial_id, None, error=True)
        known = set(searcher.completed_trial_ids)  # type: ignore[attr-defined]
    mark_interrupted(tracker.client, plan)
    tell(searcher, [t for t in sorted(recorded.values(), key=lambda t: t.trial_index)
                    if t.trial_id not in known], own=True)
    if isinstance(searcher, NASSearch):
        searcher.max_trials = None  # Tune's num_samples holds the remaining budget
    return [recorded_row(t, space, plan.objective_keys)
            for t in sorted(recorded.values(), key=lambda t: t.trial_index)]


def saved_state(searcher: Searcher, plan: ResumePlan) -> dict[str, Any] | None:
    """The searcher state recorded with the run (checked by the loader), if any."""
    if isinstance(searcher, PortfolioSearch):
        return plan.portfolio_state
    return next(iter(plan.searcher_states.values()), None)


def tell(searcher: Searcher, trials: Sequence[RecordedTrial], *, own: bool) -> None:
    """Tell a searcher of recorded trials (``own``: they ran for this search's budget).

    A single searcher learns them through ``raynas.tracking.resume.replay_into`` (trials it already
    knows, or lacking its objectives, are skipped); a portfolio counts its own trials against
    the member that ran them and shares every result with its members.
    """
    if not isinstance(searcher, PortfolioSearch):
        replay_into(searcher, trials)  # type: ignore[arg-type]
        return
    for trial in trials:
        error = trial.status != "FINISHED"
        label = trial.searcher if own and trial.searcher in searcher.members else None
        searcher.add_evaluated_point(dict(trial.config), {} if error else dict(trial.metrics),
                                     error, label=label)
