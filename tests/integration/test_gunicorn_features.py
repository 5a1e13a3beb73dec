"""What gunicorn users rely on keeps working under smart and direct spawning."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import gunicorn
import pytest

from harness import (
    APPS,
    DIRECT,
    SMART,
    SMARTSPAWN,
    fd_kinds,
    fd_targets,
    free_port,
    group_members,
    import_count,
    read_stat,
    steal_fd,
    tcp_listeners,
    wait_for,
)

MODES = pytest.mark.parametrize("mode", [SMART, DIRECT], ids=["smart", "direct"])


def hook_log(path: Path) -> list[dict]:
    return import_count(path)


@MODES
def test_gunicorn_hooks_and_events_run_where_documented(server_factory, tmp_path, mode):
    log = tmp_path / "hooks.jsonl"
    server = server_factory(*mode, "-w", "1", "-c", str(APPS / "hooks_conf.py"), "probe_app:app",
                            env={"HOOK_LOG": str(log)})
    [worker] = server.wait_workers(1)
    server.wait_serving()
    wait_for(lambda: any(h["hook"] == "post_worker_init" for h in hook_log(log)), what="post_worker_init")
    server.signal(signal.SIGTTIN)
    server.wait_workers(2)
    wait_for(lambda: any(h["hook"] == "nworkers_changed" and h["new"] == 2 for h in hook_log(log)), what="nworkers")
    before_hup = set(server.workers())
    server.signal(signal.SIGHUP)
    wait_for(lambda: any(h["hook"] == "on_reload" for h in hook_log(log)), what="on_reload")
    # HUP re-reads the configuration: back to -w 1, as in stock gunicorn, served by a new generation
    wait_for(lambda: not before_hup & set(server.workers()) and len(server.workers()) == 1, timeout=20,
             what="rotation to a new generation")
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    hooks = hook_log(log)
    by_name: dict[str, list[dict]] = {}
    for h in hooks:
        by_name.setdefault(h["hook"], []).append(h)
    for name in ("on_starting", "when_ready", "pre_fork", "child_exit", "nworkers_changed", "on_reload", "on_exit"):
        assert by_name.get(name), f"{name} never ran"
        assert all(h["pid"] == server.pid for h in by_name[name]), by_name[name]
    for name in ("post_fork", "post_worker_init", "worker_exit", "starting_worker_process", "stopping_worker_process"):
        assert by_name.get(name), f"{name} never ran"
        assert all(h["title"].startswith("gunicorn: worker") for h in by_name[name]), (name, by_name[name])
    forked = mode == SMART
    assert all(h["forked"] is forked for h in by_name["starting_worker_process"])
    assert all(h["forked"] is forked for h in by_name["post_fork"])
    # the Passenger event comes before gunicorn's post_fork in a forked worker, after the import in a direct one
    for h in by_name["post_fork"]:
        starting = [s for s in by_name["starting_worker_process"] if s["pid"] == h["pid"]]
        assert starting
        order = [x["hook"] for x in hooks if x["pid"] == h["pid"]]
        if forked:
            assert order.index("starting_worker_process") < order.index("post_fork")
        else:
            assert order.index("post_fork") < order.index("starting_worker_process") < order.index("post_worker_init")
    if forked:
        assert [h["title"] for h in by_name["preloader_loaded"]][0].startswith("gunicorn: preloader")
        assert len(by_name["preloader_loaded"]) == 2  # generation 1 and, after HUP, 2
    else:
        assert "preloader_loaded" not in by_name


@MODES
def test_hung_worker_is_killed_and_replaced(server_factory, mode):
    server = server_factory(*mode, "-w", "1", "--timeout", "2", "probe_app:app")
    [worker] = server.wait_workers(1)
    with pytest.raises((socket.timeout, TimeoutError)):
        server.request("/hang", timeout=1)
    server.wait_log("WORKER TIMEOUT", timeout=15)
    [new] = server.wait_workers(1, exclude=[worker], timeout=15)
    assert server.get_json("/")["pid"] == new


@MODES
def test_max_requests_recycles_workers(server_factory, import_log, mode):
    server = server_factory(*mode, "-w", "1", "--max-requests", "5", "--max-requests-jitter", "3", "probe_app:app")
    [first] = server.wait_workers(1)
    pids = set()
    deadline = time.monotonic() + 20
    while len(pids) < 3 and time.monotonic() < deadline:
        try:
            pids.add(server.get_json("/", timeout=3)["pid"])
        except OSError:
            pass
    assert len(pids) >= 3, pids
    if mode == SMART:
        assert len(import_count(import_log)) == 1  # recycled workers are forked again, not re-imported
    else:
        assert len(import_count(import_log)) >= 3


@MODES
def test_threads_use_gthread(server_factory, mode, event_log):
    server = server_factory(*mode, "-w", "1", "--threads", "4", "probe_app:app")
    [worker] = server.wait_workers(1)
    server.wait_serving()
    results: list[tuple[int, int]] = []

    def call() -> None:
        resp = server.request("/sleep?1", timeout=10)
        results.append((resp.status, resp.json()["pid"]))

    threads = [threading.Thread(target=call) for _ in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    elapsed = time.monotonic() - started
    assert results == [(200, worker)] * 4  # one worker answered all four...
    assert elapsed < 3.5, elapsed  # ...four 1 s requests at once: its threads


def test_unix_socket_bind(server_factory):
    server = server_factory(*SMART, "-w", "2", "probe_app:app", unix=True)
    server.wait_workers(2)
    assert server.wait_serving()["forked"] is True


def _listeners_held(pid: int, port: int) -> dict[int, str]:
    """``pid``'s descriptors that are listening TCP sockets on ``port``: fd -> 'socket:[inode]'."""
    listening = tcp_listeners(port)
    return {fd: target for fd, target in fd_targets(pid).items() if target in listening}


