"""ZeroCostWarmStart: proxy screening first, then any searcher, seeded with the results."""

from __future__ import annotations

import copy
import logging
import pickle
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest

from searchers import create_searcher
from searchers.genetic import GeneticSearch
from searchers.nsga2 import NSGA2Search
from searchers.protocols import Scorer
from searchers.regularized_evolution import RegularizedEvolutionSearch
from searchers.reinforce import ReinforceSearch
from searchers.screening import MissingScorerError, mean_rank
from searchers.testing import METRIC, SearcherConformance, drive, objective
from searchers.warm_start import ZeroCostWarmStart
from spaces import create_space
from tests.searchers._proxy_scorers import ConvCount, HashScorer, Unpicklable

SPACE = create_space("nb201")


class TestWarmStartConformance(SearcherConformance):
    """The whole contract with the screening on: a scorer that works on any space."""

    @staticmethod
    def make_searcher(space: Any, **kwargs: Any) -> ZeroCostWarmStart:
        return ZeroCostWarmStart(space, searcher="regularized_evolution", scorer=HashScorer(),
                                 screen=40, top=5, searcher_options={"population_size": 8},
                                 **kwargs)


def _convs(arch: Any) -> float:
    return str(arch).count("conv") + 0.5 * str(arch).count("3x3")


def test_scorer_protocol_and_mean_rank() -> None:
    assert isinstance(ConvCount(), Scorer) and isinstance(HashScorer(), Scorer)
    assert not isinstance(lambda archs: archs, Scorer)
    scores = np.array([[1.0, 10.0], [3.0, np.nan], [2.0, 30.0], [2.0, 20.0]])
    # column ranks (ties averaged, NaN lowest): [0, 3, 1.5, 1.5] and [1, 0, 3, 2]
    assert mean_rank(scores).tolist() == [0.5, 1.5, 2.25, 1.75]


def test_the_best_by_proxy_come_first_and_seed_the_population() -> None:
    scorer = ConvCount()
    inner = RegularizedEvolutionSearch(population_size=6, tournament_size=2, seed=1)
    s = ZeroCostWarmStart(SPACE, searcher=inner, scorer=scorer, screen=300, top=4,
                          metric=METRIC, mode="max", seed=0)
    first = drive(s, SPACE, 4, concurrency=2, score=_convs)
    assert scorer.calls == 1 and scorer.scored == 300 == s.num_screened
    assert s.proxy_seconds == pytest.approx(0.3)
    ranking = s.ranking
    assert len({SPACE.canonical(a) for a, _ in ranking}) == 300  # distinct
    assert [str(a) for a in first] == [str(a) for a, _ in ranking[:4]]
    proxy = ConvCount()([a for a, _ in ranking])
    combined = mean_rank(proxy)
    assert combined[:4].min() >= combined[4:].max()  # the top 4 by mean rank of both proxies
    assert proxy[:4, 0].mean() > proxy[:, 0].mean() + 1.5
    # their results are the inner searcher's first population; it suggested nothing yet
    assert sorted(str(a) for a, _ in inner.population) == sorted(str(a) for a in first)
    assert inner.num_suggested == 0
    rest = drive(s, SPACE, 30, concurrency=3, score=_convs, prefix="u")
    assert inner.num_suggested == 30 and s.num_suggested == 34
    assert len({SPACE.canonical(a) for a in first + rest}) == 34  # nothing twice overall
    assert scorer.calls == 1  # screened once


def test_no_repeats_while_screened_trials_are_pending() -> None:
    s = ZeroCostWarmStart(SPACE, searcher="random", scorer=ConvCount(), screen=100, top=10,
                          metric=METRIC, mode="max", seed=2)
    configs = [s.suggest(f"t{i}") for i in range(40)]  # none completes
    assert len({SPACE.canonical(SPACE.from_config(c)) for c in configs}) == 40
    assert s.inner.num_suggested == 30


@pytest.mark.parametrize("name", ["random", "regularized_evolution", "greedynas", "reinforce",
                                  "nsga2", "genetic"])
