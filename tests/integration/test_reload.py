"""Reloads: HUP in smart mode loads new code in a new preloader generation; so does --reload on a
changed file (the master watches the code); direct mode reloads as stock gunicorn does."""

from __future__ import annotations

import json
import os
import signal
import struct
import time
from pathlib import Path

from harness import DIRECT, SMART, Load, app_pids, free_port, get_json, wait_for
from test_hostile_channel import steal_channel

APP_TEMPLATE = '''
import os
VERSION = {version!r}
{extra}
def app(environ, start_response):
    body = ('{{"pid": %d, "version": "%s"}}' % (os.getpid(), VERSION)).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
'''


def write_app(path: Path, version: str, extra: str = "") -> None:
    path.write_text(APP_TEMPLATE.format(version=version, extra=extra))


def test_hup_loads_new_code_without_failed_requests(server_factory, tmp_path):
    write_app(tmp_path / "versioned.py", "v1")
    server = server_factory(*SMART, "-w", "2", "versioned:app", env={"PYTHONDONTWRITEBYTECODE": "1"})
    old_workers = server.wait_workers(2)
    [old_preloader] = server.preloaders()
    assert server.get_json("/")["version"] == "v1"
    with Load(server, timeout=5) as load:
        wait_for(lambda: len(load.answers("version")) > 20, what="load to run")
        write_app(tmp_path / "versioned.py", "v2")
        server.signal(signal.SIGHUP)
        wait_for(lambda: load.answers("version")[-30:] == ["v2"] * 30, timeout=20, what="only v2 answers")
        wait_for(lambda: not set(old_workers) & set(server.workers()), what="old workers retired")
        load.wait_more(20)  # the load goes on after the old generation is gone
    assert load.failures == []
    assert load.answers("version")[-20:] == ["v2"] * 20
    [new_preloader] = server.preloaders()
    assert new_preloader != old_preloader
    assert len(server.workers()) == 2
    assert "preloader gen=2" in server.log()


def test_hup_with_broken_code_keeps_the_old_workers(server_factory, tmp_path):
    write_app(tmp_path / "versioned.py", "v1")
    server = server_factory(*SMART, "-w", "2", "versioned:app", env={"PYTHONDONTWRITEBYTECODE": "1"})
    workers = server.wait_workers(2)
    [preloader] = server.preloaders()
    write_app(tmp_path / "versioned.py", "v2", extra="raise ImportError('v2 is broken on purpose')")
    server.signal(signal.SIGHUP)
    server.wait_log("v2 is broken on purpose")
    server.wait_log("failed to load the app")
    # said once by the preloader with its traceback, once by the master with what happens next
    server.wait_log("generation 1 keeps serving; fix the code and reload (HUP, restart.txt) to try again")
    assert "next try in" not in server.log(), "a failed reload is not retried: no next try is promised"
    # the preloader's line with its traceback (the source line, the exception), and the master's one line
    assert server.log().count("v2 is broken on purpose") <= 4
    wait_for(lambda: server.preloaders() == [preloader], what="the failed preloader to exit")
    assert sorted(server.workers()) == sorted(workers)
    assert server.proc.poll() is None
    for _ in range(10):
        assert server.get_json("/")["version"] == "v1"
    # a worker that dies now is replaced from the old, working generation
    os.kill(workers[0], signal.SIGKILL)
    server.wait_workers(2, exclude=[workers[0]])
    assert server.get_json("/")["version"] == "v1"
    # fixing the code and reloading again works
    write_app(tmp_path / "versioned.py", "v3")
    server.signal(signal.SIGHUP)
    wait_for(lambda: all(server.get_json("/")["version"] == "v3" for _ in range(6)), timeout=20, what="v3 answers")


def test_hup_in_direct_mode_restarts_workers_with_new_code(server_factory, tmp_path):
    write_app(tmp_path / "versioned.py", "v1")
    server = server_factory(*DIRECT, "-w", "2", "versioned:app", env={"PYTHONDONTWRITEBYTECODE": "1"})
    old = server.wait_workers(2)
    server.wait_serving()
    write_app(tmp_path / "versioned.py", "v2")
    server.signal(signal.SIGHUP)
    wait_for(lambda: not set(old) & set(server.workers()) and len(server.workers()) == 2, timeout=20,
             what="a new set of workers")
    assert all(server.get_json("/")["version"] == "v2" for _ in range(5))


# -- --reload: a changed file starts a new generation -----------------------------------------

NO_PYC = {"PYTHONDONTWRITEBYTECODE": "1"}


def versions(server, n: int = 6) -> list[str]:
    return [server.get_json("/")["version"] for _ in range(n)]


def reload_lines(server, app: str) -> list[str]:
    return [line for line in server.log().splitlines() if f"app={app} reloading: " in line]


