from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from searchers import create_searcher
from searchers.nsga2 import NSGA2Search, make_problem, objective_vector
from searchers.pareto import hypervolume, pareto_mask
from searchers.testing import METRIC, SearcherConformance, TinySpace, drive, objective
from spaces import Arch, SearchSpace, create_space

METRICS = [METRIC, "params"]
MODES = ["max", "min"]


class TestCategoricalOperatorsConformance(SearcherConformance):
    """The defaults run in test_conformance.py; uniform crossover + random mutation here."""

    @staticmethod
    def make_searcher(space: SearchSpace, **kwargs: Any) -> NSGA2Search:
        return NSGA2Search(space, population_size=8, crossover="uniform", mutation="random",
                           **kwargs)


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return create_space("nb201")


@pytest.fixture(scope="module")
def synthetic(space: SearchSpace) -> dict[str, Any]:
    """Two conflicting objectives on NB201 and their true front over all 15,625 strings."""
    score = objective(space)
    table = {a: (score(a), space.count_params(a) / 1e6) for a in space.enumerate()}
    F = np.array([[-s, p] for s, p in table.values()])
    ref = np.median(F, axis=0)  # the interesting corner: better than half the space in both
    return {"table": table, "ref": ref, "true_hv": hypervolume(F[pareto_mask(F)], ref)}


def two_objectives(table: dict[Arch, tuple[float, float]]) -> Any:
    return lambda arch: {METRIC: table[arch][0], "params": table[arch][1]}


def hv_fraction(synthetic: dict[str, Any], archs: list[Arch]) -> float:
    F = np.array([[-synthetic["table"][a][0], synthetic["table"][a][1]] for a in archs])
    return hypervolume(F, synthetic["ref"]) / float(synthetic["true_hv"])


def make(space: SearchSpace, **kw: Any) -> NSGA2Search:
    kw = {"metric": METRICS, "mode": MODES, "seed": 0, **kw}
    return NSGA2Search(space, **kw)


