"""The SupernetHost Ray actor: one supernet and its data in one process, found by name."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from raynas.supernet.rwlock import ReadWriteLock

if TYPE_CHECKING:
    from ray.actor import ActorHandle

    from raynas.supernet.trainer import SupernetTrainer
    from spaces import SearchSpace

logger = logging.getLogger(__name__)

# Retries of a call whose actor died mid-call (not of calls that raised): bounded, then raise.
MAX_TASK_RETRIES = 3
# ``replicas=PER_NODE``: one replica on each alive node that has the resources for one.
PER_NODE = "per_node"

# Per-process caches: handles by (namespace, name, replica), replica counts by (namespace, name),
# and the node each replica runs on (replica index -> node id) by (namespace, name).
_HANDLES: dict[tuple[str | None, str, int], ActorHandle] = {}
_COUNTS: dict[tuple[str | None, str], int] = {}
_NODES: dict[tuple[str | None, str], dict[int, str]] = {}
_CACHE_LOCK = threading.Lock()


def replica_name(name: str, replica: int) -> str:
    """The Ray actor name of one replica: ``f"{name}-{replica}"``."""
    return f"{name}-{replica}"


def _default_threads() -> int:
    """The CPUs Ray assigned to this actor (at least 1); torch's default outside Ray."""
    import torch

    if ray.is_initialized():
        try:
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)
        except Exception:  # not inside a worker
            cpus = 0.0
        if cpus:
            return max(1, round(cpus))
    return torch.get_num_threads()


