"""A real gunicorn server for integration tests, and helpers to watch it.

``Server`` starts ``gunicorn`` in its own session (so its whole process tree
shares one process group), logs to a file, and knows how to read the tree
from /proc. Waiting is always on a condition with a deadline.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

T = TypeVar("T")
APPS = Path(__file__).parent / "apps"
REPO = Path(__file__).resolve().parents[2]

#: ``-k smartspawn.Worker``: the plugin's worker class, spawn method left to the configuration.
SMARTSPAWN: Final = ("-k", "smartspawn.Worker")
#: The plugin's worker class with each spawn method named on the command line.
SMART: Final = (*SMARTSPAWN, "--spawn-method", "smart")
DIRECT: Final = (*SMARTSPAWN, "--spawn-method", "direct")


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

    def preloaders_started(self, app: str | None = None) -> list[tuple[int, int]]:
        """(generation, pid) of every preloader the master logged as started, of ``app`` or of any app."""
        pattern = re.compile(r"app=(\S+) preloader gen=(\d+) pid=(\d+) started$")
        found = []
        for line in self.log().splitlines():
            match = pattern.search(line)
            if match and app in (None, match.group(1)):
                found.append((int(match.group(2)), int(match.group(3))))
        return found

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
        # the master's children only: a preloader's own children (the double fork's intermediate,
        # the boot's inspector) carry its title until they set their own
        return [p for p in self.by_title("preloader") if (read_stat(p) or ("", 0, 0))[1] == self.pid]

    def wait_workers(self, n: int, timeout: float = 20.0, exclude: Sequence[int] = ()) -> list[int]:
        """Wait until exactly ``n`` workers (not in ``exclude``) exist and all answer."""

        def ready() -> list[int] | None:
            pids = [p for p in self.workers() if p not in exclude]
            return pids if len(pids) == n and len(self.workers()) == n else None

        pids = wait_for(ready, timeout, what=f"{n} workers")
        return pids

    def wait_registered(self, pids: Sequence[int], timeout: float = 20.0) -> None:
        """Wait until the master counts ``pids`` as its workers (status): a worker runs, and shows
        in ``ps``, a moment before its preloader's report of it reaches the master."""

        def known() -> bool:
            answer = self.control({"command": "status"})
            listed = {w["pid"] for app in answer["result"]["apps"] for w in app["workers"]} if answer.get("ok") else set()
            return set(pids) <= listed

        wait_for(known, timeout, what=f"the master to register workers {sorted(pids)}")

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

    def app_pids(self, role: str, app: str) -> list[int]:
        """Processes titled ``gunicorn: ROLE [APP]`` (a multi-app master names each app)."""
        return self.by_title(f"{role} [{app}]")

    def arg(self, flag: str) -> str | None:
        """The value given to ``flag`` on the command line (``--flag VALUE`` or ``--flag=VALUE``)."""
        args = list(self.args)
        for i, a in enumerate(args):
            if a == flag and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(flag + "="):
                return a.split("=", 1)[1]
        return None

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request to the master's smartspawn control socket (``--smartspawn-socket``)."""
        path = self.arg("--smartspawn-socket")
        assert path is not None, "this server was started without --smartspawn-socket"
        return ask_control(Path(path), request)

    def pids_answering(self, wanted: set[int], timeout: float = 15.0) -> set[int]:
        """Send requests until every pid in ``wanted`` answered at least once."""
        seen: set[int] = set()

        def all_seen() -> bool:
            seen.add(self.get_json("/")["pid"])
            return wanted <= seen

        wait_for(all_seen, timeout, what=f"answers from {sorted(wanted)}", interval=0.0)
        return seen


def app_pids(server: Server, role: str, app: str) -> list[int]:
    """Processes of ``server`` titled ``gunicorn: ROLE [APP]``."""
    return server.app_pids(role, app)


def get_json(port: int, path: str = "/", timeout: float = 5.0) -> Any:
    """GET ``path`` from 127.0.0.1:``port``; it must answer 200 with JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body[:500])
        return json.loads(body)
    finally:
        conn.close()


def ask_control(path: Path, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """One JSON request line to a smartspawn control socket; its one JSON reply."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


@dataclass(frozen=True)
class Outcome:
    """One request made by :class:`Load`."""

    started: float  # monotonic
    ended: float
    ok: bool
    why: str  # "" when ok: "status 502", or the exception's repr
    body: Any = None  # the JSON answer of a request that succeeded, when it was JSON


class Load:
    """Requests in a loop from a few threads, each one's start, end and outcome kept.

    ``with Load(server, threads=4) as load: ...``: the threads run until the
    block ends. Appending to a list is atomic, so the threads share ``results``.
    """

    def __init__(self, server: Server, threads: int = 1, path: str = "/", timeout: float = 10.0) -> None:
        self.server, self.path, self.timeout = server, path, timeout
        self.results: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                resp = self.server.request(self.path, timeout=self.timeout)
            except Exception as exc:  # every failure counts
                self.results.append(Outcome(started, time.monotonic(), False, repr(exc)))
                continue
            if resp.status != 200:
                self.results.append(Outcome(started, time.monotonic(), False, f"status {resp.status}"))
                continue
            try:
                body = resp.json()
            except ValueError:
                body = None
            self.results.append(Outcome(started, time.monotonic(), True, "", body))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)
        assert not any(t.is_alive() for t in self._threads), "a load thread did not stop"

    @property
    def failures(self) -> list[Outcome]:
        return [r for r in self.results if not r.ok]

    def answers(self, key: str) -> list[Any]:
        """``key`` of every successful JSON answer, in the order they arrived."""
        return [r.body[key] for r in list(self.results) if r.ok and isinstance(r.body, dict) and key in r.body]

    def wait_more(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` more requests have been answered successfully than now."""
        target = sum(1 for r in list(self.results) if r.ok) + count
        wait_for(lambda: sum(1 for r in list(self.results) if r.ok) >= target, timeout, what=f"{count} more answers")


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


def tcp_listeners(port: int) -> set[str]:
    """Socket inodes ('socket:[N]') listening on TCP ``port`` (IPv4 and IPv6), from /proc/net/tcp*."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                lines = f.readlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            # sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                found.add(f"socket:[{parts[9]}]")
    return found


def holds_unix_sockets_at(pid: int, paths: Sequence[str]) -> bool:
    """Does ``pid`` hold a unix socket bound at every one of ``paths``?"""
    named = unix_socket_inodes()
    held = {named.get(t) for t in fd_targets(pid).values() if t.startswith("socket:")}
    return all(p in held for p in paths)
