"""Tests of the SupernetHost actor, its helpers and SupernetEvaluator on a real local Ray."""

from __future__ import annotations

import logging
import pickle
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray

from raynas.supernet.evaluator import SupernetEvaluator
from raynas.supernet.host import get_host, start_hosts, stop_hosts
from raynas.supernet.trainer import SupernetTrainer
from spaces import create_space

pytestmark = pytest.mark.ray

SPEC = {"name": "nb201", "channels": 8, "cells_per_stage": 1, "resolution": 8}
# A quarter CPU each: the session has 2 CPUs, and a 1-CPU task must fit beside the hosts.
HOST_CPUS = 0.25


def _archs(n: int, seed: int) -> list[str]:
    space = create_space(**SPEC)
    rng = np.random.default_rng(seed)
    return [space.to_string(space.sample(rng)) for _ in range(n)]


@pytest.fixture(scope="module")
def host(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """One trained host (30 SPOS steps, checkpointed), its name and checkpoint file."""
    name = f"test-host-{uuid.uuid4().hex[:6]}"
    path = tmp_path_factory.mktemp("host") / "supernet.pt"
    (handle,) = start_hosts(name, space=SPEC, num_cpus=HOST_CPUS, num_threads=1,
                            checkpoint_path=path, concurrency=2)
    records = ray.get(handle.train.remote(30))
    assert [r["step"] for r in records] == list(range(1, 31))
    assert path.is_file()
    yield name, path
    stop_hosts(name, 1)


def test_concurrent_evaluations_match_sequential_ones(host: tuple[str, Path]) -> None:
    name, path = host
    handle = get_host(name)
    archs = _archs(8, seed=1)
    # 8 calls in flight at once, and two threads submitting interleaved calls, all fresh.
    at_once = ray.get([handle.evaluate.remote(a) for a in archs])
    threaded: dict[int, list[dict[str, float]]] = {}

    def worker(k: int) -> None:
        order = archs if k == 0 else archs[::-1]
        out = ray.get([handle.evaluate.remote(a, use_cache=False) for a in order])
        threaded[k] = out if k == 0 else out[::-1]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sequential = [ray.get(handle.evaluate.remote(a, use_cache=False)) for a in archs]
    assert at_once == sequential == threaded[0] == threaded[1]
    assert ray.get(handle.evaluate_many.remote(archs)) == sequential
    # The same numbers as a trainer in this process that loads the host's checkpoint.
    local = SupernetTrainer(SPEC, num_threads=1)
    local.load(path)
    assert local.evaluate_many(archs) == sequential
    stats = ray.get(handle.stats.remote())
    assert stats["steps"] == 30 and stats["torch_threads"] == 1 and stats["pool_size"] == 0
    assert stats["concurrency"] == 2 and stats["eval_threads"] == 1
    # Two long calls submitted together run side by side in the actor's two threads.
    many = [handle.evaluate_many.remote(archs * 4, use_cache=False) for _ in range(2)]
    assert ray.get(many) == [sequential * 4] * 2
    assert ray.get(handle.stats.remote())["max_concurrent_evaluations"] == 2


def test_training_never_overlaps_evaluations(
    ray_session: None, tmp_path: Path
) -> None:
    """Evaluations in flight around a train call give the numbers before or after it."""
    name = f"test-rw-{uuid.uuid4().hex[:6]}"
    (handle,) = start_hosts(name, space=SPEC, num_cpus=HOST_CPUS, num_threads=1,
                            checkpoint_path=tmp_path / "s.pt", concurrency=2)
    try:
        ray.get(handle.train.remote(5))
        archs = _archs(4, seed=7)
        before = ray.get(handle.evaluate_many.remote(archs, use_cache=False))
        calls = [handle.evaluate_many.remote(archs, use_cache=False) for _ in range(3)]
        trained = handle.train.remote(5)
        calls += [handle.evaluate_many.remote(archs, use_cache=False) for _ in range(3)]
        ray.get(trained)
        after = ray.get(handle.evaluate_many.remote(archs, use_cache=False))
        assert before != after and {r["supernet_step"] for r in after} == {10.0}
        for result in ray.get(calls):
            assert result in (before, after)  # never a mix of two weight versions
    finally:
        stop_hosts(name, 1)


def test_get_host_from_a_task_and_unknown_names(host: tuple[str, Path]) -> None:
    name, _ = host

    @ray.remote(num_cpus=1)
    def remote_steps(host_name: str) -> int:
        return int(ray.get(get_host(host_name).ready.remote())["steps"])

    assert ray.get(remote_steps.remote(name)) == 30
    with pytest.raises(ValueError, match="no supernet host"):
        get_host(f"{name}-missing")


def test_killed_host_restarts_from_its_checkpoint(host: tuple[str, Path]) -> None:
    name, _ = host
    handle = get_host(name)
    archs = _archs(3, seed=2)
    before = ray.get(handle.evaluate_many.remote(archs, use_cache=False))
    pid = ray.get(handle.ready.remote())["pid"]
    ray.kill(handle, no_restart=False)
    # Calls made while it restarts are retried; the restarted host loaded its checkpoint.
    after = ray.get(handle.evaluate_many.remote(archs, use_cache=False), timeout=120)
    stats = ray.get(get_host(name).stats.remote())
    assert after == before
    assert stats["pid"] != pid and stats["restored"] and stats["reconstructed"]
    assert stats["steps"] == 30


def test_supernet_evaluator_setup_then_evaluate_in_a_task(
    ray_session: None, tmp_path: Path
) -> None:
    space = create_space(**SPEC)
    ev = SupernetEvaluator(space, train_steps=20, chunk_steps=8, replicas=2, num_cpus=HOST_CPUS,
                           num_threads=1, batch_size=32)
    assert len(pickle.dumps(ev)) < 4000  # names and options only: no data, no handles
    logged: list[tuple[dict[str, float], int]] = []
    ev.setup(log_metrics=lambda m, s: logged.append((m, s)), checkpoint_dir=str(tmp_path))
    try:
        assert [s for _, s in logged] == list(range(1, 21))
        assert set(logged[0][0]) == {"supernet/loss", "supernet/acc"}
        assert ev.checkpoint_path is not None and Path(ev.checkpoint_path).is_file()
        assert ev.default_metric == ("val_acc", "max")

        @ray.remote(num_cpus=1)
        def trial(evaluator: SupernetEvaluator, arch: str) -> dict[str, float]:
            return evaluator.evaluate(arch)  # as a Tune worker would, with a pickled copy

        archs = _archs(4, seed=3)
        remote = ray.get([trial.remote(ev, a) for a in archs])
        local = [ev.evaluate(a) for a in archs]
        assert remote == local and set(remote[0]) == set(ev.metrics)
        assert all(r["supernet_step"] == 20 for r in remote)
        # Both replicas hold the synced weights.
        replicas = [get_host(ev.host_name, replica=i) for i in range(2)]
        per_replica = ray.get([h.evaluate_many.remote(archs) for h in replicas])
        assert per_replica[0] == per_replica[1] == local
    finally:
        ev.teardown()
    with pytest.raises(RuntimeError, match="setup"):
        ev.evaluate(archs[0])


def test_evaluator_of_a_search_logs_every_chunk_and_a_second_driver_continues(
    ray_session: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Host and checkpoint are named after the search; a restored copy is continued."""
    from raynas.tracking.resume import checkpoint_step

    space = create_space(**SPEC)
    search = uuid.uuid4().hex
    options = {"train_steps": 20, "chunk_steps": 8, "num_cpus": HOST_CPUS, "num_threads": 1,
               "batch_size": 32}
    uploaded: list[Path] = []  # what a store would hold after each upload

    def log_artifact(path: str) -> None:
        uploaded.append(tmp_path / "store" / f"{len(uploaded)}.pt")
        uploaded[-1].parent.mkdir(exist_ok=True)
        shutil.copyfile(path, uploaded[-1])

    first = SupernetEvaluator(space, **options)
    first.setup(checkpoint_dir=str(tmp_path / "a"), search_id=search, log_artifact=log_artifact)
    first.teardown()
    assert first.host_name == f"raynas-supernet-{search}"
    assert Path(str(first.checkpoint_path)).name == f"raynas-supernet-{search}.pt"
    assert [checkpoint_step(p) for p in uploaded] == [8, 16, 20]  # one upload per chunk

    steps: list[int] = []
    second = SupernetEvaluator(space, **options)  # a driver killed after the second chunk
    second.setup(log_metrics=lambda m, s: steps.append(s), checkpoint_dir=str(tmp_path / "b"),
                 search_id=search, restore_from=str(uploaded[1]))
    second.teardown()
    assert steps == [17, 18, 19, 20]

    corrupt = tmp_path / f"raynas-supernet-{search}.pt"
    corrupt.write_bytes(uploaded[1].read_bytes()[:500])  # a truncated upload
    steps.clear()
    third = SupernetEvaluator(space, **options)
    third.setup(log_metrics=lambda m, s: steps.append(s), checkpoint_dir=str(tmp_path / "c"),
                search_id=search, restore_from=str(corrupt))
    third.teardown()
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert str(corrupt) in warning.getMessage() and "\n" not in warning.getMessage()
    assert steps == list(range(1, 21)) and checkpoint_step(str(third.checkpoint_path)) == 20
