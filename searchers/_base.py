"""NASSearch: Ray Tune's Searcher hooks implemented once for every architecture searcher."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from ray.tune.search import UNDEFINED_METRIC_MODE, UNDEFINED_SEARCH_SPACE, Searcher

from searchers.objectives import Objectives, Outcome, parse_constraints
from spaces import Arch, ParamSpace, SearchSpace, space_from_spec

logger = logging.getLogger(__name__)

STATE_FORMAT = "raynas.searcher/1"
# How hard suggest() looks for an architecture not seen before, before it falls back.
_PROPOSE_TRIES = 100
_SAMPLE_TRIES = 1000
# Spaces up to this many strings are enumerated to prove exhaustion.
_ENUMERABLE = 200_000



def as_space(space: Any) -> SearchSpace:
    """A ``SearchSpace`` as is, or the ``ParamSpace`` of a Tune param-space dict."""
    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, Mapping):
        return ParamSpace(space)
    raise TypeError(
        f"space must be a spaces.SearchSpace or a Tune param-space dict, got "
        f"{type(space).__name__}; build one with spaces.create_space(name)"
    )


def renamed_option(
    kwargs: dict[str, Any], old: str, new: str, value: Any, owner: str
) -> Any:
    """``kwargs[old]`` (removed from ``kwargs``, with a ``DeprecationWarning``) else ``value``."""
    if old not in kwargs:
        return value
    warnings.warn(
        f"{owner}: option {old!r} is deprecated; use {new!r}", DeprecationWarning, stacklevel=3
    )
    return kwargs.pop(old)


class NASSearch(Searcher):
    """Base of every raynas searcher: a ``ray.tune.search.Searcher`` over a ``SearchSpace``.

    The contract for subclasses (template method; Tune calls only the public hooks):

    * ``_propose() -> Arch | None``: the next architecture to try, or ``None`` to wait
      (e.g. until a generation has reported). It may return an architecture already seen;
      the base then asks again, and falls back to uniform sampling, so no architecture is
      suggested twice (by canonical form) until the space is exhausted.
    * ``_observe(arch, score)``: a finished trial. ``score`` is the metric turned into
      "higher is better" (negated for ``mode="min"``), or ``None`` for a failed trial
      (error, NaN/inf, metric missing). Never called twice for one trial. With several
      metrics or constraints, ``score`` is their scalarisation (``searchers.objectives``);
      multi-objective searchers override ``_observe_outcome(arch, outcome)`` instead and get
      the whole ``Outcome`` (every objective, signed, and the constraint violation).
    * ``_get_state() -> dict`` / ``_set_state(dict)``: the algorithm's own state as
      JSON-friendly data (lists, numbers, strings); the base saves the RNG, the seen set,
      pending trials and counters, so ``save`` -> fresh instance -> ``restore`` continues
      exactly the sequence an uninterrupted run would produce.

    * ``_space_ready()``: called once the space is known (at construction, or when Tune
      hands its ``param_space`` to ``set_search_properties``); build space-dependent parts
      (a controller sized by the space's decisions) here, not in ``__init__``.

    The base handles metric/mode (constructor or ``set_search_properties``), the space
    (constructor, or Tune's ``param_space``), late or duplicate completions (ignored), the
    ``max_trials`` budget and exhaustion (``Searcher.FINISHED``), and
    ``add_evaluated_point`` for results found elsewhere. Tune configs are
    ``space.to_config(arch)``: flat dicts of primitives for the bundled spaces, the nested
    structure of the param space for a ``ParamSpace``.

    Like Tune's own searchers (``OptunaSearch``), every searcher can be built bare
    (``S()``, as Tune's restore path does) or with only metric and mode, and takes its space
    from the ``param_space`` of ``tune.Tuner``. It pickles and deep-copies at any point;
    ``save`` / ``restore`` write and read JSON only, and a bare instance restored from a
    file gets the space, metric, mode and pending trials back.

    Args:
        space: the search space: a ``SearchSpace``, a Tune param-space dict, or ``None``
            to take it from Tune's ``param_space``.
        metric: the result key to optimise, or a list of keys; may be set later by Tune.
        mode: ``"max"`` or ``"min"`` (a list for several metrics); may be set later by Tune.
        seed: seed of the searcher's ``numpy.random.Generator``.
        max_trials: number of suggestions after which ``FINISHED`` is returned.
        constraints: ``["latency_pixel3 <= 5", ...]``; a trial missing a constrained key fails.
        scalarization: how single-objective searchers combine several metrics
            (``searchers.objectives.Objectives``); ignored by multi-objective searchers.
        penalty: weight of the constraint-violation hinge penalty in the scalar score.
    """

    # attributes rebuilt on demand, left out of pickles (pymoo closures, DEAP toolboxes)
    _transient: tuple[str, ...] = ()

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any] | None = None,
        *,
        metric: str | list[str] | None = None,
        mode: str | list[str] | None = None,
        seed: int | None = None,
        max_trials: int | None = None,
        constraints: list[str] | dict[str, float] | None = None,
        scalarization: dict[str, Any] | None = None,
        penalty: float = 100.0,
    ) -> None:
        if space is not None:
            space = as_space(space)
        if max_trials is not None and (not isinstance(max_trials, int) or max_trials < 1):
            raise ValueError(f"max_trials must be a positive integer or None, got {max_trials!r}")
        self._objective_options: dict[str, Any] = {
            "constraints": [str(c) for c in parse_constraints(constraints)],
            "scalarization": dict(scalarization or {}),
            "penalty": penalty,
        }
        self._objectives: Objectives | None = None
        metric, mode = _normalise(metric, mode)
        super().__init__(metric=None, mode=None)
        self._set_objectives(metric, mode)
        self.space: SearchSpace = None  # type: ignore[assignment]  # set by _attach
        self.seed = seed
        self.max_trials = max_trials
        self._rng = np.random.default_rng(seed)
        self._seen: dict[str, str] = {}  # canonical form -> arch string, in suggestion order
        self._pending: dict[str, str] = {}  # trial id -> arch string
        self._done: set[str] = set()
        self._suggested = 0
        self._completed = 0
        self._failed = 0
        self._best: tuple[float, str, list[float]] | None = None
        self._warned_invalid = False
        self._canonical_count: int | None = None
        if space is not None:
            self._attach(space)

    # ------------------------------------------------------------------ hooks
    def _propose(self) -> Arch | None:
        raise NotImplementedError

    def _observe(self, arch: Arch, score: float | None) -> None:
        raise NotImplementedError

    def _observe_outcome(self, arch: Arch, outcome: Outcome | None) -> None:
        self._observe(arch, None if outcome is None else outcome.scalar)

    def _get_state(self) -> dict[str, Any]:
        return {}

    def _set_state(self, state: dict[str, Any]) -> None:
        pass

    def _space_ready(self) -> None:
        pass

    # ---------------------------------------------------------------- Tune API
    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        """Take metric, mode and (without a space of its own) the space from Tune.

        Returns False when the searcher already has a space and Tune's ``param_space`` is
        not empty, so Tune raises its own error if that param space holds search domains.
        """
        if self._objectives is None and metric is not None and mode is not None:
            self._set_objectives(*_normalise(metric, mode))
        if not config:
            return True
        if self.space is not None:
            return False
        try:
            space = ParamSpace(config)
        except ValueError as exc:
            if "no search domain" in str(exc):
                return True  # constants only: suggest() says no space is defined
            raise
        self._attach(space)
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """Config of the next architecture, ``None`` to wait, or ``FINISHED``."""
        self._require_ready()
        if self.max_trials is not None and self._suggested >= self.max_trials:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's own sentinel
        arch = self._next_unseen()
        if arch is _WAIT:
            return None
        if arch is None:
            logger.info("%s: every architecture of %s was suggested", self, self.space.name)
            self._exhausted = True
            return Searcher.FINISHED  # type: ignore[return-value]
        text = self.space.to_string(arch)
        self._seen[self.space.canonical(arch)] = text
        self._pending[trial_id] = text
        self._suggested += 1
        return self.space.to_config(arch)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Record a finished trial; errors, NaN and missing metrics count as failures."""
        if self.space is None or self._objectives is None:
            logger.warning("%s: completion of trial %s before setup ignored", self, trial_id)
            return
        text = self._pending.pop(trial_id, None)
        if text is None:
            if trial_id in self._done:
                logger.debug("%s: trial %s completed twice; ignored", self, trial_id)
            else:
                logger.warning("%s: completion of unknown trial %s ignored", self, trial_id)
            return
        self._done.add(trial_id)
        self._record(self.space.from_string(text), result, error, trial_id)

    def add_evaluated_point(
        self,
        parameters: dict[str, Any],
        value: float | Mapping[str, Any],
        error: bool = False,
        pruned: bool = False,
        intermediate_values: list[float] | None = None,
    ) -> None:
        """Tell the searcher of an architecture evaluated elsewhere (warm start, portfolio)."""
        self._require_ready()
        assert self._objectives is not None
        if isinstance(value, Mapping):
            result = dict(value)
        elif self._objectives.multi or self._objectives.constraints:
            raise ValueError(
                f"{type(self).__name__} has objectives {self._objectives.keys}: pass value as "
                "a mapping of metric name to value"
            )
        else:
            result = {self._objectives.metrics[0]: value}
        arch = self.space.from_config(parameters)
        key = self.space.canonical(arch)
        if key not in self._seen:
            self._seen[key] = self.space.to_string(arch)
        self._record(arch, result, error, "external")

    def save(self, checkpoint_path: str) -> None:
        """Write the searcher's full state as JSON (never pickle) to ``checkpoint_path``."""
        write_json_atomic(checkpoint_path, self.get_state())

    def restore(self, checkpoint_path: str) -> None:
        """Load state written by ``save``; raises ``ValueError`` for a foreign or corrupt file."""
        self.set_state(read_json(checkpoint_path, "searcher state"))

    def get_state(self) -> dict[str, Any]:
        """The whole state as JSON-friendly data."""
        return {
            "format": STATE_FORMAT,
            "searcher": type(self).__name__,
            "space": None if self.space is None else self.space.name,
            "space_spec": None if self.space is None else _spec_or_none(self.space),
            "metric": self._metric,
            "mode": self._mode,
            "seed": self.seed,
            "max_trials": self.max_trials,
            "rng": self._rng.bit_generator.state,
            "seen": list(self._seen.values()),
            "pending": dict(self._pending),
            "done": sorted(self._done),
            "suggested": self._suggested,
            "completed": self._completed,
            "failed": self._failed,
            "best": list(self._best) if self._best else None,
            "objectives": self._objective_options,
            "algorithm": self._get_state() if self.space is not None else None,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Replace this searcher's state with one from ``get_state``."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a raynas searcher state (expected format {STATE_FORMAT!r})")
        if state.get("searcher") != type(self).__name__:
            raise ValueError(
                f"state was saved by {state.get('searcher')!r}, cannot restore into "
                f"{type(self).__name__}"
            )
        self._adopt_space(state)
        try:
            self._objective_options = dict(state["objectives"])
            self._objectives = None
            self._set_objectives(state["metric"], state["mode"])
            self.seed = state["seed"]
            self.max_trials = state["max_trials"]
            self._rng = np.random.default_rng()
            self._rng.bit_generator.state = state["rng"]
            self._seen = {}
            for text in state["seen"]:
                self._seen[self.space.canonical(self.space.from_string(text))] = text
            self._pending = dict(state["pending"])
            self._done = set(state["done"])
            self._suggested = int(state["suggested"])
            self._completed = int(state["completed"])
            self._failed = int(state["failed"])
            best = state["best"]
            self._best = (float(best[0]), str(best[1]), list(best[2])) if best else None
            if self.space is not None and state["algorithm"] is not None:
                self._set_state(state["algorithm"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"corrupt searcher state: {exc!r}") from None

    def _adopt_space(self, state: Mapping[str, Any]) -> None:
        """Check the state's space against ours, or build it when this searcher has none."""
        name, spec = state.get("space"), state.get("space_spec")
        if self.space is None:
            if name is None:
                return  # saved before it had a space
            if spec is None:
                raise ValueError(
                    f"state is for space {name!r} but records no spec to rebuild it: pass "
                    f"the space to {type(self).__name__}(space=...) before restoring"
                )
            try:
                self._attach(space_from_spec(spec))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"cannot rebuild the state's space {name!r}: {exc}") from None
            return
        if name != self.space.name:
            raise ValueError(
                f"state is for space {name!r}, this searcher searches {self.space.name!r}"
            )
        if spec is not None and _signature(spec) != _signature(_spec_or_none(self.space)):
            raise ValueError(
                f"state is for another {name!r} space than this searcher's: its decisions differ"
            )

    # ------------------------------------------------------------ conveniences
    @property
    def best(self) -> tuple[Arch, Any] | None:
        """Best architecture by scalar score and its metric value (a dict for several metrics)."""
        if self._best is None or self._objectives is None:
            return None
        _, text, values = self._best
        metrics = self._objectives.metrics
        value: Any = values[0] if len(metrics) == 1 else dict(zip(metrics, values))
        return self.space.from_string(text), value

    @property
    def objectives(self) -> Objectives:
        """The metrics, modes, constraints and scalarisation in force."""
        self._require_ready()
        assert self._objectives is not None
        return self._objectives

    @property
    def exhausted(self) -> bool:
        """Whether the space ran out of architectures not suggested before."""
        return getattr(self, "_exhausted", False)

    @property
    def completed_trial_ids(self) -> set[str]:
        """Tune trial ids whose completion this searcher recorded."""
        return set(self._done)

    @property
    def pending_trial_ids(self) -> list[str]:
        """Trials suggested and not yet completed, oldest first."""
        return list(self._pending)

    @property
    def num_suggested(self) -> int:
        """Suggestions handed out so far."""
        return self._suggested

    @property
    def num_failed(self) -> int:
        """Completed trials that failed (error, NaN/inf or missing metric)."""
        return self._failed

    def is_seen(self, arch: Arch) -> bool:
        """Whether an architecture computing the same function was already suggested."""
        return self.space.canonical(arch) in self._seen

    def __repr__(self) -> str:
        space = None if self.space is None else self.space.name
        return f"{type(self).__name__}(space={space!r}, seed={self.seed!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in self._transient:
            state[name] = None
        return state

    # ---------------------------------------------------------------- internal
    def _attach(self, space: SearchSpace) -> None:
        """Adopt ``space`` and let the subclass build what depends on it."""
        self.space = space
        self._space_ready()

    def _require_ready(self) -> None:
        if self.space is None:
            raise RuntimeError(UNDEFINED_SEARCH_SPACE.format(cls=type(self).__name__,
                                                             space="space"))
        if self._objectives is None:
            raise RuntimeError(UNDEFINED_METRIC_MODE.format(
                cls=type(self).__name__, metric=self._metric, mode=self._mode))

    def _set_objectives(self, metric: Any, mode: Any) -> None:
        if metric is None or mode is None:
            self._metric, self._mode = metric, mode
            return
        self._objectives = Objectives.build(metric, mode, **self._objective_options)
        self._metric, self._mode = metric, mode

    def _outcome(
        self, result: Mapping[str, Any] | None, error: bool, trial_id: str
    ) -> Outcome | None:
        assert self._objectives is not None
        outcome = "errored" if error else self._objectives.read(result)
        if isinstance(outcome, str):
            log = logger.debug if self._warned_invalid else logger.warning
            log("%s: trial %s %s; counted as failed", self, trial_id, outcome)
            self._warned_invalid = True
            return None
        return outcome

    def _record(
        self, arch: Arch, result: Mapping[str, Any] | None, error: bool, trial_id: str
    ) -> None:
        outcome = self._outcome(result, error, trial_id)
        if outcome is None:
            self._failed += 1
        else:
            self._completed += 1
            if self._best is None or outcome.scalar > self._best[0]:
                self._best = (outcome.scalar, self.space.to_string(arch), list(outcome.values))
        self._observe_outcome(arch, outcome)

    def _next_unseen(self) -> Any:
        for _ in range(_PROPOSE_TRIES):
            arch = self._propose()
            if arch is None:
                return _WAIT
            if self.space.canonical(arch) not in self._seen:
                return arch
        for _ in range(_SAMPLE_TRIES):
            arch = self.space.sample(self._rng)
            if self.space.canonical(arch) not in self._seen:
                return arch
        if self.space.size > _ENUMERABLE:
            raise RuntimeError(
                f"{self}: found no unseen architecture in {_PROPOSE_TRIES + _SAMPLE_TRIES} tries"
            )
        for arch in self.space.enumerate():
            if self.space.canonical(arch) not in self._seen:
                return arch
        return None


_WAIT = object()


def _spec_or_none(space: SearchSpace) -> dict[str, Any] | None:
    """The space's spec, or None when it cannot be written as JSON."""
    try:
        spec = space.spec()
        json.dumps(spec, allow_nan=False)
    except (TypeError, ValueError, NotImplementedError):
        return None
    return spec


def _signature(spec: Mapping[str, Any] | None) -> str | None:
    """What a searcher's state depends on in a space spec: its name and search domains."""
    if spec is None:
        return None
    try:
        decisions = space_from_spec(dict(spec)).describe().get("decisions")
    except (TypeError, ValueError):
        return json.dumps(spec, sort_keys=True, default=str)
    return json.dumps([spec.get("name"), decisions], sort_keys=True, default=str)


def write_json_atomic(path: str, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".raynas-state-")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def read_json(path: str, what: str) -> Any:
    """JSON of ``path``; ``ValueError`` naming ``what`` if unreadable or not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {what} {path!r}: {exc}") from None


def _normalise(metric: Any, mode: Any) -> tuple[Any, Any]:
    """Lists of one become plain strings, so Tune sees the usual single-objective form."""
    if isinstance(metric, (list, tuple)):
        metric = metric[0] if len(metric) == 1 else list(metric)
    if isinstance(mode, (list, tuple)):
        mode = mode[0] if len(mode) == 1 else list(mode)
    if isinstance(metric, list) and isinstance(mode, str):
        mode = [mode] * len(metric)
    return metric, mode
