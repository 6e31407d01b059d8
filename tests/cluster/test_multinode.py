"""raynas on a real two-node Ray cluster: per-node supernet replicas, node-local routing,
trials on both nodes recorded in MLflow, and the shared-store check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from raynas.run.placement import ALLOW_LOCAL_TRACKING_ENV, REUSE_ACTORS_ENV
from raynas.tracking.store import TAG_NODE_ID, TAG_ROLE

pytestmark = [pytest.mark.ray, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
RAYNAS = str(Path(sys.executable).parent / "raynas")


def _search_config(tmp_path: Path) -> Path:
    # 1 CPU per node: a replica (0.25) and one trial (0.5) fit on a node, two trials do not,
    # so two trials at once run on two nodes (with an actor per trial: see RAYNAS_REUSE_ACTORS).
    config = {
        "name": "multinode",
        "space": {"name": "nb201", "channels": 4, "cells_per_stage": 1, "resolution": 8},
        "searcher": {"name": "random"},
        "evaluator": {"name": "supernet", "method": "spos", "train_steps": 20,
                      "num_threads": 1, "replicas": "per_node", "num_cpus": 0.25},
        "budget": {"trials": 6, "concurrency": 2, "cpus_per_trial": 0.5},
        "seed": 0,
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "multinode"},
        "output_dir": str(tmp_path / "out"),
    }
    path = tmp_path / "multinode.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_each_node_gets_a_replica_and_tasks_use_their_own(ray_cluster, tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, str(HERE / "_route_probe.py"), ray_cluster.address,
         str(tmp_path / "probe.pt")],
        env=ray_cluster.env, capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(report["replica_nodes"].values()) == ray_cluster.node_ids
    assert len(report["probes"]) == 2
    for probe in report["probes"]:
        assert probe["replica_node"] == probe["task_node"]  # routed to its own node's replica
        assert probe["steps"] == 5  # the replica on the other node got the primary's weights


def test_search_runs_trials_on_both_nodes(ray_cluster, tmp_path) -> None:
    config = _search_config(tmp_path)
    # A local sqlite store on a two-node cluster is refused unless explicitly allowed.
    refused = subprocess.run(
        [RAYNAS, "run", str(config), "--address", ray_cluster.address],
        env=ray_cluster.env, capture_output=True, text=True, timeout=180,
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "tracking.uri" in refused.stderr and ALLOW_LOCAL_TRACKING_ENV in refused.stderr
    # On one machine the sqlite file is shared by both nodes: allow it. Supernet trials take
    # milliseconds, far less than an actor's start, so with actor reuse every trial would run
    # on the first actor (one node): start an actor per trial.
    env = {**ray_cluster.env, ALLOW_LOCAL_TRACKING_ENV: "1", REUSE_ACTORS_ENV: "0"}
    done = subprocess.run(
        [RAYNAS, "run", str(config), "--address", ray_cluster.address],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "best architecture:" in done.stdout

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("multinode")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    searches = [r for r in runs if r.data.tags.get(TAG_ROLE) == "search"]
    finished = [r for r in searches if r.info.status == "FINISHED"]
    assert len(finished) == 1
    parent = finished[0].info.run_id
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(trials) == 6
    assert all("val_acc" in r.data.metrics and "node_id" not in r.data.metrics for r in trials)
    assert sorted({r.data.tags[TAG_NODE_ID] for r in trials}) == ray_cluster.node_ids

    # The replica placement recorded with the search: one replica on each node.
    names = [a.path for a in client.list_artifacts(parent)]
    placement_file = next(n for n in names if n.endswith("-placement.json"))
    placement = json.loads(Path(client.download_artifacts(parent, placement_file,
                                                          str(tmp_path))).read_text())
    assert sorted(r["node_id"] for r in placement["replicas"]) == ray_cluster.node_ids
