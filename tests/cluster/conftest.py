"""A real two-node Ray cluster on this machine: `ray start --head` and a second raylet.

Both are separate `ray start --block` processes in their own sessions, with their own temp dir,
ports and auth token file, so they never touch another test's (or person's) Ray. Teardown ends
exactly the processes that belong to them, by pid: never `ray stop`, which would stop every
Ray on the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
START_TIMEOUT_S = 90


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free on this machine a moment ago."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


@dataclass
class LocalCluster:
    """Two raylets (head with dashboard, 1 CPU each) started with `ray start --block`."""

    root: Path
    env: dict[str, str]
    gcs_port: int = 0
    dashboard_port: int = 0
    procs: list[subprocess.Popen] = field(default_factory=list)
    node_ids: list[str] = field(default_factory=list)
    raylets: set[int] = field(default_factory=set)
    logs: list = field(default_factory=list)

    @property
    def address(self) -> str:
        """The GCS address for `ray.init` / `raynas run --address`."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        """The job server's URL for `raynas submit --address`."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, args: list[str], name: str) -> None:
        # Each node its own temp dir, as on separate machines: nodes sharing one would share
        # runtime_resources, and one node's clean-up would delete a job's working dir under
        # the other's feet.
        out = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.logs.append(out)
        self.procs.append(subprocess.Popen(
            [RAY, "start", "--block", "--num-cpus", "1", "--temp-dir", str(self.root / name),
             "--min-worker-port", "0", "--max-worker-port", "0", "--disable-usage-stats",
             *args],
            env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        ))

    def start(self) -> None:
        """Start the head, then the second node; return once both are alive."""
        (self.gcs_port, self.dashboard_port, client, agent_http, agent_grpc, runtime_env,
         metrics, agent_http2, agent_grpc2, runtime_env2, metrics2) = free_ports(11)
        self._start(["--head", "--port", str(self.gcs_port), "--dashboard-host", "127.0.0.1",
                     "--dashboard-port", str(self.dashboard_port),
                     "--ray-client-server-port", str(client),
                     "--dashboard-agent-listen-port", str(agent_http),
                     "--dashboard-agent-grpc-port", str(agent_grpc),
                     "--runtime-env-agent-port", str(runtime_env),
                     "--metrics-export-port", str(metrics)], "head")
        self._wait_for_head()
        self._start(["--address", self.address,
                     "--dashboard-agent-listen-port", str(agent_http2),
                     "--dashboard-agent-grpc-port", str(agent_grpc2),
                     "--runtime-env-agent-port", str(runtime_env2),
                     "--metrics-export-port", str(metrics2)], "node")
        self.node_ids = self._wait_for_nodes(2)

    def _wait_for_head(self) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.procs[0].poll() is not None:
                break
            try:
                urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2)
                return
            except urllib.error.HTTPError:  # 401: up, and asking for the token
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"Ray head did not start: {_read(self.root / 'head.log')[-3000:]!r}")

    def _wait_for_nodes(self, n: int) -> list[str]:
        code = (
            "import json, sys, time, ray\n"
            "ray.init(address=sys.argv[1], log_to_driver=False)\n"
            "deadline = time.monotonic() + float(sys.argv[3])\n"
            "while time.monotonic() < deadline:\n"
            "    alive = [x['NodeID'] for x in ray.nodes() if x['Alive']]\n"
            "    if len(alive) >= int(sys.argv[2]):\n"
            "        break\n"
            "    time.sleep(0.5)\n"
            "print(json.dumps(alive))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, self.address, str(n), str(START_TIMEOUT_S)],
            env=self.env, capture_output=True, text=True, timeout=START_TIMEOUT_S + 30,
        )
        nodes = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []
        if len(nodes) < n:
            raise RuntimeError(
                f"{len(nodes)} of {n} Ray nodes came up: {out.stderr[-2000:]} "
                f"{_read(self.root / 'node.log')[-2000:]!r}"
            )
        return sorted(nodes)

    def our_pids(self) -> set[int]:
        """Every live process of this cluster: the `ray start` sessions, the processes that
        name its temp dir, and the workers of its raylets (``RAY_RAYLET_PID`` in their env)."""
        sessions = {p.pid for p in self.procs}
        marker = str(self.root).encode()
        procs = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                pgid = os.getpgid(int(entry.name))
            except OSError:
                continue
            procs.append((int(entry.name), pgid, _read(entry / "cmdline"), entry))
        ours = {pid for pid, pgid, cmd, _ in procs if pgid in sessions or marker in cmd}
        # Remembered: a dead raylet's workers may outlive it (and its cmdline).
        self.raylets |= {pid for pid, _, cmd, _ in procs if pid in ours and b"/raylet" in cmd}
        keys = {f"RAY_RAYLET_PID={pid}".encode() for pid in self.raylets}
        for pid, _, _, entry in procs:
            if pid not in ours and keys & set(_read(entry / "environ").split(b"\0")):
                ours.add(pid)
        return {pid for pid in ours if _alive(pid)}

    def stop(self) -> None:
        """SIGTERM this cluster's processes by pid, SIGKILL what is left after a few seconds."""
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            pids = self.our_pids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
                time.sleep(0.2)
            for proc in self.procs:  # reap our direct children
                try:
                    proc.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    pass
            if not any(_alive(pid) for pid in self.our_pids()):
                break
        for log in self.logs:
            log.close()


def _alive(pid: int) -> bool:
    """True for a running process (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[LocalCluster]:
    """A real two-node Ray cluster (token auth, job server) for the tests of this package;
    stopped when they are done, not at the end of the session."""
    if shutil.which(RAY) is None:
        pytest.skip(f"no ray executable at {RAY}")
    try:
        import aiohttp_cors  # noqa: F401  - the job server needs ray[default]
    except ImportError:
        pytest.skip("Ray's dashboard needs ray[default]: pip install 'raynas[cluster]'")
    # A short root: Ray's socket paths must stay under 108 characters.
    root = Path(tempfile.mkdtemp(prefix="rn", dir="/tmp"))
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",  # `raynas` for submitted jobs
        MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true",
        TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1",
    )
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)  # every test names its own store
    cluster = LocalCluster(root, env)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        leftover = cluster.our_pids()
        shutil.rmtree(root, ignore_errors=True)
        assert not leftover, f"processes of the test cluster still alive: {sorted(leftover)}"
