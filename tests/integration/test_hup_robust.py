"""No HUP, control command or resource error stops the master; every process ends with it."""

from __future__ import annotations

import os
import signal
import socket
import textwrap
from pathlib import Path

from harness import SMART, app_pids, free_port, get_json, import_count, wait_for


def write_conf(path: Path, apps: dict) -> Path:
    path.write_text(f"worker_class = 'smartspawn.Worker'\napps = {apps!r}\n")
    return path


def test_an_app_added_by_hup_is_imported_once_and_a_removed_one_not_again(tmp_path, server_factory, import_log):
    ports = {"one": free_port(), "two": free_port()}
    conf = write_conf(tmp_path / "c.py", {"one": {"app": "probe_app:app", "bind": f"127.0.0.1:{ports['one']}", "workers": 1}})
    server = server_factory("-c", str(conf), bind=False)
    wait_for(lambda: len(app_pids(server, "worker", "one")) == 1, what="app one")
    assert len(import_count(import_log)) == 1
    write_conf(conf, {"two": {"app": "probe_app:app", "bind": f"127.0.0.1:{ports['two']}", "workers": 1}})
    server.signal(signal.SIGHUP)
    wait_for(lambda: len(app_pids(server, "worker", "two")) == 1, what="app two")
    server.wait_log("app=one stopped and removed")
    imports = import_count(import_log)
    assert len(imports) == 2, imports  # one for each app, none for the removed one, none twice for the new one
    log = server.log()
    assert "[ERROR]" not in log, [line for line in log.splitlines() if "[ERROR]" in line]
    assert get_json(ports["two"])["pid"] in app_pids(server, "worker", "two")


def test_a_hup_whose_new_app_cannot_bind_leaves_only_that_app_out(tmp_path, server_factory):
    ports = {"one": free_port(), "two": free_port()}
    conf = write_conf(tmp_path / "c.py", {"one": {"app": "probe_app:app", "bind": f"127.0.0.1:{ports['one']}", "workers": 1}})
    server = server_factory("-c", str(conf), bind=False)
    wait_for(lambda: len(app_pids(server, "worker", "one")) == 1, what="app one")
    holder = socket.socket()
    holder.bind(("127.0.0.1", ports["two"]))
    holder.listen()
    try:
        write_conf(conf, {
            "one": {"app": "probe_app:app", "bind": f"127.0.0.1:{ports['one']}", "workers": 1},
            "two": {"app": "probe_app:app", "bind": f"127.0.0.1:{ports['two']}", "workers": 1},
        })
        server.signal(signal.SIGHUP)
        server.wait_log("app=two not started", timeout=15)
        assert server.proc.poll() is None, "the master survived"
        assert get_json(ports["one"])["pid"] in app_pids(server, "worker", "one")
        assert app_pids(server, "preloader", "two") == [] and app_pids(server, "worker", "two") == []
    finally:
        holder.close()
    # the next HUP, with the port free, starts it
    server.signal(signal.SIGHUP)
    wait_for(lambda: len(app_pids(server, "worker", "two")) == 1, 20, "app two after the port was freed")


def test_an_app_readded_while_it_drains_takes_its_listener_back(tmp_path, server_factory):
    port = free_port()
    entry = {"app": "probe_app:app", "bind": f"127.0.0.1:{port}", "workers": 1, "graceful_timeout": 30}
    other = {"app": "probe_app:app", "bind": f"127.0.0.1:{free_port()}", "workers": 1}
    conf = write_conf(tmp_path / "c.py", {"shop": entry, "other": other})
    server = server_factory("-c", str(conf), bind=False)
    wait_for(lambda: len(app_pids(server, "worker", "shop")) == 1, what="shop")
    # a slow request keeps the removed incarnation draining
    slow = socket.create_connection(("127.0.0.1", port), timeout=20)
    slow.sendall(b"GET /sleep?4 HTTP/1.0\r\n\r\n")
    wait_for(lambda: "request_sleeping" in (tmp_path / "events.jsonl").read_text(), what="the slow request started")
    write_conf(conf, {"other": other})
    server.signal(signal.SIGHUP)
    server.wait_log("app=shop removed from the configuration")
    write_conf(conf, {"shop": entry, "other": other})
    server.signal(signal.SIGHUP)
    server.wait_log("app=shop is back in the configuration while it drained")
    assert b"200 OK" in slow.recv(65536)
    slow.close()
    wait_for(lambda: len(app_pids(server, "worker", "shop")) == 1, 20, "shop serving again")
    assert get_json(port)["pid"] in app_pids(server, "worker", "shop")
    assert server.proc.poll() is None


def test_scale_is_bounded_and_paced(server_factory):
    server = server_factory(*SMART, "-w", "1", "probe_app:app")
    server.wait_workers(1)
    reply = server.control({"command": "scale", "app": "probe_app", "workers": 999999})
    assert not reply["ok"] and "expected 1 to 1000" in reply["error"]
    assert server.control({"command": "scale", "app": "probe_app", "workers": 40})["ok"]
    server.wait_workers(40, timeout=60)
    assert server.proc.poll() is None


def test_every_process_below_the_master_ends_with_it(tmp_path, server_factory):
    app = tmp_path / "daemon_app.py"
    app.write_text(textwrap.dedent('''
        import os, subprocess, sys, time
        from gunicorn_smartspawn import on_event

        @on_event("starting_worker_process")
        def start_daemon(forked):
            # a daemon with a child of its own, left behind by a worker
            if os.fork() == 0:
                os.setsid()
                subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
                time.sleep(600)
                os._exit(0)

        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
    '''))
    server = server_factory(*SMART, "-w", "1", "--pythonpath", str(tmp_path), "daemon_app:app")
    server.wait_workers(1)
    wait_for(lambda: len(_descendants(server.pid)) >= 4, 20, "the daemon and its child")  # preloader, worker, daemon, child
    below = _descendants(server.pid)
    server.signal(signal.SIGTERM)
    server.wait_exit()
    wait_for(lambda: not [p for p in below if _running(p)], 10, "every descendant gone")


def _descendants(pid: int) -> list[int]:
    from gunicorn_smartspawn import _linux

    return _linux.descendants(pid)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_a_preloader_that_ignores_sigterm_dies_with_a_killed_master(tmp_path, server_factory):
    app = tmp_path / "stubborn_app.py"
    app.write_text(textwrap.dedent('''
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)  # still importing when the master is killed

        def app(environ, start_response):
            start_response("200 OK", [])
            return [b""]
    '''))
    server = server_factory(*SMART, "-w", "1", "--pythonpath", str(tmp_path), "stubborn_app:app")
    preloader = wait_for(lambda: server.preloaders() or None, 20, "the preloader")[0]
    os.kill(server.pid, signal.SIGKILL)
    wait_for(lambda: not _running(preloader), 10, "the preloader to die with its master")
