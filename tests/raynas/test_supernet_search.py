"""A GreedyNAS search end to end: supernet host pool -> GreedyNASSearch -> Tune -> MLflow."""

from __future__ import annotations

import json

import pytest

from raynas.config import parse_config
from raynas.runner import STATE_FILE, run_search


@pytest.mark.ray
@pytest.mark.slow
def test_greedynas_search_seeds_from_the_supernet_pool(tmp_path, ray_session) -> None:
    cfg = parse_config({
        "name": "greedy",
        "space": {"name": "nb201", "channels": 4, "cells_per_stage": 1, "resolution": 8},
        "searcher": {"name": "greedynas", "population_size": 5, "sample_size": 2},
        "evaluator": {
            "name": "supernet", "method": "greedynas", "train_steps": 30, "num_threads": 1,
            "greedy_m": 4, "greedy_k": 2, "pool_size": 50,
        },
        "budget": {"trials": 10, "concurrency": 1, "cpus_per_trial": 0.5},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        "output_dir": str(tmp_path / "out"),
    })
    result = run_search(cfg, echo=lambda line: None)
    assert result.num_trials == 10 and result.num_failed == 0
    state = json.loads(next((tmp_path / "out").glob(f"greedy-*/{STATE_FILE}")).read_text())
    pool = [text for text, _ in state["algorithm"]["pool"]]
    seeded = min(5, len(pool))
    assert seeded >= 2
    assert [row["arch"] for row in result.rows[:seeded]] == pool[:seeded]
