"""Fork safety without gunicorn: parsing, wording, detection, fencing, library resets, the locked handler.

Everything runs in the test process on real descriptors; where a test needs
"another process", it keeps a duplicate descriptor as the preloader's copy,
or forks once (single-threaded) and leaves the child with ``os._exit``.
"""

from __future__ import annotations

import fcntl
import logging
import logging.config
import os
import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gunicorn_smartspawn import forksafety as fs
from gunicorn_smartspawn.forksafety import detect
from gunicorn_smartspawn.logging import LockedFileHandler, write_all


class RecordingLog:
    """Stands in for gunicorn's logger: keeps (level, message)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _add(self, level: str, msg: str, *args: Any) -> None:
        self.lines.append((level, msg % args if args else msg))

    def warning(self, msg: str, *args: Any) -> None:
        self._add("warning", msg, *args)

    def info(self, msg: str, *args: Any) -> None:
        self._add("info", msg, *args)

    def error(self, msg: str, *args: Any) -> None:
        self._add("error", msg, *args)

    def debug(self, msg: str, *args: Any) -> None:
        self._add("debug", msg, *args)

    def text(self, level: str | None = None) -> str:
        return "\n".join(m for lv, m in self.lines if level in (None, lv))


def cfg(mode: str = "warn", libraries: bool = True) -> SimpleNamespace:
    return SimpleNamespace(fork_safety=mode, fork_safety_libraries=libraries)


@pytest.fixture(autouse=True)
def _forget_set_aside() -> Iterator[None]:
    yield
    fs._set_aside.clear()


@pytest.fixture
def tcp_server() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


def accept(server: socket.socket) -> socket.socket:
    conn, _ = server.accept()
    return conn


def no_eof_yet(sock: socket.socket) -> bool:
    """True if nothing (no data, no FIN) arrived on ``sock``: the peer's connection is intact."""
    try:
        sock.recv(16, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    return False


def eof_within(sock: socket.socket, seconds: float = 5.0) -> bool:
    readable, _, _ = select.select([sock], [], [], seconds)
    return bool(readable) and sock.recv(16) == b""


# -- parsing and wording ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("link", "inode"),
    [("socket:[12345]", 12345), ("socket:[0]", 0), ("pipe:[77]", None), ("/tmp/x", None),
     ("socket:[]", None), ("socket:[12a]", None), ("anon_inode:[eventfd]", None)],
)
def test_parse_socket_link(link: str, inode: int | None) -> None:
    assert fs.parse_socket_link(link) == inode


@pytest.mark.parametrize(
    ("family", "kind", "text"),
    [
        (socket.AF_INET, socket.SOCK_STREAM, "tcp"),
        (socket.AF_INET6, socket.SOCK_STREAM, "tcp"),
        (socket.AF_INET, socket.SOCK_DGRAM, "udp"),
        (socket.AF_INET6, socket.SOCK_DGRAM, "udp"),
        (socket.AF_UNIX, socket.SOCK_STREAM, "unix"),
        (socket.AF_UNIX, socket.SOCK_DGRAM, "unix-dgram"),
        (socket.AF_UNIX, socket.SOCK_SEQPACKET, "unix-seqpacket"),
    ],
)
def test_socket_kind(family: int, kind: int, text: str) -> None:
    assert fs.socket_kind(family, kind) == text


@pytest.mark.parametrize(
    ("family", "address", "text"),
    [
        (socket.AF_INET, ("127.0.0.1", 11211), "127.0.0.1:11211"),
        (socket.AF_INET6, ("::1", 6379, 0, 0), "[::1]:6379"),
        (socket.AF_UNIX, "/run/app.sock", "unix:/run/app.sock"),
        (socket.AF_UNIX, "", "unix:(unnamed)"),
        (socket.AF_UNIX, b"", "unix:(unnamed)"),
        (socket.AF_UNIX, b"\0abstract", "unix:@abstract"),
        (socket.AF_UNIX, "\0abstract", "unix:@abstract"),
        (socket.AF_UNIX, b"/run/b.sock", "unix:/run/b.sock"),
    ],
)
def test_format_address(family: int, address: Any, text: str) -> None:
    assert fs.format_address(family, address) == text


def test_qualified_name() -> None:
    class Holder:
        def method(self) -> None: ...

    assert fs.qualified_name(Holder()).endswith("test_qualified_name.<locals>.Holder")
    assert fs.qualified_name(Holder().method).endswith("Holder.method")
    assert fs.qualified_name(fs.fence) == "gunicorn_smartspawn.forksafety.fencing.fence"
    assert fs.qualified_name(42) == "int"