def test_reload_in_smart_mode_loads_an_edited_file(server_factory, tmp_path):
    write_app(tmp_path / "versioned.py", "v1")
    server = server_factory(*SMART, "-w", "2", "--reload", "versioned:app", env=NO_PYC)
    old_workers = server.wait_workers(2)
    [old_preloader] = server.preloaders()
    server.wait_log("app=versioned reload: the master watches its code by inotify (reload_engine=auto)")
    assert server.get_json("/")["version"] == "v1"
    with Load(server, timeout=5) as load:
        wait_for(lambda: len(load.answers("version")) > 20, what="load to run")
        write_app(tmp_path / "versioned.py", "v2")
        wait_for(lambda: load.answers("version")[-30:] == ["v2"] * 30, timeout=20, what="only v2 answers")
        wait_for(lambda: not set(old_workers) & set(server.workers()), what="old workers retired")
        load.wait_more(20)
    assert load.failures == [], "new workers are rolled in only once they serve"
    server.wait_log(f"app=versioned reloading: {tmp_path / 'versioned.py'} modified, generation 2")
    assert server.preloaders() != [old_preloader]
    assert len(server.workers()) == 2
    log = server.log()
    assert "Worker reloading" not in log, "a forked worker runs no reloader of its own"
    assert "--reload) restarts workers from the preloader" not in log, "the old warning is gone"


def test_reload_burst_of_saves_is_one_generation(server_factory, tmp_path):
    write_app(tmp_path / "versioned.py", "v1")
    server = server_factory(*SMART, "-w", "1", "--reload", "versioned:app", env=NO_PYC)
    server.wait_workers(1)
    server.wait_log("preloader gen=1 pid=")
    for n in range(2, 7):  # an editor saving five times in a quarter of a second
        write_app(tmp_path / "versioned.py", f"v{n}")
        time.sleep(0.05)  # pacing of the edits (the stimulus), not a wait for the server
    wait_for(lambda: versions(server, 3) == ["v6"] * 3, timeout=20, what="v6 answers")
    assert len(reload_lines(server, "versioned")) == 1, reload_lines(server, "versioned")
    assert "preloader gen=3" not in server.log()


def test_reload_with_a_broken_edit_keeps_the_old_code_serving(server_factory, tmp_path):
    write_app(tmp_path / "versioned.py", "v1")
    server = server_factory(*SMART, "-w", "2", "--reload", "versioned:app", env=NO_PYC)
    workers = server.wait_workers(2)
    server.wait_log("ready, loaded in")
    write_app(tmp_path / "versioned.py", "v2", extra="raise ImportError('v2 is broken on purpose')")
    server.wait_log("modified, generation 2")
    server.wait_log("failed to load the app")
    server.wait_log("generation 1 keeps serving; fix the code and reload")
    assert sorted(server.workers()) == sorted(workers)
    assert versions(server) == ["v1"] * 6
    # saving the fixed file is enough: the master still watches it
    write_app(tmp_path / "versioned.py", "v3")
    wait_for(lambda: versions(server) == ["v3"] * 6, timeout=20, what="v3 answers")
    assert server.proc.poll() is None


def test_reload_watches_a_new_module_whose_import_failed(server_factory, tmp_path):
    """The edit adds ``import helper`` and helper.py is broken: the old generation never read
    helper.py, the failed one did; saving the fixed helper.py alone reloads."""
    write_app(tmp_path / "versioned.py", "v1")
    server = server_factory(*SMART, "-w", "1", "--reload", "versioned:app", env=NO_PYC)
    server.wait_workers(1)
    server.wait_log("ready, loaded in")
    (tmp_path / "helper.py").write_text("VERSION = 'v2-from-helper'\nthis is not python\n")
    write_app(tmp_path / "versioned.py", "unused", extra="from helper import VERSION")
    server.wait_log("generation 1 keeps serving; fix the code and reload")
    assert versions(server, 3) == ["v1"] * 3
    (tmp_path / "helper.py").write_text("VERSION = 'v2-from-helper'\n")
    wait_for(lambda: versions(server, 3) == ["v2-from-helper"] * 3, timeout=20, what="the fixed helper's answers")
    server.wait_log(f"reloading: {tmp_path / 'helper.py'} modified")


def test_reload_extra_file_change_reloads(server_factory, tmp_path):
    data = tmp_path / "version.txt"
    data.write_text("from-file-1")
    write_app(tmp_path / "versioned.py", "unused", extra=f"VERSION = open({str(data)!r}).read().strip()")
    server = server_factory(*SMART, "-w", "1", "--reload", "--reload-extra-file", str(data), "versioned:app", env=NO_PYC)
    server.wait_workers(1)
    server.wait_log("ready, loaded in")
    assert server.get_json("/")["version"] == "from-file-1"
    data.write_text("from-file-2")
    wait_for(lambda: versions(server, 3) == ["from-file-2"] * 3, timeout=20, what="the extra file's new content")
    server.wait_log(f"reloading: {data} modified, generation 2")


