"""``ksm``: the app's preloader and workers are marked mergeable by KSM, and nothing else is.

The mark is read from outside, in ``/proc/PID/ksm_stat`` (``ksm_merge_any``), so the
tests need a kernel with ``PR_SET_MEMORY_MERGE`` (6.4+); whether KSM's daemon runs is
machine state, which the tests read and do not change.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import DIRECT, SMART, free_port, wait_for

from gunicorn_smartspawn import _linux

pytestmark = pytest.mark.skipif(
    _linux.memory_merge_supported() is not None or not Path("/proc/self/ksm_stat").exists(),
    reason="this kernel has no PR_SET_MEMORY_MERGE or no /proc/PID/ksm_stat",
)


def merge_any(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/ksm_stat").read_text().splitlines():
        if line.startswith("ksm_merge_any:"):
            return line.split(":", 1)[1].strip() == "yes"
    raise AssertionError(f"no ksm_merge_any in /proc/{pid}/ksm_stat")


def stopped_note(server) -> bool:  # type: ignore[no-untyped-def]
    return "but KSM is stopped" in server.log()


def test_smart_marks_the_preloader_and_its_workers_not_the_master(server_factory):
    server = server_factory(*SMART, "--ksm", "-w", "2", "probe_app:app")
    workers = server.wait_workers(2)
    (preloader,) = server.preloaders()
    assert [merge_any(pid) for pid in (preloader, *workers)] == [True, True, True]
    assert not merge_any(server.pid)  # the master runs no application code and is not marked
    assert server.get_json("/")["pid"] in workers
    # the master says once at start whether the daemon that merges runs
    assert stopped_note(server) == (_linux.ksm_running() is False)


def test_without_the_setting_nothing_is_marked(server_factory):
    server = server_factory(*SMART, "-w", "1", "probe_app:app")
    (worker,) = server.wait_workers(1)
    assert not merge_any(worker) and not merge_any(server.preloaders()[0])
    assert not stopped_note(server) and "ksm=" not in server.log()


def test_direct_workers_are_marked(server_factory):
    server = server_factory(*DIRECT, "--ksm", "-w", "2", "probe_app:app")
    workers = server.wait_workers(2)
    assert all(merge_any(pid) for pid in workers)
    assert not merge_any(server.pid)


def test_a_worker_respawned_after_a_kill_is_marked(server_factory):
    import os
    import signal

    server = server_factory(*SMART, "--ksm", "-w", "1", "probe_app:app")
    (first,) = server.wait_workers(1)
    os.kill(first, signal.SIGKILL)
    (second,) = wait_for(lambda: [p for p in server.workers() if p != first] or None, timeout=15,
                         what="the replacement worker")
    assert merge_any(second)


def test_a_hup_generation_and_its_spare_are_marked(server_factory):
    import signal

    server = server_factory(*SMART, "--ksm", "--spare-workers", "1", "-w", "1", "probe_app:app")
    (old,) = server.wait_workers(1)
    old_preloader = server.preloaders()
    server.signal(signal.SIGHUP)
    (new,) = wait_for(lambda: [p for p in server.workers() if p != old] or None, timeout=20,
                      what="a worker of generation 2")
    new_preloader = wait_for(lambda: [p for p in server.preloaders() if p not in old_preloader] or None,
                             timeout=20, what="the preloader of generation 2")
    spare = wait_for(lambda: server.app_pids("spare", "probe_app") or None, timeout=20, what="a parked spare")
    assert all(merge_any(p) for p in (new, *new_preloader, *spare))


def test_per_app(server_factory, tmp_path):
    ports = free_port(), free_port()
    conf = tmp_path / "multi.py"
    conf.write_text(
        "apps = {\n"
        f"  'merged': {{'app': 'probe_app:app', 'bind': '127.0.0.1:{ports[0]}', 'workers': 1, 'ksm': True}},\n"
        f"  'plain': {{'app': 'probe_app:app', 'bind': '127.0.0.1:{ports[1]}', 'workers': 1}},\n"
        "}\n")
    server = server_factory("-k", "smartspawn.Worker", "-c", str(conf), bind=False)
    wait_for(lambda: len(server.workers()) == 2, timeout=20, what="two workers")
    merged = server.app_pids("worker", "merged") + server.app_pids("preloader", "merged")
    plain = server.app_pids("worker", "plain") + server.app_pids("preloader", "plain")
    assert len(merged) == len(plain) == 2
    assert all(merge_any(p) for p in merged) and not any(merge_any(p) for p in plain)
