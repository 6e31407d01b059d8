"""The one place where space, searcher, evaluator, Ray Tune and MLflow meet."""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.search import Searcher

from raynas.evaluators.base import Evaluator, create_evaluator
from raynas.gradient.phase import GradientPlan
from raynas.run import stop
from raynas.run.config import Component, ConfigError, ExperimentConfig, check_writable, short
from raynas.run.localray import is_local, local_init_options, loopback_node
from raynas.run.members import finish_members, member_failure, member_runs
from raynas.run.placement import RESULT_NODE_ID, check_shared_tracking, reuse_actors
from raynas.run.progress import ProgressPrinter, echo_stdout
from raynas.run.schedulers import create_scheduler
from raynas.tracking.checkpoints import SearcherCheckpoint
from raynas.tracking.lease import Lease
from raynas.tracking.restore import restore_searcher, tell
from raynas.tracking.results import (
    TRIALS_FILE,
    best_row,
    feasible_front,
    trial_rows,
    write_trials,
)
from raynas.tracking.resume import (
    CONFIG_FILE,
    SPACE_FILE,
    STATE_FILE,
    RecordedTrial,
    ResumePlan,
)
from raynas.tracking.store import (
    TAG_SEARCHER,
    TAG_SPACE,
    Tracker,
    TrialLogger,
    check_store_writable,
    flatten,
)
from searchers import NASSearch, create_searcher, get_searcher_class
from searchers.objectives import Objectives
from searchers.portfolio import PortfolioMember, PortfolioSearch
from spaces import SearchSpace, create_space

logger = logging.getLogger(__name__)

GRADIENT_SEARCHER = "darts"  # the searcher name that runs gradient-based searches first



@dataclass
class SearchResult:
    """What a finished search produced and where it is recorded."""

    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    metric: str
    mode: str
    best_arch: str | None
    best_metrics: dict[str, float]
    trials_path: Path
    num_trials: int
    num_failed: int
    wall_time_s: float
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    pareto: list[dict[str, Any]] = field(default_factory=list, repr=False)
    objective_keys: list[str] = field(default_factory=list)
    searchers: list[dict[str, Any]] = field(default_factory=list)
    status: str = "FINISHED"  # KILLED when stopped (Ctrl-C) before the budget was spent


@dataclass
class Components:
    """The built pieces of a search."""

    space: SearchSpace
    searcher: Searcher  # a NASSearch, or a PortfolioSearch over several
    evaluator: Evaluator
    metric: str
    mode: str
    objectives: Objectives
    members: list[PortfolioMember] = field(default_factory=list)
    gradient: list[GradientMember] = field(default_factory=list)  # runs whose answers are trials


@dataclass
class GradientMember:
    """A gradient searcher's planned runs and the searcher their answers are queued in."""

    label: str
    given: Any  # searchers.given.GivenArchitectures
    plan: GradientPlan


