from __future__ import annotations

import random
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from searchers import create_searcher
from searchers.genetic import GeneticSearch, constraint_vector, seeded_global_random, select_dcd
from searchers.objectives import Constraint
from searchers.pareto import hypervolume, pareto_mask
from searchers.testing import METRIC, SearcherConformance, TinySpace, drive, objective
from spaces import Arch, SearchSpace, create_space


class TestNSGA2SelectionConformance(SearcherConformance):
    @staticmethod
    def make_searcher(space: SearchSpace, **kwargs: Any) -> GeneticSearch:
        return GeneticSearch(space, population_size=8, selection="nsga2", **kwargs)


class TestGenerationalConformance(SearcherConformance):
    @staticmethod
    def make_searcher(space: SearchSpace, **kwargs: Any) -> GeneticSearch:
        return GeneticSearch(
            space,
            population_size=8,
            survivors="generational",
            elitism=2,
            crossover="two_point",
            **kwargs,
        )


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return create_space("nb201")


def test_constraint_vector() -> None:
    constraints = [Constraint("lat", "<=", 10.0), Constraint("acc", ">=", 50.0)]
    assert constraint_vector(constraints, {"lat": 12.0, "acc": 60.0}) == [0.2, -0.2]


def test_seeded_global_random_restores_state_even_on_error() -> None:
    state = random.getstate()
    with seeded_global_random(7):
        a = random.random()
    with pytest.raises(RuntimeError), seeded_global_random(7):
        assert random.random() == a
        raise RuntimeError
    assert random.getstate() == state


class Ind(list):  # type: ignore[type-arg]
    fitness: Any


@pytest.mark.parametrize(("size", "k"), [(2, 5), (6, 6), (8, 8), (9, 20)])
def test_select_dcd_any_size(size: int, k: int) -> None:
    from deap import base

    fitness = type("F2", (base.Fitness,), {"weights": (1.0, 1.0)})
    pop = []
    for i in range(size):
        ind = Ind([i])
        ind.fitness = fitness((float(i), float(-i)))  # mutually non-dominated
        ind.fitness.crowding_dist = float(i)
        pop.append(ind)
    with seeded_global_random(0):
        chosen = select_dcd(pop, k)
    assert len(chosen) == k and all(c in pop for c in chosen)
    if size >= 4:  # tournaments on crowding: the least crowded one never wins
        assert pop[0] not in chosen


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("population_size", 1),
        ("tournament_size", 0),
        ("selection", "roulette"),
        ("crossover", "pmx"),
        ("crossover_prob", -0.1),
        ("mut_prob", 2.0),
        ("gene_prob", 0.0),
        ("survivors", "comma"),
        ("elitism", 20),
    ],
)
def test_bad_options_name_the_option(space: SearchSpace, option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        GeneticSearch(space, **{option: value})


def test_nsga2_selection_needs_plus_survivors(space: SearchSpace) -> None:
    with pytest.raises(ValueError, match="survivors='plus'"):
        GeneticSearch(space, selection="nsga2", survivors="generational")


@pytest.mark.parametrize("survivors", ["plus", "generational"])
def test_improves_over_random(space: SearchSpace, survivors: str) -> None:
    score = objective(space)
    ours, rand = [], []
    for seed in range(4):
        searcher = GeneticSearch(space, metric=METRIC, mode="max", seed=seed, survivors=survivors)
        ours.append(max(map(score, drive(searcher, space, 150, concurrency=3))))
        baseline = create_searcher("random", space, metric=METRIC, mode="max", seed=seed)
        rand.append(max(map(score, drive(baseline, space, 150))))
    assert np.mean(ours) > np.mean(rand) + 0.2, (ours, rand)


def test_elitism_keeps_best_in_generational_mode(space: SearchSpace) -> None:
    score = objective(space)
    searcher = GeneticSearch(
        space,
        metric=METRIC,
        mode="max",
        seed=2,
        population_size=6,
        survivors="generational",
        elitism=1,
    )
    archs = drive(searcher, space, 6 + 5 * 8)  # generation 0, then 8 of 5 children
    searcher.suggest("tell")  # the last generation is told when the next one starts
    values = [v[METRIC] for _, v in searcher.population]
    assert len(values) == 6
    assert max(values) == max(map(score, archs))


def test_nsga2_selection_yields_a_front(space: SearchSpace) -> None:
    score = objective(space)
    table = {a: (score(a), space.count_params(a) / 1e6) for a in space.enumerate()}
    F = np.array([[-s, p] for s, p in table.values()])
    ref = np.median(F, axis=0)
    true = hypervolume(F[pareto_mask(F)], ref)

    def result(arch: Arch) -> dict[str, float]:
        return {METRIC: table[arch][0], "params": table[arch][1]}

    ours, rand = [], []
    kw: dict[str, Any] = {"metric": [METRIC, "params"], "mode": ["max", "min"]}
    for seed in range(3):
        searcher = GeneticSearch(space, selection="nsga2", seed=seed, **kw)
        archs = drive(searcher, space, 300, concurrency=2, result=result)
        front = searcher.pareto_front()
        found = np.array([[-table[a][0], table[a][1]] for a in archs])
        assert {a for a, _ in front} == {a for a, m in zip(archs, pareto_mask(found)) if m}
        ours.append(hypervolume(found, ref) / true)
        baseline = create_searcher("random", space, seed=seed, **kw)
        found = np.array(
            [[-table[a][0], table[a][1]] for a in drive(baseline, space, 300, result=result)]
        )
        rand.append(hypervolume(found, ref) / true)
    assert min(ours) > 0.85 and np.mean(ours) > np.mean(rand) + 0.08, (ours, rand)


def test_global_random_unchanged_by_suggest_and_complete(space: SearchSpace) -> None:
    state, numpy_state = random.getstate(), np.random.get_state()
    f = objective(space)
    for selection in ("tournament", "nsga2"):
        searcher = GeneticSearch(
            space,
            metric=[METRIC, "cost"],
            mode=["max", "min"],
            selection=selection,
            population_size=6,
            seed=0,
        )
        drive(
            searcher,
            space,
            40,
            concurrency=2,
            result=lambda a: {METRIC: f(a), "cost": float(space.encode(a).sum())},
        )
        assert random.getstate() == state
    after = np.random.get_state()
    assert all(np.array_equal(x, y) for x, y in zip(numpy_state, after))


def test_out_of_order_generation_with_failure(space: SearchSpace) -> None:
    searcher = GeneticSearch(space, metric=METRIC, mode="max", population_size=4, seed=0)
    trials = [(f"t{i}", searcher.suggest(f"t{i}")) for i in range(4)]
    assert searcher.suggest("wait") is None
    for n, (trial_id, config) in enumerate(reversed(trials)):
        assert isinstance(config, dict)
        assert searcher.population == []
        searcher.on_trial_complete(trial_id, {METRIC: float(n)}, error=n == 0)
    # the last report completes the generation: selection has run before any further suggest
    assert sorted(v[METRIC] for _, v in searcher.population) == [1.0, 2.0, 3.0]
    assert isinstance(searcher.suggest("t4"), dict)


def test_tiny_space_never_deadlocks() -> None:
    space = TinySpace()
    searcher = GeneticSearch(space, metric=METRIC, mode="max", population_size=20, seed=0)
    archs = drive(searcher, space, 20, concurrency=2)
    assert sorted(map(str, archs)) == sorted(map(str, space.enumerate()))


def test_import_loads_neither_deap_nor_pymoo() -> None:
    code = (
        "import sys, searchers.genetic, searchers.nsga2; "
        "assert 'deap' not in sys.modules and 'pymoo' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
