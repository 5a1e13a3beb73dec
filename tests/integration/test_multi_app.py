"""Several apps in one master: own listeners, preloader and workers; isolated failures."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from harness import SMARTSPAWN, app_pids, fd_kinds, free_port, get_json, read_stat, wait_for


def write_conf(path: Path, apps: dict, extra: str = "") -> Path:
    path.write_text(f"worker_class = 'smartspawn.Worker'\napps = {apps!r}\n{extra}")
    return path


def listening_inodes(pid: int) -> set[str]:
    return fd_kinds(pid, "socket")


@pytest.fixture
def three_apps(tmp_path: Path, server_factory):
    ports = {"shop": free_port(), "blog": free_port()}
    admin_root = tmp_path / "admin"
    (admin_root / "tmp").mkdir(parents=True)
    (admin_root / "admin_app.py").write_text((Path(__file__).parent / "apps" / "env_app.py").read_text())
    admin_sock = tmp_path / "admin.sock"
    apps = {
        "shop": {"app": "probe_app:app", "bind": [f"127.0.0.1:{ports['shop']}"], "workers": 2},
        "blog": {"app": "env_app:app", "bind": f"127.0.0.1:{ports['blog']}", "workers": 2, "spawn_method": "direct",
                 "env": {"APP_FLAVOR": "blog-env"}},
        "admin": {"app": "admin_app:app", "bind": [f"unix:{admin_sock}"], "workers": 1, "chdir": str(admin_root),
                  "env": {"APP_FLAVOR": "admin-env"}},
    }
    conf = write_conf(tmp_path / "multi.conf.py", apps)
    server = server_factory("-c", str(conf), bind=False)
    wait_for(lambda: len(app_pids(server, "worker", "shop")) == 2 and len(app_pids(server, "worker", "blog")) == 2
             and len(app_pids(server, "worker", "admin")) == 1, timeout=20, what="all workers")
    return server, ports, admin_sock, admin_root


def unix_get(path: Path) -> dict:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(str(path))
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def test_each_app_answers_from_its_own_workers(three_apps):
    server, ports, admin_sock, admin_root = three_apps
    assert len(app_pids(server, "preloader", "shop")) == 1
    assert len(app_pids(server, "preloader", "admin")) == 1
    assert app_pids(server, "preloader", "blog") == []  # direct
    shop_workers = set(app_pids(server, "worker", "shop"))
    blog_workers = set(app_pids(server, "worker", "blog"))
    for _ in range(8):
        shop = get_json(ports["shop"])
        assert shop["pid"] in shop_workers and shop["forked"] is True
        blog = get_json(ports["blog"])
        assert blog["pid"] in blog_workers and blog["forked"] is False
        assert blog["flavor"] == "blog-env"
    admin = unix_get(admin_sock)
    assert admin["pid"] in app_pids(server, "worker", "admin")
    assert admin["cwd"] == str(admin_root)  # per-app chdir
    assert admin["flavor"] == "admin-env"  # per-app env
    assert admin["forked"] is True
    for pid in [*shop_workers, *blog_workers, *app_pids(server, "worker", "admin")]:
        assert read_stat(pid)[1] == server.pid


def test_workers_hold_only_their_own_apps_listeners(three_apps):
    server, ports, admin_sock, _ = three_apps
    master = listening_inodes(server.pid)
    for name in ("shop", "blog", "admin"):
        for pid in [*app_pids(server, "worker", name), *app_pids(server, "preloader", name)]:
            shared = listening_inodes(pid) & master
            assert len(shared) == 1, (name, pid, shared)  # its own single listener, nothing else of the master's


def test_restart_txt_restarts_one_app_only(three_apps):
    server, ports, admin_sock, admin_root = three_apps
    before = {name: set(app_pids(server, "worker", name)) for name in ("shop", "blog", "admin")}
    [admin_preloader] = app_pids(server, "preloader", "admin")
    (admin_root / "tmp" / "restart.txt").write_text("")
    wait_for(lambda: not before["admin"] & set(app_pids(server, "worker", "admin"))
             and len(app_pids(server, "worker", "admin")) == 1, timeout=20, what="admin workers replaced")
    assert app_pids(server, "preloader", "admin") != [admin_preloader]
    assert set(app_pids(server, "worker", "shop")) == before["shop"]
    assert set(app_pids(server, "worker", "blog")) == before["blog"]
    assert unix_get(admin_sock)["pid"] in app_pids(server, "worker", "admin")


def test_ttin_adds_a_worker_to_every_app(three_apps):
    server, *_ = three_apps
    server.signal(signal.SIGTTIN)
    wait_for(lambda: len(app_pids(server, "worker", "shop")) == 3 and len(app_pids(server, "worker", "blog")) == 3
             and len(app_pids(server, "worker", "admin")) == 2, timeout=20, what="one more worker per app")


def test_a_broken_app_backs_off_while_the_others_serve(tmp_path, server_factory):
    ports = {"good": free_port(), "bad": free_port()}
    apps = {
        "good": {"app": "probe_app:app", "bind": f"127.0.0.1:{ports['good']}", "workers": 1},
        "bad": {"app": "no_such_module_anywhere:app", "bind": f"127.0.0.1:{ports['bad']}", "workers": 1},
    }
    server = server_factory("-c", str(write_conf(tmp_path / "c.py", apps)), bind=False)
    wait_for(lambda: len(app_pids(server, "worker", "good")) == 1, what="the good app's worker")
    server.wait_log("app=bad preloader", timeout=10)
    started = time.monotonic()

    def starts() -> list[str]:
        return [line for line in server.log().splitlines() if "app=bad preloader gen=1" in line and line.endswith("started")]

    wait_for(lambda: len(starts()) >= 3, timeout=20, what="two retries of the bad app")
    # retried after 1 s, then 2 s: growing delays, never a hot loop
    assert time.monotonic() - started >= 2.5
    assert len(starts()) <= 4
    assert server.proc.poll() is None
    assert get_json(ports["good"])["pid"] in app_pids(server, "worker", "good")
    # the bad app's address is bound: connections wait instead of being refused
    s = socket.create_connection(("127.0.0.1", ports["bad"]), timeout=2)
    s.close()


def test_one_app_form_still_halts_when_its_only_app_cannot_load(server_factory):
    server = server_factory(*SMARTSPAWN, "no_such_module_anywhere:app")
    assert server.wait_exit() == 4


def test_hup_adds_and_removes_apps(tmp_path, server_factory):
    ports = {"one": free_port(), "two": free_port(), "three": free_port()}
    conf = tmp_path / "c.py"
    write_conf(conf, {
        "one": {"app": "probe_app:app", "bind": f"127.0.0.1:{ports['one']}", "workers": 1},
        "two": {"app": "probe_app:app", "bind": f"127.0.0.1:{ports['two']}", "workers": 1},
    })
    server = server_factory("-c", str(conf), bind=False)
    wait_for(lambda: len(app_pids(server, "worker", "one")) == 1 and len(app_pids(server, "worker", "two")) == 1,
             what="both apps")
    write_conf(conf, {
        "one": {"app": "probe_app:app", "bind": f"127.0.0.1:{ports['one']}", "workers": 1},
        "three": {"app": "env_app:app", "bind": f"127.0.0.1:{ports['three']}", "workers": 1, "spawn_method": "direct"},
    })
    server.signal(signal.SIGHUP)
    wait_for(lambda: len(app_pids(server, "worker", "three")) == 1, what="the new app")
    wait_for(lambda: app_pids(server, "worker", "two") == [] and app_pids(server, "preloader", "two") == [],
             what="the removed app to stop")
    assert get_json(ports["three"])["app"] == "env_app"
    server.wait_log("app=two stopped and removed")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ports["two"]), timeout=2).close()
    assert get_json(ports["one"])["pid"] in app_pids(server, "worker", "one")


def _uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError("no Uid line")


def _connect_as(uid: int, gid: int, path: str) -> str:
    """Try to connect to a unix socket as another user, in a forked child."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgid(gid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                result = b"connected"
            except PermissionError:
                result = b"denied"
            except OSError as exc:
                result = repr(exc).encode()
            os.write(w, result)
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 200).decode()
    os.close(r)
    os.waitpid(pid, 0)
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="per-app users need a root master")
def test_per_app_users(server_factory):
    import pwd
    import shutil
    import tempfile

    try:
        nobody, daemon = pwd.getpwnam("nobody"), pwd.getpwnam("daemon")
    except KeyError:
        pytest.skip("needs the users nobody and daemon")
    where = tempfile.mkdtemp(prefix="smartspawn-cred-")
    os.chmod(where, 0o755)  # so that only the socket's own mode decides who may connect
    try:
        alice_sock, bob_sock = os.path.join(where, "alice.sock"), os.path.join(where, "bob.sock")
        conf = Path(where) / "c.py"
        write_conf(conf, {
            "alice": {"app": "env_app:app", "bind": f"unix:{alice_sock}", "workers": 1, "user": "nobody",
                      "group": nobody.pw_gid},
            "bob": {"app": "env_app:app", "bind": f"unix:{bob_sock}", "workers": 1, "user": "daemon",
                    "group": daemon.pw_gid, "spawn_method": "direct"},
        })
        server = server_factory("-c", str(conf), bind=False)
        wait_for(lambda: len(app_pids(server, "worker", "alice")) == 1 and len(app_pids(server, "worker", "bob")) == 1,
                 what="both apps")
        assert _uid(server.pid) == 0
        for pid in [*app_pids(server, "preloader", "alice"), *app_pids(server, "worker", "alice")]:
            assert _uid(pid) == nobody.pw_uid
        for pid in app_pids(server, "worker", "bob"):
            assert _uid(pid) == daemon.pw_uid
        for path, user in ((alice_sock, nobody), (bob_sock, daemon)):
            st = os.stat(path)
            assert (st.st_uid, st.st_mode & 0o777) == (user.pw_uid, 0o600)
        assert unix_get(Path(alice_sock))["app"] == "env_app"
        assert _connect_as(daemon.pw_uid, daemon.pw_gid, alice_sock) == "denied"
        assert _connect_as(nobody.pw_uid, nobody.pw_gid, bob_sock) == "denied"
        assert _connect_as(nobody.pw_uid, nobody.pw_gid, alice_sock) == "connected"
    finally:
        shutil.rmtree(where, ignore_errors=True)


