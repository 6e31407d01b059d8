"""The Ray node a run without ``--address`` starts: loopback only, out of the terminal's signals.

By default Ray 2.60 takes the machine's interface address as node IP and its gRPC servers
(GCS, raylet, every worker and the driver) listen on all interfaces, the metrics agent's
Prometheus endpoint on 0.0.0.0 without a token. Ray binds its servers to 127.0.0.1 only when
the node IP is loopback, and it turns a requested ``127.0.0.1`` into the interface address
unless ``ray_constants.ENABLE_RAY_CLUSTER`` is off (its default on macOS and Windows,
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). So while a local node starts, that switch is off.

Ray's processes are also started in a session of their own (as Ray itself does on Windows
when the kernel fate-shares them with the driver): a SIGTERM sent to the terminal's process
group (``timeout``, a shell's job control) then reaches the driver alone, which stops the
search and shuts Ray down, instead of killing raylet and workers under it. They still die
with the driver (Linux ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's own environment variable


def is_local(address: str | None) -> bool:
    """Whether ``ray.init`` would start a node of its own (no address, no ``RAY_ADDRESS``)."""
    return not address and not os.environ.get("RAY_ADDRESS")


def local_init_options() -> dict[str, Any]:
    """``ray.init`` options of a local node: a new one, on loopback, no metrics export."""
    return {
        "address": "local",
        "_node_ip_address": LOOPBACK,
        # The metrics agent's HTTP endpoint answers anyone who can reach it, with no token.
        "_system_config": {"enable_metrics_collection": False},
    }


@contextmanager
def loopback_node() -> Iterator[None]:
    """While ``ray.init`` starts a local node: node IP 127.0.0.1, processes in own session."""
    from ray._private import ray_constants

    saved_env = os.environ.get(CLUSTER_SWITCH)
    saved_flag = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    # The driver reads the module constant; Ray's processes inherit the variable.
    os.environ[CLUSTER_SWITCH] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        with _own_session():
            yield
    finally:
        if saved_env is None:
            os.environ.pop(CLUSTER_SWITCH, None)
        else:
            os.environ[CLUSTER_SWITCH] = saved_env
        if saved_flag is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved_flag


@contextmanager
def _own_session() -> Iterator[None]:
    """Ray's processes started meanwhile get a session (and process group) of their own."""
    from ray._private import services, utils

    original = getattr(services, "ConsolePopen", None)
    if (original is None or not sys.platform.startswith("linux")
            or not utils.detect_fate_sharing_support()):
        # Without kernel fate-sharing Ray's reaper kills its processes by process group.
        yield
        return

    class _Detached(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("start_new_session", True)
            super().__init__(*args, **kwargs)

    services.ConsolePopen = _Detached
    try:
        yield
    finally:
        services.ConsolePopen = original