def _reuse_port_set(pid: int, fd: int) -> bool:
    with socket.socket(fileno=steal_fd(pid, fd)) as sock:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))


def test_reuse_port(server_factory):
    server = server_factory(*SMART, "-w", "2", "--reuse-port", "probe_app:app")
    workers = server.wait_workers(2)
    server.pids_answering(set(workers))
    [preloader] = server.preloaders()
    held = {pid: _listeners_held(pid, server.port) for pid in (server.pid, preloader, *workers)}
    for pid in workers:
        assert len(held[pid]) == 1, (pid, held[pid])
        [(fd, _)] = held[pid].items()
        assert _reuse_port_set(pid, fd), f"worker {pid}'s listener lacks SO_REUSEPORT"
    if gunicorn.version_info < (27,):
        # the arbiter binds one SO_REUSEPORT socket, inherited by every worker
        assert len({t for pid in workers for t in held[pid].values()}) == 1, held
        return
    # gunicorn 27: every worker binds its own; the master and the preloader hold none, so the
    # kernel spreads connections over live workers' queues only
    assert held[server.pid] == {} and held[preloader] == {}, held
    inodes = {pid: set(held[pid].values()) for pid in workers}
    assert inodes[workers[0]].isdisjoint(inodes[workers[1]]), inodes
    assert tcp_listeners(server.port) == inodes[workers[0]] | inodes[workers[1]]
    # a replacement binds its own too, and the dead worker's listener is gone with it
    os.kill(workers[0], signal.SIGKILL)
    [new] = [p for p in server.wait_workers(2, exclude=[workers[0]]) if p != workers[1]]
    wait_for(lambda: len(_listeners_held(new, server.port)) == 1, what="the new worker's listener")
    mine = set(_listeners_held(new, server.port).values())
    assert mine.isdisjoint(inodes[workers[0]] | inodes[workers[1]])
    wait_for(lambda: tcp_listeners(server.port) == mine | inodes[workers[1]],
             what="exactly one listener per live worker")
    server.pids_answering({new, workers[1]})


def test_direct_spawning_with_reuse_port_serves(server_factory):
    # each direct worker binds its own listener (gunicorn 27) and must not close it again as
    # one of the master's descriptors it dropped after the fork (it used to: 3,000 boots in 23 s)
    server = server_factory(*DIRECT, "-w", "2", "--reuse-port", "probe_app:app")
    workers = server.wait_workers(2)
    server.pids_answering(set(workers))
    assert "Socket operation on non-socket" not in server.log()


def test_systemd_socket_activation(tmp_path, server_factory):
    # A wrapper binds the socket, puts it on fd 3 and execs gunicorn in the same pid,
    # the way systemd passes LISTEN_FDS / LISTEN_PID.
    wrapper = tmp_path / "activate.py"
    wrapper.write_text(
        "import os, socket, sys\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(64)\n"
        "os.dup2(s.fileno(), 3); os.set_inheritable(3, True)\n"
        "os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid())\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'gunicorn', *sys.argv[2:]])\n"
    )
    port = free_port()
    server = server_factory(*SMART, "-w", "2", "probe_app:app", bind=False,
                            launcher=[sys.executable, str(wrapper), str(port)])
    server.port = port
    workers = server.wait_workers(2)
    server.pids_answering(set(workers))
    assert "Listening at: http://127.0.0.1:%d" % port in server.log()


