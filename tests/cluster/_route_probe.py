"""Run as a driver of a multi-node cluster: per-node supernet hosts, then a task on each node.

Usage: python _route_probe.py ADDRESS CHECKPOINT_PATH. Prints one JSON object: the node of
each replica, and for a task pinned to each node the replica ``get_host`` handed it (its node
and its step after ``sync_replicas``).
"""

from __future__ import annotations

import json
import sys
import uuid

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raynas.supernet.host import get_host, replica_nodes, start_hosts, stop_hosts, sync_replicas

SPEC = {"name": "nb201", "channels": 4, "cells_per_stage": 1, "resolution": 8}


@ray.remote(num_cpus=0.25)
def ask(name: str) -> dict[str, object]:
    """From the node this task runs on: which replica does get_host pick, and its state."""
    handle = get_host(name)
    ready = ray.get(handle.ready.remote())
    return {"task_node": ray.get_runtime_context().get_node_id(),
            "replica_node": ready["node_id"], "steps": ready["steps"]}


def main(address: str, checkpoint: str) -> None:
    """Start per-node hosts, train the primary, sync, probe every node, stop the hosts."""
    ray.init(address=address, log_to_driver=False)
    name = f"probe-{uuid.uuid4().hex[:6]}"
    hosts = start_hosts(name, space=SPEC, replicas="per_node", num_cpus=0.25, num_threads=1,
                        checkpoint_path=checkpoint)
    try:
        ray.get(hosts[0].train.remote(5))
        sync_replicas(name, replicas=len(hosts))
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        probes = ray.get([
            ask.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
            .remote(name) for n in nodes
        ])
        print(json.dumps({"replica_nodes": replica_nodes(name, replicas=len(hosts)),
                          "probes": probes}))
    finally:
        stop_hosts(name, len(hosts))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
