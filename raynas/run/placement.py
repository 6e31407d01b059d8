"""Where things run on a Ray cluster: alive nodes, the caller's node, a shared tracking store."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ray

from raynas.run.config import ConfigError

logger = logging.getLogger(__name__)

# Set to 1/true to run with a local sqlite (or file) MLflow store on a cluster of several
# nodes: for several raylets on one machine, or a store on a filesystem every node mounts.
ALLOW_LOCAL_TRACKING_ENV = "RAYNAS_ALLOW_LOCAL_TRACKING"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# The key under which a trial reports the Ray node it ran on.
RESULT_NODE_ID = "node_id"
# Set to 0 to start a fresh Tune actor for every trial (see ``reuse_actors``).
REUSE_ACTORS_ENV = "RAYNAS_REUSE_ACTORS"


def current_node_id() -> str:
    """The Ray node id (hex) of the calling process; "" when Ray is not initialised."""
    if not ray.is_initialized():
        return ""
    return str(ray.get_runtime_context().get_node_id() or "")


def reuse_actors() -> bool:
    """Whether Tune reuses a trial's actor for the next trial (``RAYNAS_REUSE_ACTORS``, default on).

    Reuse saves an actor start (about a second) per trial. But a pending trial takes the first
    actor that frees up, so trials much shorter than an actor's start (supernet scoring) all run
    on one actor, on one node; ``RAYNAS_REUSE_ACTORS=0`` spreads them over the nodes instead.
    """
    value = os.environ.get(REUSE_ACTORS_ENV, "1").strip().lower()
    if value not in _TRUE | _FALSE:
        raise ConfigError(f"{REUSE_ACTORS_ENV} must be 1 or 0, got {value!r}")
    return value in _TRUE


def alive_nodes() -> list[dict[str, Any]]:
    """The cluster's alive nodes as ``ray.nodes()`` describes them."""
    return [node for node in ray.nodes() if node.get("Alive")]


def eligible_nodes(
    nodes: Sequence[Mapping[str, Any]],
    *,
    num_cpus: float = 0,
    num_gpus: float = 0,
    first: str = "",
) -> list[str]:
    """Ids of ``nodes`` whose total resources fit ``num_cpus`` and ``num_gpus``; ``first`` first.

    A head node started with ``--num-cpus 0`` (so that no work lands on it) is skipped by
    any request with ``num_cpus > 0``. The order is stable: ``first`` (the driver's node),
    then the others by node id.
    """
    ids = []
    for node in nodes:
        resources = node.get("Resources") or {}
        if resources.get("CPU", 0.0) >= num_cpus and resources.get("GPU", 0.0) >= num_gpus:
            ids.append(str(node["NodeID"]))
    return sorted(ids, key=lambda node_id: (node_id != first, node_id))


def choose_replica(
    node_of: Mapping[int, str], replicas: int, *, node_id: str, key: int
) -> int:
    """A replica for a caller on ``node_id``: one on that node if any, else any; ``key`` spreads.

    ``node_of`` maps replica index to the node it runs on (replicas missing from it count
    as elsewhere). Callers on one node spread over that node's replicas by ``key``, a
    stable per-process hash; a node without a replica falls back to all replicas.
    """
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    local = sorted(i for i, node in node_of.items() if node == node_id and 0 <= i < replicas)
    candidates = local or list(range(replicas))
    return candidates[key % len(candidates)]


def is_local_store(uri: str) -> bool:
    """True for an MLflow store that lives on one machine's disk (sqlite, file, a path)."""
    return uri.startswith(("sqlite:", "file:", "/", ".", "~"))


def check_shared_tracking(uri: str, *, address: str | None = None) -> None:
    """Raise ``ConfigError`` when a local MLflow store would be used by a multi-node cluster.

    Ray must be initialised. A sqlite or file store lives on the driver's disk: results of
    a search on a cluster whose nodes come and go are lost with the node, and nothing on
    another node can read or resume them. ``RAYNAS_ALLOW_LOCAL_TRACKING=1`` allows it (several
    raylets on one machine, or a store on a filesystem every node mounts).
    """
    if not is_local_store(uri):
        return
    if os.environ.get(ALLOW_LOCAL_TRACKING_ENV, "").strip().lower() in _TRUE:
        return
    remote = bool(address) and str(address).startswith("ray://")
    nodes = len(alive_nodes())
    if remote or nodes > 1:
        where = f"a remote cluster ({address})" if remote else f"a cluster of {nodes} nodes"
        raise ConfigError(
            f"config field 'tracking.uri' is the local store {uri!r} but the search runs on "
            f"{where}: use a shared MLflow server (tracking.uri: http://HOST:5000, see "
            f"docs/cluster.md), or set {ALLOW_LOCAL_TRACKING_ENV}=1 if every node mounts it"
        )
