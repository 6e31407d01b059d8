"""Supernet searches end to end: GreedyNAS pool -> GreedyNASSearch -> Tune -> MLflow, and more."""

from __future__ import annotations

import json

import pytest

from raynas.run.config import parse_config
from raynas.run.runner import STATE_FILE, run_search


@pytest.mark.ray
@pytest.mark.slow
def test_greedynas_search_seeds_from_the_supernet_pool(tmp_path, ray_session) -> None:
    cfg = parse_config({
        "name": "greedy",
        "space": {"name": "nb201", "channels": 4, "cells_per_stage": 1, "resolution": 8},
        "searcher": {"name": "greedynas", "population_size": 5, "tournament_size": 2},
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


@pytest.mark.ray
@pytest.mark.slow
def test_search_survives_a_killed_supernet_host(tmp_path, ray_session) -> None:
    """The host is killed mid-search: it restarts from its checkpoint, trials go on."""
    import ray

    from raynas.supernet.host import get_host

    name = "raynas-test-killed-host"
    cfg = parse_config({
        "name": "killhost",
        "space": {"name": "nb201", "channels": 4, "cells_per_stage": 1, "resolution": 8},
        "searcher": {"name": "regularized_evolution", "population_size": 4, "tournament_size": 2},
        "evaluator": {"name": "supernet", "train_steps": 20, "num_threads": 1,
                      "host_name": name},
        "budget": {"trials": 10, "concurrency": 2, "cpus_per_trial": 0.5},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        "output_dir": str(tmp_path / "out"),
    })
    seen: list[str] = []
    pids: dict[str, int] = {}

    def echo(line: str) -> None:
        seen.append(line)
        done = sum(x.startswith("[") for x in seen)
        if line.startswith("[") and done == 3:
            handle = get_host(name)
            pids["before"] = ray.get(handle.ready.remote())["pid"]
            ray.kill(handle, no_restart=False)
        if line.startswith("[") and done == 10:
            stats = ray.get(get_host(name).stats.remote())
            pids["after"] = stats["pid"]
            pids["restored"] = int(stats["restored"])

    result = run_search(cfg, echo=echo)
    assert result.num_trials == 10 and result.num_failed == 0
    assert pids["after"] != pids["before"] and pids["restored"] == 1


@pytest.mark.ray
def test_trial_that_cannot_fit_beside_the_host_is_refused(tmp_path, ray_session) -> None:
    from raynas.run.config import ConfigError

    cfg = parse_config({
        "name": "nofit",
        "space": {"name": "nb201", "channels": 4, "cells_per_stage": 1, "resolution": 8},
        "searcher": "random",
        "evaluator": {"name": "supernet", "train_steps": 2, "num_threads": 1, "num_cpus": 2},
        "budget": {"trials": 2, "concurrency": 1, "cpus_per_trial": 1},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        "output_dir": str(tmp_path / "out"),
    })
    with pytest.raises(ConfigError, match="supernet host's num_cpus"):
        run_search(cfg, echo=lambda line: None)
    cfg = parse_config({**cfg.to_dict(), "budget": {"trials": 1, "cpus_per_trial": 3}})
    with pytest.raises(ConfigError, match="no Ray node has that many CPUs"):
        run_search(cfg, echo=lambda line: None)


@pytest.mark.ray
@pytest.mark.slow
def test_ofa_supernet_search_end_to_end(tmp_path, ray_session) -> None:
    """``method: ofa`` through config -> SupernetHost -> trials, as ``spos`` goes."""
    cfg = parse_config({
        "name": "ofa",
        "space": {"name": "mobilenet", "resolution": 16, "widths": [16, 24], "strides": [2, 2],
                  "head_width": 32},
        "searcher": {"name": "random"},
        "evaluator": {"name": "supernet", "method": "ofa", "train_steps": 8, "num_threads": 1,
                      "batch_size": 32, "ofa_subnets": 2},
        "budget": {"trials": 4, "concurrency": 1, "cpus_per_trial": 0.5},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        "output_dir": str(tmp_path / "out"),
    })
    result = run_search(cfg, echo=lambda line: None)
    assert result.num_trials == 4 and result.num_failed == 0
    assert all(0 <= row["val_acc"] <= 100 and row["supernet_step"] == 8 for row in result.rows)
