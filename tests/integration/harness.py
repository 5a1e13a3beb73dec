"""A real gunicorn server for integration tests, and helpers to watch it.

``Server`` starts ``gunicorn`` in its own session (so its whole process tree
shares one process group), logs to a file, and knows how to read the tree
from /proc. Waiting is always on a condition with a deadline.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
APPS = Path(__file__).parent / "apps"
REPO = Path(__file__).resolve().parents[2]


class Timeout(AssertionError):
    pass


def wait_for(condition: Callable[[], T], timeout: float = 10.0, what: str = "condition", interval: float = 0.02) -> T:
    """Poll ``condition`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    rest = stat[stat.rfind(b")") + 2 :].split()
    return rest[0].decode(), int(rest[1]), int(rest[2])


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    stat = read_stat(pid)
    return stat is not None and stat[0] != "Z"


def group_members(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat is not None and stat[2] == pgid and stat[0] != "Z":
                pids.append(int(entry))
    return pids


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    args: Sequence[str]
    log_path: Path
    env: dict[str, str]
    cwd: Path
    port: int | None = None
    unix_path: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    launcher: Sequence[str] = (sys.executable, "-m", "gunicorn")
    extra: dict[str, Any] = field(default_factory=dict)

    # -- life ---------------------------------------------------------------------------

    def start(self) -> Server:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.launcher, *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill_all(self) -> list[int]:
        """Stop the whole process group; return pids that were still alive at the end."""
        if self.proc is None:
            return []
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=5)
        leftovers: list[int] = []
        try:
            wait_for(lambda: not group_members(self.pid), timeout=5, what="process group to be empty")
        except Timeout:
            leftovers = group_members(self.pid)
        self._log.close()
        return leftovers

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10.0, count: int = 1) -> str:
        return wait_for(lambda: self.log().count(text) >= count and self.log(), timeout, what=f"{text!r} x{count} in the log")

    # -- process tree ---------------------------------------------------------------------

    def children(self) -> list[int]:
        return [p for p in group_members(self.pid) if p != self.pid and read_stat(p) and read_stat(p)[1] == self.pid]  # type: ignore[index]

    def by_title(self, role: str) -> list[int]:
        return sorted(p for p in group_members(self.pid) if cmdline(p).startswith(f"gunicorn: {role}"))

    def workers(self) -> list[int]:
        return self.by_title("worker")

    def preloaders(self) -> list[int]:
        return self.by_title("preloader")

    def wait_workers(self, n: int, timeout: float = 20.0, exclude: Sequence[int] = ()) -> list[int]:
        """Wait until exactly ``n`` workers (not in ``exclude``) exist and all answer."""

        def ready() -> list[int] | None:
            pids = [p for p in self.workers() if p not in exclude]
            return pids if len(pids) == n and len(self.workers()) == n else None

        pids = wait_for(ready, timeout, what=f"{n} workers")
        return pids

    # -- requests -------------------------------------------------------------------------

    def request(self, path: str = "/", timeout: float = 5.0, method: str = "GET") -> Response:
        if self.unix_path is not None:
            conn: http.client.HTTPConnection = _UnixHTTPConnection(self.unix_path, timeout=timeout)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, headers={"Connection": "close"})
            resp = conn.getresponse()
            return Response(resp.status, resp.read(), dict(resp.getheaders()))
        finally:
            conn.close()

    def get_json(self, path: str = "/", timeout: float = 5.0) -> Any:
        resp = self.request(path, timeout)
        assert resp.status == 200, (resp.status, resp.body[:500])
        return resp.json()

    def wait_serving(self, timeout: float = 20.0) -> Any:
        return wait_for(lambda: self.get_json("/", timeout=2), timeout, what="the server to answer")

    def pids_answering(self, wanted: set[int], timeout: float = 15.0) -> set[int]:
        """Send requests until every pid in ``wanted`` answered at least once."""
        seen: set[int] = set()

        def all_seen() -> bool:
            seen.add(self.get_json("/")["pid"])
            return wanted <= seen

        wait_for(all_seen, timeout, what=f"answers from {sorted(wanted)}", interval=0.0)
        return seen


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def import_count(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def steal_fd(pid: int, fd: int) -> int:
    """A duplicate of another process's descriptor (pidfd_getfd, Linux >= 5.6; needs ptrace rights)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        new = libc.syscall(438, pidfd, fd, 0)  # SYS_pidfd_getfd, the same number on x86_64 and aarch64
        if new < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return int(new)
    finally:
        os.close(pidfd)


def unix_socket_inodes() -> dict[str, str]:
    """Every unix socket: inode ('socket:[N]') -> bound path ('' if unnamed), from /proc/net/unix."""
    out = {}
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 7:
                out[f"socket:[{parts[6]}]"] = parts[7] if len(parts) >= 8 else ""
    return out


def fd_targets(pid: int) -> dict[int, str]:
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return out


def fd_kinds(pid: int, kind: str) -> set[str]:
    """The targets of ``pid``'s descriptors that are of ``kind`` ('socket', 'pipe'): 'socket:[N]', ..."""
    return {t for t in fd_targets(pid).values() if t.startswith(kind + ":")}
