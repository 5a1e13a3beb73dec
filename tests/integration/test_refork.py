"""refork_after: a worker that served enough requests becomes its app's next preloader.

Real gunicorn, real traffic: the promoted worker's lazily built state is
what every later worker starts with, no request fails across the switch, the
counts go on from one preloader to the next, and a HUP starts them again.
"""

from __future__ import annotations

import re
import signal

import pytest

from harness import SMART, Load, import_count, wait_for

from gunicorn_smartspawn import _compat

GTHREAD = pytest.param("4", id="gthread", marks=pytest.mark.skipif(
    not _compat.gthread_drains(), reason="this gunicorn's gthread worker drops accepted connections at its loop's end"))
MODELS = pytest.mark.parametrize("threads", [pytest.param("1", id="sync"), GTHREAD])
REFORK = re.compile(r"app=(\S+) refork (\d+): worker pid=(\d+) \((\d+) requests\) is the preloader of generation (\d+)")


def reforks(server) -> list[tuple[int, int, int]]:
    """(refork number, promoted pid, generation) of every refork the master logged."""
    return [(int(m[2]), int(m[3]), int(m[5])) for m in REFORK.finditer(server.log())]


@MODELS
def test_a_worker_that_served_enough_becomes_the_preloader_and_every_later_worker_shares_its_state(
        server_factory, tmp_path, threads):
    server = server_factory(*SMART, "-w", "2", "--threads", threads, "--refork-after", "40", "refork_app:app")
    first = set(server.wait_workers(2))
    [old_preloader] = server.preloaders()
    with Load(server, threads=3) as load:
        wait_for(lambda: reforks(server), timeout=30, what="a refork in the log")
        [(number, mold, generation)] = reforks(server)
        assert (number, generation) == (1, 2) and mold in first
        # the promoted worker is now the preloader; workers forked from it replace the rest
        wait_for(lambda: server.preloaders() == [mold], timeout=20, what="the promoted worker as the only preloader")
        new = set(wait_for(lambda: (w := set(server.workers())) and not w & first and len(w) == 2 and w, timeout=20,
                           what="two workers forked from the promoted one"))
        load.wait_more(40)
    assert load.failures == [], load.failures[:3]
    assert old_preloader not in server.children()
    answers = [r.body for r in load.results if r.ok and r.body["pid"] in new]
    assert answers, "the new workers served"
    # what the promoted worker built while serving is inherited, not rebuilt
    assert {a["built_by"] for a in answers} == {mold}
    assert {a["ppid"] for a in answers} == {server.pid}
    assert len(import_count(tmp_path / "imports.jsonl")) == 1  # nobody imported the app again
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_the_counts_go_on_from_preloader_to_preloader_and_a_hup_starts_them_again(server_factory, tmp_path):
    server = server_factory(*SMART, "-w", "2", "--refork-after", "15,30", "refork_app:app")
    server.wait_workers(2)
    with Load(server, threads=2) as load:
        wait_for(lambda: len(reforks(server)) == 2, timeout=40, what="two reforks")
        assert [r[0] for r in reforks(server)] == [1, 2]
        load.wait_more(60)
        assert len(reforks(server)) == 2  # no third count: no third refork
        server.signal(signal.SIGHUP)  # a fresh import: the counts start again
        wait_for(lambda: len(import_count(tmp_path / "imports.jsonl")) == 2, timeout=20, what="the reload's import")
        wait_for(lambda: len(reforks(server)) == 3, timeout=40, what="a refork after the reload")
        load.wait_more(20)
    assert reforks(server)[2][0] == 1
    assert load.failures == [], load.failures[:3]


@pytest.mark.skipif(_compat.gthread_drains(), reason="this gunicorn's gthread worker can be promoted")
def test_a_gthread_worker_that_would_drop_connections_is_never_promoted(server_factory):
    server = server_factory(*SMART, "-w", "1", "--threads", "4", "--refork-after", "5", "refork_app:app")
    server.wait_workers(1)
    with Load(server, threads=2) as load:
        load.wait_more(30)
        server.wait_log("refork_after is ignored: gthread workers cannot become a preloader")
    assert reforks(server) == [] and load.failures == []


def test_direct_spawning_says_once_that_refork_after_does_nothing(server_factory):
    server = server_factory("-k", "smartspawn.Worker", "--spawn-method", "direct", "-w", "1",
                            "--refork-after", "5", "refork_app:app")
    server.wait_workers(1)
    with Load(server) as load:
        load.wait_more(20)
    server.wait_log("refork_after is ignored: only smart spawning has a preloader to replace")
    assert server.log().count("refork_after is ignored") == 1
    assert reforks(server) == []


def test_one_app_reforks_and_the_other_is_left_alone(server_factory, tmp_path):
    from harness import free_port

    ports = free_port(), free_port()
    conf = tmp_path / "multi.py"
    conf.write_text(
        "apps = {\n"
        f"  'hot': {{'app': 'refork_app:app', 'bind': '127.0.0.1:{ports[0]}', 'workers': 2, 'refork_after': [20]}},\n"
        f"  'calm': {{'app': 'refork_app:app', 'bind': '127.0.0.1:{ports[1]}', 'workers': 1}},\n"
        "}\n")
    server = server_factory("-k", "smartspawn.Worker", "-c", str(conf), bind=False)
    wait_for(lambda: len(server.workers()) == 3, timeout=20, what="three workers")
    calm_preloader = server.app_pids("preloader", "calm")
    server.port = ports[0]
    with Load(server, threads=2) as load:
        wait_for(lambda: reforks(server), timeout=30, what="a refork of 'hot'")
        load.wait_more(20)
    assert [m[1] for m in REFORK.finditer(server.log())] == ["hot"]
    assert server.app_pids("preloader", "calm") == calm_preloader
    assert load.failures == []


def test_only_the_promoted_worker_is_heard_on_the_promotion_socket(server_factory):
    # the abstract name is reachable by any process: one that connects first is refused unheard
    import os
    import socket
    import threading

    server = server_factory(*SMART, "-w", "2", "--refork-after", "10", "refork_app:app")
    workers = server.wait_workers(2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def squat() -> None:
        while not stop.is_set() and not held:
            for pid in workers:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(f"\0smartspawn-mold-{server.pid}-{pid}")
                except OSError:
                    s.close()
                    continue
                held.append(s)
                return

    squatter = threading.Thread(target=squat, daemon=True)
    squatter.start()
    try:
        with Load(server, threads=2, path="/slow") as load:  # each worker always in a 0.2 s request
            wait_for(lambda: reforks(server), timeout=30, what="a refork despite the squatter")
            load.wait_more(4)
    finally:
        stop.set()
        squatter.join(5)
    assert held, "the squatter connected before the worker did"
    server.wait_log(f"refork: a connection from pid={os.getpid()}, not worker pid=")
    assert held[0].recv(1) == b""  # closed unheard
    held[0].close()
    assert load.failures == []
