"""HUP in smart mode loads new code in a new preloader generation."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from harness import DIRECT, SMART, Load, wait_for

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
