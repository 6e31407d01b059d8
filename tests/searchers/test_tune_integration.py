"""Searchers used directly in ``tune.Tuner`` by someone who never touches the raynas CLI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from ray import tune

from searchers import create_searcher, list_searchers
from searchers.testing import MIXED_PARAM_SPACE, drive, objective
from spaces import ParamSpace, create_space


@pytest.mark.ray
@pytest.mark.parametrize("name", ["random", "regularized_evolution"])
def test_searcher_in_plain_tuner(name, tmp_path, ray_session) -> None:
    space = create_space("nb201")
    score = objective(space)
    rea = name == "regularized_evolution"
    options = {"population_size": 4, "tournament_size": 2} if rea else {}
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


# ------------------------------------------------------------ any Tune param space
def _mixed_trainable(config: dict[str, Any]) -> None:
    assert config["epochs"] == 3 and config["model"]["norm"] == "batch"  # constants arrive
    bonus = {"conv": 1.0, "pool": 0.5, "skip": 0.0}[config["op"]]
    tune.report({"score": bonus - config["lr"] * config["depth"] + config["dropout"]})


@pytest.mark.ray
@pytest.mark.parametrize("name", list_searchers())
def test_every_searcher_takes_its_space_from_the_tuner(name, tmp_path, ray_session) -> None:
    searcher = create_searcher(name, seed=0)  # no space: Tune's param_space is the space
    grid = tune.Tuner(
        _mixed_trainable,
        param_space=MIXED_PARAM_SPACE,
        tune_config=tune.TuneConfig(search_alg=searcher, metric="score", mode="max",
                                    num_samples=10, max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    ).fit()
    assert len(grid) == 10 and not grid.errors
    space = ParamSpace(MIXED_PARAM_SPACE)
    archs = [space.from_config(r.config) for r in grid]
    assert len(set(archs)) == 10
    assert {type(r.config["lr"]) for r in grid} == {float}
    assert {type(r.config["width"]) for r in grid} == {int}


@pytest.mark.ray
def test_a_second_search_space_is_refused_by_tune(tmp_path, ray_session) -> None:
    searcher = create_searcher("random", create_space("nb201"), seed=0)
    tuner = tune.Tuner(
        _mixed_trainable,
        param_space=MIXED_PARAM_SPACE,
        tune_config=tune.TuneConfig(search_alg=searcher, metric="score", mode="max",
                                    num_samples=2),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    )
    with pytest.raises(ValueError, match="already instantiated with a search space"):
        tuner.fit()


@pytest.mark.ray
@pytest.mark.slow
# nsga2: a generational searcher with pending members and an optimiser state, the hardest
# case; the bare-instance restore of every searcher is in the conformance suite.
@pytest.mark.parametrize("name", ["nsga2"])
def test_tuner_restore_continues_an_interrupted_run(name, tmp_path) -> None:
    import json
    import subprocess
    import sys

    driver = Path(__file__).with_name("_tune_restore_driver.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, str(driver), str(tmp_path), name, "6", "16"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert (tmp_path / "stopped").is_file(), proc.stdout[-2000:] + proc.stderr[-3000:]
    experiment = tmp_path / "exp"
    state_files = list(experiment.glob("searcher-state-*"))
    assert state_files
    state = json.loads(state_files[0].read_text())  # JSON, never pickle
    assert state["format"] == "raynas.searcher/1" and state["space"] == "params"
    started = [d for d in experiment.iterdir() if d.is_dir()]
    assert 6 <= len(started) < 16

    proc = subprocess.run([sys.executable, str(driver), str(tmp_path), "--restore"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["configs"]) == 16 and out["errors"] == 0
    space = ParamSpace(MIXED_PARAM_SPACE)
    archs = [space.from_config(c) for c in out["configs"]]
    assert len(set(archs)) == 16  # nothing suggested twice across the interruption