MEMCACHED = fs.SocketFinding(fd=7, inode=1, family=socket.AF_INET, type=socket.SOCK_STREAM,
                             local="127.0.0.1:48812", peer="127.0.0.1:11211", owner="app.Cache")


def test_describe_socket_and_thread() -> None:
    assert fs.describe_socket(MEMCACHED) == "fd=7 tcp 127.0.0.1:48812 -> 127.0.0.1:11211 (held by app.Cache)"
    anonymous = fs.SocketFinding(3, 1, socket.AF_UNIX, socket.SOCK_STREAM, "unix:(unnamed)", "unix:/x")
    assert fs.describe_socket(anonymous) == "fd=3 unix unix:(unnamed) -> unix:/x"
    library = fs.SocketFinding(9, 1, socket.AF_INET, socket.SOCK_STREAM, "a", "b", owner="psycopg2.extensions.connection",
                               library="django", library_label="django connection 'default'")
    assert fs.describe_socket(library).endswith("(held by django connection 'default')")
    assert fs.describe_thread(fs.ThreadFinding("refresher", True, "app._refresh")) == "thread 'refresher' (daemon, target app._refresh)"
    assert fs.describe_thread(fs.ThreadFinding("Thread-1", False)) == "thread 'Thread-1' (non-daemon)"


def test_report_warns_with_the_peer_the_event_and_the_doc() -> None:
    [(level, line)] = fs.report(fs.Findings(sockets=(MEMCACHED,)), mode="warn", libraries=True)
    assert level == logging.WARNING
    assert "127.0.0.1:11211" in line and "app.Cache" in line
    assert 'Reconnect it in on_event("starting_worker_process")' in line
    assert "fork_safety='fence'" in line and line.endswith("see docs/fork-safety.md")
    assert "interleave" in line


def test_report_in_fence_mode_says_the_first_use_fails() -> None:
    [(level, line)] = fs.report(fs.Findings(sockets=(MEMCACHED,)), mode="fence", libraries=True)
    assert level == logging.WARNING
    assert "cuts it in every worker" in line and "EPIPE" in line and "Reconnect it in" in line


def test_report_datagram_wording() -> None:
    udp = fs.SocketFinding(5, 1, socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1:5000", "127.0.0.1:53")
    [(_, line)] = fs.report(fs.Findings(sockets=(udp,)), mode="warn", libraries=True)
    assert "udp" in line and "replies reach whichever reads first" in line


def test_report_library_connections_are_info_when_handled_and_warnings_when_not() -> None:
    held = fs.SocketFinding(9, 1, socket.AF_INET, socket.SOCK_STREAM, "a:1", "127.0.0.1:5432",
                            library="django", library_label="django connection 'default'")
    [(level, line)] = fs.report(fs.Findings(sockets=(held,)), mode="warn", libraries=True)
    assert level == logging.INFO and "(fork_safety_libraries)" in line and "Django opens its own" in line
    [(level, line)] = fs.report(fs.Findings(sockets=(held,)), mode="warn", libraries=False)
    assert level == logging.WARNING and "turn fork_safety_libraries on" in line


def test_report_harmless_threads_native_and_order() -> None:
    sink = fs.SocketFinding(4, 1, socket.AF_UNIX, socket.SOCK_DGRAM, "unix:(unnamed)", "unix:/dev/log",
                            owner="logging.handlers.SysLogHandler", harmless="a datagram log sink")
    findings = fs.Findings(sockets=(sink,), threads=(fs.ThreadFinding("refresher", True, "app._refresh"),),
                           native_threads=("openblas",))
    lines = fs.report(findings, mode="warn", libraries=True)
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO, logging.INFO]
    assert "thread 'refresher'" in lines[0][1] and 'Start it again in on_event("starting_worker_process")' in lines[0][1]
    assert "harmless" in lines[1][1]
    assert "'openblas'" in lines[2][1]


def test_report_is_capped() -> None:
    many = tuple(fs.ThreadFinding(f"t{i}", True) for i in range(fs.MAX_LINES + 5))
    lines = fs.report(fs.Findings(threads=many), mode="warn", libraries=True)
    assert len(lines) == fs.MAX_LINES
    assert lines[-1][1].startswith("... and 6 more finding(s)")


