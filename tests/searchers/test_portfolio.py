"""PortfolioSearch: budgets per member, one cache, sharing, crash isolation, state."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from searchers import create_searcher
from searchers.portfolio import PortfolioMember, PortfolioSearch
from searchers.random_search import RandomSearch
from searchers.testing import METRIC, MIXED_PARAM_SPACE, drive, is_finished, objective
from spaces import ParamSpace, create_space


@pytest.fixture(scope="module")
def space() -> Any:
    return create_space("nb201")


def _member(space: Any, label: str, name: str, trials: int, *, share: bool = True,
            seed: int = 0, **kw: Any) -> PortfolioMember:
    searcher = create_searcher(name, space, metric=METRIC, mode="max", seed=seed, **kw)
    return PortfolioMember(label, searcher, trials, share)


def _run(portfolio: PortfolioSearch, space: Any, concurrency: int = 1) -> list[Any]:
    """Drive until FINISHED; returns the evaluated architectures."""
    evaluated = drive(portfolio, space, 10_000, concurrency=concurrency)
    assert is_finished(portfolio.suggest("after"))
    return evaluated


def test_members_get_their_budgets_and_no_architecture_twice(space: Any) -> None:
    members = [_member(space, "evo", "regularized_evolution", 30, population_size=10),
               _member(space, "rnd", "random", 20, seed=1)]
    portfolio = PortfolioSearch(space, members, metric=METRIC, mode="max")
    evaluated = _run(portfolio, space, concurrency=2)
    assert len(evaluated) == 50
    canon = Counter(space.canonical(a) for a in evaluated)
    assert max(canon.values()) == 1
    assert {m["label"]: m["evaluations"] for m in portfolio.summary()} == {"evo": 30, "rnd": 20}
    # sharing: each member heard of the other's results
    assert portfolio.members["evo"].shared_in == 20
    assert portfolio.members["rnd"].shared_in == 30


def test_configs_carry_the_member_label(space: Any) -> None:
    portfolio = PortfolioSearch(space, [_member(space, "a", "random", 2),
                                        _member(space, "b", "random", 2, seed=5)],
                                metric=METRIC, mode="max")
    labels = [portfolio.suggest(f"t{i}")[PortfolioSearch.MEMBER_KEY] for i in range(4)]
    assert labels == ["a", "b", "a", "b"]


def test_cache_answers_repeats_without_evaluation(space: Any) -> None:
    # Two identical random searchers that are not told of each other propose the same
    # architectures: the second one's proposals are answered from the cache.
    members = [_member(space, "a", "random", 15, share=False, seed=7),
               _member(space, "b", "random", 15, share=False, seed=7)]
    portfolio = PortfolioSearch(space, members, metric=METRIC, mode="max")
    evaluated = _run(portfolio, space)
    assert max(Counter(space.canonical(a) for a in evaluated).values()) == 1
    assert portfolio.cache_hits >= 14
    # b learned the cached values: its best equals a's best
    score = objective(space)
    best_a = members[0].searcher.best
    best_b = members[1].searcher.best
    assert best_a is not None and best_b is not None
    assert score(best_b[0]) >= score(best_a[0]) - 1e-12 or best_b[1] == best_a[1]


def test_inflight_duplicate_is_parked_until_its_twin_completes(space: Any) -> None:
    members = [_member(space, "a", "random", 3, share=False, seed=3),
               _member(space, "b", "random", 3, share=False, seed=3)]
    portfolio = PortfolioSearch(space, members, metric=METRIC, mode="max")
    first = portfolio.suggest("t0")  # a's first proposal
    second = portfolio.suggest("t1")  # b proposes the same, parks it, proposes its second
    key = lambda c: space.canonical(space.from_config(c))  # noqa: E731
    assert key(first) != key(second)
    assert portfolio.members["b"].hits == 1
    assert members[1].searcher.num_suggested == 2
    portfolio.on_trial_complete("t0", {METRIC: 1.0})
    # b's parked proposal got the result of a's trial
    assert members[1].searcher.best is not None and members[1].searcher.best[1] == 1.0


class _Exploding(RandomSearch):
    """Raises on its fourth suggestion."""

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.num_suggested == 3:
            raise RuntimeError("boom in suggest")
        return super().suggest(trial_id)


def test_failing_member_leaves_the_others_running(space: Any) -> None:
    failures: list[tuple[str, str]] = []
    bad = PortfolioMember("bad", _Exploding(space, metric=METRIC, mode="max", seed=2), 10)
    good = _member(space, "good", "regularized_evolution", 12, population_size=4)
    portfolio = PortfolioSearch(space, [bad, good], metric=METRIC, mode="max",
                                on_failure=lambda label, msg: failures.append((label, msg)))
    evaluated = _run(portfolio, space, concurrency=2)
    assert len(evaluated) == 3 + 12
    assert failures == [("bad", "RuntimeError: boom in suggest")]
    summary = {m["label"]: m for m in portfolio.summary()}
    assert summary["bad"]["status"] == "failed" and summary["good"]["status"] == "finished"


def test_failed_trials_are_not_cached(space: Any) -> None:
    members = [_member(space, "a", "random", 2, share=False, seed=4),
               _member(space, "b", "random", 2, share=False, seed=4)]
    portfolio = PortfolioSearch(space, members, metric=METRIC, mode="max")
    c0 = portfolio.suggest("t0")
    portfolio.on_trial_complete("t0", {METRIC: float("nan")})
    c1 = portfolio.suggest("t1")  # b proposes the same architecture: it must be evaluated
    assert space.canonical(space.from_config(c0)) == space.canonical(space.from_config(c1))
    assert portfolio.cache_hits == 0


def test_save_restore_continues_the_same_sequence(space: Any, tmp_path: Any) -> None:
    def make() -> PortfolioSearch:
        return PortfolioSearch(space, [
            _member(space, "evo", "regularized_evolution", 20, population_size=5),
            _member(space, "rl", "reinforce", 20, seed=3),
        ], metric=METRIC, mode="max")

    full = make()
    reference = drive(full, space, 40, prefix="x")
    first = make()
    head = drive(first, space, 16, prefix="x")
    first.save(str(tmp_path / "p.json"))
    second = make()
    second.restore(str(tmp_path / "p.json"))
    tail = drive(second, space, 24, prefix="y")
    assert [space.to_string(a) for a in head + tail] == [space.to_string(a) for a in reference]


def test_restore_rejects_other_members(space: Any, tmp_path: Any) -> None:
    one = PortfolioSearch(space, [_member(space, "a", "random", 2)], metric=METRIC, mode="max")
    one.save(str(tmp_path / "p.json"))
    other = PortfolioSearch(space, [_member(space, "z", "random", 2)], metric=METRIC,
                            mode="max")
    with pytest.raises(ValueError, match="searchers"):
        other.restore(str(tmp_path / "p.json"))


def test_bad_members_are_rejected(space: Any) -> None:
    with pytest.raises(ValueError, match="unique"):
        PortfolioSearch(space, [_member(space, "a", "random", 1), _member(space, "a", "random", 1)])
    with pytest.raises(ValueError, match="trials"):
        PortfolioSearch(space, [_member(space, "a", "random", 0)])


# ------------------------------------------------------------ Tune-native, as its members
def _bare_members() -> list[PortfolioMember]:
    return [PortfolioMember("evo", create_searcher("regularized_evolution", seed=0,
                                                   population_size=5), 20),
            PortfolioMember("rnd", create_searcher("random", seed=1), 20)]


def _continue(portfolio: PortfolioSearch, space: Any, n: int = 12) -> list[Any]:
    f = objective(space)
    for trial_id in list(portfolio.pending_trial_ids):
        key = portfolio._trials[trial_id][2]
        portfolio.on_trial_complete(trial_id, {METRIC: f(space.from_string(key))})
    return [space.to_string(a) for a in drive(portfolio, space, n, prefix="k")]


def test_bare_portfolio_raises_tunes_errors() -> None:
    from ray.tune.search import UNDEFINED_METRIC_MODE, UNDEFINED_SEARCH_SPACE

    with pytest.raises(RuntimeError) as exc:
        PortfolioSearch().suggest("t0")
    assert str(exc.value) == UNDEFINED_SEARCH_SPACE.format(cls="PortfolioSearch", space="space")
    portfolio = PortfolioSearch(members=_bare_members())
    portfolio.set_search_properties(None, None, MIXED_PARAM_SPACE)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError) as exc:  # it used to answer FINISHED
        portfolio.suggest("t0")
    assert str(exc.value) == UNDEFINED_METRIC_MODE.format(cls="PortfolioSearch", metric=None,
                                                          mode=None)


def test_portfolio_takes_space_metric_and_mode_from_tune(space: Any) -> None:
    portfolio = PortfolioSearch(members=_bare_members())
    assert portfolio.set_search_properties(METRIC, "max", MIXED_PARAM_SPACE) is True
    param_space = ParamSpace(MIXED_PARAM_SPACE)
    assert portfolio.space == param_space
    assert all(m.searcher.space == param_space for m in portfolio.members.values())
    config = portfolio.suggest("t0")
    assert config["epochs"] == 3 and config[PortfolioSearch.MEMBER_KEY] == "evo"
    assert param_space.validate(param_space.from_config(config))
    with_space = PortfolioSearch(space, [_member(space, "a", "random", 2)])
    assert with_space.set_search_properties(METRIC, "max", MIXED_PARAM_SPACE) is False
    assert with_space.metric == METRIC


def test_portfolio_pickles_copies_and_restores_bare(tmp_path: Any) -> None:
    import copy
    import pickle

    import cloudpickle

    param_space = ParamSpace(MIXED_PARAM_SPACE)
    portfolio = PortfolioSearch(members=_bare_members(), metric=METRIC, mode="min")
    for clone in (pickle.loads(pickle.dumps(portfolio)), copy.deepcopy(portfolio)):
        assert clone.space is None and list(clone.members) == ["evo", "rnd"]
    portfolio.set_search_properties(None, None, MIXED_PARAM_SPACE)  # type: ignore[arg-type]
    drive(portfolio, param_space, 15, concurrency=3)
    portfolio.suggest("open-1")
    portfolio.suggest("open-2")
    path = str(tmp_path / "portfolio.json")
    portfolio.save(path)
    expected = _continue(copy.deepcopy(portfolio), param_space)
    for clone in (pickle.loads(pickle.dumps(portfolio)),
                  cloudpickle.loads(cloudpickle.dumps(portfolio)), copy.deepcopy(portfolio)):
        assert _continue(clone, param_space) == expected
    fresh = PortfolioSearch()
    fresh.restore(path)
    assert (fresh.metric, fresh.mode) == (METRIC, "min")
    assert fresh.space == param_space and list(fresh.members) == ["evo", "rnd"]
    assert fresh.pending_trial_ids == portfolio.pending_trial_ids
    assert _continue(fresh, param_space) == expected
