"""Conformance suite every searcher passes, built-in or plug-in.

Subclass ``SearcherConformance`` in a test module and provide ``make_searcher``::

    from searchers.testing import SearcherConformance

    class TestMySearcher(SearcherConformance):
        @staticmethod
        def make_searcher(space, **kwargs):
            return MySearcher(space, **kwargs)

``kwargs`` carries ``metric``, ``mode``, ``seed`` and sometimes ``max_trials``; pass them on.
``space`` may be ``None`` (a bare searcher, as Tune's restore path builds it) or a Tune
param-space dict (``MIXED_PARAM_SPACE``): the suite checks that a searcher is Tune-native as
Ray's own searchers are: it takes its space, metric and mode from ``tune.Tuner``, raises
Tune's own errors when used before, pickles and deep-copies at any point, and a bare
instance restored from a saved file continues exactly.
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle
import numpy as np
from ray import tune
from ray.tune.search import (
    UNDEFINED_METRIC_MODE,
    UNDEFINED_SEARCH_SPACE,
    ConcurrencyLimiter,
    Searcher,
)

from searchers._base import NASSearch
from spaces import Arch, Decision, ParamSpace, SearchSpace, create_space

METRIC = "score"
# Every kind of Tune domain a searcher must handle, nested, with constants.
MIXED_PARAM_SPACE: dict[str, Any] = {
    "op": tune.choice(["conv", "pool", "skip"]),
    "depth": tune.randint(1, 6),
    "width": tune.qrandint(16, 128, 16),
    "lr": tune.loguniform(1e-4, 1e-1),
    "dropout": tune.uniform(0.0, 0.5),
    "model": {"act": tune.choice(["relu", "gelu"]), "norm": "batch"},
    "epochs": 3,
}


class TinySpace(SearchSpace):
    """Two decisions of three values (9 architectures), for exhaustion tests."""

    name = "tiny"

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """Two decisions ``a`` and ``b``."""
        return (Decision("a", (0, 1, 2)), Decision("b", ("x", "y", "z")))

    def validate(self, arch: Any) -> Arch:
        """Accept strings like ``"1y"``."""
        if not (isinstance(arch, str) and len(arch) == 2 and arch[0] in "012" and arch[1] in "xyz"):
            raise ValueError(f"not a tiny-space architecture: {arch!r}")
        return arch

    def encode(self, arch: Arch) -> np.ndarray:
        """Indices of the two characters."""
        text = str(self.validate(arch))
        return np.array([int(text[0]), "xyz".index(text[1])], dtype=np.int64)

    def decode(self, vector: Sequence[int] | np.ndarray) -> Arch:
        """String of two indices."""
        vec = self._check_vector(vector)
        return f"{vec[0]}{'xyz'[vec[1]]}"


def objective(space: SearchSpace) -> Callable[[Arch], float]:
    """A fixed synthetic score: a seeded linear function of the one-hot encoding.

    Continuous genes (a ``ParamSpace``) enter linearly, scaled to [0, 1].
    """
    if not space.gene_integral.all():
        rng = np.random.default_rng(123)
        upper = np.maximum(space.gene_upper, 1.0)
        w = rng.normal(size=len(upper))
        return lambda arch: float(np.dot(w, space.encode(arch) / upper))
    weights = [np.random.default_rng(123).normal(size=n) for n in space.dims]
    return lambda arch: float(sum(w[i] for w, i in zip(weights, space.encode(arch))))


def is_finished(suggestion: object) -> bool:
    """Whether a ``suggest`` result is Tune's ``Searcher.FINISHED``."""
    return suggestion == Searcher.FINISHED