def test_findings_truth() -> None:
    assert not fs.Findings()
    assert fs.Findings(native_threads=("x",))


# -- detection on real descriptors -------------------------------------------------------------


def test_connected_sockets_lists_connections_not_listeners(tcp_server: socket.socket) -> None:
    client = socket.create_connection(tcp_server.getsockname())
    served = accept(tcp_server)
    udp_connected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_connected.connect(("127.0.0.1", 9))
    udp_unconnected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    left, right = socket.socketpair()
    excluded = socket.create_connection(tcp_server.getsockname())
    excluded_served = accept(tcp_server)
    try:
        found = {f.fd: f for f in fs.connected_sockets(exclude_fds=[excluded.fileno()])}
        assert tcp_server.fileno() not in found  # listening
        assert udp_unconnected.fileno() not in found
        assert excluded.fileno() not in found
        mine = found[client.fileno()]
        assert mine.kind == "tcp" and mine.peer == "%s:%d" % tcp_server.getsockname()
        assert mine.local == "%s:%d" % client.getsockname()
        assert mine.inode == os.fstat(client.fileno()).st_ino
        assert found[served.fileno()].peer == mine.local
        assert found[udp_connected.fileno()].kind == "udp"
        assert found[udp_connected.fileno()].peer == "127.0.0.1:9"
        assert found[left.fileno()].kind == "unix" and found[left.fileno()].peer == "unix:(unnamed)"
        client.sendall(b"ping")  # the probe's duplicate did not disturb the connection
        assert served.recv(4) == b"ping"
    finally:
        for s in (client, served, udp_connected, udp_unconnected, left, right, excluded, excluded_served):
            s.close()


def test_python_threads_and_native_threads() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="fs-test-refresher", daemon=True)
    thread.start()
    try:
        [found] = [t for t in fs.python_threads() if t.name == "fs-test-refresher"]
        assert found.daemon and found.target == "threading.Event.wait"
        assert found.native_id == thread.native_id
        assert all(t.name != threading.current_thread().name for t in fs.python_threads())
        # known to threading, so not "native"; the caller's own thread is never listed
        assert len(fs.native_threads([thread.native_id])) == len(fs.native_threads([thread.native_id, None]))
        assert len(fs.native_threads([])) == len(fs.native_threads([thread.native_id])) + 1
    finally:
        stop.set()
        thread.join()


def test_inspect_names_the_owner_and_logs_once(tcp_server: socket.socket) -> None:
    class Cache:
        def __init__(self) -> None:
            self.sock = socket.create_connection(tcp_server.getsockname())

    cache = Cache()
    served = accept(tcp_server)
    log = RecordingLog()
    try:
        findings = fs.inspect_preloader(log, "shop", 3, cfg(), exclude_fds=[])
        [mine] = [f for f in findings.sockets if f.fd == cache.sock.fileno()]
        assert mine.owner is not None and mine.owner.endswith("test_inspect_names_the_owner_and_logs_once.<locals>.Cache")
        [line] = [m for m in log.text("warning").splitlines() if f"fd={cache.sock.fileno()} " in m]
        assert line.startswith(f"app=shop preloader gen=3 pid={os.getpid()} fork safety: workers inherit the connection")
        assert mine.peer in line
    finally:
        cache.sock.close()
        served.close()


def test_inspect_never_evaluates_lazy_proxies(tcp_server: socket.socket) -> None:
    """Looking at the heap must not run app code: a lazy proxy's ``__class__`` evaluates it."""
    touched: list[str] = []

    class LazyProxy:
        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

        @property  # type: ignore[misc]
        def __class__(self) -> type:  # what Django's SimpleLazyObject does
            touched.append("evaluated")
            return socket.socket

    proxy = LazyProxy(socket.create_connection(tcp_server.getsockname()))
    served = accept(tcp_server)
    try:
        findings = fs.inspect_preloader(RecordingLog(), "shop", 1, cfg(), exclude_fds=[])
        [mine] = [f for f in findings.sockets if f.fd == proxy.sock.fileno()]
        assert mine.owner is not None and mine.owner.endswith("LazyProxy")
        assert touched == []
    finally:
        proxy.sock.close()
        served.close()


