"""Processes of a `raynas` driver started by a test: its tree, its Ray node, their sockets.

A local run starts Ray's processes in a session of their own (``raynas.run.localray``), so
killing the driver's process group does not reach them; after a SIGKILL of the driver some
(Ray's agents) outlive it for a while. They are found by the Ray session folder they name or
write to, ``session_<date>_<pid of the driver>``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess


def _parents() -> dict[int, int]:
    """Pid -> parent pid of every process, from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    out[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return out


def cmdline(pid: int) -> str:
    """The process's command line, or '' once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _fd_targets(pid: int) -> list[str]:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    targets = []
    for fd in fds:
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return targets


def run_processes(driver_pid: int) -> set[int]:
    """The driver, its descendants, and every process of the Ray session it started."""
    parents = _parents()
    tree, grew = {driver_pid}, True
    while grew:
        new = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= new
        grew = bool(new)
    session = re.compile(rf"/session_[^/\s]*_{driver_pid}(/|\s|$)")
    for pid in parents:
        if pid in tree:
            continue
        texts = [cmdline(pid), *_fd_targets(pid)]
        if any(session.search(text + " ") for text in texts):
            tree.add(pid)
    return tree


def kill_run(proc: subprocess.Popen) -> None:
    """SIGKILL a driver started in its own process group, and what is left of its Ray node."""
    left = run_processes(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in left - {proc.pid}:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def _socket_inodes(pid: int) -> set[int]:
    return {int(t[8:-1]) for t in _fd_targets(pid) if t.startswith("socket:[")}


def _address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_addr)
    # /proc/net/tcp* prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def tcp_listeners(pids: set[int]) -> list[tuple[str, int, int, str]]:
    """(address, port, pid, command) of every listening TCP socket the processes hold."""
    owner = {inode: pid for pid in pids for inode in _socket_inodes(pid)}
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, state, inode = fields[1], fields[3], int(fields[9])
                if state != "0A" or inode not in owner:  # 0A: LISTEN
                    continue
                host, port = local.split(":")
                pid = owner[inode]
                found.append((str(_address(host)), int(port, 16), pid, cmdline(pid)[:60]))
    return sorted(found)


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4 loopback address mapped into IPv6."""
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)