def build_components(cfg: ExperimentConfig) -> Components:
    """Build space, evaluator and searcher(s) from a config; errors name the failing field."""
    try:
        space = create_space(cfg.space.name, **cfg.space.options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config field 'space': {exc}") from None
    try:
        evaluator = create_evaluator(cfg.evaluator.name, space, **cfg.evaluator.options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config field 'evaluator': {exc}") from None
    try:
        metric: Any = cfg.metric or evaluator.default_metric[0]
        mode: Any = cfg.mode if cfg.metric else evaluator.default_metric[1]
    except ValueError as exc:  # a function evaluator names no default metric
        raise ConfigError(f"config field 'metric' is required: {exc}") from None
    metrics = [metric] if isinstance(metric, str) else list(metric)
    constrained = [c.split()[0] for c in cfg.constraints]
    declared = getattr(evaluator, "declares_metrics", True)
    for field_name, names in (("metric", metrics), ("constraints", constrained)):
        for name in names:
            if declared and name not in evaluator.metrics:
                raise ConfigError(
                    f"config field '{field_name}' names {name!r}, which evaluator "
                    f"{cfg.evaluator.name!r} does not report; it reports: "
                    f"{', '.join(evaluator.metrics)}"
                )
            if name.startswith("test_"):
                raise ConfigError(
                    f"config field '{field_name}' names {name!r}: test metrics are for "
                    "reporting only; search on a validation metric"
                )
    common = {
        "metric": metric if isinstance(metric, str) else list(metric),
        "mode": mode if isinstance(mode, str) else list(mode),
        "seed": cfg.seed,
        **({"constraints": list(cfg.constraints)} if cfg.constraints else {}),
    }
    # Tune's own metric (schedulers, progress) is the first objective.
    first_mode = mode if isinstance(mode, str) else mode[0]
    if not cfg.portfolio and is_gradient(cfg.searcher.name):
        return _gradient_components(cfg, space, evaluator, common, metrics[0], first_mode)
    if not cfg.portfolio:
        options = {**common, **cfg.searcher.options}
        options.setdefault("max_trials", cfg.budget.trials)
        searcher = _make_searcher(cfg.searcher.name, options, space, evaluator, "searcher")
        return Components(space, searcher, evaluator, metrics[0], first_mode,
                          searcher.objectives)
    members = []
    gradient = []
    for i, member in enumerate(cfg.portfolio):
        # Distinct seeds, so two members of one kind do not propose the same sequence.
        options = {**common, "seed": cfg.seed + i, **member.searcher.options}
        if is_gradient(member.searcher.name):
            given, plan = _gradient_member(member.searcher, space, evaluator, common,
                                           seed=cfg.seed + i,
                                           trials=member.trials or cfg.budget.trials,
                                           where=f"searchers[{i}]")
            gradient.append(GradientMember(member.label, given, plan))
            nas: Any = given
        else:
            nas = _make_searcher(member.searcher.name, options, space, evaluator,
                                 f"searchers[{i}]")
        members.append(PortfolioMember(member.label, nas, member.trials, member.share))
    portfolio = PortfolioSearch(space, members, metric=metrics[0], mode=first_mode)
    return Components(space, portfolio, evaluator, metrics[0], first_mode,
                      members[0].searcher.objectives, members,  # type: ignore[attr-defined]
                      gradient=gradient)


def is_gradient(name: str) -> bool:
    """Whether searcher ``name`` runs gradient or single-path searches before its trials."""
    from raynas.gradient.methods import METHODS

    return name == GRADIENT_SEARCHER or name in METHODS


def _gradient_components(
    cfg: ExperimentConfig, space: SearchSpace, evaluator: Evaluator, common: dict[str, Any],
    metric: str, mode: str,
) -> Components:
    """Gradient runs (``searcher: {name: darts | proxyless | ..., ...}``) whose answers are
    the trials."""
    given, plan = _gradient_member(cfg.searcher, space, evaluator, common, seed=cfg.seed,
                                   trials=cfg.budget.trials, where="searcher")
    return Components(space, given, evaluator, metric, mode, given.objectives,
                      gradient=[GradientMember(cfg.searcher.name, given, plan)])


def _gradient_member(
    searcher: Component, space: SearchSpace, evaluator: Evaluator, common: dict[str, Any], *,
    seed: int, trials: int, where: str,
) -> tuple[Any, GradientPlan]:
    """The plan of a gradient searcher's runs, and the searcher that queues their answers."""
    from raynas.gradient.phase import check_space, plan_from_options
    from searchers.given import GivenArchitectures

    options = dict(searcher.options)
    if searcher.name != GRADIENT_SEARCHER:  # searcher: {name: proxyless} is method proxyless
        options.setdefault("method", searcher.name)
    if "latency_device" in options:
        key, path = _service_source(options.pop("latency_device"), evaluator, where)
        options[key] = path
    plan = plan_from_options(options, seed=seed, where=where)
    check_space(space, plan, where=where)
    try:
        given = GivenArchitectures(space, **common, max_trials=trials)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config field '{where}': {exc}") from None
    return given, plan


def _service_source(device: Any, evaluator: Evaluator, where: str) -> tuple[str, str]:
    """The lookup table (else the learned model) the latency evaluator's service of
    ``device`` serves: the option it sets (``latency_table`` or ``latency_model``), its path."""
    sources = getattr(evaluator, "sources", None)
    if not isinstance(sources, Mapping) or device not in sources:
        known = ", ".join(sources) if isinstance(sources, Mapping) else "none"
        raise ConfigError(f"config field '{where}.latency_device': {short(device)} is not a "
                          f"device of the latency evaluator (devices: {known})")
    for kind, key in (("lut", "latency_table"), ("model", "latency_model")):
        paths = [s["path"] for s in sources[device] if s["kind"] == kind
                 and (kind == "lut" or s["path"].endswith((".pt", ".pth")))]
        if paths:
            return key, str(paths[0])
    raise ConfigError(f"config field '{where}.latency_device': device {short(device)} has "
                      "neither a lookup table nor a learned model (.pt) among its latency "
                      "sources; the latency term needs one")


def _make_searcher(
    name: str, options: dict[str, Any], space: SearchSpace, evaluator: Evaluator, where: str
) -> NASSearch:
    """One searcher; GreedyNAS-style ones get the supernet's candidate pool."""
    source = getattr(evaluator, "candidate_source", None)
    if source is not None and "candidate_source" in _keyword_options(name):
        options.setdefault("candidate_source", source())
    if "zero_cost" in options or "warm_start" in options:
        from raynas.zero_cost.wiring import apply_zero_cost

        name, options = apply_zero_cost(name, options, space, where,
                                        "scorer" in _keyword_options(name))
    try:
        return create_searcher(name, space, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config field '{where}': {exc}") from None


def _keyword_options(searcher: str) -> set[str]:
    """Keyword parameters the searcher class accepts (empty for unknown names)."""
    import inspect

    try:
        cls = get_searcher_class(searcher)
    except ValueError:
        return set()
    return set(inspect.signature(cls.__init__).parameters)


def evaluate_trial(config: dict[str, Any], *, space: SearchSpace, evaluator: Evaluator) -> None:
    """Tune function trainable: decode the architecture, evaluate it, report its metrics."""
    arch = space.from_config(config)
    # Which Ray node ran the trial (a string: TrialLogger tags the trial's run with it).
    node = {RESULT_NODE_ID: ray.get_runtime_context().get_node_id()}
    last: dict[str, float] = {}

    # Intermediate results go to Tune at once, so a scheduler (ASHA) can stop the trial at
    # a rung; the final dict (test metrics, costs) is one more report on top of the last.
    def report(metrics: dict[str, float]) -> None:
        nonlocal last
        last = dict(metrics)
        tune.report({**last, **node})

    final = evaluator.evaluate(arch, report=report)
    tune.report({**last, **final, **node})


def ensure_ray(address: str | None, *, num_cpus: int | None = None, quiet: bool = True) -> bool:
    """Connect to ``address`` or start local Ray (on loopback); True if this call started it."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": not quiet}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = num_cpus
    local = is_local(address)  # a node of our own: on loopback (raynas.run.localray)
    if local:
        kwargs.update(local_init_options())
    try:
        with loopback_node() if local else nullcontext():
            ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot connect to Ray at {address or 'local'}: {exc}") from None
    stop.rearm()  # ray.init's SIGTERM handler prints a C++ stack and aborts
    return True


def run_search(
    cfg: ExperimentConfig,
    *,
    address: str | None = None,
    echo: Callable[[str], None] = echo_stdout,
    quiet: bool = True,
    resume: ResumePlan | None = None,
    warm_start: Sequence[RecordedTrial] = (),
    force: bool = False,
) -> SearchResult:
    """Run a configured search on Ray Tune, recording everything in MLflow.

    With ``resume`` (from ``raynas.tracking.resume.load_resume_plan``) the search continues its
    MLflow parent run until the budget (a run whose trials are all done is only finalised);
    ``warm_start`` trials of earlier runs are told to the searcher(s) before the first
    suggestion. A resume leases the run first (``LeaseError`` while another driver holds
    it; ``force`` takes over a stale lease).
    """
    comps = build_components(cfg)
    uri = resume.tracking_uri if resume is not None else cfg.resolved_tracking_uri()
    # Before a lease, Ray or a parent run: one line now, not minutes of retried writes later.
    check_store_writable(uri)
    check_writable(cfg.output_dir, "config field 'output_dir'", folder=True)
    lease = None
    if resume is not None:  # before Ray starts or anything is written
        lease = Lease(MlflowClient(uri), resume.run_id)
        lease.acquire(force=force)
    try:
        out_dir = _own_folder(Path(cfg.output_dir), cfg.name, resume is not None)
        started = ensure_ray(address, num_cpus=None, quiet=quiet)
    except BaseException:
        if lease is not None:
            lease.release()
        raise
    try:
        # Refused before anything is recorded: a remote cluster needs a shared store.
        check_shared_tracking(uri, address=address)
        tracker = Tracker(uri, cfg.tracking.experiment,
                          spool_path=out_dir / "mlflow_spool.jsonl",
                          max_outage_s=cfg.tracking.max_outage_s)
    except BaseException:
        if started:
            ray.shutdown()
        if lease is not None:
            lease.release()
        raise
    (out_dir / CONFIG_FILE).write_text(cfg.to_yaml())
    parent = _open_parent_run(tracker, cfg, comps, resume)
    if lease is None:  # a new run: no other driver knows its id yet
        lease = Lease(tracker.client, parent)
        lease.acquire(fresh=True)
    status = "FAILED"
    trial_logger: TrialLogger | None = None
    try:
        if resume is None:
            tracker.log_text(parent, cfg.to_yaml(), CONFIG_FILE)
            tracker.log_text(parent, json.dumps(comps.space.describe(), indent=1),
                             SPACE_FILE)
        searcher_runs = member_runs(tracker, parent, cfg, resume)
        prior: list[dict[str, Any]] = []
        budget = cfg.budget.trials
        if resume is not None:
            prior = restore_searcher(comps.searcher, comps.space, resume, tracker)
            budget = resume.remaining
        tell(comps.searcher, warm_start, own=False)
        _announce(cfg, comps, echo, budget=budget, parent=parent, uri=uri,
                  prior=len(prior) if resume is not None else None, warm=len(warm_start))
        if isinstance(comps.searcher, PortfolioSearch):
            comps.searcher.on_failure = member_failure(tracker, searcher_runs, echo)
        if budget > 0 and comps.gradient:
            left = _gradient_phase(cfg, comps, tracker, parent, out_dir, echo)
            if not comps.members:  # alone, the gradient searcher's answers are the budget
                budget = min(budget, left)
        if budget > 0:  # a finished run being finalised needs no evaluator
            _prepare_evaluator(cfg, comps, tracker, parent, out_dir, echo, resume)
            _check_trial_fits(cfg)
        offset = max((r["trial_index"] or 0 for r in prior), default=0)
        trial_logger = TrialLogger(tracker, parent, comps.space, searcher=cfg.searcher.name,
                                   parents=searcher_runs, index_offset=offset)
        printer = ProgressPrinter(
            metric=comps.metric,
            mode=comps.mode,
            budget=budget,
            describe=lambda c: _describe(comps.space, c),
            echo=echo,
        )
        checkpointer = SearcherCheckpoint(
            comps.searcher, out_dir / STATE_FILE, lambda path: tracker.log_file(parent, path),
            cfg.tracking.checkpoint_every,
        )
        # The checkpoint first: if the driver dies between it and the trial's MLflow run
        # being closed, resume finds the trial in the state and closes the run as finished,
        # so the searcher's sequence continues.
        grid = _fit(cfg, comps, budget, out_dir, [checkpointer, trial_logger, printer])
        wall = lease.elapsed_s()  # every driver of this search, resumes included
        new_rows = trial_rows(grid or [], comps.space, comps.metric,
                              trial_logger.trial_runs, index_offset=offset,
                              default_searcher=cfg.searcher.name)
        rows = prior + new_rows
        trials_path = out_dir / TRIALS_FILE
        write_trials(rows, trials_path)
        tracker.log_file(parent, trials_path)
        checkpointer.write()
        result = _record_outcome(tracker, parent, uri, comps, rows, searcher_runs, wall,
                                 trials_path)
        _log_report(tracker, parent, out_dir)
        tracker.flush()  # writes buffered during an outage; raises if the store stays down
        status = "FINISHED"
        if stopped_early(comps.searcher, len(new_rows), budget):
            # Ctrl-C: Tune stops its trials and returns normally; the budget is not spent.
            status = "KILLED"
            echo(f"raynas: stopped after {len(rows)} of {cfg.budget.trials} trials; "
                 + _resume_hint(parent, uri))
        result.status = status
        return result
    except KeyboardInterrupt:  # a second Ctrl-C or SIGTERM, or one outside Tune's loop
        status = "KILLED"
        echo(f"raynas: stopped; {_resume_hint(parent, uri)}")
        raise
    except Exception as exc:
        if disk_full(exc):
            raise DiskFullError(
                f"no space left on device ({_first_line(exc)}); free some, then continue "
                f"with: raynas resume {parent} --tracking-uri {uri}"
            ) from exc
        raise
    finally:
        comps.evaluator.teardown()
        try:
            if status == "KILLED" and trial_logger is not None:
                trial_logger.end_open("KILLED")  # trials Tune stopped without ending them
            tracker.end(parent, status)
            # A failed or interrupted search waits a little for the store; the spool keeps
            # what it could not write.
            tracker.close(timeout_s=None if status == "FINISHED" else 30.0)
        finally:
            lease.release()
            if started:
                ray.shutdown()


def _gradient_phase(
    cfg: ExperimentConfig, comps: Components, tracker: Tracker, parent: str, out_dir: Path,
    echo: Callable[[str], None],
) -> int:
    """Run the gradient searches; queue their architectures; how many are left to evaluate."""
    from raynas.gradient.phase import run_gradient_phase

    left = 0
    for member in comps.gradient:
        derived = run_gradient_phase(
            member.plan, space=comps.space, tracker=tracker, parent=parent, out_dir=out_dir,
            name=cfg.name, data_seed=cfg.seed, concurrency=cfg.budget.concurrency,
            cpus_per_trial=cfg.budget.cpus_per_trial, gpus_per_trial=cfg.budget.gpus_per_trial,
            echo=echo,
        )
        member.given.extend(derived)
        left += member.given.remaining
        who = f" ({member.label})" if comps.members else ""
        echo(f"raynas: {len(derived)} gradient runs done{who}; {member.given.remaining} "
             "distinct architectures to evaluate")
    return left


def _resume_hint(parent: str, uri: str) -> str:
    return f"continue with: raynas resume {parent} --tracking-uri {uri}"


class DiskFullError(OSError):
    """The search stopped because a disk filled up; the message says how to resume."""


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk: ENOSPC, or sqlite's own words."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        if "database or disk is full" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def _own_folder(root: Path, name: str, resumed: bool) -> Path:
    """A new folder under ``root`` for this driver alone (two drivers never share one)."""
    stem = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}{'-resume' if resumed else ''}"
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = root / (stem if n == 1 else f"{stem}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise OSError(f"no free output folder {stem}-N under {root}")


def _open_parent_run(
    tracker: Tracker, cfg: ExperimentConfig, comps: Components, resume: ResumePlan | None
) -> str:
    """The search's MLflow parent run: a new one, or the resumed one set running again."""
    if resume is not None:
        tracker.client.update_run(resume.run_id, status="RUNNING")
        return resume.run_id
    return tracker.start_search(
        name=cfg.name,
        params=flatten(cfg.to_dict()),
        tags={TAG_SPACE: comps.space.name, TAG_SEARCHER: cfg.searcher.name},
    )


def _announce(
    cfg: ExperimentConfig, comps: Components, echo: Callable[[str], None], *, budget: int,
    parent: str, uri: str, prior: int | None, warm: int,
) -> None:
    """Print the one line that says what the search is about to do and where it records."""
    what = ("portfolio " + ", ".join(cfg.searcher_labels) if cfg.portfolio
            else cfg.searcher.name)
    echo(
        f"raynas: {'resuming' if prior is not None else 'searching'} {comps.space.name} "
        f"with {what} on {cfg.evaluator.name} for {budget} trials ({comps.metric}, "
        f"{comps.mode}); MLflow run {parent} at {uri}"
        + (f"; {prior} trials recorded before" if prior is not None else "")
        + (f"; warm start from {warm} trials" if warm else "")
    )


def _fit(
    cfg: ExperimentConfig, comps: Components, budget: int, out_dir: Path,
    callbacks: list[Any],
) -> Any:
    """Run the trials on Ray Tune; None when no budget is left."""
    if budget <= 0:
        return None
    trainable = tune.with_resources(
        tune.with_parameters(evaluate_trial, space=comps.space, evaluator=comps.evaluator),
        {"cpu": cfg.budget.cpus_per_trial, "gpu": cfg.budget.gpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=comps.searcher,
            scheduler=create_scheduler(cfg.scheduler),
            metric=comps.metric,
            mode=comps.mode,
            num_samples=budget,
            max_concurrent_trials=cfg.budget.concurrency,
            reuse_actors=reuse_actors(),
        ),
        run_config=tune.RunConfig(
            name=cfg.name,
            storage_path=str(out_dir / "tune"),
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=cfg.budget.max_failures),
            verbose=0,
        ),
    )
    with stop.around_fit():  # Tune's SIGINT handler outlives fit; a later Ctrl-C must stop
        return tuner.fit()


def _record_outcome(
    tracker: Tracker, parent: str, uri: str, comps: Components, rows: list[dict[str, Any]],
    searcher_runs: dict[str, str], wall: float, trials_path: Path,
) -> SearchResult:
    """Log the Pareto front, per-searcher results and summary metrics; the search's result."""
    best = best_row(rows, comps.objectives)
    front = feasible_front(rows, comps.objectives)
    if front:
        keys = ["trial_id", "arch", *comps.objectives.keys]
        tracker.log_text(
            parent, json.dumps([{k: r.get(k) for k in keys} for r in front], indent=1),
            "pareto_front.json",
        )
    failed = sum(r["status"] != "OK" for r in rows)
    summary: dict[str, float] = {
        "num_trials": len(rows), "num_failed": failed, "wall_time_s": wall,
    }
    members = finish_members(tracker, comps.searcher, comps.objectives, searcher_runs, rows)
    if members:
        summary["cache_hits"] = sum(m["cache_hits"] for m in members)
    if best is not None:
        summary[f"best_{comps.metric}"] = best[comps.metric]
        for key in ("test_acc", "test_acc_200ep"):
            if key in best:
                summary[f"best_{key}"] = best[key]
        tracker.set_tag(parent, "raynas.best_arch", best["arch"])
    tracker.log_metrics(parent, summary)
    return SearchResult(
        parent_run_id=parent,
        experiment_id=tracker.experiment_id,
        tracking_uri=uri,
        metric=comps.metric,
        mode=comps.mode,
        best_arch=None if best is None else best["arch"],
        best_metrics={} if best is None else {
            k: v for k, v in best.items() if isinstance(v, float)
        },
        trials_path=trials_path,
        num_trials=len(rows),
        num_failed=failed,
        wall_time_s=wall,
        rows=rows,
        pareto=front,
        objective_keys=list(comps.objectives.keys),
        searchers=members,
    )


def _check_trial_fits(cfg: ExperimentConfig, *, wait_s: float = 10.0) -> None:
    """Refuse a trial that can never be placed (Tune would leave it pending forever)."""
    need = {"CPU": cfg.budget.cpus_per_trial, "GPU": cfg.budget.gpus_per_trial}
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if not nodes:
        return
    largest = {k: max(n.get("Resources", {}).get(k, 0.0) for n in nodes) for k in need}
    for key, amount in need.items():
        if amount > largest[key]:
            raise ConfigError(
                f"config field 'budget.{key.lower()}s_per_trial' is {amount:g}, but no Ray node "
                f"has that many {key}s (largest: {largest[key]:g})"
            )
    if len(nodes) > 1:
        return  # a cluster may free or add resources; one machine will not
    deadline = time.monotonic() + wait_s
    while True:
        free = ray.available_resources()
        short = [k for k, amount in need.items() if amount > free.get(k, 0.0) + 1e-9]
        if not short:
            return
        if time.monotonic() > deadline:
            key = short[0]
            raise ConfigError(
                f"a trial needs {need[key]:g} {key} (budget.{key.lower()}s_per_trial) but only "
                f"{free.get(key, 0.0):g} stay free once the evaluator's actors took theirs "
                "(e.g. the supernet host's num_cpus): lower one of them"
            )
        time.sleep(0.5)


def stopped_early(searcher: Searcher, trials: int, budget: int) -> bool:
    """Whether Tune ended with budget left that the searcher(s) would still have used."""
    if trials >= budget:
        return False
    if isinstance(searcher, PortfolioSearch):
        return not all(m.exhausted for m in searcher.members.values())
    return not (isinstance(searcher, NASSearch) and searcher.exhausted)


def _describe(space: SearchSpace, config: Mapping[str, Any]) -> str:
    """Progress text of a trial: the member label (portfolios) and the architecture."""
    text = space.to_string(space.from_config(config))
    label = config.get(PortfolioSearch.MEMBER_KEY)
    return f"[{label}] {text}" if label else text


def _prepare_evaluator(
    cfg: ExperimentConfig, comps: Components, tracker: Tracker, parent: str, out_dir: Path,
    echo: Callable[[str], None], resume: ResumePlan | None = None,
) -> None:
    """Run the evaluator's setup (e.g. supernet training), logging progress and artifacts.

    A resumed search's setup continues from the checkpoint an earlier driver logged; steps
    that driver logged after its last checkpoint are trained again but not logged twice.
    """
    prep = time.monotonic()
    logged: dict[str, int] = {}  # metric -> last step already in the store (resume only)

    def log_setup(metrics: dict[str, float], step: int) -> None:
        if resume is not None:
            for key in metrics.keys() - logged.keys():
                try:
                    history = tracker.client.get_metric_history(parent, key)
                except Exception as exc:  # a store outage: log them (the tracker buffers)
                    logger.warning("cannot read metric %s of run %s: %s", key, parent,
                                   _first_line(exc))
                    history = []
                logged[key] = max((m.step for m in history), default=-1)
            metrics = {k: v for k, v in metrics.items() if step > logged[k]}
            if not metrics:
                return
        tracker.log_metrics(parent, metrics, step=step)
        if step % 100 == 0:
            shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            echo(f"raynas: {cfg.evaluator.name} setup step {step}: {shown}")

    restore = None if resume is None else resume.supernet_checkpoint
    comps.evaluator.setup(
        log_metrics=log_setup, checkpoint_dir=str(out_dir), search_id=parent,
        log_artifact=lambda path: tracker.log_file(parent, path),
        restore_from=None if restore is None else str(restore),
    )
    if comps.evaluator.artifacts():
        echo(f"raynas: {cfg.evaluator.name} evaluator ready in {time.monotonic() - prep:.1f}s")
    for path in comps.evaluator.artifacts():
        tracker.log_file(parent, path)


def _log_report(tracker: Tracker, parent: str, out_dir: Path) -> None:
    """Log the report (plots, JSON, trial table) as artifacts; a failure only warns."""
    try:
        from raynas.report.summary import log_report
    except ImportError:
        return
    try:
        log_report(tracker, parent, out_dir / "report")
    except Exception as exc:  # the search's results are recorded; the pictures are extra
        logger.warning("could not write the report of run %s: %s", parent, exc)