def test_a_broken_apps_port_answers_503_instead_of_hanging(tmp_path, server_factory):
    import http.client

    ports = {"good": free_port(), "broken": free_port()}
    apps = {
        "good": {"app": "probe_app:app", "bind": f"127.0.0.1:{ports['good']}", "workers": 1},
        "broken": {"app": "no_such_module:app", "bind": f"127.0.0.1:{ports['broken']}", "workers": 1},
    }
    conf = write_conf(tmp_path / "c.py", apps)
    server = server_factory("-c", str(conf), bind=False)
    server.wait_log("app=broken could not load", timeout=20)

    def answer() -> tuple[int, str, float]:
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", ports["broken"], timeout=5)
        conn.request("GET", "/")
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        return resp.status, text, time.monotonic() - started

    status, text, took = wait_for(answer, 20, "a 503 from the broken app's port")
    assert status == 503 and "the app 'broken' failed to start" in text, text
    assert took < 1.0, f"answered after {took:.2f}s"
    assert "Traceback" not in text and "No module named" not in text  # friendly_errors is off
    assert get_json(ports["good"])["pid"] in app_pids(server, "worker", "good")


def test_friendly_errors_show_the_traceback_on_the_503_page(tmp_path, server_factory):
    import http.client

    port = free_port()
    conf = write_conf(tmp_path / "c.py", {"broken": {"app": "no_such_module:app", "bind": f"127.0.0.1:{port}"}},
                      extra="friendly_errors = True\n")
    server = server_factory("-c", str(conf), bind=False)
    server.wait_log("app=broken could not load", timeout=20)

    def page() -> str:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 503
        return resp.read().decode()

    text = wait_for(page, 20, "the friendly error page")
    assert "No module named 'no_such_module'" in text and "Traceback" in text