def test_inspect_off_logs_nothing_and_off_without_libraries_does_nothing(tcp_server: socket.socket) -> None:
    client = socket.create_connection(tcp_server.getsockname())
    served = accept(tcp_server)
    try:
        log = RecordingLog()
        findings = fs.inspect_preloader(log, "shop", 1, cfg("off"), exclude_fds=[])
        assert any(f.fd == client.fileno() for f in findings.sockets)
        assert log.lines == []
        assert fs.inspect_preloader(log, "shop", 1, cfg("off", libraries=False), exclude_fds=[]) == fs.Findings()
    finally:
        client.close()
        served.close()


def test_a_failing_inspection_is_logged_and_the_app_still_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(exclude_fds: Any = ()) -> Any:
        raise RuntimeError("no /proc")

    monkeypatch.setattr(detect, "connected_sockets", broken)  # where inspect_preloader looks it up
    log = RecordingLog()
    assert fs.inspect_preloader(log, "shop", 2, cfg(), exclude_fds=[]) == fs.Findings()
    assert "app=shop preloader gen=2" in log.text("error") and "RuntimeError: no /proc" in log.text("error")


def test_log_sinks_are_harmless() -> None:
    assert fs._is_log_sink("logging.handlers.SysLogHandler", socket.SOCK_DGRAM)
    assert fs._is_log_sink("gunicorn.instrument.statsd.Statsd", socket.SOCK_DGRAM)
    assert not fs._is_log_sink("logging.handlers.SocketHandler", socket.SOCK_STREAM)
    assert not fs._is_log_sink("app.Client", socket.SOCK_DGRAM)
    assert not fs._is_log_sink(None, socket.SOCK_DGRAM)


# -- fencing --------------------------------------------------------------------------------------


def test_fence_gives_eof_and_epipe_and_leaves_the_other_copy_working(tcp_server: socket.socket) -> None:
    client = socket.create_connection(tcp_server.getsockname())
    served = accept(tcp_server)
    preloader_copy = os.dup(client.fileno())
    client.settimeout(2.0)  # a library's timeout: non-blocking underneath
    inode = os.fstat(client.fileno()).st_ino
    try:
        assert fs.fence(client.fileno(), inode, socket.SOCK_STREAM)
        assert client.recv(10) == b""
        with pytest.raises(BrokenPipeError):
            client.sendall(b"x")
        assert fcntl.fcntl(client.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
        assert not os.get_inheritable(client.fileno())
        assert no_eof_yet(served)  # no FIN: the preloader's connection is intact
        os.write(preloader_copy, b"still here")
        assert served.recv(10) == b"still here"
        # inode changed: a second fence (or a reused descriptor) is left alone
        assert not fs.fence(client.fileno(), inode, socket.SOCK_STREAM)
    finally:
        os.close(preloader_copy)
        client.close()
        served.close()


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_SEQPACKET])
def test_fence_keeps_the_socket_type(kind: int) -> None:
    left, right = socket.socketpair(socket.AF_UNIX, kind)
    try:
        assert fs.fence(left.fileno(), os.fstat(left.fileno()).st_ino, kind)
        assert left.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == kind
        assert left.recv(10) == b""
        with pytest.raises(BrokenPipeError):
            left.send(b"x")
    finally:
        left.close()
        right.close()