def test_every_builtin_searcher_learns_from_the_screened_results(name: str) -> None:
    options = {"reinforce": {}, "random": {}}.get(name, {"population_size": 8})
    s = ZeroCostWarmStart(SPACE, searcher=name, searcher_options=options, scorer=ConvCount(),
                          screen=200, top=5, metric=METRIC, mode="max", seed=3)
    f = objective(SPACE)
    # the screened ones score best; the last of them best of all
    warm = drive(s, SPACE, 5, score=lambda a: 100.0 + f(a))
    inner = s.inner
    scores = {str(a): 100.0 + f(a) for a in warm}
    assert all(inner.is_seen(a) for a in warm)
    assert inner.best is not None and inner.best[1] == max(scores.values())
    warm_keys = {SPACE.canonical(a) for a in warm}
    if name in ("regularized_evolution", "greedynas"):  # the first members of its population
        assert {SPACE.canonical(a) for a, _ in inner.population} == warm_keys
    drive(s, SPACE, 8, score=f, prefix="u")  # a whole first generation of the GAs
    assert s.num_suggested == 13 and inner.num_suggested == 8
    if name in ("nsga2", "genetic"):  # they survive generation 0 as its best
        assert warm_keys <= {SPACE.canonical(a) for a, _ in inner.population}


def test_builtin_searchers_are_seeded_by_add_evaluated_point() -> None:
    rng = np.random.default_rng(0)
    good = [SPACE.sample(rng) for _ in range(4)]
    keys = {SPACE.canonical(a) for a in good}
    for cls in (RegularizedEvolutionSearch, GeneticSearch, NSGA2Search):
        s = cls(SPACE, population_size=6, metric=METRIC, mode="max", seed=0)
        for i, arch in enumerate(good):
            s.add_evaluated_point(SPACE.to_config(arch), 50.0 + i)
        if cls is RegularizedEvolutionSearch:
            assert {SPACE.canonical(a) for a, _ in s.population} == keys
        else:
            drive(s, SPACE, 6, score=lambda a: 0.0)  # generation 0; they join its survival
            assert keys <= {SPACE.canonical(a) for a, _ in s.population}, cls.__name__


def _log_prob(searcher: ReinforceSearch, arch: Any) -> float:
    probs = searcher.probabilities()
    return float(sum(np.log(p[i]) for p, i in zip(probs, SPACE.encode(arch))))


def test_reinforce_policy_moves_towards_the_seeded_architectures() -> None:
    s = ReinforceSearch(SPACE, metric=METRIC, mode="max", seed=0)
    rng = np.random.default_rng(1)
    target = SPACE.sample(rng)
    uniform = _log_prob(s, target)
    for i in range(6):  # worse and worse results, then the target, best of all
        s.add_evaluated_point(SPACE.to_config(SPACE.sample(rng)), float(10 - i))
    s.add_evaluated_point(SPACE.to_config(target), 100.0)
    assert _log_prob(s, target) > uniform + 0.5

    # through the warm start: the inner policy takes the same steps as from direct results
    ws = ZeroCostWarmStart(SPACE, searcher="reinforce", scorer=ConvCount(), screen=200, top=6,
                           metric=METRIC, mode="max", seed=0)
    f = objective(SPACE)
    warm = drive(ws, SPACE, 6, score=f)
    direct = ReinforceSearch(SPACE, metric=METRIC, mode="max", seed=0)
    for arch in warm:
        direct.add_evaluated_point(SPACE.to_config(arch), f(arch))
    moved = ws.inner.probabilities()
    assert isinstance(ws.inner, ReinforceSearch) and ws.inner.num_suggested == 0
    assert all(np.allclose(p, q) for p, q in zip(moved, direct.probabilities()))
    assert max(float(np.abs(p - 0.2).max()) for p in moved) > 0.05  # not uniform any more


