"""Fork safety with real servers: memcached, redis and PostgreSQL from Debian.

Each server is started by its fixture on a free loopback port, logs to a
file that is printed when a test fails, and is stopped in teardown.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import APPS, SMART, Server, free_port, read_stat, wait_for


# -- servers the tests talk to ------------------------------------------------------------


@dataclass
class Service:
    """A server process of the test (memcached, redis, postgres) with its log file."""

    name: str
    argv: list[str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)
    popen: dict[str, Any] = field(default_factory=dict)

    def start(self, ready: Callable[[], Any], timeout: float = 15.0) -> Service:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, **self.popen
        )

        def up() -> Any:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            return ready()

        wait_for(up, timeout, what=f"{self.name} on port {self.port}")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if hasattr(self, "_log"):
            self._log.close()
        for fn in self.cleanup:
            fn()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _require(binary: str | None, what: str) -> str:
    if binary:
        return binary
    message = f"{what} is not installed (.ci/run installs it from Debian's packages)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _show_on_failure(request: pytest.FixtureRequest, service: Service) -> None:
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        sys.stderr.write(f"\n===== log of {service.name} =====\n{service.log()[-20000:]}\n")


def _can_connect(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


@pytest.fixture
def memcached(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    binary = _require(shutil.which("memcached"), "memcached")
    port = free_port()
    argv = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "2", "-m", "64", "-c", "1024", "-v"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    service = Service("memcached", argv, tmp_path / "memcached.log", port).start(lambda: _can_connect(port))
    yield service
    _show_on_failure(request, service)
    service.stop()


@pytest.fixture
def redis_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    binary = _require(shutil.which("redis-server"), "redis-server")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    service = Service("redis", argv, tmp_path / "redis.log", port).start(lambda: _can_connect(port))
    yield service
    _show_on_failure(request, service)
    service.stop()


def _postgres_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return found[-1] if found else shutil.which("postgres")


@pytest.fixture(scope="module")
def postgres() -> Iterator[Service]:
    """PostgreSQL on a free port, user ``postgres`` with trust auth, fsync off."""
    binary = _require(_postgres_bin(), "PostgreSQL")
    bindir = os.path.dirname(binary)
    root = tempfile.mkdtemp(prefix="fs-pg-")
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:  # postgres refuses to run as root
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "cwd": root}
    data = os.path.join(root, "data")
    subprocess.run(
        [os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
        check=True, capture_output=True, **as_user,
    )
    port = free_port()
    argv = [binary, "-D", data, "-p", str(port), "-k", root, "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=50"]
    import psycopg2

    def ready() -> bool:
        try:
            psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2).close()
        except psycopg2.OperationalError:  # not accepting connections yet
            return False
        return True

    service = Service("postgres", argv, Path(root) / "postgres.log", port, popen=as_user)
    service.cleanup.append(lambda: shutil.rmtree(root, ignore_errors=True))
    try:
        service.start(ready, timeout=30)
        yield service
    finally:
        service.stop(signal.SIGINT)  # fast shutdown: ends client sessions


@pytest.fixture
def postgres_logs(request: pytest.FixtureRequest, postgres: Service) -> Iterator[Service]:
    yield postgres
    _show_on_failure(request, postgres)


def memcached_clients(port: int) -> set[str]:
    """Client addresses memcached lists in ``stats conns`` (the server's view)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"stats conns\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            assert chunk, "memcached closed the stats connection"
            data += chunk
        mine = "%s:%d" % sock.getsockname()[:2]
    found = set(re.findall(r"STAT \d+:addr tcp:([\d.]+:\d+)", data.decode()))
    return found - {mine, f"127.0.0.1:{port}"}


def postgres_backends(port: int) -> set[int]:
    import psycopg2

    with psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres") as conn:
        with conn.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
            return {row[0] for row in cursor.fetchall()}


# -- the seed's example: one memcached connection opened at import ----------------------------------------


def answers_from_every_worker(server: Server, workers: list[int], path: str = "/") -> dict[int, dict[str, Any]]:
    answers: dict[int, dict[str, Any]] = {}

    def all_answered() -> bool:
        answer = server.get_json(path)
        answers[answer["pid"]] = answer
        return set(answers) == set(workers)

    wait_for(all_answered, 20, what=f"answers from {workers}", interval=0.0)
    return answers


def hammer(server: Server, tag: str, threads: int = 8, per_thread: int = 200) -> list[dict[str, Any]]:
    """``threads`` x ``per_thread`` set+get requests of distinct keys; every answer, failures included."""

    def run(thread: int) -> list[dict[str, Any]]:
        answers = []
        for i in range(per_thread):
            try:
                answers.append(server.get_json(f"/kv?{tag}-{thread}-{i}", timeout=15))
            except Exception as exc:  # an HTTP failure counts as a failed request
                answers.append({"pid": None, "ok": False, "wrong": False, "error": f"request failed: {exc!r}"})
        return answers

    with ThreadPoolExecutor(threads) as pool:
        return [answer for answers in pool.map(run, range(threads)) for answer in answers]


def summary(answers: list[dict[str, Any]]) -> str:
    errors = Counter(re.sub(r"\d+", "N", str(a["error"]))[:90] for a in answers if not a["ok"])
    return f"{sum(a['ok'] for a in answers)} ok of {len(answers)}; " + "; ".join(f"{n} x {e}" for e, n in errors.most_common(6))


def start_memcache_app(server_factory: Callable[..., Server], memcached: Service, *args: str, workers: int = 4,
                       **env: str) -> tuple[Server, list[int]]:
    server = server_factory(*SMART, "-w", str(workers), *args, "fs_memcache_app:app",
                            env={"FS_MEMCACHED": f"127.0.0.1:{memcached.port}", **env})
    pids = server.wait_workers(workers)
    server.wait_serving()
    return server, pids


def test_shared_connection_mixes_replies_without_fork_safety(server_factory, memcached):
    server, _ = start_memcache_app(server_factory, memcached, "--fork-safety", "off")
    answers = hammer(server, "off")
    bad = [a for a in answers if not a["ok"]]
    assert bad, "expected wrong or failed replies on the shared connection: " + summary(answers)
    assert "fork safety" not in server.log()


def test_reconnect_in_starting_worker_process_shares_nothing(server_factory, memcached):
    server, workers = start_memcache_app(server_factory, memcached, "--fork-safety", "off", FS_RECONNECT="1")
    answers = hammer(server, "reconnect")
    assert all(a["ok"] for a in answers), summary(answers)
    assert {a["pid"] for a in answers} <= set(workers)


def test_fence_turns_the_shared_connection_into_one_error_per_worker(server_factory, memcached):
    server, workers = start_memcache_app(server_factory, memcached, "--fork-safety", "fence")
    answers = hammer(server, "fence")
    assert not [a for a in answers if a["wrong"]], summary(answers)
    failed = Counter(a["pid"] for a in answers if not a["ok"])
    served = {a["pid"] for a in answers}
    # each worker's first use of the fenced socket fails (EPIPE), its reconnect then serves
    assert failed == Counter({pid: 1 for pid in served}), summary(answers)
    assert all(re.search("BrokenPipe|closed the connection", a["error"]) for a in answers if not a["ok"]), summary(answers)
    # the preloader's own connection is untouched: memcached still lists it
    assert server.get_json("/")["import_address"] in memcached_clients(memcached.port)


def test_warning_names_the_peer_and_the_thread_once_per_generation(server_factory, memcached):
    server, workers = start_memcache_app(server_factory, memcached, workers=3, FS_THREAD="1", FS_RECONNECT="1")
    peer = f"-> 127.0.0.1:{memcached.port}"
    # at boot the report follows the first forks (the preloader's inspector): wait for it
    server.wait_log("thread 'fs-refresher'")
    log = server.wait_log(peer)
    connection_lines = [line for line in log.splitlines() if "fork safety" in line and peer in line]
    assert len(connection_lines) == 1, log
    [line] = connection_lines
    assert "[WARNING]" in line and "gen=1" in line and "fs_memcache_app.RawMemcache" in line
    assert 'on_event("starting_worker_process")' in line and "docs/fork-safety.md" in line
    thread_lines = [line for line in log.splitlines() if "thread 'fs-refresher'" in line]
    assert len(thread_lines) == 1, log
    assert "[WARNING]" in thread_lines[0] and "target fs_memcache_app._refresh" in thread_lines[0]
    assert "docs/fork-safety.md" in thread_lines[0]
    # the documented pattern restarted the thread in every worker
    answers = answers_from_every_worker(server, workers, "/threads")
    assert all("fs-refresher" in a["threads"] for a in answers.values()), answers
    # a reload is a new preloader generation: logged once more
    server.signal(signal.SIGHUP)
    server.wait_log("gen=2", timeout=20)
    wait_for(lambda: sum(1 for line in server.log().splitlines() if peer in line and "gen=2" in line) == 1,
             what="the gen=2 warning")
    assert sum(1 for line in server.log().splitlines() if "fork safety" in line and peer in line) == 2


# -- known libraries: each worker opens its own connections ----------------------------------------------------


def test_django_and_sqlalchemy_connections_are_not_shared(server_factory, postgres_logs):
    port = postgres_logs.port
    server = server_factory(*SMART, "-w", "3", "fs_db_app:app", env={"FS_PG_PORT": str(port)})
    workers = server.wait_workers(3)
    answers = answers_from_every_worker(server, workers)
    at_import = next(iter(answers.values()))["import"]
    for library in ("django", "sqlalchemy"):
        used = [a["now"][library] for a in answers.values()]
        assert at_import[library] not in used, (library, answers)
        assert len(set(used)) == len(workers), (library, answers)  # one backend per worker
    # server side: the preloader's sessions are alive (no worker ended them) beside the workers' own
    backends = postgres_backends(port)
    assert {at_import["django"], at_import["sqlalchemy"]} <= backends
    assert {a["now"][lib] for a in answers.values() for lib in ("django", "sqlalchemy")} <= backends
    log = server.log()
    assert "django connection 'default'" in log and "sqlalchemy engine postgresql+psycopg2://postgres@127.0.0.1" in log


def test_boot_workers_forked_before_the_report_still_get_their_own_django_connection(server_factory, postgres_logs):
    """At boot the preloader forks the waiting workers before its heap walk: what they act on
    (Django's connection, from Django's own registry) is taken before the fork, and the report
    follows, written by the preloader's inspector, a child that is reaped once done."""
    port = postgres_logs.port
    server = server_factory(*SMART, "-w", "3", "fs_django_app:app", env={"FS_PG_PORT": str(port)})
    workers = server.wait_workers(3)
    answers = answers_from_every_worker(server, workers)
    at_import = next(iter(answers.values()))["import"]
    used = [a["now"] for a in answers.values()]
    assert at_import not in used and len(set(used)) == len(workers), answers  # one backend per worker
    assert {at_import, *used} <= postgres_backends(port)  # no worker ended the preloader's session
    [preloader] = server.preloaders()
    log = server.wait_log("(held by django connection 'default'): each worker sets the connection aside")
    [line] = [line for line in log.splitlines() if "django connection 'default'" in line]
    assert f"app=fs_django_app preloader gen=1 pid={preloader} fork safety: workers inherit fd=" in line
    match = re.match(r"\[[^]]+\] \[(\d+)\] \[INFO\] ", line)
    assert match and int(match.group(1)) not in (preloader, server.pid, *workers), line  # the inspector wrote it
    assert log.index("ready, loaded in") < log.index("forked in")  # PreloaderReady came first
    wait_for(lambda: not _children_of(preloader), 10, what="the inspector to be reaped")


def _children_of(pid: int) -> list[int]:
    """Children of ``pid``, zombies included."""
    found = []
    for entry in os.listdir("/proc"):
        stat = read_stat(int(entry)) if entry.isdigit() else None
        if stat is not None and stat[1] == pid:
            found.append(int(entry))
    return found


def test_without_library_handling_workers_use_the_import_connections(server_factory, postgres_logs):
    """The control: the same app shares its connections when fork_safety_libraries is off."""
    server = server_factory(*SMART, "-w", "2", "--no-fork-safety-libraries", "fs_db_app:app",
                            env={"FS_PG_PORT": str(postgres_logs.port)})
    workers = server.wait_workers(2)
    answers = answers_from_every_worker(server, workers)
    for answer in answers.values():
        assert answer["now"] == answer["import"], answers
    log = server.wait_log("turn fork_safety_libraries on")  # (reported after the boot's forks)
    assert "[WARNING]" in log


def test_memcached_and_redis_clients_reconnect_in_each_worker(server_factory, memcached, redis_server):
    import redis

    server = server_factory(*SMART, "-w", "3", "fs_clients_app:app",
                            env={"FS_MEMCACHED": f"127.0.0.1:{memcached.port}", "FS_REDIS": f"127.0.0.1:{redis_server.port}"})
    workers = server.wait_workers(3)
    answers = answers_from_every_worker(server, workers)
    at_import = next(iter(answers.values()))["import"]
    mc_clients = memcached_clients(memcached.port)
    redis_clients = {c["addr"] for c in redis.Redis(port=redis_server.port).client_list()}
    for client in ("pymemcache", "python-memcached", "redis-single", "redis-pooled"):
        used = [a["now"][client] for a in answers.values()]
        assert at_import[client] not in used, (client, answers)
        assert len(set(used)) == len(workers), (client, answers)
        # server side: the workers' connections and the preloader's, still open
        listed = redis_clients if client.startswith("redis") else mc_clients
        assert {at_import[client], *used} <= listed, (client, listed)
    log = server.log()
    for library in ("pymemcache", "python-memcached", "redis-py"):
        assert f"(held by {library} " in log, log


# -- one log file, many workers ------------------------------------------------------------------------------------

RECORD = re.compile(r"<(\d+):(\d+):(\d+):([a-z]+):end>")


def test_locked_file_handler_keeps_10000_records_from_4_workers_whole(server_factory, tmp_path):
    log_file = tmp_path / "records.log"
    server = server_factory(*SMART, "-w", "4", "-c", str(APPS / "fs_log_conf.py"), "fs_log_app:app",
                            env={"FS_LOG_FILE": str(log_file)})
    workers = server.wait_workers(4)
    server.wait_serving()
    size = 4500  # more than a pipe's atomic write and than half of a buffered writer's buffer

    def run(_: int) -> list[int]:
        return [server.get_json(f"/log?250&{size}", timeout=30)["pid"] for _ in range(5)]

    with ThreadPoolExecutor(8) as pool:
        writers = Counter(pid for pids in pool.map(run, range(8)) for pid in pids)
    assert sum(writers.values()) * 250 == 10_000
    assert set(writers) == set(workers), writers
    lines = log_file.read_bytes().split(b"\n")
    assert lines[-1] == b""
    records = set()
    for number, line in enumerate(lines[:-1], 1):
        match = RECORD.fullmatch(line.decode())
        assert match, f"line {number} is not one whole record: {line[:120]!r}...{line[-60:]!r}"
        pid, seq, length, payload = int(match[1]), int(match[2]), int(match[3]), match[4]
        assert length == size and payload == chr(97 + seq % 26) * size, f"line {number} is mixed"
        records.add((pid, seq))
    assert len(records) == 10_000 == len(lines) - 1
    assert {pid for pid, _ in records} == set(workers)
