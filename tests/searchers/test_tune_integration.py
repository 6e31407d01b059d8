"""Searchers used directly in ``tune.Tuner`` by someone who never touches the raynas CLI."""

from __future__ import annotations

import pytest
from ray import tune

from searchers import create_searcher
from searchers.testing import drive, objective
from spaces import create_space


@pytest.mark.ray
@pytest.mark.parametrize("name", ["random", "regularized_evolution"])
def test_searcher_in_plain_tuner(name, tmp_path, ray_session) -> None:
    space = create_space("nb201")
    score = objective(space)
    options = {"population_size": 4, "tournament_size": 2} if name == "regularized_evolution" else {}
    searcher = create_searcher(name, space, metric="score", mode="max", seed=11, **options)

    def trainable(config):
        tune.report({"score": score(space.from_config(config))})

    grid = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=12,
            max_concurrent_trials=1,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    ).fit()
    assert len(grid) == 12 and not grid.errors
    archs = [space.from_config(r.config) for r in grid]
    assert len({space.canonical(a) for a in archs}) == 12
    # With one trial at a time, Tune sees the same sequence as an in-process drive.
    reference = create_searcher(name, space, metric="score", mode="max", seed=11, **options)
    expected = drive(reference, space, 12, score=score)
    assert archs == expected
    best = grid.get_best_result(metric="score", mode="max")
    assert best.metrics["score"] == max(score(a) for a in expected)


@pytest.mark.ray
def test_metric_and_mode_from_tune_config(tmp_path, ray_session) -> None:
    space = create_space("nb201")
    score = objective(space)
    searcher = create_searcher("regularized_evolution", space, seed=2, population_size=3)

    def trainable(config):
        assert config["fixed"] == "kept"  # constants in param_space reach the trial
        tune.report({"score": -score(space.from_config(config))})

    grid = tune.Tuner(
        trainable,
        param_space={"fixed": "kept"},
        tune_config=tune.TuneConfig(
            search_alg=searcher, metric="score", mode="min", num_samples=6, reuse_actors=True
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    ).fit()
    assert len(grid) == 6 and not grid.errors
    assert searcher.metric == "score" and searcher.mode == "min"
