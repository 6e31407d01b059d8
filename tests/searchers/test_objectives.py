from __future__ import annotations

import itertools

import numpy as np
import pytest

from searchers import create_searcher
from searchers.objectives import Constraint, Objectives, parse_constraint
from searchers.pareto import hypervolume, pareto_front, pareto_mask, trials_hypervolume
from searchers.testing import drive
from spaces import create_space


def test_parse_constraint() -> None:
    assert parse_constraint("latency_pixel3 <= 5") == Constraint("latency_pixel3", "<=", 5.0)
    assert parse_constraint("val_acc>=90.5") == Constraint("val_acc", ">=", 90.5)
    with pytest.raises(ValueError, match="must read 'metric <= number'"):
        parse_constraint("latency < 5")


def test_objectives_validation() -> None:
    with pytest.raises(ValueError, match="2 metrics but 1 modes"):
        Objectives.build(["a", "b"], ["max"])
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        Objectives.build("a", "up")
    with pytest.raises(ValueError, match="one weight per metric"):
        Objectives.build(["a", "b"], ["max", "min"], scalarization={"weights": [1.0]})
    with pytest.raises(ValueError, match="scalarization type"):
        Objectives.build("a", "max", scalarization={"type": "chebyshev"})


def test_read_and_scalarise() -> None:
    obj = Objectives.build(
        ["acc", "lat"], ["max", "min"], scalarization={"weights": [1.0, 2.0]},
        constraints=["lat <= 10"], penalty=50.0,
    )
    out = obj.read({"acc": 90.0, "lat": 5.0})
    assert out.signed == (90.0, -5.0) and out.feasible and out.scalar == 80.0
    bad = obj.read({"acc": 90.0, "lat": 12.0})
    assert bad.violation == pytest.approx(0.2) and bad.scalar == pytest.approx(66 - 10)
    assert obj.read({"acc": 90.0}) == "reported no 'lat'"
    assert "nan" in obj.read({"acc": float("nan"), "lat": 1.0})


def test_mnasnet_reward() -> None:
    obj = Objectives.build(
        ["acc", "lat"], ["max", "min"], scalarization={"type": "mnasnet", "target": 5.0}
    )
    assert obj.scalarize([80.0, 5.0]) == pytest.approx(80.0)
    assert obj.scalarize([80.0, 10.0]) == pytest.approx(80.0 * 2 ** -0.07)
    assert obj.scalarize([80.0, 2.5]) > 80.0


def _brute_front(points: np.ndarray) -> set[int]:
    return {
        i for i, p in enumerate(points)
        if not any(np.all(q <= p) and np.any(q < p) for q in points)
    }


def test_pareto_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    points = rng.integers(0, 10, size=(60, 2)).astype(float)
    assert set(np.flatnonzero(pareto_mask(points))) == _brute_front(points)
    rows = [{"acc": -a, "lat": b} for a, b in points]
    front = pareto_front(rows, ["acc", "lat"], ["max", "min"])
    assert len(front) == len(_brute_front(points))


def test_hypervolume_matches_grid_count() -> None:
    points = np.array([[1.0, 4.0], [2.0, 2.0], [4.0, 1.0], [3.0, 3.0]])
    # Area dominated inside the box [0, 5]^2, counted on unit cells.
    cells = sum(
        any(x >= p[0] and y >= p[1] for p in points)
        for x, y in itertools.product(range(5), range(5))
    )
    assert hypervolume(points, [5.0, 5.0]) == pytest.approx(cells)
    rows = [{"acc": -a, "lat": b} for a, b in points]
    assert trials_hypervolume(rows, ["acc", "lat"], ["max", "min"], [-5.0, 5.0]) == cells
    assert hypervolume(np.empty((0, 2)), [1.0, 1.0]) == 0.0


@pytest.mark.parametrize("name", ["random", "regularized_evolution"])
def test_single_objective_searchers_take_several_metrics(name: str) -> None:
    space = create_space("nb201")
    searcher = create_searcher(
        name, space, metric=["score", "cost"], mode=["max", "min"], seed=0,
        constraints=["cost <= 3"],
    )
    rng = np.random.default_rng(1)
    for i in range(30):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"score": rng.normal(), "cost": rng.uniform(0, 6)})
    best = searcher.best
    assert best is not None and set(best[1]) == {"score", "cost"}
    assert best[1]["cost"] <= 3.0
    searcher.add_evaluated_point(space.to_config(space.sample(rng)), {"score": 99, "cost": 1})
    assert searcher.best[1] == {"score": 99.0, "cost": 1.0}
    with pytest.raises(ValueError, match="mapping of metric name"):
        searcher.add_evaluated_point(space.to_config(space.sample(rng)), 3.0)


def test_state_keeps_objectives(tmp_path) -> None:
    space = create_space("nb201")
    kwargs = {"metric": ["a", "b"], "mode": ["max", "min"], "constraints": ["b <= 1"]}

    def score(arch):
        return float(space.encode(arch).sum())

    first = create_searcher("regularized_evolution", space, seed=4, population_size=3, **kwargs)
    drive(first, space, 5, score=score)
    first.save(str(tmp_path / "s.json"))
    fresh = create_searcher("regularized_evolution", space, population_size=3)
    fresh.restore(str(tmp_path / "s.json"))
    assert fresh.objectives == first.objectives