def test_fence_ignores_closed_and_non_socket_descriptors(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as f:
        assert not fs.fence(f.fileno(), os.fstat(f.fileno()).st_ino)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    os.close(fd)
    assert not fs.fence(fd, 1)


def test_prepare_worker_fences_only_in_fence_mode(tcp_server: socket.socket) -> None:
    client = socket.create_connection(tcp_server.getsockname())
    served = accept(tcp_server)
    try:
        [found] = [f for f in fs.connected_sockets() if f.fd == client.fileno()]
        log = RecordingLog()
        fs.prepare_worker(fs.Findings(sockets=(found,)), cfg("warn"), log)
        assert os.fstat(client.fileno()).st_ino == found.inode
        fs.prepare_worker(fs.Findings(sockets=(found,)), cfg("fence"), log)
        assert os.fstat(client.fileno()).st_ino != found.inode
        assert "fenced 127.0.0.1:" in log.text("debug")
    finally:
        client.close()
        served.close()


# -- known libraries ---------------------------------------------------------------------------------


def library_findings(kind: str) -> list[fs.LibraryConnection]:
    findings = fs.inspect_preloader(RecordingLog(), "shop", 1, cfg("off"), exclude_fds=[])
    return [c for c in findings.libraries if c.library == kind]


def test_pymemcache_client_reconnects_without_closing_the_shared_connection(tcp_server: socket.socket) -> None:
    from pymemcache.client.base import Client

    client = Client(tcp_server.getsockname())
    client._connect()
    served = accept(tcp_server)
    preloader_copy = os.dup(client.sock.fileno())
    try:
        [conn] = library_findings("pymemcache")
        assert conn.label == "pymemcache client %s:%d" % tcp_server.getsockname()
        fs.prepare_worker(fs.Findings(libraries=(conn,)), cfg(), RecordingLog())
        assert client.sock is None  # reconnects on its next command
        assert no_eof_yet(served)
        os.close(preloader_copy)
        preloader_copy = -1
        assert eof_within(served)  # the last copy closed: now the server sees the end
    finally:
        if preloader_copy >= 0:
            os.close(preloader_copy)
        client.close()
        served.close()


def test_python_memcached_host_reconnects(tcp_server: socket.socket) -> None:
    import memcache

    client = memcache.Client(["%s:%d" % tcp_server.getsockname()])
    host = client.servers[0]
    assert host._get_socket() is not None
    served = accept(tcp_server)
    preloader_copy = os.dup(host.socket.fileno())
    try:
        [conn] = library_findings("python-memcached")
        fs.prepare_worker(fs.Findings(libraries=(conn,)), cfg(), RecordingLog())
        assert host.socket is None and host.buffer == b""
        assert no_eof_yet(served)
    finally:
        os.close(preloader_copy)
        client.disconnect_all()
        served.close()


def test_redis_connection_is_disconnected_the_fork_aware_way() -> None:
    import redis

    connection = redis.connection.Connection()
    ours, server_side = socket.socketpair()
    connection._sock = ours
    preloader_copy = os.dup(ours.fileno())
    try:
        [conn] = library_findings("redis-py")
        connection.pid = -1  # as in a worker: connected by another process
        fs.prepare_worker(fs.Findings(libraries=(conn,)), cfg(), RecordingLog())
        assert connection._sock is None
        assert connection.pid == os.getpid()
        assert no_eof_yet(server_side)  # closed, never shut down
    finally:
        os.close(preloader_copy)
        server_side.close()
        ours.close()


def test_sqlalchemy_engine_gets_a_new_pool_and_the_old_one_is_left_alone(tmp_path: Path) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("SELECT 1"))
    old_pool = engine.pool
    old_dbapi = old_pool._pool.queue[0].dbapi_connection  # checked in, open
    try:
        [conn] = library_findings("sqlalchemy")
        assert conn.label.startswith("sqlalchemy engine sqlite:///")
        fs.prepare_worker(fs.Findings(libraries=(conn,)), cfg(), RecordingLog())
        assert engine.pool is not old_pool
        assert old_pool in fs._set_aside
        assert old_pool.checkedin() == 1  # not closed, not checked out: untouched
        old_dbapi.execute("SELECT 1")  # still open
        with engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("SELECT 2")).scalar() == 2
            assert connection.connection.dbapi_connection is not old_dbapi
    finally:
        old_pool.dispose()
        engine.dispose()


def test_a_failing_reset_is_logged_and_the_worker_goes_on() -> None:
    def broken() -> Any:
        raise RuntimeError("boom")

    conn = fs.LibraryConnection("pymemcache", "pymemcache client x:1", broken)
    log = RecordingLog()
    fs.prepare_worker(fs.Findings(libraries=(conn,)), cfg(), log)
    assert "could not reset pymemcache client x:1 (RuntimeError: boom)" in log.text("error")


def test_libraries_off_resets_nothing(tcp_server: socket.socket) -> None:
    from pymemcache.client.base import Client

    client = Client(tcp_server.getsockname())
    client._connect()
    served = accept(tcp_server)
    try:
        [conn] = library_findings("pymemcache")
        fs.prepare_worker(fs.Findings(libraries=(conn,)), cfg(libraries=False), RecordingLog())
        assert client.sock is not None
    finally:
        client.close()
        served.close()


# -- LockedFileHandler ----------------------------------------------------------------------------------


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("fs", logging.INFO, __file__, 1, message, None, None)


def test_locked_handler_refuses_truncating_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="only 'a'"):
        LockedFileHandler(tmp_path / "x.log", mode="w")