def drive(
    searcher: Searcher,
    space: SearchSpace,
    n: int,
    *,
    concurrency: int = 1,
    score: Callable[[Arch], float] | None = None,
    result: Callable[[Arch], dict[str, float]] | None = None,
    prefix: str = "t",
) -> list[Arch]:
    """Run ``n`` suggestions with up to ``concurrency`` pending; complete oldest first.

    Each trial reports ``{METRIC: score(arch)}``, or ``result(arch)`` when given.
    """
    f = score or objective(space)
    report = result or (lambda arch: {METRIC: f(arch)})
    archs: list[Arch] = []
    pending: list[tuple[str, Arch]] = []
    count = 0
    while len(archs) < n:
        config = None
        if len(pending) < concurrency:
            trial_id = f"{prefix}{count}"
            config = searcher.suggest(trial_id)
            if is_finished(config):
                break
            if config is not None:
                count += 1
                arch = space.from_config(config)
                archs.append(arch)
                pending.append((trial_id, arch))
                continue
        if not pending:
            raise AssertionError("searcher waits although no trial is pending")
        trial_id, arch = pending.pop(0)
        searcher.on_trial_complete(trial_id, report(arch))
    for trial_id, arch in pending:
        searcher.on_trial_complete(trial_id, report(arch))
    return archs