def test_reload_poll_engine(server_factory, tmp_path):
    write_app(tmp_path / "versioned.py", "v1")
    server = server_factory(*SMART, "-w", "1", "--reload", "--reload-engine", "poll", "versioned:app", env=NO_PYC)
    server.wait_workers(1)
    server.wait_log("reload: the master watches its code by poll (reload_engine=poll)")
    server.wait_log("ready, loaded in")
    write_app(tmp_path / "versioned.py", "v2")
    wait_for(lambda: versions(server, 3) == ["v2"] * 3, timeout=20, what="v2 answers")
    server.wait_log("modified, generation 2")


def test_reload_in_direct_mode_is_stock_gunicorns(server_factory, tmp_path):
    write_app(tmp_path / "versioned.py", "v1")
    server = server_factory(*DIRECT, "-w", "2", "--reload", "versioned:app", env=NO_PYC)
    server.wait_workers(2)
    server.wait_serving()
    assert "the master watches its code" not in server.log(), "the master watches no direct app"

    def saved_and_served() -> bool:
        # stock gunicorn's poll reloader takes its first mtimes in a thread of a worker that may
        # already serve: a save before that pass is its baseline, not a change. Save again each
        # second until it is seen, as a user would.
        if versions(server) == ["v2"] * 6:
            return True
        write_app(tmp_path / "versioned.py", "v2")
        return False

    wait_for(saved_and_served, timeout=30, interval=1.0, what="v2 answers")
    server.wait_log("Worker reloading:")  # each direct worker's own gunicorn reloader


def two_apps(server_factory, tmp_path):
    """shop and blog, smart, one worker each, --reload on; each app's code under its own chdir."""
    roots = {name: tmp_path / name for name in ("shop", "blog")}
    ports = {name: free_port() for name in roots}
    for name, root in roots.items():
        root.mkdir()
        write_app(root / f"{name}_app.py", "v1")
    apps = {name: {"app": f"{name}_app:app", "bind": f"127.0.0.1:{ports[name]}", "workers": 1, "chdir": str(root)}
            for name, root in roots.items()}
    conf = tmp_path / "multi.conf.py"
    conf.write_text(f"worker_class = 'smartspawn.Worker'\nreload = True\napps = {apps!r}\n")
    server = server_factory("-c", str(conf), bind=False, env=NO_PYC)
    wait_for(lambda: all(len(app_pids(server, "worker", name)) == 1 for name in roots), timeout=20, what="workers")
    wait_for(lambda: server.log().count("ready, loaded in") >= 2, what="both preloaders ready")
    return server, roots, ports


def test_reload_of_one_app_leaves_the_other_alone(server_factory, tmp_path):
    server, roots, ports = two_apps(server_factory, tmp_path)
    blog_workers = app_pids(server, "worker", "blog")
    write_app(roots["shop"] / "shop_app.py", "v2")
    wait_for(lambda: get_json(ports["shop"])["version"] == "v2", timeout=20, what="shop on v2")
    assert get_json(ports["blog"])["version"] == "v1"
    assert app_pids(server, "worker", "blog") == blog_workers
    assert reload_lines(server, "blog") == []
    assert len(reload_lines(server, "shop")) == 1


def send_frame(sock, body: dict) -> None:
    data = json.dumps(body).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)


def test_a_forged_file_list_can_only_reload_its_own_app(server_factory, tmp_path):
    """A preloader runs app code: its file list names blog's file, and only shop reloads."""
    server, roots, ports = two_apps(server_factory, tmp_path)
    blog_workers = app_pids(server, "worker", "blog")
    [shop_preloader] = app_pids(server, "preloader", "shop")
    blog_file = roots["blog"] / "blog_app.py"
    with steal_channel(shop_preloader, server.pid) as sock:
        send_frame(sock, {"type": "WatchFiles", "files": f"0 {blog_file}\n0 /etc/hostname"})
        server.wait_log("app=shop reloading: ")
    [line] = reload_lines(server, "shop")
    assert str(blog_file) in line and "generation 2" in line
    old = shop_preloader
    wait_for(lambda: len(p := app_pids(server, "preloader", "shop")) == 1 and p != [old], timeout=20,
             what="shop's generation 2 preloader alone")
    [shop_preloader] = app_pids(server, "preloader", "shop")
    # a list that breaks the bounds stops that preloader, like any bad frame
    with steal_channel(shop_preloader, server.pid) as sock:
        send_frame(sock, {"type": "WatchFiles", "files": "0 relative/path.py"})
        server.wait_log(f"preloader pid={shop_preloader} sent a bad frame (WatchFiles line 1: not an absolute path")
    assert reload_lines(server, "blog") == []
    assert app_pids(server, "worker", "blog") == blog_workers
    assert get_json(ports["blog"])["version"] == "v1"
    assert get_json(ports["shop"])["version"] == "v1"
