"""Several searchers multiplexed in one Ray Tune run, sharing one evaluation cache.

Why one Tune run and not one per searcher: the members then share one trial queue, one
``max_concurrent_trials`` and one set of reused trial actors, so a searcher that waits (an
NSGA-II generation not yet complete, a controller between updates) leaves its slot to the
others instead of idling a core; and the cache below sees every proposal before it costs
an evaluation. Tune sees a single searcher; trial configs carry the member's label under
``PortfolioSearch.MEMBER_KEY``.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ray.tune.search import UNDEFINED_METRIC_MODE, UNDEFINED_SEARCH_SPACE, Searcher

from searchers._base import as_space, read_json, write_json_atomic
from spaces import ParamSpace, SearchSpace, space_from_spec

logger = logging.getLogger(__name__)

STATE_FORMAT = "raynas.portfolio/1"
_NO_MEMBERS = "PortfolioSearch has no searchers: pass members=, or restore a saved portfolio"
# Bookkeeping keys of a Tune result that are not properties of the architecture.
_VOLATILE = {
    "config", "trial_id", "experiment_tag", "pid", "node_ip", "hostname", "date",
    "timestamp", "time_this_iter_s", "time_total_s", "time_since_restore",
    "iterations_since_restore", "training_iteration", "done", "checkpoint_dir_name",
    "should_checkpoint",
}


@dataclass
class PortfolioMember:
    """One searcher of a portfolio with its evaluation budget and sharing choice."""

    label: str
    searcher: Searcher
    trials: int
    share: bool = True
    evaluations: int = 0  # Tune trials started for this member
    running: int = 0
    hits: int = 0  # proposals answered from the cache, at no evaluation cost
    shared_in: int = 0  # results of other members told to this one
    status: str = "active"  # active | finished | failed
    error: str | None = None
    _counter: int = field(default=0, repr=False)

    @property
    def exhausted(self) -> bool:
        """No more evaluations will be started for this member."""
        return self.status != "active" or self.evaluations >= self.trials

    def summary(self) -> dict[str, Any]:
        """Counters as plain data (for logs and MLflow)."""
        return {
            "label": self.label, "trials": self.trials, "evaluations": self.evaluations,
            "running": self.running, "cache_hits": self.hits, "shared_in": self.shared_in,
            "status": self.status if self.status != "active" or not self.exhausted
            else "finished", "error": self.error,
        }


class PortfolioSearch(Searcher):
    """Round-robin over member searchers; results keyed by canonical architecture.

    * Each member gets ``trials`` evaluations; a proposal whose canonical form was already
      evaluated (by any member) is answered from the cache and costs nothing; one being
      evaluated right now is parked and answered when that trial completes.
    * Members with ``share=True`` are told (``add_evaluated_point``) of every result the
      others obtained, so they neither repeat it nor ignore it.
    * A member that raises is marked failed (``on_failure(label, message)`` is called) and
      the others go on; its running trials still finish and feed the cache.

    Tune-native like its members: ``PortfolioSearch()`` builds bare (Tune's restore path);
    the space may come from Tune's ``param_space`` (handed to members without one); the
    state names each member's class, budget and sharing, so ``restore`` on a bare instance
    rebuilds the whole portfolio. ``suggest`` before a space or metric is known raises
    Tune's ``UNDEFINED_SEARCH_SPACE`` / ``UNDEFINED_METRIC_MODE`` errors.

    Args:
        space: the search space every member searches (a Tune param-space dict works too);
            default: the first member's, else Tune's ``param_space``.
        members: the searchers, each with a label and an evaluation budget.
        metric, mode: Tune's metric and mode (the first objective).
        cache: answer repeated architectures from the cache.
        on_failure: called with (label, message) when a member raises.
        max_hits_per_suggest: cache answers in a row before a member is skipped for now.
    """

    MEMBER_KEY = "_searcher"

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any] | None = None,
        members: Sequence[PortfolioMember] = (),
        *,
        metric: str | None = None,
        mode: str | None = None,
        cache: bool = True,
        on_failure: Callable[[str, str], None] | None = None,
        max_hits_per_suggest: int = 1000,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self._check_members(members)
        if space is None:
            space = next((getattr(m.searcher, "space", None) for m in members
                          if getattr(m.searcher, "space", None) is not None), None)
        self.space: SearchSpace | None = None if space is None else as_space(space)
        self.members = {m.label: m for m in members}
        self.cache = cache
        self.on_failure = on_failure
        self.max_hits_per_suggest = max_hits_per_suggest
        self._order = [m.label for m in members]
        self._next = 0
        self._results: dict[str, dict[str, Any]] = {}  # canonical -> metrics
        self._configs: dict[str, dict[str, Any]] = {}  # canonical -> config
        self._inflight: dict[str, str] = {}  # canonical -> Tune trial id
        self._parked: dict[str, list[tuple[str, str]]] = {}  # canonical -> (label, sub id)
        self._trials: dict[str, tuple[str, str, str]] = {}  # trial id -> (label, sub id, key)
        self._completed: set[str] = set()

    @staticmethod
    def _check_members(members: Sequence[PortfolioMember]) -> None:
        labels = [m.label for m in members]
        if len(set(labels)) != len(labels):
            raise ValueError(f"portfolio labels must be unique, got {labels}")
        for m in members:
            if isinstance(m.trials, bool) or not isinstance(m.trials, int) or m.trials < 1:
                raise ValueError(f"member {m.label!r}: trials must be an integer >= 1")

    # ------------------------------------------------------------------ Tune hooks
    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        """Take metric, mode and (without a space) the space from Tune; forward to members.

        Returns False when the portfolio already has a space and ``config`` is not empty.
        """
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        taken: dict[str, Any] = {}
        answer = True
        if config and self.space is not None:
            answer = False
        elif config:
            try:
                self.space = ParamSpace(config)
                taken = config
            except ValueError as exc:
                if "no search domain" not in str(exc):
                    raise
        for m in self.members.values():
            has_space = getattr(m.searcher, "space", None) is not None
            m.searcher.set_search_properties(metric, mode, {} if has_space else taken, **spec)
        return answer

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next member's proposal (tagged with its label), ``None`` to wait, or FINISHED."""
        if self.space is None:
            raise RuntimeError(UNDEFINED_SEARCH_SPACE.format(cls=type(self).__name__,
                                                             space="space"))
        if self._metric is None or self._mode is None:
            raise RuntimeError(UNDEFINED_METRIC_MODE.format(
                cls=type(self).__name__, metric=self._metric, mode=self._mode))
        if not self.members:
            raise RuntimeError(_NO_MEMBERS)
        for _ in range(len(self._order)):
            member = self.members[self._order[self._next % len(self._order)]]
            self._next += 1
            if member.exhausted:
                continue
            config = self._ask(member, trial_id)
            if config is not None:
                return {**config, self.MEMBER_KEY: member.label}
        if all(m.exhausted for m in self.members.values()):
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's own sentinel
        return None

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Forward an intermediate result to the member that proposed the trial."""
        entry = self._trials.get(trial_id)
        if entry is None:
            return
        member = self.members[entry[0]]
        if member.status == "active":
            self._call(member, member.searcher.on_trial_result, entry[1], result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Route the result to its member, fill the cache, answer parked and sharing members."""
        entry = self._trials.pop(trial_id, None)
        if entry is None:
            if trial_id not in self._completed:
                logger.warning("portfolio: completion of unknown trial %s ignored", trial_id)
            return
        label, sub_id, key = entry
        self._completed.add(trial_id)
        member = self.members[label]
        member.running -= 1
        self._inflight.pop(key, None)
        metrics = self._clean(result) if not error else None
        if metrics is not None and self.cache:
            self._results[key] = metrics
        if member.status == "active":
            self._call(member, member.searcher.on_trial_complete, sub_id, result, error)
        parked = self._parked.pop(key, [])
        for other_label, other_id in parked:
            other = self.members[other_label]
            if other.status == "active":
                self._call(other, other.searcher.on_trial_complete, other_id,
                           None if metrics is None else dict(metrics), metrics is None)
        if metrics is None:
            return
        told = {label, *(lb for lb, _ in parked)}
        assert self.space is not None  # a trial completed, so suggest found a space
        config = self._configs.get(key) or self.space.to_config(self.space.from_string(key))
        for other in self.members.values():
            if other.label in told or not other.share or other.status != "active":
                continue
            if self._call(other, other.searcher.add_evaluated_point, dict(config),
                          dict(metrics)) is not _FAILED:
                other.shared_in += 1

    def add_evaluated_point(
        self,
        parameters: dict[str, Any],
        value: Any,
        error: bool = False,
        pruned: bool = False,
        intermediate_values: list[float] | None = None,
        *,
        label: str | None = None,
    ) -> None:
        """Tell the portfolio of a result found elsewhere (warm start, resume replay).

        With ``label`` the result counts as one of that member's evaluations (a trial it ran
        before a resume); without, every sharing member is told of it. Results fill the cache.
        """
        if self.space is None:
            raise RuntimeError(UNDEFINED_SEARCH_SPACE.format(cls=type(self).__name__,
                                                             space="space"))
        config = {k: v for k, v in parameters.items() if k != self.MEMBER_KEY}
        key = self.space.canonical(self.space.from_config(config))
        result: dict[str, Any] = (
            dict(value) if isinstance(value, Mapping) else {str(self._metric): value}
        )
        metrics = None if error else self._clean(result)
        if label is not None:
            if label not in self.members:
                raise ValueError(f"no portfolio searcher labelled {label!r}")
            owner = self.members[label]
            owner.evaluations += 1
            if owner.status == "active":
                self._call(owner, owner.searcher.add_evaluated_point, dict(config),
                           dict(result), metrics is None)
        if metrics is None:
            return
        if self.cache:
            self._results.setdefault(key, metrics)
            self._configs.setdefault(key, dict(config))
        for other in self.members.values():
            if other.label == label or other.status != "active":
                continue
            if label is not None and not other.share:
                continue
            if self._call(other, other.searcher.add_evaluated_point, dict(config),
                          dict(metrics)) is not _FAILED:
                other.shared_in += 1

    @property
    def pending_trial_ids(self) -> list[str]:
        """Tune trials started and not yet completed."""
        return list(self._trials)

    @property
    def completed_trial_ids(self) -> set[str]:
        """Tune trials whose completion the portfolio recorded."""
        return set(self._completed)

    def interrupt(self, trial_id: str) -> None:
        """Drop a trial that will never report (driver died); its evaluation is refunded."""
        entry = self._trials.get(trial_id)
        if entry is None:
            return
        self.on_trial_complete(trial_id, None, error=True)
        self.members[entry[0]].evaluations -= 1

    # ------------------------------------------------------------------ internals
    def _ask(self, member: PortfolioMember, trial_id: str) -> dict[str, Any] | None:
        """A config needing evaluation from ``member``, answering cache hits on the way."""
        for _ in range(self.max_hits_per_suggest):
            sub_id = f"{member.label}#{member._counter}"
            member._counter += 1
            config = self._call(member, member.searcher.suggest, sub_id)
            if config is _FAILED or config is None:
                return None
            if config == Searcher.FINISHED:
                member.status = "finished"
                return None
            config = {k: v for k, v in config.items() if k != self.MEMBER_KEY}
            assert self.space is not None  # checked by suggest
            try:
                key = self.space.canonical(self.space.from_config(config))
            except ValueError as exc:
                self._fail(member, exc)
                return None
            if self.cache and key in self._results:
                member.hits += 1
                self._call(member, member.searcher.on_trial_complete, sub_id,
                           dict(self._results[key]), False)
                if member.status != "active":
                    return None
                continue
            if self.cache and key in self._inflight:
                member.hits += 1
                self._parked.setdefault(key, []).append((member.label, sub_id))
                continue
            self._inflight[key] = trial_id
            self._configs.setdefault(key, dict(config))
            self._trials[trial_id] = (member.label, sub_id, key)
            member.evaluations += 1
            member.running += 1
            return config
        return None

    def _clean(self, result: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The result's finite numeric metrics, or None if the objective is missing/invalid."""
        if not result:
            return None
        out = {
            k: float(v) for k, v in result.items()
            if k not in _VOLATILE and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if self._metric is not None:
            value = out.get(self._metric)
            if value is None or not math.isfinite(value):
                return None
        return out

    def _call(self, member: PortfolioMember, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a member's hook; an exception fails the member, not the portfolio."""
        try:
            return fn(*args)
        except Exception as exc:  # a member's bug must not stop the other searchers
            self._fail(member, exc)
            return _FAILED

    def _fail(self, member: PortfolioMember, exc: BaseException) -> None:
        member.status = "failed"
        member.error = f"{type(exc).__name__}: {exc}"[:1000]
        logger.error("portfolio member %r failed: %s", member.label, member.error,
                     exc_info=exc)
        if self.on_failure is not None:
            try:
                self.on_failure(member.label, member.error)
            except Exception:  # reporting a failure must not fail the search
                logger.exception("portfolio: on_failure callback raised")

    # ------------------------------------------------------------------ state
    @property
    def cache_hits(self) -> int:
        """Proposals answered without an evaluation, over all members."""
        return sum(m.hits for m in self.members.values())

    def label_of(self, config: Mapping[str, Any]) -> str | None:
        """The member label a trial config carries."""
        return config.get(self.MEMBER_KEY)

    def summary(self) -> list[dict[str, Any]]:
        """Per-member counters."""
        return [self.members[label].summary() for label in self._order]

    def get_state(self) -> dict[str, Any]:
        """JSON-friendly state: members' own states, counters, cache and in-flight trials."""
        members = {}
        for label, m in self.members.items():
            getter = getattr(m.searcher, "get_state", None)
            cls = type(m.searcher)
            members[label] = {
                "evaluations": m.evaluations, "running": m.running, "hits": m.hits,
                "shared_in": m.shared_in, "status": m.status, "error": m.error,
                "counter": m._counter,
                "class": f"{cls.__module__}:{cls.__qualname__}",
                "trials": m.trials, "share": m.share,
                "state": getter() if callable(getter) else None,
            }
        spec = None
        if self.space is not None:
            try:
                spec = self.space.spec()
            except (TypeError, ValueError, NotImplementedError):
                spec = None
        return {
            "format": STATE_FORMAT,
            "space": None if self.space is None else self.space.name,
            "space_spec": spec,
            "metric": self._metric,
            "mode": self._mode,
            "order": list(self._order),
            "next": self._next,
            "members": members,
            "results": self._results,
            "configs": self._configs,
            "inflight": self._inflight,
            "parked": {k: [list(p) for p in v] for k, v in self._parked.items()},
            "trials": {k: list(v) for k, v in self._trials.items()},
            "completed": sorted(self._completed),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Replace the state with one from ``get_state`` (same labels, same space).

        A bare portfolio (no members) rebuilds its members from the classes, budgets and
        states recorded, and its space from the recorded spec.
        """
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a raynas portfolio state (expected {STATE_FORMAT!r})")
        if self.space is None and state.get("space_spec") is not None:
            try:
                self.space = space_from_spec(state["space_spec"])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"cannot rebuild the portfolio's space: {exc}") from None
        if not self.members:
            self._rebuild_members(state)
        if self.space is None or state.get("space") != self.space.name:
            raise ValueError(
                f"portfolio state is for space {state.get('space')!r}, not "
                f"{getattr(self.space, 'name', None)!r}"
            )
        if sorted(state.get("members", {})) != sorted(self.members):
            raise ValueError(
                f"portfolio state has searchers {sorted(state.get('members', {}))}, this "
                f"portfolio has {sorted(self.members)}"
            )
        try:
            for label, saved in state["members"].items():
                m = self.members[label]
                if saved["state"] is not None:
                    m.searcher.set_state(copy.deepcopy(saved["state"]))
                m.evaluations = int(saved["evaluations"])
                m.running = int(saved["running"])
                m.hits = int(saved["hits"])
                m.shared_in = int(saved["shared_in"])
                m.status = str(saved["status"])
                m.error = saved["error"]
                m._counter = int(saved["counter"])
            self._order = list(state["order"])
            self._next = int(state["next"])
            self._results = {k: dict(v) for k, v in state["results"].items()}
            self._configs = {k: dict(v) for k, v in state["configs"].items()}
            self._inflight = dict(state["inflight"])
            self._parked = {k: [(a, b) for a, b in v] for k, v in state["parked"].items()}
            self._trials = {k: (a, b, c) for k, (a, b, c) in state["trials"].items()}
            self._completed = set(state["completed"])
            self._metric = state.get("metric", self._metric) or self._metric
            self._mode = state.get("mode", self._mode) or self._mode
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"corrupt portfolio state: {exc!r}") from None

    def _rebuild_members(self, state: Mapping[str, Any]) -> None:
        """Bare members of the recorded classes; ``set_state`` then fills them in."""
        from importlib import import_module

        members = []
        for label in state.get("order", []):
            saved = state.get("members", {}).get(label)
            if not isinstance(saved, Mapping) or "class" not in saved:
                raise ValueError(f"portfolio state does not say which searcher {label!r} is")
            module, _, name = str(saved["class"]).partition(":")
            try:
                cls: Any = import_module(module)
                for part in name.split("."):
                    cls = getattr(cls, part)
                searcher = cls()
            except Exception as exc:  # a plug-in that is gone or cannot be built bare
                raise ValueError(
                    f"cannot rebuild portfolio searcher {label!r} ({saved['class']}): {exc}"
                ) from None
            members.append(PortfolioMember(label, searcher, int(saved["trials"]),
                                           bool(saved.get("share", True))))
        self._check_members(members)
        if not members:
            raise ValueError("portfolio state has no searchers")
        self.members = {m.label: m for m in members}
        self._order = [m.label for m in members]
    def save(self, checkpoint_path: str) -> None:
        """Write the state as JSON (never pickle) to ``checkpoint_path``, atomically."""
        write_json_atomic(checkpoint_path, self.get_state())

    def restore(self, checkpoint_path: str) -> None:
        """Load a state written by ``save``."""
        self.set_state(read_json(checkpoint_path, "portfolio state"))

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its search algorithm into the experiment folder; the failure
        # callback may hold live clients and is not part of the search state.
        state = self.__dict__.copy()
        state["on_failure"] = None
        return state

    def __repr__(self) -> str:
        return f"PortfolioSearch({', '.join(self._order)})"

    def __deepcopy__(self, memo: dict[int, Any]) -> PortfolioSearch:
        clone = copy.copy(self)
        memo[id(self)] = clone
        for key, value in self.__getstate__().items():
            setattr(clone, key, copy.deepcopy(value, memo))
        clone.on_failure = self.on_failure  # a callback is shared, not copied
        return clone


_FAILED = object()
