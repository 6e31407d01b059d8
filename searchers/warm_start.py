"""A zero-cost warm start for any searcher: screen many architectures by proxies, try the best.

Abdelfattah, Mehrotra, Dudziak, Lane, "Zero-Cost Proxies for Lightweight NAS", ICLR 2021
("warmup": aging evolution seeded with the best of N architectures by a proxy);
Krishnakumar, White, Zela, Tu, Safari, Hutter, "NAS-Bench-Suite-Zero: Accelerating Research on
Zero Cost Proxies", NeurIPS 2022 Datasets and Benchmarks (proxies combined as an ensemble).
No architecture is trained while screening; the scorer's compute is ``proxy_seconds``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from searchers._base import NASSearch, as_space
from searchers.protocols import Scorer
from searchers.screening import MissingScorerError, ScoredSearch, combine_scores, sample_distinct
from spaces import Arch, SearchSpace

logger = logging.getLogger(__name__)

__all__ = ["ZeroCostWarmStart"]

_SCREEN_STREAM = 0x5C4EE7  # screening draws from its own stream: the inner searcher has `seed`


def _class_spec(searcher: NASSearch) -> str:
    return f"{type(searcher).__module__}:{type(searcher).__qualname__}"


def _int_option(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {str(value)[:40]!r}")
    return int(value)


class ZeroCostWarmStart(ScoredSearch):
    """Any searcher, warm-started by zero-cost proxies.

    At the first suggestion ``screen`` distinct architectures are sampled (seeded) and scored
    by ``scorer``, no training; several proxies are combined by mean rank (``combine="rank"``)
    or one proxy ranks alone (``combine="synflow"``). The best ``top`` are suggested first and
    their results are handed to the inner searcher with ``add_evaluated_point``, so they seed
    its population (regularized evolution, GreedyNAS, the genetic algorithms' next survival)
    or its policy (REINFORCE). Then the inner searcher suggests; it never repeats an
    architecture suggested here. Results told to this searcher with ``add_evaluated_point``
    reach the inner one too.

    Without a scorer nothing is screened and the inner searcher runs alone. The ranking is
    part of the saved state, so a restored search never screens again; a search saved before
    screening needs its scorer re-attached after a restore (``searcher.scorer = scorer``, see
    ``searchers.screening.ScoredSearch``). ``num_screened`` and ``proxy_seconds`` say what the
    screening cost, for benchmarks that charge it.

    Args:
        space: the search space, a Tune param-space dict, or None (Tune's ``param_space``).
        searcher: the inner searcher: a registered name (built with this searcher's seed,
            constraints and scalarisation, plus ``searcher_options``) or a ``NASSearch``
            instance (its space, if any, must be this searcher's).
        scorer: a ``searchers.protocols.Scorer`` (raynas's ``ProxyScorer``, a table lookup).
        screen: architectures sampled and scored.
        top: how many of the best are suggested first (0: none, nothing is screened).
        combine: ``"rank"`` (mean rank over the proxies) or the name of one proxy.
        searcher_options: options of the inner searcher when it is given by name.
        **kwargs: ``metric``, ``mode``, ``seed``, ``max_trials``, ... as for ``NASSearch``.

    Example:
        >>> from spaces import create_space
        >>> class Convs:  # a stand-in proxy: the number of convolutions
        ...     names, seconds = ["convs"], 0.0
        ...     def __call__(self, archs):
        ...         return np.array([[str(a).count("conv")] for a in archs], dtype=float)
        >>> s = ZeroCostWarmStart(create_space("nb201"), searcher="regularized_evolution",
        ...                       scorer=Convs(), screen=200, top=3, metric="acc", mode="max",
        ...                       seed=0)
        >>> first = s.space.from_config(s.suggest("t0"))  # the best of 200 by the proxy
        >>> str(first).count("conv") >= 5, s.num_screened
        (True, 200)
    """

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any] | None = None,
        *,
        searcher: str | NASSearch = "regularized_evolution",
        scorer: Scorer | None = None,
        screen: int = 1000,
        top: int = 10,
        combine: str = "rank",
        searcher_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.screen = _int_option("screen", screen, 1)
        self.top = _int_option("top", top, 0)
        if self.top > self.screen:
            raise ValueError(f"top must not exceed screen ({self.screen}), got {self.top}")
        if not isinstance(combine, str) or not combine:
            raise ValueError(f"combine must be 'rank' or a proxy name, got {combine!r}")
        self.combine = combine
        if searcher_options is not None and not isinstance(searcher_options, Mapping):
            raise ValueError(f"searcher_options must be a mapping, got {searcher_options!r}")
        self.searcher_options = dict(searcher_options or {})
        self.inner = self._build_inner(searcher, kwargs)
        if space is None:
            space = self.inner.space
        elif self.inner.space is not None and (
                as_space(space).describe() != self.inner.space.describe()):
            raise ValueError("searcher: the inner searcher searches another space than this one")
        self._ranking: list[tuple[str, float]] | None = None  # screened, best first
        self._cursor = 0  # position in the ranking
        self._given = 0  # screened architectures suggested
        self._warm: dict[str, str] = {}  # pending screened trial id -> arch string
        self._uses_scorer = scorer is not None
        super().__init__(space, scorer=scorer, **kwargs)
        if combine != "rank" and self.scorer is not None:
            combine_scores(np.zeros((0, len(self.scorer.names))), self.scorer.names, combine)
        seed = kwargs.get("seed")
        if seed is not None:
            self._rng = np.random.default_rng([_SCREEN_STREAM, abs(int(seed))])
        if self._objectives is None and self.inner._objectives is not None:
            self._set_objectives(self.inner.metric, self.inner.mode)
        elif self._objectives is not None:
            self.inner.set_search_properties(self._metric, self._mode, {})

    def _build_inner(self, searcher: Any, kwargs: Mapping[str, Any]) -> NASSearch:
        if isinstance(searcher, NASSearch):
            return searcher
        if not isinstance(searcher, str):
            raise ValueError(f"searcher must be a registered name or a NASSearch, got "
                             f"{type(searcher).__name__}")
        from searchers._registry import create_searcher

        shared = {k: kwargs[k] for k in ("seed", "constraints", "scalarization", "penalty")
                  if k in kwargs}
        if searcher.lower().replace("-", "_") in ("zero_cost_warm_start",):
            raise ValueError("searcher: a warm start cannot wrap another warm start")
        return create_searcher(searcher, None, **{**shared, **self.searcher_options})

    # ---------------------------------------------------------------- wiring
    @property
    def scorer(self) -> Scorer | None:
        """The zero-cost scorer, or None (see ``ScoredSearch``)."""
        return self._scorer

    @scorer.setter
    def scorer(self, scorer: Scorer | None) -> None:
        ScoredSearch.scorer.fset(self, scorer)  # type: ignore[attr-defined]
        if scorer is not None:
            self._uses_scorer = True

    def _space_ready(self) -> None:
        if self.inner.space is None:
            self.inner._attach(self.space)

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        """Take metric, mode and space from Tune, and pass them to the inner searcher."""
        answer = super().set_search_properties(metric, mode, config, **spec)
        if self._objectives is not None:
            self.inner.set_search_properties(self._metric, self._mode, {})
        return answer

    @property
    def num_screened(self) -> int:
        """Architectures scored by the proxies in the screening (0 before it)."""
        return 0 if self._ranking is None else len(self._ranking)

    @property
    def ranking(self) -> list[tuple[Arch, float]]:
        """The screened architectures with their combined proxy value, best first."""
        return [(self.space.from_string(t), v) for t, v in self._ranking or []]

    # ---------------------------------------------------------------- Tune API
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """A screened architecture while any of the best ``top`` is left, then the inner's."""
        self._require_ready()
        if self.max_trials is not None and self._suggested >= self.max_trials:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's own sentinel
        arch = self._next_screened()
        if arch is not None:
            text = self.space.to_string(arch)
            key = self.space.canonical(arch)
            self._seen[key] = text
            self.inner._seen[key] = text  # the inner searcher must not suggest it again
            self._pending[trial_id] = text
            self._warm[trial_id] = text
            self._suggested += 1
            return self.space.to_config(arch)
        config: Any = self.inner.suggest(trial_id)
        if config is None:
            return None
        if config == Searcher.FINISHED:
            self._exhausted = self.inner.exhausted
            return config  # type: ignore[no-any-return]
        arch = self.space.from_config(config)
        text = self.space.to_string(arch)
        self._seen[self.space.canonical(arch)] = text
        self._pending[trial_id] = text
        self._suggested += 1
        return config  # type: ignore[no-any-return]

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Record the trial and tell the inner searcher (a screened one as an outside result)."""
        known = trial_id in self._pending
        super().on_trial_complete(trial_id, result, error)
        if not known:
            return
        text = self._warm.pop(trial_id, None)
        if text is None:
            self.inner.on_trial_complete(trial_id, result, error)
            return
        config = self.space.to_config(self.space.from_string(text))
        self.inner.add_evaluated_point(config, dict(result or {}), error=error)

    def add_evaluated_point(
        self,
        parameters: dict[str, Any],
        value: float | Mapping[str, Any],
        error: bool = False,
        pruned: bool = False,
        intermediate_values: list[float] | None = None,
    ) -> None:
        """Record a result found elsewhere, and tell the inner searcher of it."""
        super().add_evaluated_point(parameters, value, error, pruned, intermediate_values)
        self.inner.add_evaluated_point(parameters, value, error, pruned, intermediate_values)

    def _observe(self, arch: Arch, score: float | None) -> None:
        pass  # the inner searcher learns; the base keeps the counters and the best

    # ---------------------------------------------------------------- screening
    def _next_screened(self) -> Arch | None:
        if self._given >= self.top:
            return None
        if self._ranking is None:
            if self._scorer is None:
                if self._uses_scorer:
                    raise MissingScorerError(
                        f"{type(self).__name__}: screening is due but its scorer was left out "
                        f"of a pickle or a saved state; re-attach one computing "
                        f"{self._proxy_names}: searcher.scorer = scorer")
                return None
            self._screen()
        assert self._ranking is not None
        while self._cursor < len(self._ranking):
            text = self._ranking[self._cursor][0]
            self._cursor += 1
            arch = self.space.from_string(text)
            if not self.is_seen(arch):
                self._given += 1
                return arch
        return None

    def _screen(self) -> None:
        archs = sample_distinct(self.space, self.screen, self._rng, skip=self.is_seen)
        scores = self._proxy_scores(archs)
        assert self._proxy_names is not None
        value = combine_scores(scores, self._proxy_names, self.combine)
        order = np.argsort(-value, kind="stable")
        self._ranking = [(self.space.to_string(archs[i]), float(value[i])) for i in order]
        logger.info("%s: screened %d architectures by %s in %.1f s of proxy compute", self,
                    len(archs), ", ".join(self._proxy_names), self.proxy_seconds)

    # ---------------------------------------------------------------- state
    def _get_state(self) -> dict[str, Any]:
        return {
            "inner_class": _class_spec(self.inner),
            "inner": self.inner.get_state(),
            "screen": self.screen,
            "top": self.top,
            "combine": self.combine,
            "searcher_options": self.searcher_options,
            "screened": None if self._ranking is None else [[t, v] for t, v in self._ranking],
            "cursor": self._cursor,
            "given": self._given,
            "warm": dict(self._warm),
            "uses_scorer": self._uses_scorer,
            **self._scorer_state(),
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        from searchers._registry import get_searcher_class

        if state["inner_class"] != _class_spec(self.inner):
            self.inner = get_searcher_class(state["inner_class"])()
        if self.inner.space is None:
            self.inner._attach(self.space)
        self.inner.set_state(state["inner"])
        self.screen = _int_option("screen", state["screen"], 1)
        self.top = _int_option("top", state["top"], 0)
        self.combine = str(state["combine"])
        self.searcher_options = dict(state["searcher_options"])
        ranking = state["screened"]
        self._ranking = None if ranking is None else [(str(t), float(v)) for t, v in ranking]
        self._cursor = int(state["cursor"])
        self._given = int(state["given"])
        self._warm = {str(k): str(v) for k, v in state["warm"].items()}
        self._uses_scorer = bool(state["uses_scorer"]) or self._scorer is not None
        self._set_scorer_state(state)