def test_locked_handler_writes_whole_records_from_threads(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    handler = LockedFileHandler(path)
    handler.setFormatter(logging.Formatter("%(message)s"))

    def write(n: int) -> None:
        for i in range(200):
            handler.handle(record(f"<{n}:{i}:" + chr(97 + n) * 20000 + ">"))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handler.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 800
    for line in lines:
        n = int(line[1 : line.index(":")])
        assert line.endswith(":" + chr(97 + n) * 20000 + ">")


def test_locked_handler_waits_for_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    handler = LockedFileHandler(path, delay=True)
    other = open(path, "a")  # another open file description: another process's view
    fcntl.flock(other.fileno(), fcntl.LOCK_EX)
    done = threading.Event()

    def log_after() -> None:
        handler.handle(record("after"))
        done.set()

    thread = threading.Thread(target=log_after)
    thread.start()
    try:
        assert not done.wait(0.3), "the handler wrote while another holder had the lock"
        other.write("first\n")
        other.flush()
    finally:
        fcntl.flock(other.fileno(), fcntl.LOCK_UN)
        other.close()
    thread.join(5)
    handler.close()
    assert path.read_text() == "first\nafter\n"


def test_locked_handler_opens_its_own_file_after_fork(tmp_path: Path) -> None:
    """An inherited description would share the parent's flock; the child must open the file itself."""
    path = tmp_path / "x.log"
    handler = LockedFileHandler(path)  # opened here, as gunicorn's master does
    handler.setFormatter(logging.Formatter("%(message)s"))
    inherited_fd = handler.stream.fileno()
    fcntl.flock(inherited_fd, fcntl.LOCK_EX)  # the "master" holds the lock
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            fd = handler._stream_of_this_process().fileno()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                code = 0  # its own description: the parent's lock excludes it
            os.write(write_end, b"%d" % code)
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        assert os.read(read_end, 8) == b"0"
        assert os.waitpid(pid, 0)[1] == 0
    finally:
        os.close(read_end)
        fcntl.flock(inherited_fd, fcntl.LOCK_UN)
    handler.handle(record("parent still writes"))
    handler.close()
    assert path.read_text() == "parent still writes\n"


def test_locked_handler_from_dict_config_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"locked": {"class": "gunicorn_smartspawn.logging.LockedFileHandler", "filename": str(path)}},
        "loggers": {"fs.unit": {"handlers": ["locked"], "level": "INFO", "propagate": False}},
    })
    logger = logging.getLogger("fs.unit")
    [handler] = logger.handlers
    try:
        logger.info("one")
        # what gunicorn's reopen_files does on USR1
        handler.close()
        handler.stream = handler._open()
        logger.info("two")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert path.read_text() == "one\ntwo\n"


def test_write_all_continues_short_writes() -> None:
    read_end, write_end = os.pipe()
    data = os.urandom(1 << 20)  # more than a pipe holds: os.write returns short
    received = bytearray()
    reader = threading.Thread(target=lambda: received.extend(iter_read(read_end)))
    reader.start()
    write_all(write_end, data)
    os.close(write_end)
    reader.join(10)
    os.close(read_end)
    assert bytes(received) == data


def iter_read(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


# -- an event loop left by the import -----------------------------------------------------------------------


def test_an_event_loop_left_open_is_found_and_named() -> None:
    import asyncio

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    closed = asyncio.new_event_loop()
    closed.close()
    try:
        found = detect.event_loops([loop, closed])
        assert found == [f"{type(loop).__module__}.{type(loop).__qualname__} (the main thread's current loop)"]
        loop.run_until_complete(loop.run_in_executor(None, int))  # starts the default executor's thread
        assert detect.event_loops([loop])[0].endswith("(the main thread's current loop, with a default executor)")
        other = asyncio.new_event_loop()
        assert detect.event_loops([other])[0].endswith(" (not set as current)")
        other.close()
        findings = detect._annotate("warn", detect.survey([]))
        assert any("the main thread's current loop" in d for d in findings.event_loops), findings.event_loops
        assert findings  # a loop alone is a finding
        lines = fs.report(fs.Findings(event_loops=(found[0],)), mode="warn", libraries=True)
        [(level, message)] = lines
        assert level == logging.WARNING
        assert message.startswith(f"an asyncio event loop, {found[0]}, was created at import: workers inherit it")
        assert "lifespan startup" in message and "docs/request-models.md" in message
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_no_loop_no_finding() -> None:
    assert detect.event_loops([]) == []
    assert not fs.Findings()
