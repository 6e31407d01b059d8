"""The lease on a search run: one driver at a time, stale and dead holders, driver time."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from raynas.tracking.lease import TAG_DRIVER_TIME, TAG_PREFIX, Lease, LeaseError, read_claims


@pytest.fixture
def run(tmp_path: Path) -> tuple[MlflowClient, str]:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("lease")
    return client, client.create_run(experiment).info.run_id


def _claim(client: MlflowClient, run_id: str, owner: str, *, pid: int, age_s: float,
           host: str | None = None) -> None:
    now = time.time()
    client.set_tag(run_id, TAG_PREFIX + owner, json.dumps({
        "host": host or socket.gethostname(), "pid": pid, "started": now - age_s - 1,
        "heartbeat": now - age_s}))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_holder_is_named_and_never_overridden(run) -> None:
    client, run_id = run
    _claim(client, run_id, "other", pid=1, age_s=2.0, host="node-7")
    for force in (False, True):
        with pytest.raises(LeaseError, match=r"another driver \(pid 1 on node-7, heartbeat 2 s"):
            Lease(client, run_id, settle_s=0.0).acquire(force=force)
    assert [c.owner for c in read_claims(client, run_id)] == ["other"]


def test_a_stale_holder_is_taken_over_only_with_force(run) -> None:
    client, run_id = run
    _claim(client, run_id, "old", pid=1, age_s=600.0, host="node-7")
    with pytest.raises(LeaseError, match="stale.*--force"):
        Lease(client, run_id, settle_s=0.0).acquire()
    lease = Lease(client, run_id, settle_s=0.0)
    lease.acquire(force=True)
    assert [c.owner for c in read_claims(client, run_id)] == [lease.owner]
    lease.release()
    assert read_claims(client, run_id) == []


def test_a_dead_local_holder_is_taken_over_at_once(run) -> None:
    client, run_id = run
    _claim(client, run_id, "killed", pid=_dead_pid(), age_s=1.0)  # SIGKILLed a second ago
    lease = Lease(client, run_id, settle_s=0.0)
    lease.acquire()
    assert [c.owner for c in read_claims(client, run_id)] == [lease.owner]
    lease.release()


def test_heartbeat_and_driver_time_add_up_over_drivers(run) -> None:
    client, run_id = run
    first = Lease(client, run_id, heartbeat_s=0.05, settle_s=0.0)
    first.acquire(fresh=True)
    claim = read_claims(client, run_id)[0]
    deadline = time.monotonic() + 60
    while read_claims(client, run_id)[0].heartbeat == claim.heartbeat:  # wait for a beat
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.release()
    spent = float(client.get_run(run_id).data.tags[TAG_DRIVER_TIME])
    assert spent > 0
    second = Lease(client, run_id, settle_s=0.0)
    second.acquire()
    assert second.prior_time_s == spent and second.elapsed_s() >= spent
    second.release()


def test_of_two_drivers_claiming_at_once_exactly_one_wins(run) -> None:
    client, run_id = run
    outcomes: list[str] = []
    barrier = threading.Barrier(4)
    leases = [Lease(client, run_id, settle_s=1.0) for _ in range(4)]

    def claim(lease: Lease) -> None:
        barrier.wait()
        try:
            lease.acquire()
            outcomes.append("won")
        except LeaseError:
            outcomes.append("refused")

    threads = [threading.Thread(target=claim, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 3 + ["won"]
    (winner,) = read_claims(client, run_id)
    for lease in leases:
        lease.release()
    assert winner.owner in {lease.owner for lease in leases}
