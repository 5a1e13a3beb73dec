"""HUP in smart mode loads new code in a new preloader generation."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from harness import Server, wait_for

SMART = ["-k", "smartspawn.Worker", "--spawn-method", "smart"]
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


class Load:
    """Requests in a loop from a thread, counting every failure."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.failures: list[str] = []
        self.versions: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self.server.request("/", timeout=5)
                if resp.status != 200:
                    self.failures.append(f"status {resp.status}")
                else:
                    self.versions.append(resp.json()["version"])
            except Exception as exc:  # every failure counts
                self.failures.append(repr(exc))

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_hup_loads_new_code_without_failed_requests(server_factory, tmp_path):
    write_app(tmp_path / "versioned.py", "v1")
    server = server_factory(*SMART, "-w", "2", "versioned:app", env={"PYTHONDONTWRITEBYTECODE": "1"})
    old_workers = server.wait_workers(2)
    [old_preloader] = server.preloaders()
    assert server.get_json("/")["version"] == "v1"
    with Load(server) as load:
        wait_for(lambda: len(load.versions) > 20, what="load to run")
        write_app(tmp_path / "versioned.py", "v2")
        server.signal(signal.SIGHUP)
        wait_for(lambda: load.versions[-30:] == ["v2"] * 30, timeout=20, what="only v2 answers")
        wait_for(lambda: not set(old_workers) & set(server.workers()), what="old workers retired")
        time.sleep(0.2)  # keep the load on while the old generation drains
    assert load.failures == []
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
    wait_for(lambda: server.preloaders() == [preloader], what="the failed preloader to exit")
    assert sorted(server.workers()) == sorted(workers)
    assert server.proc.poll() is None
    for _ in range(10):
        assert server.get_json("/")["version"] == "v1"
    # a worker that dies now is replaced from the old, working generation
    import os

    os.kill(workers[0], signal.SIGKILL)
    server.wait_workers(2, exclude=[workers[0]])
    assert server.get_json("/")["version"] == "v1"
    # fixing the code and reloading again works
    write_app(tmp_path / "versioned.py", "v3")
    server.signal(signal.SIGHUP)
    wait_for(lambda: all(server.get_json("/")["version"] == "v3" for _ in range(6)), timeout=20, what="v3 answers")


def test_hup_in_direct_mode_restarts_workers_with_new_code(server_factory, tmp_path):
    write_app(tmp_path / "versioned.py", "v1")
    server = server_factory("-k", "smartspawn.Worker", "--spawn-method", "direct", "-w", "2", "versioned:app",
                            env={"PYTHONDONTWRITEBYTECODE": "1"})
    old = server.wait_workers(2)
    server.wait_serving()
    write_app(tmp_path / "versioned.py", "v2")
    server.signal(signal.SIGHUP)
    wait_for(lambda: not set(old) & set(server.workers()) and len(server.workers()) == 2, timeout=20,
             what="a new set of workers")
    assert all(server.get_json("/")["version"] == "v2" for _ in range(5))
