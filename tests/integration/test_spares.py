"""Spare workers (``spare_workers``): forked ahead, parked before the request loop, released by TTIN."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from harness import SMART, Server, app_pids, free_port, get_json, group_members, import_count, read_stat, wait_for


def spares(server: Server, app: str = "probe_app") -> list[int]:
    return server.app_pids("spare", app)


def parked(server: Server, count: int = 1) -> list[int]:
    """Wait until ``count`` spares exist and the master logged each of them as parked."""

    def ready() -> list[int] | None:
        pids = spares(server)
        log = server.log()
        if len(pids) == count and all(re.search(rf"spare pid={pid} gen=\d+ parked", log) for pid in pids):
            return pids
        return None

    return wait_for(ready, timeout=20, what=f"{count} parked spare(s)")


def status_app(server: Server) -> dict:
    answer = server.control({"command": "status"})
    assert answer["ok"], answer
    return answer["result"]["apps"][0]


def test_spares_are_parked_children_of_the_master_not_serving(server_factory, import_log):
    server = server_factory(*SMART, "--spare-workers", "2", "-w", "2", "probe_app:app")
    workers = server.wait_workers(2)
    pids = parked(server, 2)
    for pid in pids:
        assert read_stat(pid)[1] == server.pid  # a child of the master (clone(CLONE_PARENT))
    app = status_app(server)
    assert sorted(s["pid"] for s in app["spares"]) == sorted(pids)
    assert all(s["parked"] for s in app["spares"]) and app["spare_workers"] == 2
    assert sorted(w["pid"] for w in app["workers"]) == sorted(workers)  # spares are not workers
    memory = server.control({"command": "memory"})["result"]
    assert sorted(p["pid"] for p in memory["processes"] if p["role"] == "spare") == sorted(pids)
    answered = {server.get_json("/")["pid"] for _ in range(30)}
    assert answered <= set(workers)  # a parked spare never accepts
    assert len(import_count(import_log)) == 1  # the preloader's import only


def test_ttin_releases_a_spare_and_parks_a_new_one(server_factory, import_log):
    server = server_factory(*SMART, "--spare-workers", "1", "-w", "1", "probe_app:app")
    server.wait_workers(1)
    (spare,) = parked(server)
    server.signal(signal.SIGTTIN)
    wait_for(lambda: spare in server.workers(), timeout=10, what="the spare to become a worker")
    server.wait_log(f"spare pid={spare} released: serving")
    assert spare in server.pids_answering({spare})
    (new_spare,) = wait_for(lambda: [p for p in parked(server) if p != spare] or None, timeout=20, what="a new spare")
    assert new_spare != spare and len(server.workers()) == 2
    assert len(import_count(import_log)) == 1  # nothing imported again
    log = server.log()
    assert log.index(f"spare pid={spare} released") < log.index(f"spare pid={new_spare} age=")


def test_hup_discards_the_old_generations_spares(server_factory):
    server = server_factory(*SMART, "--spare-workers", "1", "-w", "1", "probe_app:app")
    server.wait_workers(1)
    (old,) = parked(server)
    server.signal(signal.SIGHUP)
    server.wait_log(f"spare pid={old} discarded: generation 1 replaced")
    wait_for(lambda: read_stat(old) is None, timeout=10, what="the old spare to exit")
    (new,) = wait_for(lambda: [p for p in spares(server) if p != old] or None, timeout=20, what="a spare of gen 2")
    server.wait_log(f"spare pid={new} gen=2 parked", timeout=20)


def test_a_killed_spare_is_a_failure_and_is_replaced_after_backoff(server_factory):
    server = server_factory(*SMART, "--spare-workers", "1", "-w", "1", "probe_app:app")
    server.wait_workers(1)
    (spare,) = parked(server)
    killed_at = time.monotonic()
    os.kill(spare, signal.SIGKILL)
    server.wait_log(f"spare worker died parked (worker pid={spare}, signal SIGKILL)")
    (new,) = wait_for(lambda: [p for p in spares(server) if p != spare] or None, timeout=20, what="a new spare")
    assert time.monotonic() - killed_at >= 0.9  # the first backoff step is 1 s: no hot respawn
    server.wait_log(f"spare pid={new} gen=1 parked")
    assert "failure 1 in a row" in server.log()


def test_term_leaves_no_process_behind(server_factory):
    server = server_factory(*SMART, "--spare-workers", "2", "-w", "1", "probe_app:app")
    server.wait_workers(1)
    parked(server, 2)
    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=15) == 0
    wait_for(lambda: not group_members(server.pid), timeout=5, what="every process to be gone")


def test_multi_app_spares_on_one_app_only(tmp_path: Path, server_factory):
    ports = {"shop": free_port(), "blog": free_port()}
    apps = {
        "shop": {"app": "probe_app:app", "bind": f"127.0.0.1:{ports['shop']}", "workers": 1, "spare_workers": 1},
        "blog": {"app": "env_app:app", "bind": f"127.0.0.1:{ports['blog']}", "workers": 1},
    }
    conf = tmp_path / "multi.conf.py"
    conf.write_text(f"worker_class = 'smartspawn.Worker'\napps = {apps!r}\n")
    server = server_factory("-c", str(conf), bind=False)
    spare = wait_for(lambda: app_pids(server, "spare", "shop") or None, timeout=20, what="shop's spare")[0]
    server.wait_log(f"app=shop spare pid={spare} gen=1 parked", timeout=20)
    wait_for(lambda: len(app_pids(server, "worker", "blog")) == 1, timeout=20, what="blog's worker")
    assert app_pids(server, "spare", "blog") == []
    server.signal(signal.SIGTTIN)  # one more worker for every app: shop's from its spare, blog's by a fork
    wait_for(lambda: spare in app_pids(server, "worker", "shop"), timeout=10, what="shop's spare released")
    wait_for(lambda: len(app_pids(server, "worker", "blog")) == 2, timeout=20, what="blog's second worker")
    assert get_json(ports["shop"], "/")["pid"] in app_pids(server, "worker", "shop")
    wait_for(lambda: [p for p in app_pids(server, "spare", "shop") if p != spare] or None, timeout=20, what="shop re-parks")
    assert app_pids(server, "spare", "blog") == []


@pytest.mark.parametrize("extra", [("--smart-fork", "double-fork"), ("--threads", "2")], ids=["double-fork", "gthread"])
def test_a_spare_parks_and_serves_by_double_fork_and_with_threads(server_factory, extra):
    server = server_factory(*SMART, "--spare-workers", "1", "-w", "1", *extra, "probe_app:app")
    server.wait_workers(1)
    (spare,) = parked(server)
    assert read_stat(spare)[1] == server.pid  # re-parented to the master (double fork) or born its child
    server.signal(signal.SIGTTIN)
    wait_for(lambda: spare in server.workers(), timeout=10, what="the spare to become a worker")
    assert spare in server.pids_answering({spare})
