"""Placement helpers without a cluster: node choice, replica routing, the shared-store check,
checkpoint installation on a replica, and the node tag of a trial's MLflow run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from raynas.run import placement
from raynas.run.config import ConfigError
from raynas.run.placement import (
    ALLOW_LOCAL_TRACKING_ENV,
    REUSE_ACTORS_ENV,
    check_shared_tracking,
    choose_replica,
    eligible_nodes,
    is_local_store,
    reuse_actors,
)
from raynas.tracking.store import TAG_NODE_ID, Tracker, TrialLogger
from spaces import create_space

SPEC = {"name": "nb201", "channels": 4, "cells_per_stage": 1, "resolution": 8}


def _node(node_id: str, cpu: float, gpu: float = 0.0) -> dict:
    return {"NodeID": node_id, "Alive": True, "Resources": {"CPU": cpu, "GPU": gpu}}


def test_eligible_nodes_fit_resources_and_put_the_driver_first() -> None:
    nodes = [_node("c", 8), _node("head", 0), _node("b", 4, 1), _node("a", 8)]
    assert eligible_nodes(nodes, num_cpus=1, first="b") == ["b", "a", "c"]
    assert eligible_nodes(nodes, num_cpus=0, first="head") == ["head", "a", "b", "c"]
    assert eligible_nodes(nodes, num_cpus=1, num_gpus=0.5) == ["b"]
    assert eligible_nodes(nodes, num_cpus=16) == []


def test_choose_replica_prefers_the_callers_node_and_falls_back() -> None:
    node_of = {0: "head", 1: "n1", 2: "n2", 3: "n1"}
    assert {choose_replica(node_of, 4, node_id="n1", key=key) for key in range(10)} == {1, 3}
    assert choose_replica(node_of, 4, node_id="n2", key=12345) == 2
    # A node without a replica spreads its callers over all of them.
    spread = {choose_replica(node_of, 4, node_id="elsewhere", key=key) for key in range(8)}
    assert spread == {0, 1, 2, 3}
    assert choose_replica({}, 3, node_id="n1", key=7) == 7 % 3
    with pytest.raises(ValueError, match="replicas must be >= 1"):
        choose_replica(node_of, 0, node_id="n1", key=0)


@pytest.mark.parametrize(("uri", "local"), [
    ("sqlite:////tmp/m.db", True), ("sqlite:///m.db", True), ("file:///tmp/mlruns", True),
    ("/tmp/mlruns", True), ("./mlruns", True), ("http://10.0.0.1:5000", False),
    ("https://mlflow.example.com", False), ("postgresql://u@db/mlflow", False),
    ("databricks", False),
])
def test_is_local_store(uri: str, local: bool) -> None:
    assert is_local_store(uri) is local


def test_local_store_on_several_nodes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_LOCAL_TRACKING_ENV, raising=False)
    monkeypatch.setattr(placement, "alive_nodes", lambda: [_node("a", 1), _node("b", 1)])
    with pytest.raises(ConfigError, match="tracking.uri.*cluster of 2 nodes"):
        check_shared_tracking("sqlite:////tmp/m.db", address="auto")
    check_shared_tracking("http://127.0.0.1:5000", address="auto")  # a server is fine
    monkeypatch.setenv(ALLOW_LOCAL_TRACKING_ENV, "1")
    check_shared_tracking("sqlite:////tmp/m.db", address="auto")
    monkeypatch.delenv(ALLOW_LOCAL_TRACKING_ENV)
    monkeypatch.setattr(placement, "alive_nodes", lambda: [_node("a", 1)])
    check_shared_tracking("sqlite:////tmp/m.db", address=None)  # one node: its own disk
    with pytest.raises(ConfigError, match="remote cluster"):
        check_shared_tracking("sqlite:////tmp/m.db", address="ray://head:10001")


def test_reuse_actors_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REUSE_ACTORS_ENV, raising=False)
    assert reuse_actors() is True
    monkeypatch.setenv(REUSE_ACTORS_ENV, "0")
    assert reuse_actors() is False
    monkeypatch.setenv(REUSE_ACTORS_ENV, "sometimes")
    with pytest.raises(ConfigError, match="RAYNAS_REUSE_ACTORS must be 1 or 0"):
        reuse_actors()


def test_supernet_evaluator_accepts_per_node_replicas() -> None:
    from raynas.supernet.evaluator import SupernetEvaluator

    space = create_space(**SPEC)
    ev = SupernetEvaluator(space, replicas="per_node")
    assert ev.replicas == "per_node" and ev.num_replicas is None
    assert SupernetEvaluator(space, replicas=3).num_replicas == 3
    for bad in ("all", 0, True, 1.5):
        with pytest.raises(ValueError, match="replicas must be an integer >= 1 or 'per_node'"):
            SupernetEvaluator(space, replicas=bad)


def test_install_checkpoint_writes_where_missing_and_loads(tmp_path: Path) -> None:
    from raynas.supernet.host import SupernetHostImpl

    primary = SupernetHostImpl(SPEC, checkpoint_path=tmp_path / "a" / "s.pt", num_threads=1)
    primary.train(3)
    data = primary.checkpoint_bytes()
    # A replica on a node that does not see the primary's file.
    target = tmp_path / "other-node" / "s.pt"
    replica = SupernetHostImpl(SPEC, checkpoint_path=target, num_threads=1, primary=False)
    assert replica.ready()["steps"] == 0
    stats = replica.install_checkpoint(data, str(target))
    assert stats["steps"] == 3 and target.read_bytes() == data
    space = create_space(**SPEC)
    arch = space.to_string(space.sample(np.random.default_rng(0)))
    assert replica.evaluate(arch) == primary.evaluate(arch)
    # Where the same bytes are already there (a shared filesystem), nothing is rewritten.
    before = target.stat().st_mtime_ns
    replica.install_checkpoint(data, str(target))
    assert target.stat().st_mtime_ns == before


class _Trial:
    """The attributes of ``ray.tune.experiment.Trial`` that TrialLogger reads."""

    def __init__(self, trial_id: str, config: dict) -> None:
        self.trial_id, self.config = trial_id, config

    def __str__(self) -> str:
        return f"trial_{self.trial_id}"


def test_trial_logger_tags_the_node_and_keeps_it_out_of_metrics(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = Tracker(uri, "nodes")
    parent = tracker.start_search(name="s", params={}, tags={})
    space = create_space("nb201")
    config = space.to_config(space.sample(np.random.default_rng(0)))
    logger = TrialLogger(tracker, parent, space, searcher="random")
    trial = _Trial("t1", config)
    logger.log_trial_start(trial)
    logger.log_trial_result(1, trial, {"val_acc": 50.0, "node_id": "abc123",
                                       "training_iteration": 1})
    logger.log_trial_result(2, trial, {"val_acc": 51.0, "node_id": "def456",
                                       "training_iteration": 2})
    run = MlflowClient(uri).get_run(logger.trial_runs["t1"])
    assert run.data.tags[TAG_NODE_ID] == "def456"  # the node of its latest result
    assert run.data.metrics["val_acc"] == 51.0 and "node_id" not in run.data.metrics
