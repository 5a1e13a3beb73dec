"""A preloader restarted after its idle timeout never mixes code, and the default never idles out a fixed pool's."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from harness import SMART, Load, alive, wait_for

APP = """
import json, os
VERSION = {version!r}
{extra}
def app(environ, start_response):
    body = json.dumps({{"pid": os.getpid(), "version": VERSION}}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"""


def write_app(path: Path, version: str, broken: bool = False) -> None:
    path.write_text(APP.format(version=version, extra="raise RuntimeError('half-deployed')" if broken else ""))
    stamp = time.time() + (1 if version != "v1" else 0)  # a new mtime even within one second
    os.utime(path, (stamp, stamp))


def test_a_fixed_pool_keeps_its_preloader_and_a_broken_file_on_disk_changes_nothing(server_factory, tmp_path):
    write_app(tmp_path / "deployed.py", "v1")
    server = server_factory(*SMART, "-w", "2", "--max-requests", "5", "--pythonpath", str(tmp_path), "deployed:app",
                            env={"PYTHONDONTWRITEBYTECODE": "1"})
    server.wait_workers(2)
    [preloader] = server.preloaders()
    write_app(tmp_path / "deployed.py", "v2", broken=True)
    with Load(server, threads=2) as load:
        load.wait_more(60, timeout=30)  # every worker recycled several times by max_requests
    assert not load.failures, [f.why for f in load.failures[:3]]
    assert set(load.answers("version")) == {"v1"}
    # the preloader of a fixed pool is kept (no idle timeout by default); a worker forked this instant
    # carries the preloader's title until it sets its own, so wait for the titles to settle
    wait_for(lambda: server.preloaders() == [preloader], 5, "one preloader, the first")


def test_a_restarted_preloader_that_finds_new_code_rolls_every_worker_onto_it(server_factory, tmp_path):
    write_app(tmp_path / "deployed.py", "v1")
    server = server_factory(*SMART, "-w", "2", "--preloader-idle-timeout", "1",
                            "--pythonpath", str(tmp_path), "deployed:app", env={"PYTHONDONTWRITEBYTECODE": "1"})
    workers = server.wait_workers(2)
    wait_for(lambda: server.preloaders() == [], 20, "the preloader to idle out")
    write_app(tmp_path / "deployed.py", "v2")
    with Load(server, threads=2) as load:
        # a worker that dies makes a new preloader import v2: a new generation, never a mix for good
        os.kill(workers[0], signal.SIGKILL)
        wait_for(lambda: not alive(workers[0]), 10, "the killed worker gone")
        dead_at = time.monotonic()
        server.wait_log("found other code on disk than its workers run", timeout=60)
        wait_for(lambda: load.answers("version")[-20:] == ["v2"] * 20, 60, "only v2 answers")
    # the request the killed worker had in hand (one: a sync worker) is lost with it; nothing after
    lost, failed = [f for f in load.failures if f.started < dead_at], [f for f in load.failures if f.started >= dead_at]
    assert len(lost) <= 1 and not failed, [f.why for f in load.failures[:3]]
