"""One driver per search: a lease on the parent run, as MLflow tags with a heartbeat.

Each driver (``raynas run``, ``raynas resume``) writes its own tag
``raynas.lease.<owner>`` = ``{"host", "pid", "started", "heartbeat"}`` on the search's
parent run and refreshes ``heartbeat`` every ``HEARTBEAT_S``. MLflow has no
compare-and-set, so the lease is taken as in Lamport's bakery: write your own tag, wait
``SETTLE_S``, then read every live claim; the oldest claim (start time, then owner) wins
and the others withdraw. A claim is live while its heartbeat is younger than ``STALE_S``,
unless its driver ran on this host and its pid is gone (a killed driver is seen at once).
A stale claim blocks a new driver until it is taken over with ``force``; a live one
always blocks. ``raynas.driver_time_s`` sums the running time of every driver, so the
search's wall time survives resumes (to within one heartbeat after a kill).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

TAG_PREFIX = "raynas.lease."
TAG_DRIVER_TIME = "raynas.driver_time_s"
HEARTBEAT_S = 10.0
STALE_S = 60.0
SETTLE_S = 1.5


class LeaseError(RuntimeError):
    """Another driver holds the search; the message names it."""


@dataclass(frozen=True)
class Claim:
    """One driver's claim on a search, as read from its tag."""

    owner: str
    host: str
    pid: int
    started: float
    heartbeat: float

    @classmethod
    def parse(cls, owner: str, text: str) -> Claim | None:
        """The claim in a lease tag's value; None when it is not one."""
        try:
            data = json.loads(text)
            return cls(owner, str(data["host"]), int(data["pid"]), float(data["started"]),
                       float(data["heartbeat"]))
        except (ValueError, KeyError, TypeError):
            return None

    def age(self, now: float) -> float:
        """Seconds since the last heartbeat."""
        return max(0.0, now - self.heartbeat)

    def is_dead(self) -> bool:
        """Whether the claim's driver is known to be gone (a pid of this host no longer running)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def describe(self, now: float) -> str:
        """``pid 123 on host h, heartbeat 4 s ago``."""
        return f"pid {self.pid} on {self.host}, heartbeat {self.age(now):.0f} s ago"


def read_claims(client: MlflowClient, run_id: str) -> list[Claim]:
    """Every claim recorded on the run, oldest first."""
    tags = client.get_run(run_id).data.tags
    claims = [Claim.parse(k[len(TAG_PREFIX):], v) for k, v in tags.items()
              if k.startswith(TAG_PREFIX)]
    return sorted((c for c in claims if c is not None), key=lambda c: (c.started, c.owner))


class Lease:
    """This driver's claim on a search run, kept alive by a heartbeat thread."""

    def __init__(self, client: MlflowClient, run_id: str, *, heartbeat_s: float = HEARTBEAT_S,
                 stale_s: float = STALE_S, settle_s: float = SETTLE_S) -> None:
        self.client = client
        self.run_id = run_id
        self.owner = uuid.uuid4().hex[:12]
        self.heartbeat_s = heartbeat_s
        self.stale_s = stale_s
        self.settle_s = settle_s
        self.started = time.time()
        self.prior_time_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def tag(self) -> str:
        """This driver's tag key."""
        return TAG_PREFIX + self.owner

    def _value(self, now: float) -> str:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "started": self.started, "heartbeat": now})

    def acquire(self, *, force: bool = False, fresh: bool = False) -> None:
        """Claim the run; ``LeaseError`` naming the holder when another driver has it.

        ``fresh``: the run was just created by this driver, so no one else can claim it.
        """
        if not fresh:
            self._check_others(force=force, before_claim=True)
        self.started = time.time()
        self.client.set_tag(self.run_id, self.tag, self._value(self.started))
        if not fresh:
            time.sleep(self.settle_s)  # claims written meanwhile are visible after this
            try:
                self._check_others(force=force, before_claim=False)
            except LeaseError:
                self._withdraw()
                raise
        tags = self.client.get_run(self.run_id).data.tags
        try:
            self.prior_time_s = float(tags.get(TAG_DRIVER_TIME, 0.0))
        except ValueError:
            self.prior_time_s = 0.0
        self._thread = threading.Thread(target=self._beat, name="raynas-lease", daemon=True)
        self._thread.start()

    def _check_others(self, *, force: bool, before_claim: bool) -> None:
        now = time.time()
        mine = (self.started, self.owner)
        for claim in read_claims(self.client, self.run_id):
            if claim.owner == self.owner:
                continue
            if claim.is_dead():
                self._drop(claim, "its driver is gone")
                continue
            stale = claim.age(now) > self.stale_s
            if stale and force:
                self._drop(claim, "taken over with --force")
                continue
            if not before_claim and not stale and (claim.started, claim.owner) > mine:
                continue  # a younger live claim withdraws on its own
            if stale:
                raise LeaseError(
                    f"search run {self.run_id!r} is leased to {claim.describe(now)} (stale); "
                    "if that driver is gone, take over with --force"
                )
            raise LeaseError(
                f"search run {self.run_id!r} is being run by another driver "
                f"({claim.describe(now)}); wait for it to stop, or stop it first"
            )

    def _drop(self, claim: Claim, why: str) -> None:
        logger.info("lease of %s on run %s dropped: %s", claim.owner, self.run_id, why)
        try:
            self.client.delete_tag(self.run_id, TAG_PREFIX + claim.owner)
        except MlflowException:
            pass  # another driver dropped it first

    def elapsed_s(self) -> float:
        """Running time of every driver of this search so far, this one included."""
        return self.prior_time_s + (time.time() - self.started)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            now = time.time()
            try:
                self.client.log_batch(self.run_id, tags=[
                    _tag(self.tag, self._value(now)),
                    _tag(TAG_DRIVER_TIME, f"{self.elapsed_s():.1f}"),
                ])
            except Exception as exc:  # an outage must not stop the search
                logger.debug("lease heartbeat of run %s failed: %s", self.run_id, exc)

    def release(self) -> None:
        """Stop the heartbeat, record this driver's time and withdraw the claim."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s + 5)
            self._thread = None
            try:
                self.client.set_tag(self.run_id, TAG_DRIVER_TIME, f"{self.elapsed_s():.1f}")
            except Exception as exc:
                logger.debug("cannot record the driver time of run %s: %s", self.run_id, exc)
        self._withdraw()

    def _withdraw(self) -> None:
        try:
            self.client.delete_tag(self.run_id, self.tag)
        except Exception as exc:
            logger.debug("cannot withdraw the lease on run %s: %s", self.run_id, exc)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _tag(key: str, value: str) -> Any:
    from mlflow.entities import RunTag

    return RunTag(key, value)
