"""Read a search back from MLflow: resume an interrupted search, warm-start a new one.

A search's parent run (``raynas.role=search``) holds the config, the searcher state
checkpoints and, for supernet searches, the supernet checkpoint; its trial runs (nested
directly, or under one searcher run per portfolio member) hold each architecture and its
metrics. This module only reads them, except ``mark_interrupted``, and never unpickles
anything: configs are YAML (``yaml.safe_load``), searcher states JSON, and supernet
checkpoints are only opened (with torch's weights-only loader) to pick the latest of several.

Resuming, for one searcher (``label`` is its name, or a portfolio member's label)::

    plan = load_resume_plan(uri, run_id, dest_dir=tmp)     # ResumeError: one clear line
    if plan.searcher_states[label] is not None:            # else: a fresh searcher
        searcher.set_state(plan.searcher_states[label])
    replay_into(searcher, plan.replay_trials(label, order="completion"), drop_pending=True)
    mark_interrupted(MlflowClient(uri), plan)              # then run plan.remaining trials

Warm start: ``replay_into(searcher, load_warm_start(uri, run_ids, space))``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from raynas.run.config import Component, ConfigError, ExperimentConfig, parse_config
from raynas.tracking.store import (
    TAG_ARCH,
    TAG_ROLE,
    TAG_SEARCHER,
    TAG_SPACE,
    TAG_TRIAL_ID,
    TAG_TRIAL_INDEX,
)
from searchers import NASSearch, get_searcher_class
from searchers._base import STATE_FORMAT
from searchers.objectives import Objectives
from spaces import SearchSpace, create_space

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
STATE_FILE = "searcher_state.json"
SPACE_FILE = "space.json"
PORTFOLIO_STATE_DIR = "searchers"  # searchers/<label>/searcher_state.json
PORTFOLIO_FORMAT = "raynas.portfolio/1"  # searchers.portfolio.STATE_FORMAT
SUPERNET_SUFFIX = ".pt"  # the supernet evaluator's checkpoint, logged at the artifact root
TAG_INTERRUPTED = "raynas.interrupted"  # set by mark_interrupted: re-run by a resume
TAG_RESUMED_AS = "raynas.resumed_as"
PAGE_SIZE = 1000  # MLflow's largest search_runs page
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
_SEARCH, _TRIAL, _SEARCHER = "search", "trial", "searcher"
_INTERRUPTED_STATUSES = ("RUNNING", "SCHEDULED", "KILLED")


class ResumeError(ValueError):
    """A run that cannot be resumed or warm-started from; the message names it and why."""


@dataclass(frozen=True)
class RecordedTrial:
    """One trial run as MLflow recorded it; ``config`` is rebuilt from the space, not params."""

    run_id: str
    trial_id: str
    arch: str
    canonical: str
    config: dict[str, Any]
    metrics: dict[str, float]
    status: str
    searcher: str
    start_time: int | None
    end_time: int | None
    trial_index: int  # the tracker's raynas.trial_index tag (1, 2, ...), else by start time
    search_run_id: str
    interrupted_before: bool = False  # marked by mark_interrupted (already re-run)


@dataclass
class ResumePlan:
    """What a resume needs: config, trials by outcome, searcher states, budget left.

    ``finished``: FINISHED runs with a finite value for every objective key (metrics and
    constrained keys). ``failed``: FAILED runs, and FINISHED ones without such values (the
    searcher counted them failed too). ``interrupted``: RUNNING, SCHEDULED or KILLED runs
    not yet re-run by an earlier resume (``mark_interrupted`` tags those).

    Budget: ``remaining = config.budget.trials - len(finished) - len(failed)``. A failed
    trial spent its budget, as it did in the original run (Tune counts it among
    ``num_samples``); interrupted trials did not and are to be run again. ``remaining`` is
    0 (or less) for a run whose driver died after its last trial: resuming it records the
    outcome. A FINISHED run with no budget left cannot be resumed.

    ``searcher_states``: per searcher label (the searcher's name, or each portfolio label),
    the latest checkpointed state, checked to restore into that searcher over the config's
    space; ``None`` when there is none or it is unusable (``warnings`` says why): rebuild
    that searcher with ``replay_into``. ``portfolio_state``: a ``PortfolioSearch`` state
    logged at ``searcher_state.json``, when there is one.
    """

    run_id: str
    tracking_uri: str
    experiment_id: str
    status: str
    config: ExperimentConfig
    objective_keys: tuple[str, ...]
    finished: list[RecordedTrial]
    failed: list[RecordedTrial]
    interrupted: list[RecordedTrial]
    searcher_states: dict[str, dict[str, Any] | None]
    portfolio_state: dict[str, Any] | None
    supernet_checkpoint: Path | None
    remaining: int
    remaining_by_searcher: dict[str, int]
    warnings: list[str] = field(default_factory=list)

    @property
    def spent(self) -> int:
        """Trials that count against the budget (finished and failed)."""
        return len(self.finished) + len(self.failed)

    def replay_trials(
        self, label: str | None = None, *, order: str = "trial"
    ) -> list[RecordedTrial]:
        """Finished and failed trials (of one searcher label) in trial or completion order."""
        trials = [t for t in self.finished + self.failed if label is None or t.searcher == label]
        return order_trials(trials, order)


def order_trials(trials: Sequence[RecordedTrial], order: str = "trial") -> list[RecordedTrial]:
    """Trials sorted by suggestion (``"trial"``) or by completion (``"completion"``)."""
    if order == "trial":
        return sorted(trials, key=lambda t: t.trial_index)
    if order == "completion":
        return sorted(trials, key=lambda t: (t.end_time is None, t.end_time or 0, t.trial_index))
    raise ValueError(f"order must be 'trial' or 'completion', got {order!r}")


# ---------------------------------------------------------------------------- reading
def load_trials(
    client: MlflowClient, parent_run_id: str, space: SearchSpace, *, page_size: int = PAGE_SIZE
) -> list[RecordedTrial]:
    """Every trial run of a search (portfolio searcher runs included), in trial order."""
    parent = client.get_run(parent_run_id)
    experiment_id = parent.info.experiment_id
    children = _children(client, experiment_id, parent_run_id, page_size)
    runs = [r for r in children if r.data.tags.get(TAG_ROLE) == _TRIAL]
    for sub in children:
        if sub.data.tags.get(TAG_ROLE) == _SEARCHER:
            nested = _children(client, experiment_id, sub.info.run_id, page_size)
            runs += [r for r in nested if r.data.tags.get(TAG_ROLE) == _TRIAL]
    return _in_trial_order([_recorded(run, space, parent_run_id) for run in runs])


def _children(client: MlflowClient, experiment_id: str, run_id: str, page_size: int) -> list[Run]:
    """Runs whose ``mlflow.parentRunId`` is ``run_id``, every page of them."""
    runs: list[Run] = []
    token: str | None = None
    while True:
        page = client.search_runs(
            [experiment_id],
            f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run_id}'",
            max_results=page_size,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _recorded(run: Run, space: SearchSpace, search_run_id: str) -> RecordedTrial:
    tags = run.data.tags
    text = tags.get(TAG_ARCH) or run.data.params.get("arch")
    try:
        arch = space.from_string(str(text))
    except (TypeError, ValueError):
        raise ResumeError(
            f"trial run {run.info.run_id!r} records architecture {text!r}, which is not in "
            f"space {space.name!r}"
        ) from None
    index = tags.get(TAG_TRIAL_INDEX, "")
    return RecordedTrial(
        run_id=run.info.run_id,
        trial_id=tags.get(TAG_TRIAL_ID) or run.info.run_id,
        arch=space.to_string(arch),
        canonical=space.canonical(arch),
        config=space.to_config(arch),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        status=run.info.status,
        searcher=tags.get(TAG_SEARCHER, ""),
        start_time=run.info.start_time,
        end_time=run.info.end_time,
        trial_index=int(index) if index.isdigit() else -1,
        search_run_id=search_run_id,
        interrupted_before=tags.get(TAG_INTERRUPTED) == "true",
    )


def _in_trial_order(trials: list[RecordedTrial]) -> list[RecordedTrial]:
    """Sort by the recorded index when every run has one, else number them 1, 2, ... by
    start time (runs are created when Tune starts a trial, in suggestion order)."""
    if trials and all(t.trial_index >= 0 for t in trials):
        return sorted(trials, key=lambda t: t.trial_index)
    by_start = sorted(trials, key=lambda t: (t.start_time or 0, t.end_time or 0, t.run_id))
    return [replace(t, trial_index=i) for i, t in enumerate(by_start, start=1)]


def _client(uri: str) -> MlflowClient:
    """A client for an existing store (a missing sqlite file would be created, not read)."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise ResumeError(f"no MLflow store at {uri} (the database file does not exist)")
    return MlflowClient(tracking_uri=uri)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _search_run(client: MlflowClient, uri: str, run_id: str) -> Run:
    """The raynas search run ``run_id``, or a ResumeError saying what the id is instead."""
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ResumeError(f"no MLflow run {run_id!r} at {uri}") from None
        raise ResumeError(
            f"cannot read MLflow run {run_id!r} at {uri}: {_first_line(exc)}"
        ) from None
    if run.info.lifecycle_stage == "deleted":
        raise ResumeError(f"MLflow run {run_id!r} at {uri} is deleted; restore it first")
    role = run.data.tags.get(TAG_ROLE)
    if role == _SEARCH:
        return run
    if role in (_TRIAL, _SEARCHER):
        search = _search_ancestor(client, run)
        where = f"search run {search!r}" if search else "a search run that no longer exists"
        hint = f"; pass {search!r} instead" if search else ""
        raise ResumeError(f"MLflow run {run_id!r} is a {role} run of {where}, not a search{hint}")
    raise ResumeError(
        f"MLflow run {run_id!r} is not a raynas search (it has no {TAG_ROLE}={_SEARCH} tag)"
    )


def _search_ancestor(client: MlflowClient, run: Run) -> str | None:
    for _ in range(3):  # trial -> (searcher ->) search
        parent_id = run.data.tags.get(MLFLOW_PARENT_RUN_ID)
        if not parent_id:
            return None
        try:
            run = client.get_run(parent_id)
        except MlflowException:
            return None
        if run.data.tags.get(TAG_ROLE) == _SEARCH:
            return parent_id
    return None


def _download(client: MlflowClient, run_id: str, path: str, dest: Path) -> Path | None:
    """Download one artifact file of a run into ``dest``; ``None`` when it does not exist."""
    folder = path.rpartition("/")[0] or None
    if path not in {a.path for a in client.list_artifacts(run_id, folder) if not a.is_dir}:
        return None
    dest.mkdir(parents=True, exist_ok=True)
    # MLflow draws a progress bar on stderr per download; the CLI's errors own stderr.
    saved = os.environ.get(_PROGRESS_BAR)
    os.environ[_PROGRESS_BAR] = "false"
    try:
        return Path(client.download_artifacts(run_id, path, dst_path=str(dest)))
    finally:
        if saved is None:
            os.environ.pop(_PROGRESS_BAR, None)
        else:
            os.environ[_PROGRESS_BAR] = saved


def _load_config(client: MlflowClient, run_id: str, dest: Path) -> ExperimentConfig:
    local = _download(client, run_id, CONFIG_FILE, dest)
    if local is None:
        raise ResumeError(
            f"search run {run_id!r} has no {CONFIG_FILE} artifact; it cannot be resumed"
        )
    try:
        raw = yaml.safe_load(local.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        raise ResumeError(
            f"search run {run_id!r} has an invalid {CONFIG_FILE} artifact: not valid YAML"
        ) from None
    try:
        return parse_config(raw)
    except ConfigError as exc:
        raise ResumeError(
            f"search run {run_id!r} has an invalid {CONFIG_FILE} artifact: {_first_line(exc)}"
        ) from None


def _objective_keys(cfg: ExperimentConfig, space: SearchSpace, run_id: str) -> tuple[str, ...]:
    """Result keys a trial needs, finite, to count as finished (metrics, then constraints)."""
    metric: Any = cfg.metric
    mode: Any = cfg.mode
    try:
        if metric is None:  # the evaluator's default, as the runner chose it
            from raynas.evaluators.base import create_evaluator

            metric, mode = create_evaluator(
                cfg.evaluator.name, space, **cfg.evaluator.options
            ).default_metric
        return Objectives.build(metric, mode, constraints=list(cfg.constraints)).keys
    except (TypeError, ValueError) as exc:
        raise ResumeError(
            f"search run {run_id!r}: cannot rebuild its objective from {CONFIG_FILE}: "
            f"{_first_line(exc)}"
        ) from None


def _is_finished(trial: RecordedTrial, keys: Sequence[str]) -> bool:
    return trial.status == "FINISHED" and all(
        k in trial.metrics and math.isfinite(trial.metrics[k]) for k in keys
    )


def _members(cfg: ExperimentConfig) -> dict[str, Component]:
    return {m.label: m.searcher for m in cfg.portfolio} or {cfg.searcher.name: cfg.searcher}


def check_state(
    state: Any, component: Component, space: SearchSpace, *, seed: int = 0
) -> dict[str, Any]:
    """Raise ``ValueError`` unless ``state`` restores into the config's searcher over ``space``."""
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"not a raynas searcher state (format {STATE_FORMAT!r})")
    cls = get_searcher_class(component.name)
    if state.get("searcher") != cls.__name__:
        raise ValueError(
            f"saved by {state.get('searcher')!r}, the config's searcher is {cls.__name__!r}"
        )
    if state.get("space") != space.name:
        raise ValueError(
            f"saved for space {state.get('space')!r}, the config's space is {space.name!r}"
        )
    options = {**component.options, "metric": state.get("metric"), "mode": state.get("mode")}
    try:
        probe = cls(space, **{**options, "seed": seed})
    except (TypeError, ValueError, ImportError) as exc:
        # Options the runner adds (e.g. a candidate source) are missing here; the runner's
        # own set_state checks the rest when it restores.
        logger.debug("cannot build a %s to check its state: %s", cls.__name__, exc)
        return state
    probe.set_state(state)
    return state


@dataclass
class _States:
    """Searcher states read from a search run, and what was wrong with the others."""

    by_label: dict[str, dict[str, Any] | None]
    portfolio: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def unusable(self, path: str, run_id: str, label: str, exc: BaseException) -> None:
        message = (
            f"searcher state {path} of run {run_id!r} is unusable ({_first_line(exc)}); "
            f"searcher {label!r} will be rebuilt by replaying the recorded trials"
        )
        logger.warning(message)
        self.warnings.append(message)


def _read_json(client: MlflowClient, run_id: str, path: str, dest: Path) -> Any:
    """A JSON artifact parsed (``None`` when absent); ``ValueError`` when it is not JSON."""
    local = _download(client, run_id, path, dest)
    if local is None:
        return None
    try:
        return json.loads(local.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None


def _searcher_states(
    client: MlflowClient, run_id: str, cfg: ExperimentConfig, space: SearchSpace, dest: Path
) -> _States:
    """One searcher: ``searcher_state.json``. A portfolio: ``searchers/<label>/...`` per
    member, else the member's state inside the portfolio state at ``searcher_state.json``."""
    members = _members(cfg)
    out = _States(by_label=dict.fromkeys(members))
    for label, comp in members.items() if cfg.portfolio else ():
        path = f"{PORTFOLIO_STATE_DIR}/{label}/{STATE_FILE}"
        try:
            state = _read_json(client, run_id, path, dest)
            if state is not None:
                out.by_label[label] = check_state(state, comp, space, seed=cfg.seed)
        except ValueError as exc:
            out.unusable(path, run_id, label, exc)
    missing = [label for label, state in out.by_label.items() if state is None]
    try:
        root = _read_json(client, run_id, STATE_FILE, dest)
        if root is None:
            return out
        if not cfg.portfolio:
            out.by_label[missing[0]] = check_state(root, members[missing[0]], space, seed=cfg.seed)
            return out
        saved = _portfolio_members(root, space, list(members))
        out.portfolio = root
    except ValueError as exc:
        for label in missing:
            out.unusable(STATE_FILE, run_id, label, exc)
        if not missing:
            out.warnings.append(
                f"portfolio state {STATE_FILE} of run {run_id!r} is unusable "
                f"({_first_line(exc)}); the members' own states are used"
            )
        return out
    for label in missing:
        try:
            out.by_label[label] = check_state(saved[label], members[label], space, seed=cfg.seed)
        except ValueError as exc:
            out.unusable(f"{STATE_FILE} (member {label!r})", run_id, label, exc)
    return out


def _portfolio_members(state: Any, space: SearchSpace, labels: list[str]) -> dict[str, Any]:
    """The member states of a ``PortfolioSearch`` state; ``ValueError`` for a foreign one."""
    if not isinstance(state, dict) or state.get("format") != PORTFOLIO_FORMAT:
        raise ValueError(f"not a raynas portfolio state (format {PORTFOLIO_FORMAT!r})")
    if state.get("space") != space.name:
        raise ValueError(f"saved for space {state.get('space')!r}, not {space.name!r}")
    members = state.get("members")
    if not isinstance(members, dict) or sorted(members) != sorted(labels):
        found = sorted(members) if isinstance(members, dict) else members
        raise ValueError(f"saved for searchers {found}, the config has {sorted(labels)}")
    return {
        label: (m or {}).get("state") if isinstance(m, dict) else None
        for label, m in members.items()
    }


def _supernet_checkpoint(
    client: MlflowClient, run_id: str, dest: Path, warnings: list[str]
) -> Path | None:
    """The run's supernet checkpoint; of several (runs of older raynas), the latest step's."""
    found = sorted(
        a.path
        for a in client.list_artifacts(run_id)
        if not a.is_dir and a.path.endswith(SUPERNET_SUFFIX)
    )
    local = [p for p in (_download(client, run_id, path, dest) for path in found) if p]
    if len(local) <= 1:
        return local[0] if local else None
    steps = {path: checkpoint_step(path) for path in local}
    best = max(local, key=lambda p: -1 if (step := steps[p]) is None else step)
    why = "none is readable" if steps[best] is None else f"step {steps[best]}, the latest"
    warnings.append(
        f"search run {run_id!r} has {len(local)} supernet checkpoints; using {best.name} ({why})"
    )
    return best


def checkpoint_step(path: str | os.PathLike[str]) -> int | None:
    """The training step a supernet checkpoint records; None if the safe loader rejects it."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it was not given
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
        return int(state["step"])
    except Exception:  # unreadable or foreign: ranked below every readable one
        return None


def _config_space(cfg: ExperimentConfig, parent: Run) -> SearchSpace:
    """The config's space, which must be the one the run's tag names."""
    run_id = parent.info.run_id
    try:
        space = create_space(cfg.space.name, **cfg.space.options)
    except (TypeError, ValueError) as exc:
        raise ResumeError(
            f"search run {run_id!r}: its space cannot be built: {_first_line(exc)}"
        ) from None
    recorded = parent.data.tags.get(TAG_SPACE)
    if recorded not in (None, space.name):
        raise ResumeError(
            f"search run {run_id!r} is tagged space {recorded!r} but its {CONFIG_FILE} "
            f"builds space {space.name!r}"
        )
    return space


def load_resume_plan(
    uri: str, run_id: str, *, dest_dir: str | Path, download_checkpoint: bool = True
) -> ResumePlan:
    """Read search run ``run_id`` at ``uri`` into a plan; changes nothing in MLflow."""
    client = _client(uri)
    parent = _search_run(client, uri, run_id)
    dest = Path(dest_dir)
    cfg = _load_config(client, run_id, dest)
    space = _config_space(cfg, parent)
    keys = _objective_keys(cfg, space, run_id)
    trials = load_trials(client, run_id, space)
    finished = [t for t in trials if _is_finished(t, keys)]
    failed = [t for t in trials if t.status in ("FINISHED", "FAILED") and not _is_finished(t, keys)]
    interrupted = [
        t for t in trials if t.status in _INTERRUPTED_STATUSES and not t.interrupted_before
    ]
    remaining = cfg.budget.trials - len(finished) - len(failed)
    if remaining <= 0 and parent.info.status == "FINISHED":
        raise ResumeError(
            f"search run {run_id!r} already ran its {cfg.budget.trials} trials "
            f"({len(finished)} finished, {len(failed)} failed): nothing to resume"
        )
    budgets = {m.label: m.trials for m in cfg.portfolio} or {cfg.searcher.name: cfg.budget.trials}
    by_label = {
        label: budget - sum(t.searcher == label for t in finished + failed)
        for label, budget in budgets.items()
    }
    states = _searcher_states(client, run_id, cfg, space, dest)
    warnings = states.warnings
    checkpoint = (
        _supernet_checkpoint(client, run_id, dest, warnings) if download_checkpoint else None
    )
    return ResumePlan(
        run_id=run_id,
        tracking_uri=uri,
        experiment_id=parent.info.experiment_id,
        status=parent.info.status,
        config=cfg,
        objective_keys=tuple(keys),
        finished=finished,
        failed=failed,
        interrupted=interrupted,
        searcher_states=states.by_label,
        portfolio_state=states.portfolio,
        supernet_checkpoint=checkpoint,
        remaining=remaining,
        remaining_by_searcher=by_label,
        warnings=warnings,
    )


# ---------------------------------------------------------------------------- writing
def mark_interrupted(
    client: MlflowClient, plan: ResumePlan, *, resumed_as: str | None = None
) -> list[str]:
    """Set the plan's interrupted trial runs to KILLED and tag them; returns their run ids.

    A trial run that finished or failed after the plan was read means the search is still
    running: nothing is changed and ``ResumeError`` says so.
    """
    current = {t.run_id: client.get_run(t.run_id).info.status for t in plan.interrupted}
    moved = {rid: s for rid, s in current.items() if s not in _INTERRUPTED_STATUSES}
    if moved:
        rid, status = next(iter(moved.items()))
        raise ResumeError(
            f"trial run {rid!r} became {status} after the resume plan was read: search run "
            f"{plan.run_id!r} is still running"
        )
    for rid, status in current.items():
        if status != "KILLED":
            client.set_terminated(rid, "KILLED")
        client.set_tag(rid, TAG_INTERRUPTED, "true")
        if resumed_as:
            client.set_tag(rid, TAG_RESUMED_AS, resumed_as)
    return list(current)


# ---------------------------------------------------------------------------- replay
def replay_into(
    searcher: NASSearch, trials: Sequence[RecordedTrial], *, drop_pending: bool = False
) -> int:
    """Tell ``searcher`` the recorded trials, in the given order; returns how many it took.

    Failed runs are told as errors. A finished run lacking one of the searcher's objective
    keys (another objective, e.g. a warm start) is skipped. Trials the searcher already
    knows are skipped too, so a searcher restored from a checkpoint learns only the trials
    that finished after it; a trial still pending in that state completes as Tune would
    have completed it. ``drop_pending=True`` (a resume) forgets the pending trials left
    over: their driver died and a new trial will run them.
    """
    keys = searcher.objectives.keys
    state = searcher.get_state()
    pending, done = dict(state["pending"]), set(state["done"])
    told = 0
    for trial in trials:
        error = trial.status == "FAILED"
        result = {} if error else dict(trial.metrics)
        if trial.trial_id in done:
            continue
        if trial.trial_id in pending:  # the searcher judges the result, as under Tune
            searcher.on_trial_complete(trial.trial_id, result, error=error)
        elif not error and any(k not in trial.metrics for k in keys):
            logger.debug("replay: trial %s lacks one of %s; skipped", trial.trial_id, keys)
            continue
        elif searcher.is_seen(searcher.space.from_string(trial.arch)):
            continue
        else:
            searcher.add_evaluated_point(dict(trial.config), result, error=error)  # type: ignore[arg-type]
        told += 1
    if drop_pending:
        state = searcher.get_state()
        if state["pending"]:
            logger.info(
                "replay: %d pending trials of the old driver dropped", len(state["pending"])
            )
            state["pending"] = {}
            searcher.set_state(state)
    return told


def load_warm_start(uri: str, run_ids: Sequence[str], space: SearchSpace) -> list[RecordedTrial]:
    """Finished trials of earlier searches over ``space``, first of each canonical form kept."""
    client = _client(uri)
    seen: set[str] = set()
    out: list[RecordedTrial] = []
    for run_id in run_ids:
        run = _search_run(client, uri, run_id)
        recorded = run.data.tags.get(TAG_SPACE)
        if recorded != space.name:
            raise ResumeError(
                f"cannot warm-start from search run {run_id!r}: it searched space {recorded!r}, "
                f"this search's space is {space.name!r}"
            )
        _check_decisions(client, run_id, space)
        for trial in load_trials(client, run_id, space):
            if trial.status == "FINISHED" and trial.canonical not in seen:
                seen.add(trial.canonical)
                out.append(trial)
    return out


def _check_decisions(client: MlflowClient, run_id: str, space: SearchSpace) -> None:
    """Same name is not enough: space options may change the decisions (choices per slot)."""
    with tempfile.TemporaryDirectory(prefix="raynas-space-") as tmp:
        local = _download(client, run_id, SPACE_FILE, Path(tmp))
        if local is None:
            return
        try:
            recorded = json.loads(local.read_text()).get("decisions")
        except (json.JSONDecodeError, AttributeError):
            return
    ours = json.loads(json.dumps(space.describe()["decisions"]))
    if recorded is not None and recorded != ours:
        raise ResumeError(
            f"cannot warm-start from search run {run_id!r}: its space {space.name!r} has other "
            "decisions (different space options) than this search's"
        )


__all__ = [
    "RecordedTrial",
    "ResumeError",
    "ResumePlan",
    "check_state",
    "checkpoint_step",
    "load_resume_plan",
    "load_trials",
    "load_warm_start",
    "mark_interrupted",
    "order_trials",
    "replay_into",
]
