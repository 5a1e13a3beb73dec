"""Smart and direct spawning with real gunicorn processes."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from harness import DIRECT, SMART, import_count, read_stat, wait_for


def events(path: Path, name: str) -> list[dict]:
    return [e for e in import_count(path) if e["event"] == name]


def test_smart_imports_once_and_forks_workers_owned_by_master(server_factory, import_log, event_log):
    server = server_factory(*SMART, "-w", "3", "probe_app:app")
    workers = server.wait_workers(3)
    server.wait_serving()
    assert len(server.by_title("master")) == 1
    [preloader] = server.preloaders()
    for pid in workers:
        assert read_stat(pid)[1] == server.pid  # re-parented to the master
    assert read_stat(preloader)[1] == server.pid
    imports = import_count(import_log)
    assert [i["pid"] for i in imports] == [preloader]  # imported once, in the preloader
    wait_for(lambda: len(events(event_log, "starting_worker_process")) == 3, what="3 starting events")
    started = events(event_log, "starting_worker_process")
    assert {e["pid"] for e in started} == set(workers)
    assert all(e["forked"] is True for e in started)
    answers = server.pids_answering(set(workers))
    assert answers == set(workers)
    assert server.get_json("/")["forked"] is True


def test_direct_imports_in_every_worker(server_factory, import_log, event_log):
    server = server_factory(*DIRECT, "-w", "3", "probe_app:app")
    workers = server.wait_workers(3)
    server.wait_serving()
    assert server.preloaders() == []
    wait_for(lambda: len(import_count(import_log)) == 3, what="3 imports")
    assert {i["pid"] for i in import_count(import_log)} == set(workers)
    for pid in workers:
        assert read_stat(pid)[1] == server.pid
    wait_for(lambda: len(events(event_log, "starting_worker_process")) == 3, what="3 starting events")
    assert all(e["forked"] is False for e in events(event_log, "starting_worker_process"))
    assert server.get_json("/")["forked"] is False


def test_ttin_forks_from_the_preloader_and_ttou_retires(server_factory, import_log):
    server = server_factory(*SMART, "-w", "1", "probe_app:app")
    [first] = server.wait_workers(1)
    [preloader] = server.preloaders()
    server.signal(signal.SIGTTIN)
    workers = server.wait_workers(2)
    server.pids_answering(set(workers))
    assert len(import_count(import_log)) == 1
    assert server.preloaders() == [preloader]
    server.signal(signal.SIGTTOU)
    [left] = server.wait_workers(1)
    assert left != first  # the oldest goes first, as in gunicorn


def test_killed_worker_is_replaced_from_the_preloader(server_factory, import_log):
    server = server_factory(*SMART, "-w", "2", "probe_app:app")
    workers = server.wait_workers(2)
    server.wait_serving()
    import os

    os.kill(workers[0], signal.SIGKILL)
    new = server.wait_workers(2, exclude=[workers[0]])
    assert workers[0] not in new
    server.pids_answering(set(new))
    assert len(import_count(import_log)) == 1


def test_killed_preloader_leaves_workers_serving_and_is_replaced(server_factory, import_log):
    import os

    server = server_factory(*SMART, "-w", "2", "probe_app:app")
    workers = server.wait_workers(2)
    [preloader] = server.preloaders()
    os.kill(preloader, signal.SIGKILL)
    server.wait_log(f"pid={preloader} exited (signal SIGKILL)")
    assert server.preloaders() == []
    server.pids_answering(set(workers))
    assert sorted(server.workers()) == sorted(workers)
    server.signal(signal.SIGTTIN)  # the next spawn starts a new preloader
    wait_for(lambda: len(server.preloaders()) == 1, what="a new preloader")
    assert server.preloaders() != [preloader]
    now = server.wait_workers(3)
    assert set(workers) < set(now)
    assert len(import_count(import_log)) == 2


def test_idle_preloader_exits_and_comes_back_on_demand(server_factory, import_log):
    server = server_factory(*SMART, "-w", "1", "--preloader-idle-timeout", "1", "probe_app:app")
    [worker] = server.wait_workers(1)
    server.wait_log("stopping: idle for", timeout=10)
    wait_for(lambda: server.preloaders() == [], what="the idle preloader to exit")
    assert server.get_json("/")["pid"] == worker
    server.signal(signal.SIGTTIN)
    server.wait_workers(2)
    assert len(import_count(import_log)) == 2  # a new preloader imported the app again


def test_preloader_never_outlives_the_master(server_factory):
    server = server_factory(*SMART, "-w", "1", "probe_app:app")
    server.wait_workers(1)
    [preloader] = server.preloaders()
    server.signal(signal.SIGKILL)
    server.wait_exit()
    wait_for(lambda: read_stat(preloader) is None or read_stat(preloader)[0] == "Z", what="the preloader to exit")


@pytest.mark.parametrize("mode", [SMART, DIRECT], ids=["smart", "direct"])
def test_graceful_term_finishes_the_request_in_flight(server_factory, mode, event_log):
    import threading

    server = server_factory(*mode, "-w", "1", "--graceful-timeout", "10", "probe_app:app")
    server.wait_workers(1)
    server.wait_serving()
    result: dict = {}

    def slow() -> None:
        result["resp"] = server.request("/sleep?1.5", timeout=10)

    thread = threading.Thread(target=slow)
    thread.start()
    wait_for(lambda: events(event_log, "request_sleeping"), what="the request to reach the app")
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    thread.join(10)
    assert result["resp"].status == 200