def test_usr1_reopens_logs_and_quit_is_quick(server_factory, tmp_path):
    access = tmp_path / "access.log"
    server = server_factory(*SMART, "-w", "1", "--access-logfile", str(access), "probe_app:app")
    server.wait_workers(1)
    server.wait_serving()
    wait_for(lambda: access.exists() and access.read_text().count("GET /") >= 1, what="access log line")
    access.rename(tmp_path / "access.log.1")
    server.signal(signal.SIGUSR1)
    wait_for(lambda: access.exists(), what="log reopened")
    server.get_json("/")
    wait_for(lambda: "GET /" in access.read_text(), what="a line in the new log")
    server.signal(signal.SIGQUIT)
    assert server.wait_exit(timeout=10) == 0


def test_connections_wait_in_the_backlog_while_the_app_loads(server_factory):
    server = server_factory(*SMART, "-w", "1", "probe_app:app", env={"PROBE_IMPORT_SLEEP": "2"})
    server.wait_log("Listening at")
    server.wait_log("preloader gen=1")
    assert server.workers() == []  # still importing
    started = time.monotonic()
    resp = server.request("/", timeout=15)  # connects at once, answered once a worker exists
    assert resp.status == 200
    assert time.monotonic() - started > 0.5


def test_workers_hold_no_channel_nor_master_fds(server_factory):
    server = server_factory(*SMART, "-w", "2", "probe_app:app")
    workers = server.wait_workers(2)
    server.wait_serving()
    [preloader] = server.preloaders()

    def socket_inodes(pid: int) -> set[str]:
        return fd_kinds(pid, "socket")

    def pipes(pid: int) -> set[str]:
        return fd_kinds(pid, "pipe")

    master_sockets = socket_inodes(server.pid)
    preloader_sockets = socket_inodes(preloader)
    # what the preloader holds beyond the master's sockets is its end of the channel
    channel = preloader_sockets - master_sockets
    assert channel, "the preloader should hold its channel"
    for pid in workers:
        mine = socket_inodes(pid)
        assert not mine & channel, f"worker {pid} holds the preloader channel"
        shared_with_master = mine & master_sockets
        # only the listening socket is shared with the master
        assert len(shared_with_master) == 1, (pid, shared_with_master)
        assert not pipes(pid) & pipes(server.pid), f"worker {pid} holds a pipe of the master"


@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(sys.executable), "gunicornc")),
                    reason="gunicornc arrived in gunicorn 25.1")
