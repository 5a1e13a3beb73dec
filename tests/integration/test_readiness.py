"""Readiness that tells the truth: systemd's notify messages and `smartspawn ready`.

No systemd here: the test binds a datagram socket and sets NOTIFY_SOCKET (and,
for the example unit, LISTEN_FDS/LISTEN_PID) as systemd would.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import APPS, REPO, SMART, free_port, get_json, import_count, wait_for


class Notify:
    """A NOTIFY_SOCKET: the messages a service sent, with when each arrived."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []

    def poll(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            self.messages.append((time.time(), data.decode()))
        return [m for _, m in self.messages]

    def wait(self, prefix: str, count: int = 1, timeout: float = 30) -> tuple[float, str]:
        def seen() -> list[tuple[float, str]]:
            self.poll()
            found = [(t, m) for t, m in self.messages if m.startswith(prefix)]
            return found if len(found) >= count else []

        return wait_for(seen, timeout, f"{prefix!r} x{count} on NOTIFY_SOCKET")[count - 1]


@pytest.fixture
def notify(tmp_path: Path):
    listener = Notify(tmp_path / "notify.sock")
    yield listener
    listener.sock.close()


def test_ready_only_once_the_app_serves_then_reloading_ready_and_stopping(server_factory, notify, import_log):
    server = server_factory(*SMART, "-w", "2", "probe_app:app",
                            env={"NOTIFY_SOCKET": notify.path, "PROBE_IMPORT_SLEEP": "2"})
    ready_at, message = notify.wait("READY=1")
    imported_at = import_count(import_log)[0]["t"]
    assert ready_at >= imported_at, "READY=1 before the app was imported"
    assert "STATUS=probe_app: 2 workers serving" in message
    started = time.monotonic()
    assert get_json(server.port)["pid"] in server.workers()
    assert time.monotonic() - started < 1.0, "ready means it answers now"
    ready = server.control({"command": "ready"})["result"]
    assert ready["ready"] is True
    server.signal(signal.SIGHUP)
    notify.wait("RELOADING=1")
    notify.wait("READY=1", count=2)
    messages = notify.poll()
    reloading = next(m for m in messages if m.startswith("RELOADING=1"))
    assert "MONOTONIC_USEC=" in reloading
    assert messages.index(reloading) < max(i for i, m in enumerate(messages) if m.startswith("READY=1"))
    server.signal(signal.SIGTERM)
    server.wait_exit()
    notify.wait("STOPPING=1")


def test_a_failed_app_is_ready_with_a_status_saying_so_and_the_probe_fails(server_factory, tmp_path, notify):
    ports = {"good": free_port(), "broken": free_port()}
    apps = {
        "good": {"app": "probe_app:app", "bind": f"127.0.0.1:{ports['good']}", "workers": 1},
        "broken": {"app": "no_such_module:app", "bind": f"127.0.0.1:{ports['broken']}", "workers": 1},
    }
    conf = tmp_path / "c.py"
    conf.write_text(f"worker_class = 'smartspawn.Worker'\napps = {apps!r}\n")
    sock = tmp_path / "ss.sock"
    server = server_factory("-c", str(conf), "--smartspawn-socket", str(sock), bind=False,
                            env={"NOTIFY_SOCKET": notify.path})
    _, message = notify.wait("READY=1")
    assert "good: 1 worker serving" in message and "broken: failed: could not load" in message
    probe = subprocess.run([sys.executable, "-m", "gunicorn_smartspawn", "ready", "-s", str(sock)],
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode == 1 and probe.stdout.startswith("not ready: "), probe.stdout + probe.stderr


def test_the_example_unit_starts_with_socket_activation_and_notify(tmp_path, notify):
    """docs/deploy/myapp.service's ExecStart, run as systemd would: LISTEN_FDS from the .socket unit,
    NOTIFY_SOCKET, Type=notify; stopped as ExecReload/KillMode would."""
    unit = (REPO / "docs" / "deploy" / "myapp.service").read_text()
    exec_start = next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start)
    assert argv[0].endswith("/gunicorn") and argv[-1] == "myapp.wsgi:application"
    assert "Type=notify" in unit and "ExecReload=/bin/kill -s HUP $MAINPID" in unit
    # this machine: our gunicorn, the probe app, a free port and a socket in tmp_path
    argv = [sys.executable, "-m", "gunicorn", *argv[1:-1], "probe_app:app"]
    argv[argv.index("--smartspawn-socket") + 1] = str(tmp_path / "ss.sock")
    port = free_port()
    wrapper = tmp_path / "activate.py"
    wrapper.write_text(
        "import os, socket, sys\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(64)\n"
        "os.dup2(s.fileno(), 3); os.set_inheritable(3, True)\n"
        "os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid())\n"
        "os.execv(sys.argv[2], sys.argv[2:])\n"
    )
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN_", "LISTEN_"))},
           "PYTHONPATH": os.pathsep.join([str(APPS), str(REPO)]), "NOTIFY_SOCKET": notify.path}
    log = open(tmp_path / "unit.log", "w")
    proc = subprocess.Popen([sys.executable, str(wrapper), str(port), *argv], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)
    try:
        notify.wait("READY=1")
        assert json.loads(_get(port))["pid"]
        os.kill(proc.pid, signal.SIGHUP)  # ExecReload
        notify.wait("READY=1", count=2)
        os.kill(proc.pid, signal.SIGTERM)  # systemctl stop
        assert proc.wait(timeout=35) == 0
        notify.wait("STOPPING=1")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()


def _get(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode()
