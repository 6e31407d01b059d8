"""The CLI end to end on real Ray and a real MLflow sqlite store."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from raynas.cli.main import main
from raynas.tracking.store import TAG_ARCH, TAG_ROLE
from spaces import create_space, list_spaces


def _write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _check_recorded(uri: str, trials: int, metric_keys: set[str]) -> list:
    client = MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], max_results=1000
    )
    parents = [r for r in runs if r.data.tags.get(TAG_ROLE) == "search"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["space.name"] == "nb201"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == trials
    space = create_space("nb201")
    for child in children:
        assert child.info.status == "FINISHED"
        assert metric_keys <= set(child.data.metrics)
        arch = child.data.tags[TAG_ARCH]
        assert child.data.params["arch"] == arch
        assert space.from_config(child.data.params) == arch
        assert child.data.tags["raynas.searcher"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "trials.parquet", "searcher_state.json"} <= artifacts
    return children


@pytest.mark.ray
@pytest.mark.data
def test_run_tabular_search_end_to_end(tmp_path, nb201_dir, ray_session, capsys) -> None:
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    config = {
        "name": "tab",
        "space": "nb201",
        "searcher": {"name": "regularized_evolution", "population_size": 4, "tournament_size": 2},
        "evaluator": {"name": "tabular", "table_path": str(nb201_dir / "cifar10.csv")},
        "budget": {"trials": 10, "concurrency": 2},
        "seed": 3,
        "tracking": {"uri": uri, "experiment": "tab"},
        "output_dir": str(tmp_path / "out"),
    }
    assert main(["run", str(_write(tmp_path, config))]) == 0
    out = capsys.readouterr().out
    assert "best architecture: |" in out and "[10/10]" in out
    children = _check_recorded(uri, 10, {"val_acc", "test_acc_200ep"})
    (table_path,) = (tmp_path / "out").glob("tab-*/trials.parquet")
    table = pq.read_table(table_path).to_pylist()
    assert len(table) == 10
    assert {r["arch"] for r in table} == {c.data.tags[TAG_ARCH] for c in children}
    assert len({r["canonical"] for r in table}) == 10
    assert all(r["status"] == "OK" for r in table)
    by_arch = {c.data.tags[TAG_ARCH]: c.data.metrics["val_acc"] for c in children}
    assert all(by_arch[r["arch"]] == pytest.approx(r["val_acc"]) for r in table)


@pytest.mark.ray
@pytest.mark.slow
def test_run_training_search_end_to_end(tmp_path, ray_session, capsys) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {
        "name": "train",
        "space": {"name": "nb201", "channels": 4, "cells_per_stage": 1, "resolution": 8},
        "searcher": "random",
        "evaluator": {"name": "training", "epochs": 2, "train_subset": 256},
        "budget": {"trials": 3, "concurrency": 2},
        "tracking": {"uri": uri},
        "output_dir": str(tmp_path / "out"),
    }
    assert main(["run", str(_write(tmp_path, config))]) == 0
    children = _check_recorded(uri, 3, {"val_acc", "test_acc", "train_loss", "epoch"})
    client = MlflowClient(uri)
    history = client.get_metric_history(children[0].info.run_id, "val_acc")
    assert [m.step for m in history] == [1, 2]
    assert "open the MLflow UI" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"space": "nb999"}, "unknown space 'nb999'; available: {spaces}"),
        ({"searcher": "anneal"}, "unknown searcher 'anneal'; available:"),
        ({"budget": {"trials": -1}}, "'budget.trials' must be an integer >= 1, got -1"),
        (
            {"evaluator": {"name": "tabular", "table_path": "/no/such/cifar10.csv"}},
            "/no/such/cifar10.csv",
        ),
        ({"metric": "test_acc"}, "test metrics are for reporting only"),
        ({"evaluator": "oracle"}, "unknown evaluator 'oracle'"),
    ],
)
def test_bad_configs_give_one_line_and_exit_2(tmp_path, capsys, change, message) -> None:
    config = {"space": "nb201", "searcher": "random", "evaluator": "training", **change}
    assert main(["run", str(_write(tmp_path, config))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    message = message.format(spaces=", ".join(list_spaces()))  # user spaces register on import
    assert err.startswith("raynas: error: ") and message in err


def test_unreachable_tracking_server(tmp_path, capsys) -> None:
    config = {"space": "nb201", "searcher": "random", "evaluator": "training"}
    path = _write(tmp_path, config)
    assert main(["run", str(path), "--tracking-uri", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9" in err and "unreachable" in err


def test_list_commands(capsys) -> None:
    assert main(["spaces"]) == 0
    assert main(["searchers"]) == 0
    out = capsys.readouterr().out.split()
    assert {"nb201", "mobilenet", "random", "regularized_evolution"} <= set(out)


@pytest.mark.ray
@pytest.mark.slow
def test_run_supernet_search_end_to_end(tmp_path, ray_session, capsys) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {
        "name": "sn",
        "space": {"name": "nb201", "channels": 4, "cells_per_stage": 1, "resolution": 8},
        "searcher": {"name": "regularized_evolution", "population_size": 4},
        "evaluator": {"name": "supernet", "train_steps": 120, "num_threads": 1},
        "budget": {"trials": 12, "concurrency": 2, "cpus_per_trial": 0.5},
        "tracking": {"uri": uri},
        "output_dir": str(tmp_path / "out"),
    }
    assert main(["run", str(_write(tmp_path, config))]) == 0
    assert "setup step 100" in capsys.readouterr().out
    children = _check_recorded(uri, 12, {"val_acc", "val_loss"})
    client = MlflowClient(uri)
    parent_id = children[0].data.tags["mlflow.parentRunId"]
    history = client.get_metric_history(parent_id, "supernet/loss")
    assert [m.step for m in history] == list(range(1, 121))
    artifacts = [a.path for a in client.list_artifacts(parent_id)]
    assert any(path.endswith(".pt") for path in artifacts)


@pytest.mark.parametrize("training", [False, True])
def test_bundled_demo_configs_build(tmp_path, training) -> None:
    import argparse

    from raynas.cli.main import _load_demo
    from raynas.run.runner import build_components

    args = argparse.Namespace(output_dir=str(tmp_path), trials=None, training=training,
                              tracking_uri=None)
    cfg = _load_demo(args)
    comps = build_components(cfg)
    assert comps.metric == "val_acc"
    expected = "TrainingEvaluator" if training else "SupernetEvaluator"
    assert type(comps.evaluator).__name__ == expected
    assert cfg.tracking.uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.mark.ray
@pytest.mark.data
def test_failing_trials_are_recorded_and_the_search_goes_on(tmp_path, nb201_dir, ray_session):
    # A table with half of the architectures: the others make their trials raise.
    lines = (nb201_dir / "cifar10.csv").read_text().splitlines()
    partial = tmp_path / "partial.csv"
    partial.write_text("\n".join(lines[: 1 + len(lines) // 2]) + "\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {
        "name": "partial",
        "space": "nb201",
        "searcher": "random",
        "evaluator": {"name": "tabular", "table_path": str(partial)},
        "budget": {"trials": 8, "concurrency": 2},
        "seed": 1,
        "tracking": {"uri": uri},
        "output_dir": str(tmp_path / "out"),
    }
    assert main(["run", str(_write(tmp_path, config))]) == 0
    (table_path,) = (tmp_path / "out").glob("partial-*/trials.parquet")
    rows = pq.read_table(table_path).to_pylist()
    assert len(rows) == 8
    errors = [r for r in rows if r["status"] == "ERROR"]
    assert errors and len(errors) < 8
    assert all(r["error"].startswith("ValueError: ") and "\n" not in r["error"] for r in errors)
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed) == len(errors)
    parent = next(r for r in runs if r.data.tags.get(TAG_ROLE) == "search")
    assert parent.data.metrics["num_failed"] == len(errors)


@pytest.mark.ray
@pytest.mark.data
def test_multi_objective_constrained_search(tmp_path, nb201_dir, ray_session, capsys) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {
        "name": "mo",
        "space": "nb201",
        "searcher": {"name": "nsga2", "population_size": 6},
        "evaluator": {"name": "tabular", "table_path": str(nb201_dir), "devices": ["pixel3"]},
        "metric": ["val_acc", "latency_pixel3"],
        "mode": ["max", "min"],
        "constraints": ["latency_pixel3 <= 12"],
        "budget": {"trials": 18, "concurrency": 2},
        "tracking": {"uri": uri},
        "output_dir": str(tmp_path / "out"),
    }
    assert main(["run", str(_write(tmp_path, config))]) == 0
    assert "Pareto front of feasible trials" in capsys.readouterr().out
    children = _check_recorded(uri, 18, {"val_acc", "latency_pixel3"})
    client = MlflowClient(uri)
    parent_id = children[0].data.tags["mlflow.parentRunId"]
    path = client.download_artifacts(parent_id, "pareto_front.json", str(tmp_path))
    front = json.loads(Path(path).read_text())
    assert front and all(row["latency_pixel3"] <= 12 for row in front)
    points = [(c.data.metrics["val_acc"], c.data.metrics["latency_pixel3"]) for c in children]
    feasible = [p for p in points if p[1] <= 12]
    for row in front:  # nothing feasible dominates a front member
        assert not any(
            a >= row["val_acc"] and b <= row["latency_pixel3"]
            and (a, b) != (row["val_acc"], row["latency_pixel3"])
            for a, b in feasible
        )