def test_save_restore_continues_exactly_and_never_screens_again(tmp_path: Path) -> None:
    def make() -> ZeroCostWarmStart:
        return ZeroCostWarmStart(SPACE, searcher="regularized_evolution", scorer=ConvCount(),
                                 screen=100, top=6, searcher_options={"population_size": 5},
                                 metric=METRIC, mode="max", seed=3)

    f = objective(SPACE)

    def run(cut: int, path: str | None) -> list[str]:
        s = make()
        head = drive(s, SPACE, cut)
        opened = SPACE.from_config(s.suggest("open"))  # pending, saved with the state
        if path is not None:
            s.save(path)
            s = ZeroCostWarmStart()
            s.restore(path)
            assert s.scorer is None and s.inner.population_size == 5
            assert s.pending_trial_ids == ["open"] and s.num_screened == 100
        s.on_trial_complete("open", {METRIC: f(opened)})
        tail = drive(s, SPACE, 29 - cut, prefix="u")  # no scorer: never screens again
        return [str(a) for a in head + [opened] + tail]

    for cut in (3, 12):
        assert run(cut, str(tmp_path / f"state{cut}.json")) == run(cut, None), cut
    whole = [str(a) for a in drive(make(), SPACE, 30)]

    # saved before the first suggestion: the screening is still due and needs the scorer
    path = str(tmp_path / "early.json")
    make().save(path)
    bare = ZeroCostWarmStart()
    bare.restore(path)
    with pytest.raises(MissingScorerError, match="searcher.scorer = scorer"):
        bare.suggest("t0")
    bare.scorer = scorer = ConvCount()
    assert [str(a) for a in drive(bare, SPACE, 30)] == whole
    assert scorer.calls == 1


def test_a_scorer_that_does_not_pickle_is_left_out(caplog: pytest.LogCaptureFixture) -> None:
    s = ZeroCostWarmStart(SPACE, scorer=Unpicklable(), screen=50, top=3, metric=METRIC,
                          mode="max", seed=0)
    with caplog.at_level(logging.WARNING, logger="searchers.screening"):
        clone = pickle.loads(pickle.dumps(s))
    assert "does not pickle" in caplog.text and clone.scorer is None
    assert s.scorer is not None  # the original keeps it
    with pytest.raises(MissingScorerError):
        clone.suggest("t0")
    clone.scorer = Unpicklable()
    twin = copy.deepcopy(s)  # a copy shares the scorer
    assert twin.scorer is s.scorer
    assert drive(clone, SPACE, 5) == drive(twin, SPACE, 5) == drive(s, SPACE, 5)
    # once screened, the scorer is not needed any more
    again = cloudpickle.loads(cloudpickle.dumps(s))
    assert again.scorer is None
    assert len(drive(again, SPACE, 5)) == 5


def test_outside_results_reach_the_inner_searcher() -> None:
    s = ZeroCostWarmStart(SPACE, searcher="regularized_evolution", scorer=ConvCount(),
                          screen=50, top=2, metric=METRIC, mode="max", seed=0)
    arch = SPACE.sample(np.random.default_rng(9))
    s.add_evaluated_point(SPACE.to_config(arch), 7.0)
    assert s.is_seen(arch) and s.inner.is_seen(arch)
    assert [str(a) for a, _ in s.inner.population] == [str(arch)]


def test_combine_by_one_proxy_and_bad_options() -> None:
    s = ZeroCostWarmStart(SPACE, scorer=ConvCount(), screen=200, top=3, combine="conv3x3",
                          metric=METRIC, mode="max", seed=0)
    first = drive(s, SPACE, 3)
    assert min(str(a).count("3x3") for a in first) >= max(
        str(a).count("3x3") for a, _ in s.ranking[3:])
    for bad, match in (({"screen": 0}, "screen"), ({"top": -1}, "top"),
                       ({"top": 20, "screen": 10}, "top"), ({"combine": "nope"}, "combine"),
                       ({"searcher": 3}, "searcher"), ({"scorer": object()}, "scorer"),
                       ({"searcher_options": [1]}, "searcher_options")):
        with pytest.raises(ValueError, match=match):
            ZeroCostWarmStart(SPACE, **{"scorer": ConvCount(), **bad})
    with pytest.raises(ValueError, match="unknown searcher"):
        ZeroCostWarmStart(SPACE, searcher="nope")


def test_registered_and_takes_its_space_from_an_inner_instance() -> None:
    s = create_searcher("zero_cost_warm_start", None, searcher=RegularizedEvolutionSearch(
        SPACE, metric=METRIC, mode="max", seed=0), scorer=ConvCount(), screen=20, top=2)
    assert s.space is SPACE and s.metric == METRIC
    assert len(drive(s, SPACE, 4)) == 4