def test_gunicornc_show_workers(server_factory, tmp_path):
    server = server_factory(*SMART, "-w", "2", "probe_app:app")
    workers = server.wait_workers(2)
    ctl = next(a for a in server.args if a.endswith(".sock") and "ctl" in a)
    gunicornc = os.path.join(os.path.dirname(sys.executable), "gunicornc")

    def shown() -> set[int]:
        out = subprocess.run([gunicornc, "-s", ctl, "-j", "-c", "show workers"], capture_output=True, text=True,
                             timeout=10)
        if out.returncode != 0:
            return set()
        return {w["pid"] for w in json.loads(out.stdout)["workers"]}

    assert wait_for(lambda: shown() == set(workers), what="gunicornc to list the workers")
    out = subprocess.run([gunicornc, "-s", ctl, "-c", "worker add 1"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    server.wait_workers(3)
    assert len(server.preloaders()) == 1


@pytest.mark.parametrize("fork", ["auto", "double-fork"])
def test_worker_parent_is_master_after_many_spawns(server_factory, import_log, fork):
    server = server_factory(*SMART, "--smart-fork", fork, "-w", "2", "probe_app:app")
    current = server.wait_workers(2)
    [preloader] = server.preloaders()
    spawned = set(current)

    def check(workers: list[int]) -> None:
        for pid in set(workers) - spawned:
            stat = read_stat(pid)
            assert stat is not None and stat[1] == server.pid, f"worker {pid} has parent {stat}, not the master"
        spawned.update(workers)

    deadline = time.monotonic() + 60
    while len(spawned) < 24:  # each round spawns two: one for TTIN, one to replace a killed worker
        assert time.monotonic() < deadline, f"only {len(spawned)} workers spawned within 60 s"
        server.signal(signal.SIGTTIN)
        check(server.wait_workers(3))
        server.signal(signal.SIGTTOU)
        current = server.wait_workers(2)
        victim = current[0]
        os.kill(victim, signal.SIGKILL)
        current = server.wait_workers(2, exclude=[victim])
        check(current)
    assert server.preloaders() == [preloader]  # every one of them forked by the one preloader
    assert len(import_count(import_log)) == 1
    assert server.log().count(f"by preloader pid={preloader}") >= len(spawned)

    def only_the_tree() -> bool:  # no zombie, no leftover intermediate process
        workers = server.workers()
        return len(workers) == 2 and sorted(group_members(server.pid)) == sorted([server.pid, preloader, *workers])

    wait_for(only_the_tree, what="only the master, the preloader and two workers")
    server.pids_answering(set(server.workers()))


def test_statsd_receives_per_app_gauges_and_spawn_timings(server_factory):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    try:
        port = udp.getsockname()[1]
        server = server_factory(*SMART, "-w", "2", "--statsd-host", f"127.0.0.1:{port}", "--statsd-prefix", "site",
                                "probe_app:app")
        server.wait_workers(2)
        seen: list[str] = []

        def received(*names: str) -> bool:
            try:
                while True:
                    seen.extend(udp.recv(65536).decode().splitlines())
            except OSError:
                pass
            return all(any(line.startswith(name) for line in seen) for name in names)

        wait_for(lambda: received("site.smartspawn.probe_app.workers:2|g", "site.smartspawn.probe_app.preloader_up:1|g",
                                  "site.smartspawn.probe_app.spawn_ms:", "site.smartspawn.probe_app.preloader_load_ms:"),
                 what="the plugin's metrics")
    finally:
        udp.close()


def test_events_of_modules_imported_by_the_config_survive_hup(server_factory, tmp_path, event_log):
    conf = tmp_path / "conf.py"
    conf.write_text("import helper_events\n")
    server = server_factory(*SMART, "-w", "1", "-c", str(conf), "probe_app:app")
    [first] = server.wait_workers(1)
    fired = lambda: [e["pid"] for e in import_count(event_log) if e["event"] == "helper_module_event"]  # noqa: E731
    wait_for(lambda: first in fired(), what="the helper module's event in the first worker")
    server.signal(signal.SIGHUP)
    [second] = server.wait_workers(1, exclude=[first], timeout=20)
    wait_for(lambda: second in fired(), what="the helper module's event after HUP")


def test_usr1_reaches_the_preloader_so_later_workers_log_to_the_new_file(server_factory, tmp_path):
    errlog = tmp_path / "error.log"
    server = server_factory(*SMART, "-w", "1", "--error-logfile", str(errlog), "probe_app:app")
    server.wait_workers(1)
    errlog.rename(tmp_path / "error.log.1")
    server.signal(signal.SIGUSR1)
    wait_for(lambda: errlog.exists(), what="the master to reopen its log")
    [preloader] = server.preloaders()
    wait_for(lambda: str(errlog) in fd_targets(preloader).values(), what="the preloader to reopen its log")
    server.signal(signal.SIGTTIN)
    workers = server.wait_workers(2)
    newest = max(workers)
    assert str(tmp_path / "error.log.1") not in fd_targets(newest).values()
    wait_for(lambda: f"Booting worker with pid: {newest}" in errlog.read_text(), what="the new worker in the new log")


def test_preload_added_to_a_direct_config_is_ignored_on_hup(server_factory, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("spawn_method = 'direct'\n")
    server = server_factory(*SMARTSPAWN, "-w", "1", "-c", str(conf), "probe_app:app")
    [first] = server.wait_workers(1)
    conf.write_text("spawn_method = 'direct'\npreload_app = True\n")
    server.signal(signal.SIGHUP)
    server.wait_log("preload_app=True is ignored: it conflicts with spawn_method='direct'")
    server.wait_workers(1, exclude=[first], timeout=20)
    assert server.proc.poll() is None
    assert server.get_json("/")["forked"] is False


def test_reload_flag_with_smart_spawning_is_the_masters(server_factory):
    server = server_factory(*SMART, "-w", "1", "--reload", "probe_app:app")
    server.wait_log("app=probe_app reload: the master watches its code")  # (test_reload.py edits files)
    server.wait_workers(1)
    assert "restarts workers from the preloader" not in server.log()


@MODES
def test_spawn_worker_from_a_hook_grows_the_pool_by_one(server_factory, tmp_path, mode):
    # docs/hooks.md: stock forks one worker and returns its pid; here the call asks for
    # one more worker (as TTIN does) and returns None, and the pool keeps it
    log = tmp_path / "hooks.jsonl"
    server = server_factory(*mode, "-w", "2", "-c", str(APPS / "spawn_worker_conf.py"), "probe_app:app",
                            env={"HOOK_LOG": str(log)})
    wait_for(lambda: hook_log(log), what="when_ready called spawn_worker()")
    assert hook_log(log) == [{"hook": "spawn_worker", "returned": None}]
    workers = server.wait_workers(3)
    assert server.pids_answering(set(workers)) == set(workers)
    # the third worker is part of the pool: a killed one is replaced, the count stays 3
    os.kill(workers[0], signal.SIGKILL)
    wait_for(lambda: len(server.workers()) == 3 and workers[0] not in server.workers(), timeout=20,
             what="the killed worker replaced, three workers")