class SupernetHostImpl:
    """Holds one ``SupernetTrainer``; the body of the ``SupernetHost`` actor.

    On construction it loads ``checkpoint_path`` if the file exists, so an actor that Ray
    restarts after a crash or ``ray.kill(handle, no_restart=False)`` comes back with the
    last checkpoint's weights, step count and candidate pool. A first start whose file
    does not load (corrupt, foreign, another space) starts untrained instead and says why
    in ``ready()["restore_error"]``; a restart raises, so it never serves untrained
    weights in the middle of a search. A non-primary replica
    (``primary=False``) serves evaluations only: it refuses ``train`` and never writes the
    shared checkpoint file, from which it reloads when restarted.

    Concurrency: ``start_hosts`` creates the actor with ``max_concurrency=concurrency``
    (default: its CPUs), so that many evaluations run at once, each on
    ``threads // concurrency`` torch threads. They cannot disturb each other: an
    evaluation only reads the supernet's weights and recalibrates the path's batch norms
    in copies of its own thread (``SupernetTrainer.evaluate``, ``private_bn``). Calls that
    write the weights or the shared statistics (``train``, ``load``,
    ``install_checkpoint``, ``extract``, ``checkpoint``) take ``self._lock`` alone
    (``ReadWriteLock.writing``): they wait for running evaluations to finish, and new
    ones wait for them. Across nodes, parallel evaluation comes from replicas.
    """

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any],
        *,
        checkpoint_path: str | os.PathLike[str] | None = None,
        num_threads: int | None = None,
        primary: bool = True,
        concurrency: int = 1,
        **trainer_options: Any,
    ) -> None:
        import torch

        from raynas.supernet.trainer import SupernetTrainer

        _check_concurrency(concurrency)
        self._lock = ReadWriteLock()
        self._busy = threading.Lock()  # in-flight evaluation counters
        self._in_flight = self.max_in_flight = 0
        self.primary = primary
        self.threads = num_threads or _default_threads()
        self.concurrency = concurrency
        self.eval_threads = max(1, self.threads // concurrency)
        # Ray sets OMP_NUM_THREADS=1 in workers; use the CPUs this actor was given.
        torch.set_num_threads(self.threads)
        # CUDA when Ray gave this actor a GPU (it hides the others from it), else CPU.
        trainer_options.setdefault("device", "auto")
        self.trainer: SupernetTrainer = SupernetTrainer(
            space, checkpoint_path=checkpoint_path, **trainer_options
        )
        self.restored = False
        self.restore_error: str | None = None
        if checkpoint_path is not None and Path(checkpoint_path).is_file():
            try:
                with warnings.catch_warnings():  # torch's notes on foreign pickle protocols
                    warnings.simplefilter("ignore", UserWarning)
                    self.trainer.load(checkpoint_path)
            # Whatever the safe loader or the state dicts reject: the file is unusable.
            except Exception as exc:
                if _reconstructed():
                    raise
                self.restore_error = _one_line(exc)
                logger.info("supernet checkpoint %s not loaded: %s", checkpoint_path,
                            self.restore_error)
                # A load that failed half-way may have changed weights or counters.
                self.trainer = SupernetTrainer(
                    space, checkpoint_path=checkpoint_path, **trainer_options
                )
            else:
                self.restored = True
                logger.info("supernet host restored step %d from %s", self.trainer.step,
                            checkpoint_path)

    def ready(self) -> dict[str, Any]:
        """Cheap ping: step, whether it started from a checkpoint (or why not), pid, node."""
        from raynas.run.placement import current_node_id

        path = self.trainer.checkpoint_path
        return {"steps": self.trainer.step, "restored": self.restored,
                "restore_error": self.restore_error, "pid": os.getpid(),
                "primary": self.primary, "node_id": current_node_id(),
                "checkpoint_path": None if path is None else str(path)}

    def train(self, steps: int, *, checkpoint: bool = True) -> list[dict[str, float]]:
        """Train ``steps`` steps; then save to ``checkpoint_path`` (if set and ``checkpoint``)."""
        if not self.primary:
            raise RuntimeError(
                "this replica serves evaluations only: train replica 0, then sync_replicas"
            )
        with self._lock.writing(), self._torch_threads(self.threads):
            records = self.trainer.train(steps)
            if checkpoint and self.trainer.checkpoint_path is not None:
                self.trainer.save()
            return records

    def evaluate(self, arch: str, *, use_cache: bool = True) -> dict[str, float]:
        """``val_acc`` (%), ``val_loss`` and ``supernet_step`` of one arch string."""
        with self._evaluating():
            return self.trainer.evaluate(arch, use_cache=use_cache)

    def evaluate_many(
        self, archs: Sequence[str], *, use_cache: bool = True
    ) -> list[dict[str, float]]:
        """``evaluate`` of each arch string, in one call."""
        with self._evaluating():
            return self.trainer.evaluate_many(archs, use_cache=use_cache)

    def extract(self, arch: str) -> dict[str, Any]:
        """The arch's stand-alone network state dict (BN recalibrated), step and data recipe."""
        with self._lock.writing(), self._torch_threads(self.threads):
            return self.trainer.extract(arch)

    def candidate_pool(self, k: int | None = None) -> list[tuple[str, float]]:
        """The ``k`` best pool entries ``(arch_string, loss)``, best first."""
        with self._lock.reading():
            return self.trainer.candidate_pool(k)

    def checkpoint(self, path: str | None = None) -> str:
        """Save the state (to ``checkpoint_path`` if ``path`` is None); return the file."""
        if path is None and not self.primary:
            raise RuntimeError("a non-primary replica writes checkpoints only to a given path")
        with self._lock.writing():
            return self.trainer.save(path)

    def load(self, path: str | None = None) -> dict[str, Any]:
        """Load a checkpoint file (default ``checkpoint_path``); return ``stats()``."""
        with self._lock.writing():
            self.trainer.load(path)
            return self._stats()

    def checkpoint_bytes(self, path: str | None = None) -> bytes:
        """The bytes of a checkpoint file on this replica's node (default ``checkpoint_path``)."""
        with self._lock.reading():
            source = path or self.trainer.checkpoint_path
            if source is None:
                raise ValueError("checkpoint_bytes needs a path: pass one or set checkpoint_path")
            return Path(source).read_bytes()

    def install_checkpoint(self, data: bytes, path: str) -> dict[str, Any]:
        """Load checkpoint ``data`` (from a replica on another node) and keep it at ``path``.

        A node without a filesystem shared with the primary gets the file written at
        ``path`` (atomically), so a restart on this node reloads it; where ``path`` already
        holds the same bytes (a shared filesystem) nothing is written.
        """
        with self._lock.writing():
            target = Path(path)
            same = target.is_file() and target.stat().st_size == len(data) and (
                hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()
            )
            if not same:
                target.parent.mkdir(parents=True, exist_ok=True)
                part = target.with_name(f".{target.name}.{os.getpid()}.part")
                part.write_bytes(data)
                os.replace(part, target)
            self.trainer.load(target)
            return self._stats()

    def stats(self) -> dict[str, Any]:
        """Trainer counters plus whether this process restored a checkpoint or was restarted."""
        with self._lock.reading():
            return self._stats()

    @contextmanager
    def _evaluating(self) -> Iterator[None]:
        """Shared hold of the lock, this thread on ``eval_threads`` torch threads, counted."""
        with self._lock.reading(), self._torch_threads(self.eval_threads):
            with self._busy:
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                yield
            finally:
                with self._busy:
                    self._in_flight -= 1

    @staticmethod
    @contextmanager
    def _torch_threads(n: int) -> Iterator[None]:
        # Set per call: with OpenMP the count belongs to the calling thread, and Ray runs
        # concurrent calls on a pool of threads.
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        yield

    def _stats(self) -> dict[str, Any]:
        out = self.trainer.stats()
        out.update(restored=self.restored, primary=self.primary, pid=os.getpid(),
                   concurrency=self.concurrency, eval_threads=self.eval_threads,
                   max_concurrent_evaluations=self.max_in_flight)
        if ray.is_initialized():
            try:
                with warnings.catch_warnings():  # the property reads a deprecated actor_id
                    warnings.simplefilter("ignore", DeprecationWarning)
                    context = ray.get_runtime_context()
                    out["reconstructed"] = context.was_current_actor_reconstructed
            except Exception:  # used outside an actor
                pass
        return out


def _reconstructed() -> bool:
    """Whether this actor is a restart of one that died (False outside an actor)."""
    if not ray.is_initialized():
        return False
    try:
        with warnings.catch_warnings():  # the property reads a deprecated actor_id
            warnings.simplefilter("ignore", DeprecationWarning)
            return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # not inside an actor
        return False


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """Why a checkpoint did not load, in one line of at most ``limit`` characters."""
    text = str(exc)
    # torch's weights-only refusal opens with a paragraph about its defaults; the reason
    # follows its "WeightsUnpickler error:" marker.
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = [line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()]
        text = "rejected by torch's weights-only loader" + (f": {reason[0]}" if reason else "")
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_concurrency(concurrency: Any) -> int:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
    return concurrency


# Restart on death; retry calls in flight (bounded). start_hosts sets max_concurrency.
SupernetHost = ray.remote(max_restarts=-1, max_task_retries=MAX_TASK_RETRIES)(SupernetHostImpl)


# --------------------------------------------------------------------------- helpers
def start_hosts(
    name: str,
    *,
    space: SearchSpace | Mapping[str, Any],
    replicas: int | str = 1,
    namespace: str | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    detached: bool = False,
    checkpoint_path: str | os.PathLike[str] | None = None,
    wait: bool = True,
    concurrency: int | None = None,
    **trainer_options: Any,
) -> list[ActorHandle]:
    """Start (or find) named hosts ``f"{name}-{i}"``, ``i < replicas``; replica 0 is primary.

    ``replicas="per_node"`` starts one replica on each alive node whose resources fit
    ``num_cpus`` / ``num_gpus``, pinned there (``NodeAffinitySchedulingStrategy``), the
    driver's node first (it holds the primary); ``get_host`` then routes each caller to
    the replica on its own node. All replicas use ``checkpoint_path``: the primary writes
    it, ``sync_replicas`` makes the others load it (copying it to nodes that do not see the
    primary's file), and each reloads it when restarted. With ``get_if_exists`` a host
    already running under the name is returned as it is. With ``wait`` the call returns
    once every host has finished loading (errors raise here). Each host runs up to
    ``concurrency`` evaluations at once (default: ``num_cpus``, at least 1).
    """
    concurrency = _check_concurrency(
        max(1, int(num_cpus)) if concurrency is None else concurrency
    )
    nodes: list[str] = []
    if replicas == PER_NODE:
        from raynas.run.placement import alive_nodes, current_node_id, eligible_nodes

        nodes = eligible_nodes(alive_nodes(), num_cpus=num_cpus, num_gpus=num_gpus,
                               first=current_node_id())
        if not nodes:
            raise ValueError(
                f"replicas='per_node' found no alive node with {num_cpus} CPU and "
                f"{num_gpus} GPU for a supernet host; lower num_cpus / num_gpus"
            )
        replicas = len(nodes)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ValueError(
            f"replicas must be a positive integer or {PER_NODE!r}, got {replicas!r}"
        )
    if replicas > 1 and checkpoint_path is None:
        raise ValueError("replicas > 1 share weights through a file: give checkpoint_path")
    path = None if checkpoint_path is None else str(Path(checkpoint_path).expanduser().absolute())
    handles = []
    for i in range(replicas):
        options: dict[str, Any] = {
            "name": replica_name(name, i), "get_if_exists": True, "num_cpus": num_cpus,
            "num_gpus": num_gpus, "lifetime": "detached" if detached else None,
            "max_concurrency": concurrency,
        }
        if nodes:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            # Hard affinity: a replica never doubles up on another node; if its node dies,
            # callers there die too and the others keep their own replicas.
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(nodes[i], soft=False)
        if namespace is not None:
            options["namespace"] = namespace
        handle = SupernetHost.options(**options).remote(  # type: ignore[attr-defined]
            space, checkpoint_path=path, primary=i == 0, concurrency=concurrency,
            **trainer_options
        )
        handles.append(handle)
        with _CACHE_LOCK:
            _HANDLES[(namespace, name, i)] = handle
    with _CACHE_LOCK:
        _COUNTS[(namespace, name)] = replicas
        if nodes:
            _NODES[(namespace, name)] = dict(enumerate(nodes))
    if wait:
        ray.get([h.ready.remote() for h in handles])
    return handles


def _lookup(name: str, replica: int, namespace: str | None) -> ActorHandle:
    key = (namespace, name, replica)
    with _CACHE_LOCK:
        if key in _HANDLES:
            return _HANDLES[key]
    try:
        handle = ray.get_actor(replica_name(name, replica), namespace=namespace)
    except ValueError:
        raise ValueError(
            f"no supernet host {replica_name(name, replica)!r} in namespace "
            f"{namespace or ray.get_runtime_context().namespace!r}; start it with start_hosts"
        ) from None
    with _CACHE_LOCK:
        _HANDLES[key] = handle
    return handle


def count_replicas(name: str, *, namespace: str | None = None) -> int:
    """Number of live replicas ``f"{name}-0"``, ``f"{name}-1"``, ... (cached per process)."""
    with _CACHE_LOCK:
        if (namespace, name) in _COUNTS:
            return _COUNTS[(namespace, name)]
    n = 0
    while True:
        try:
            _lookup(name, n, namespace)
        except ValueError:
            break
        n += 1
    if n:
        with _CACHE_LOCK:
            _COUNTS[(namespace, name)] = n
    return n


def _worker_key() -> int:
    """A stable hash of the calling process's Ray worker id (its pid outside Ray)."""
    worker = ray.get_runtime_context().get_worker_id() if ray.is_initialized() else ""
    worker = worker or str(os.getpid())
    return int(hashlib.sha1(worker.encode()).hexdigest(), 16)


def pick_replica(replicas: int) -> int:
    """Replica for the calling process: a stable hash of its Ray worker id, mod ``replicas``.

    Each Tune trial actor (one worker process, reused across trials) sticks to one replica,
    and workers spread evenly over replicas. Node locality is not considered here (see
    ``replica_nodes`` and ``get_host``).
    """
    if replicas <= 1:
        return 0
    return _worker_key() % replicas


def replica_nodes(
    name: str, *, replicas: int | None = None, namespace: str | None = None
) -> dict[int, str]:
    """Replica index -> Ray node id of a host's replicas (asked once per process, cached).

    Replicas that cannot answer (stopped for good) are left out.
    """
    key = (namespace, name)
    with _CACHE_LOCK:
        if key in _NODES:
            return dict(_NODES[key])
    n = replicas if replicas is not None else count_replicas(name, namespace=namespace)
    refs = {i: _lookup(name, i, namespace).ready.remote() for i in range(n)}
    found: dict[int, str] = {}
    for i, ref in refs.items():
        try:
            found[i] = str(ray.get(ref)["node_id"])
        except ray.exceptions.RayActorError:
            continue
    with _CACHE_LOCK:
        _NODES[key] = found
    return dict(found)


def get_host(
    name: str,
    *,
    replica: int | None = None,
    replicas: int | None = None,
    namespace: str | None = None,
) -> ActorHandle:
    """The handle of a running host, from any process of the cluster (``ray.get_actor``).

    Without ``replica`` it chooses among ``replicas`` (counted by name if None): a replica
    on the caller's own Ray node when there is one (``replicas="per_node"`` puts one on
    every node), else any; callers spread over the candidates by a hash of their worker
    id. Raises ``ValueError`` if no such host runs.
    """
    if replica is None:
        n = replicas if replicas is not None else count_replicas(name, namespace=namespace)
        if n < 1:
            raise ValueError(f"no supernet host named {name!r}-<i>; start it with start_hosts")
        if n == 1:
            replica = 0
        else:
            from raynas.run.placement import choose_replica, current_node_id

            nodes = replica_nodes(name, replicas=n, namespace=namespace)
            replica = choose_replica(nodes, n, node_id=current_node_id(), key=_worker_key())
    return _lookup(name, replica, namespace)


def forget_host(name: str, *, namespace: str | None = None) -> None:
    """Drop this process's cached handles of ``name`` (after a host was stopped)."""
    with _CACHE_LOCK:
        for key in [k for k in _HANDLES if k[:2] == (namespace, name)]:
            del _HANDLES[key]
        _COUNTS.pop((namespace, name), None)
        _NODES.pop((namespace, name), None)


def sync_replicas(
    name: str,
    *,
    replicas: int | None = None,
    namespace: str | None = None,
    path: str | None = None,
) -> str:
    """Checkpoint replica 0 (to ``path`` or its own file) and make the others load it.

    Replicas on the primary's node read the file; replicas on other nodes receive its
    bytes through the object store (``install_checkpoint``), so nodes need no shared
    filesystem for the sync.
    """
    n = replicas if replicas is not None else count_replicas(name, namespace=namespace)
    primary = get_host(name, replica=0, namespace=namespace)
    written = ray.get(primary.checkpoint.remote(path))
    nodes = replica_nodes(name, replicas=n, namespace=namespace) if n > 1 else {}
    same_node = [i for i in range(1, n) if i in nodes and nodes[i] == nodes.get(0)]
    elsewhere = [i for i in range(1, n) if i not in same_node]
    refs = [get_host(name, replica=i, namespace=namespace).load.remote(written)
            for i in same_node]
    if elsewhere:
        data = primary.checkpoint_bytes.remote(written)
        refs += [get_host(name, replica=i, namespace=namespace).install_checkpoint.remote(
            data, written) for i in elsewhere]
    ray.get(refs)
    return str(written)


def stop_hosts(name: str, replicas: int | None = None, namespace: str | None = None) -> int:
    """Kill the hosts for good (no restart); return how many were found."""
    n = replicas if replicas is not None else count_replicas(name, namespace=namespace)
    stopped = 0
    for i in range(n):
        try:
            handle = ray.get_actor(replica_name(name, i), namespace=namespace)
        except ValueError:
            continue
        ray.kill(handle, no_restart=True)
        stopped += 1
    forget_host(name, namespace=namespace)
    return stopped