class SearcherConformance:
    """Tests every ``NASSearch`` must pass; subclasses supply ``make_searcher``."""

    space_name = "nb201"

    @staticmethod
    def make_searcher(space: SearchSpace, **kwargs: Any) -> NASSearch:
        """Build the searcher under test."""
        raise NotImplementedError("subclass SearcherConformance and define make_searcher")

    def _make(self, space: SearchSpace | None = None, **kwargs: Any) -> NASSearch:
        kwargs = {"metric": METRIC, "mode": "max", "seed": 0, **kwargs}
        return self.make_searcher(space or create_space(self.space_name), **kwargs)

    def test_configs_are_primitive_and_valid(self) -> None:
        space = create_space(self.space_name)
        searcher = self._make(space)
        config = searcher.suggest("t0")
        assert isinstance(config, dict)
        assert all(isinstance(v, (int, float, str, bool)) for v in config.values())
        space.validate(space.from_config(config))

    def test_seeded_determinism(self) -> None:
        space = create_space(self.space_name)
        first = drive(self._make(space, seed=7), space, 40, concurrency=2)
        second = drive(self._make(space, seed=7), space, 40, concurrency=2)
        assert first == second
        other = drive(self._make(space, seed=8), space, 40, concurrency=2)
        assert other != first

    def test_no_repeats(self) -> None:
        space = create_space(self.space_name)
        archs = drive(self._make(space), space, 80, concurrency=3)
        canon = [space.canonical(a) for a in archs]
        assert len(set(canon)) == len(canon)

    def test_save_restore_continues_sequence(self, tmp_path: Any) -> None:
        space = create_space(self.space_name)
        uninterrupted = drive(self._make(space, seed=3), space, 50)
        searcher = self._make(space, seed=3)
        head = drive(searcher, space, 25)
        path = str(tmp_path / "state.json")
        searcher.save(path)
        fresh = self._make(space, seed=99)
        fresh.restore(path)
        tail = drive(fresh, space, 25, prefix="u")
        assert head + tail == uninterrupted

    def test_invalid_results_count_as_failed(self) -> None:
        space = create_space(self.space_name)
        searcher = self._make(space)
        bad = [
            {METRIC: float("nan")},
            {METRIC: float("inf")},
            {"other": 1.0},
            None,
            {METRIC: "high"},
        ]
        for i, result in enumerate(bad + [None]):
            assert isinstance(searcher.suggest(f"b{i}"), dict)
            searcher.on_trial_complete(f"b{i}", result, error=i == len(bad))
        assert searcher.num_failed == len(bad) + 1
        assert searcher.best is None
        drive(searcher, space, 10)
        best = searcher.best
        assert best is not None and math.isfinite(best[1])

    def test_duplicate_and_unknown_completion_ignored(self) -> None:
        space = create_space(self.space_name)
        searcher = self._make(space)
        searcher.suggest("a")
        searcher.on_trial_complete("a", {METRIC: 1.0})
        state = searcher.get_state()
        searcher.on_trial_complete("a", {METRIC: 5.0})
        searcher.on_trial_complete("never-suggested", {METRIC: 5.0})
        assert searcher.get_state() == state

    def test_finished_after_budget(self) -> None:
        space = create_space(self.space_name)
        searcher = self._make(space, max_trials=5)
        archs = drive(searcher, space, 10)
        assert len(archs) == 5
        assert is_finished(searcher.suggest("next"))

    def test_finished_when_space_exhausted(self) -> None:
        space = TinySpace()
        searcher = self._make(space)
        archs = drive(searcher, space, 20)
        assert sorted(map(str, archs)) == sorted(map(str, space.enumerate()))
        assert is_finished(searcher.suggest("next"))

    def test_metric_and_mode_from_tune(self) -> None:
        space = create_space(self.space_name)
        searcher = self.make_searcher(space, seed=0)
        try:
            searcher.suggest("t0")
        except RuntimeError as exc:
            assert "metric" in str(exc)
        else:
            raise AssertionError("suggest without a metric must raise RuntimeError")
        assert searcher.set_search_properties(METRIC, "min", {})
        assert isinstance(searcher.suggest("t0"), dict)
        searcher.on_trial_complete("t0", {METRIC: 2.0})
        assert searcher.best is not None and searcher.best[1] == 2.0

    def test_minimisation(self) -> None:
        space = create_space(self.space_name)
        score = objective(space)
        searcher = self._make(space, mode="min")
        archs = drive(searcher, space, 40, score=score)
        best = searcher.best
        assert best is not None
        assert best[1] == min(score(a) for a in archs)

    def test_under_concurrency_limiter(self) -> None:
        space = create_space(self.space_name)
        limited = ConcurrencyLimiter(self._make(space), max_concurrent=2)
        assert isinstance(limited.suggest("c0"), dict)
        assert isinstance(limited.suggest("c1"), dict)
        assert limited.suggest("c2") is None
        limited.on_trial_complete("c0", {METRIC: 1.0})
        assert isinstance(limited.suggest("c2"), dict)

    def test_accepts_several_metrics_and_constraints(self) -> None:
        space = create_space(self.space_name)
        f = objective(space)

        def result(arch: Arch) -> dict[str, float]:
            return {METRIC: f(arch), "cost": float(space.encode(arch).sum())}

        searcher = self._make(
            space, metric=[METRIC, "cost"], mode=["max", "min"], constraints=["cost <= 14"]
        )
        archs = drive(searcher, space, 40, concurrency=2, result=result)
        assert len(archs) == 40
        best = searcher.best
        assert best is not None and set(best[1]) == {METRIC, "cost"}

    def test_add_evaluated_point(self) -> None:
        space = create_space(self.space_name)
        searcher = self._make(space)
        arch = space.sample(np.random.default_rng(5))
        searcher.add_evaluated_point(space.to_config(arch), 3.0)
        assert searcher.is_seen(arch)
        assert searcher.best is not None and searcher.best[1] == 3.0


    # ----------------------------------------------------------- Tune-native contract
    def _bare(self, **kwargs: Any) -> NASSearch:
        return self.make_searcher(None, **kwargs)  # type: ignore[arg-type]

    def test_builds_bare_and_with_metric_and_mode_only(self) -> None:
        bare = self._bare()
        assert bare.space is None
        named = self._bare(metric=METRIC, mode="max")
        assert (named.metric, named.mode) == (METRIC, "max")
        with_dict = self.make_searcher(MIXED_PARAM_SPACE, metric=METRIC,
                                       mode="max", seed=0)
        assert with_dict.space == ParamSpace(MIXED_PARAM_SPACE)

    def test_takes_space_metric_and_mode_from_tune(self) -> None:
        searcher = self._bare(seed=0)
        assert searcher.set_search_properties(METRIC, "max", MIXED_PARAM_SPACE) is True
        config = searcher.suggest("t0")
        assert isinstance(config, dict)
        assert config["epochs"] == 3 and config["model"]["norm"] == "batch"
        space = ParamSpace(MIXED_PARAM_SPACE)
        assert space.validate(space.from_config(config))
        searcher.on_trial_complete("t0", {METRIC: 1.0})
        assert searcher.best is not None and searcher.best[1] == 1.0

    def test_refuses_tune_param_space_when_it_has_a_space(self) -> None:
        searcher = self.make_searcher(create_space(self.space_name), seed=0)
        assert searcher.set_search_properties(METRIC, "max", MIXED_PARAM_SPACE) is False
        assert searcher.set_search_properties(METRIC, "max", {}) is True
        assert searcher.metric == METRIC and isinstance(searcher.suggest("t0"), dict)

    def test_suggest_before_setup_raises_tunes_errors(self) -> None:
        searcher = self._bare(metric=METRIC, mode="max")
        expected = UNDEFINED_SEARCH_SPACE.format(cls=type(searcher).__name__, space="space")
        try:
            searcher.suggest("t0")
        except RuntimeError as exc:
            assert str(exc) == expected
        else:
            raise AssertionError("suggest without a space must raise RuntimeError")
        searcher = self._bare()
        searcher.set_search_properties(None, None, MIXED_PARAM_SPACE)
        expected = UNDEFINED_METRIC_MODE.format(cls=type(searcher).__name__, metric=None,
                                                mode=None)
        try:
            searcher.suggest("t0")
        except RuntimeError as exc:
            assert str(exc) == expected
        else:
            raise AssertionError("suggest without a metric must raise RuntimeError")

    def test_pickles_and_copies_at_any_point(self) -> None:
        space = ParamSpace(MIXED_PARAM_SPACE)
        stages = []
        searcher = self._bare(seed=4)
        stages.append(searcher)
        searcher = self._bare(seed=4)
        searcher.set_search_properties(METRIC, "max", MIXED_PARAM_SPACE)
        stages.append(searcher)
        mid = self.make_searcher(MIXED_PARAM_SPACE, metric=METRIC,  # type: ignore[arg-type]
                                 mode="max", seed=4)
        drive(mid, space, 15, concurrency=2)
        mid.suggest("open-a")
        mid.suggest("open-b")
        stages.append(mid)
        for original in stages:
            for clone in (
                pickle.loads(pickle.dumps(original)),
                cloudpickle.loads(cloudpickle.dumps(original)),
                copy.deepcopy(original),
            ):
                assert type(clone) is type(original)
                assert _continuation(clone, space) == _continuation(copy.deepcopy(original),
                                                                     space)

    def test_bare_instance_restores_everything(self, tmp_path: Any) -> None:
        for space in (ParamSpace(MIXED_PARAM_SPACE), create_space(self.space_name)):
            searcher = self.make_searcher(space, metric=METRIC, mode="min", seed=6)
            drive(searcher, space, 12, concurrency=3)
            open_configs = [searcher.suggest("p0"), searcher.suggest("p1")]
            assert all(isinstance(c, dict) for c in open_configs)
            path = str(tmp_path / f"{space.name}.json")
            searcher.save(path)
            fresh = self._bare()
            fresh.restore(path)
            assert (fresh.metric, fresh.mode) == (METRIC, "min")
            assert fresh.space.describe() == space.describe()
            assert fresh.pending_trial_ids == searcher.pending_trial_ids == ["p0", "p1"]
            assert _continuation(fresh, space) == _continuation(searcher, space)

    def test_searches_a_mixed_param_space(self) -> None:
        space = ParamSpace(MIXED_PARAM_SPACE)
        first = drive(self.make_searcher(MIXED_PARAM_SPACE, metric=METRIC,  # type: ignore[arg-type]
                                         mode="max", seed=2), space, 60, concurrency=2)
        assert len(first) == 60 and len(set(first)) == 60
        again = drive(self.make_searcher(MIXED_PARAM_SPACE, metric=METRIC,  # type: ignore[arg-type]
                                         mode="max", seed=2), space, 60, concurrency=2)
        assert again == first
        lrs = {json_value(a, "lr") for a in first}
        assert all(1e-4 <= v <= 1e-1 for v in lrs)


def json_value(arch: Arch, key: str) -> Any:
    """One decision's value in a ``ParamSpace`` architecture string."""
    import json

    return json.loads(str(arch))[key]


def _continuation(searcher: Any, space: SearchSpace, n: int = 10) -> list[Any]:
    """Complete the searcher's open trials, then drive ``n`` more; what it suggested."""
    if searcher.space is None:
        searcher.set_search_properties(METRIC, "max", MIXED_PARAM_SPACE)
    f = objective(space)
    for trial_id in list(searcher.pending_trial_ids):
        text = searcher._pending[trial_id]
        searcher.on_trial_complete(trial_id, {METRIC: f(space.from_string(text))})
    return drive(searcher, space, n, prefix="c")
