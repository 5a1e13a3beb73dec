"""The boot's split inspection: what workers act on before the fork, the report after it, in the
preloader's inspector (a real forked child); the head start of the boot's first worker.

The inspection runs on real descriptors of the test process; the inspector
is forked from it (single-threaded here) and leaves with ``os._exit``.
"""

from __future__ import annotations

import gc
import os
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_forksafety import RecordingLog  # the same stand-in for gunicorn's logger

from gunicorn_smartspawn import forksafety as fs
from gunicorn_smartspawn.forksafety import detect
from gunicorn_smartspawn.preloader import inspector as insp


def cfg(mode: str = "warn", libraries: bool = True) -> SimpleNamespace:
    return SimpleNamespace(fork_safety=mode, fork_safety_libraries=libraries)


@pytest.fixture
def connection() -> Iterator[tuple[Any, socket.socket]]:
    """A client object holding a connected socket (as an app's cache client would), and the server's end."""

    class Cache:
        def __init__(self, address: Any) -> None:
            self.sock = socket.create_connection(address)

    server = socket.create_server(("127.0.0.1", 0))
    cache = Cache(server.getsockname())
    served, _ = server.accept()
    yield cache, served
    cache.sock.close()
    served.close()
    server.close()


@pytest.fixture
def no_heap_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in an app that imported none of the libraries a heap walk finds (the test process may have)."""
    monkeypatch.setattr(detect, "_wanted_types", dict)


# -- what is taken before the fork, what is left for after -------------------------------------------


@pytest.mark.usefixtures("no_heap_libraries")
def test_only_the_report_waits_and_it_says_what_a_full_inspection_says(connection: tuple[Any, socket.socket]) -> None:
    cache, _ = connection
    log = RecordingLog()
    findings, report = fs.inspect_before_fork(log, "shop", 3, cfg(), exclude_fds=[])
    assert log.lines == [] and report is not None  # nothing walked or logged before the fork
    [mine] = [f for f in findings.sockets if f.fd == cache.sock.fileno()]
    assert mine.owner is None  # who holds it is for the log only
    report()
    now = RecordingLog()
    fs.inspect_preloader(now, "shop", 3, cfg(), exclude_fds=[])
    assert log.lines == now.lines
    [line] = [m for _, m in log.lines if f"fd={cache.sock.fileno()} " in m]
    assert line.startswith(f"app=shop preloader gen=3 pid={os.getpid()} fork safety: workers inherit the connection")
    assert "(held by " in line and ".Cache)" in line


@pytest.mark.usefixtures("no_heap_libraries")
def test_what_workers_act_on_is_the_same_as_a_full_inspection(connection: tuple[Any, socket.socket]) -> None:
    """(Django's connections, found through its registry, are the libraries here: none in this process.)"""
    findings, _ = fs.inspect_before_fork(RecordingLog(), "shop", 1, cfg(), exclude_fds=[])
    full = fs.inspect_preloader(RecordingLog(), "shop", 1, cfg(), exclude_fds=[])
    assert findings.libraries == full.libraries
    assert [s.fd for s in findings.sockets] == [s.fd for s in full.sockets]
    assert findings.threads == full.threads and findings.native_threads == full.native_threads


def test_a_library_found_only_on_the_heap_is_inspected_before_the_fork() -> None:
    from pymemcache.client.base import Client

    server = socket.create_server(("127.0.0.1", 0))
    client = Client(server.getsockname())
    client._connect()
    served, _ = server.accept()
    log = RecordingLog()
    try:
        findings, report = fs.inspect_before_fork(log, "shop", 1, cfg(), exclude_fds=[])
        assert report is None  # all of it now: the workers need the client found on the heap
        assert [c.library for c in findings.libraries if c.library == "pymemcache"] == ["pymemcache"]
        assert any("(held by pymemcache client " in m for _, m in log.lines), log.lines
    finally:
        client.close()
        served.close()
        server.close()


@pytest.mark.usefixtures("no_heap_libraries")
def test_fence_with_a_connection_is_inspected_before_the_fork(connection: tuple[Any, socket.socket]) -> None:
    cache, _ = connection
    log = RecordingLog()
    findings, report = fs.inspect_before_fork(log, "shop", 1, cfg("fence"), exclude_fds=[])
    assert report is None  # a log sink is never fenced: that needs the owner, from the heap
    [mine] = [f for f in findings.sockets if f.fd == cache.sock.fileno()]
    assert mine.owner is not None and mine.owner.endswith(".Cache")
    assert log.lines


@pytest.mark.usefixtures("no_heap_libraries")
def test_off_with_libraries_leaves_no_report_and_without_them_does_nothing(connection: tuple[Any, socket.socket]) -> None:
    log = RecordingLog()
    findings, report = fs.inspect_before_fork(log, "shop", 1, cfg("off"), exclude_fds=[])
    assert report is None and log.lines == [] and findings.sockets
    assert fs.inspect_before_fork(log, "shop", 1, cfg("off", libraries=False), exclude_fds=[]) == (fs.Findings(), None)


def test_a_failing_inspection_before_the_fork_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(exclude_fds: Any = ()) -> Any:
        raise RuntimeError("no /proc")

    monkeypatch.setattr(detect, "connected_sockets", broken)
    log = RecordingLog()
    assert fs.inspect_before_fork(log, "shop", 2, cfg(), exclude_fds=[]) == (fs.Findings(), None)
    assert any("RuntimeError: no /proc" in m for lv, m in log.lines if lv == "error")


# -- the inspector: a real child ------------------------------------------------------------------------


def wait_reaped(inspector: insp.Inspector, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        timeout = max(0.0, min(inspector.deadline, deadline) - time.monotonic())
        select.select([inspector], [], [], timeout)
        if inspector.poll():
            return
        assert time.monotonic() < deadline, "the inspector did not end"


def gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # reaped already
    return False


def test_the_inspector_reports_on_its_own_unfrozen_heap_and_is_reaped(tmp_path: Path) -> None:
    marker = type("FrozenMarker", (), {})()
    out = tmp_path / "report"
    closed: list[int] = []

    def report() -> None:  # in the child
        seen = any(obj is marker for obj in gc.get_objects())
        out.write_text(f"{os.getpid()} {seen} {gc.isenabled()} {closed}")

    gc.freeze()
    try:
        inspector = insp.Inspector.start("inspector [shop]", report, lambda: closed.append(1))
        assert inspector is not None
        assert not any(obj is marker for obj in gc.get_objects())  # frozen here: out of gc's view
    finally:
        gc.unfreeze()
    wait_reaped(inspector)
    assert gone(inspector.pid)
    pid, seen, enabled, closed_there = out.read_text().split(" ", 3)
    assert int(pid) == inspector.pid and seen == "True" and enabled == "False"
    assert closed_there == "[1]" and closed == []  # ``close`` ran in the child only


def test_an_inspector_whose_report_fails_is_reaped() -> None:
    def broken() -> None:
        raise OSError("no /proc")

    inspector = insp.Inspector.start("inspector [shop]", broken, lambda: None)
    assert inspector is not None
    wait_reaped(inspector)
    assert gone(inspector.pid)


def test_an_inspector_past_its_deadline_is_killed() -> None:
    inspector = insp.Inspector.start("inspector [shop]", lambda: time.sleep(60), lambda: None)
    assert inspector is not None
    inspector.deadline = time.monotonic() + 0.2
    started = time.monotonic()
    wait_reaped(inspector)
    assert time.monotonic() - started < 5 and gone(inspector.pid)


# -- the head start of the boot's first worker ------------------------------------------------------------


def test_the_head_start_ends_when_the_worker_beats_or_at_its_bound(tmp_path: Path) -> None:
    from gunicorn_smartspawn.preloader import boot

    with open(tmp_path / "heartbeat", "w+b", 0) as f:
        mark = boot.heartbeat(f.fileno())
        assert mark is not None
        started = time.monotonic()
        boot.head_start(f.fileno(), mark, seconds=0.2)  # no beat: the bound
        assert 0.2 <= time.monotonic() - started < 2
        beat = mark + 1.0
        os.utime(f.fileno(), (beat, beat))  # what the worker's notify() does, entering its loop
        started = time.monotonic()
        boot.head_start(f.fileno(), mark, seconds=5)
        boot.head_start(f.fileno(), None, seconds=5)  # nothing to watch (not the batch's first)
        assert time.monotonic() - started < 1