def test_helpers() -> None:
    assert objective_vector([90.0, -5.0]) == [-90.0, 5.0]
    problem = make_problem((4, 2), (True, True), n_obj=2, n_constr=1)
    assert (problem.n_var, problem.n_obj, problem.n_ieq_constr) == (2, 2, 1)
    assert list(problem.xl) == [0, 0] and list(problem.xu) == [4, 2]
    mixed = make_problem((4.0, 1.0), (True, False), n_obj=1, n_constr=0)
    assert list(mixed.xu) == [4.0, 1.0] and mixed.vtype is float


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("population_size", 1),
        ("population_size", True),
        ("n_offsprings", 0),
        ("crossover", "pmx"),
        ("mutation", "flip"),
        ("crossover_prob", 1.5),
        ("gene_prob", 0.0),
        ("eta", -1.0),
    ],
)
def test_bad_options_name_the_option(space: SearchSpace, option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        NSGA2Search(space, **{option: value})


def test_hypervolume_near_true_front_and_above_random(
    space: SearchSpace, synthetic: dict[str, Any]
) -> None:
    result = two_objectives(synthetic["table"])
    ours, rand = [], []
    for seed in range(3):
        archs = drive(make(space, seed=seed), space, 300, concurrency=4, result=result)
        ours.append(hv_fraction(synthetic, archs))
        baseline = create_searcher("random", space, metric=METRICS, mode=MODES, seed=seed)
        rand.append(hv_fraction(synthetic, drive(baseline, space, 300, result=result)))
    assert min(ours) > 0.9, ours
    assert np.mean(ours) > np.mean(rand) + 0.08, (ours, rand)


def test_constrained_front_is_feasible(space: SearchSpace, synthetic: dict[str, Any]) -> None:
    table = synthetic["table"]
    bound = 0.2  # about a third of the space is this small
    searcher = make(space, constraints=[f"params <= {bound}"], seed=1)
    archs = drive(searcher, space, 200, concurrency=2, result=two_objectives(table))
    front = searcher.pareto_front()
    assert front and all(values["params"] <= bound for _, values in front)
    feasible = [a for a in archs if table[a][1] <= bound]
    assert len(feasible) > len(archs) / 2  # constraint domination steers into the region
    F_all = np.array([[-s, p] for s, p in table.values() if p <= bound])
    ref = F_all.max(axis=0) + [0.1, 0.01]  # nadir of the feasible region
    found = np.array([[-table[a][0], table[a][1]] for a in feasible])
    assert hypervolume(found, ref) > 0.85 * hypervolume(F_all[pareto_mask(F_all)], ref)


def test_pareto_front_equals_brute_force(space: SearchSpace, synthetic: dict[str, Any]) -> None:
    table = synthetic["table"]
    searcher = make(space, population_size=10, seed=4)
    archs = drive(searcher, space, 80, concurrency=3, result=two_objectives(table))

    def dominated(a: Arch) -> bool:
        (sa, pa), others = table[a], (table[b] for b in archs if b != a)
        return any(s >= sa and p <= pa and (s > sa or p < pa) for s, p in others)

    brute = {a for a in archs if not dominated(a)}
    front = searcher.pareto_front()
    assert {a for a, _ in front} == brute
    assert all(values == {METRIC: table[a][0], "params": table[a][1]} for a, values in front)


def told_history(searcher: NSGA2Search) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = searcher.get_state()["algorithm"]["history"]
    return history


def test_generation_told_only_after_every_member_reported(space: SearchSpace) -> None:
    searcher = make(space, population_size=6, metric=METRIC, mode="max")
    score = objective(space)
    members = []
    for i in range(6):
        config = searcher.suggest(f"g{i}")
        assert isinstance(config, dict)
        members.append((f"g{i}", space.from_config(config)))
    assert searcher.suggest("early") is None  # generation 0 is out, nothing reported
    # complete out of order; the second member errors
    order = [5, 1, 3, 0, 4, 2]
    for n, i in enumerate(order):
        assert searcher.generation == 0
        trial_id, arch = members[i]
        searcher.on_trial_complete(trial_id, {METRIC: score(arch)}, error=i == 1)
        if n < len(order) - 1:
            assert searcher.suggest(f"wait{n}") is None
    assert searcher.generation == 1  # told on the last report, so a search ending here learns
    assert isinstance(searcher.suggest("next"), dict)  # generation 1 asked
    assert searcher.generation == 1
    told = told_history(searcher)[0]
    errored = [int(v) for v in space.encode(members[1][1])]
    assert len(told["X"]) == 5 and errored not in told["X"]
    assert searcher.num_failed == 1


def test_nan_member_never_enters_population(space: SearchSpace) -> None:
    searcher = make(space, population_size=4)
    configs = [searcher.suggest(f"n{i}") for i in range(4)]
    for i, config in enumerate(configs):
        assert isinstance(config, dict)
        value = float("nan") if i == 0 else float(i)
        searcher.on_trial_complete(f"n{i}", {METRIC: value, "params": 1.0})
    searcher.suggest("next")
    assert len(told_history(searcher)[0]["X"]) == 3
    assert sorted(v[METRIC] for _, v in searcher.population) == [1.0, 2.0, 3.0]


def test_evaluated_points_join_the_next_tell(space: SearchSpace) -> None:
    searcher = make(space, population_size=4)
    rng = np.random.default_rng(11)
    warm = [space.sample(rng) for _ in range(3)]
    for i, arch in enumerate(warm):
        searcher.add_evaluated_point(space.to_config(arch), {METRIC: 100.0 + i, "params": 0.0})
    drive(searcher, space, 4, result=lambda a: {METRIC: 0.0, "params": 1.0})  # generation 0
    searcher.suggest("next")
    told = told_history(searcher)[0]
    assert len(told["X"]) == 7
    for arch in warm:
        assert [int(v) for v in space.encode(arch)] in told["X"]
    # the warm points dominate the generation's members: all three survive
    assert set(warm) <= {a for a, _ in searcher.population}
    assert [a for a, _ in searcher.pareto_front()] == [warm[2]]


def test_member_already_evaluated_takes_known_result(space: SearchSpace) -> None:
    searcher = make(space, population_size=6)
    assert isinstance(searcher.suggest("a0"), dict)
    members = searcher.get_state()["algorithm"]["generation"]["members"]
    repeat = space.decode(members[3][0])
    searcher.add_evaluated_point(space.to_config(repeat), {METRIC: 1.0, "params": 1.0})
    handed = [searcher.suggest(f"a{i}") for i in range(1, 6)]
    assert [c is None for c in handed] == [False] * 4 + [True]  # 5 trials, not 6
    assert repeat not in [space.from_config(c) for c in handed if c is not None]


def test_save_restore_with_pending_trials_under_concurrency(
    space: SearchSpace, tmp_path: Any
) -> None:
    score = objective(space)
    result = lambda arch: {METRIC: score(arch), "params": float(space.encode(arch).sum())}  # noqa: E731

    def run(
        searcher: NSGA2Search, n: int, pending: list[tuple[str, Arch]], ids: list[int]
    ) -> list[Arch]:
        # four trials in flight; each completion takes the second-oldest first
        out: list[Arch] = []
        while len(out) < n:
            config = searcher.suggest(f"c{ids[0]}") if len(pending) < 4 else None
            if isinstance(config, dict):
                arch = space.from_config(config)
                out.append(arch)
                pending.append((f"c{ids[0]}", arch))
                ids[0] += 1
                continue
            trial_id, arch = pending.pop(1 if len(pending) > 1 else 0)
            searcher.on_trial_complete(trial_id, result(arch))
        return out

    pending_a: list[tuple[str, Arch]] = []
    ids_a = [0]
    first = make(space, population_size=8, seed=5)
    head = run(first, 30, pending_a, ids_a)
    path = str(tmp_path / "nsga2.json")
    first.save(path)
    assert pending_a  # saved with trials in flight
    pending_b, ids_b = list(pending_a), list(ids_a)
    tail_a = run(first, 30, pending_a, ids_a)
    second = make(space, population_size=8, seed=123)
    second.restore(path)
    tail_b = run(second, 30, pending_b, ids_b)
    assert tail_a == tail_b and len(set(head + tail_a)) == 60


def test_tiny_space_never_deadlocks() -> None:
    space = TinySpace()
    searcher = NSGA2Search(space, metric=METRIC, mode="max", population_size=20, seed=0)
    archs = drive(searcher, space, 20, concurrency=3)
    assert sorted(map(str, archs)) == sorted(map(str, space.enumerate()))


def test_single_objective_beats_random(space: SearchSpace) -> None:
    score = objective(space)
    ours, rand = [], []
    for seed in range(3):
        searcher = NSGA2Search(space, metric=METRIC, mode="max", seed=seed)
        ours.append(max(map(score, drive(searcher, space, 150, concurrency=2))))
        baseline = create_searcher("random", space, metric=METRIC, mode="max", seed=seed)
        rand.append(max(map(score, drive(baseline, space, 150))))
    assert np.mean(ours) > np.mean(rand)
    best = max(score(a) for a in space.enumerate())
    assert np.mean(ours) > best - 0.3


def test_global_rng_untouched(space: SearchSpace) -> None:
    numpy_state, python_state = np.random.get_state(), random.getstate()
    drive(make(space, population_size=6), space, 30, result=lambda a: {METRIC: 1.0, "params": 2.0})
    after = np.random.get_state()
    assert all(np.array_equal(x, y) for x, y in zip(numpy_state, after))
    assert random.getstate() == python_state
