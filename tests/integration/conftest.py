from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import APPS, REPO, Server, free_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def server_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``start(*gunicorn_args, app=..., env=..., bind=True)``: a started Server.

    Teardown stops the whole process group and fails the test if any process
    of it survives; on failure the server logs are printed.
    """
    servers: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None, bind: bool = True, unix: bool = False,
              cwd: Path | None = None, log_name: str | None = None, launcher: list[str] | None = None) -> Server:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN_", "LISTEN_"))}
        full_env["PYTHONPATH"] = os.pathsep.join([str(APPS), str(REPO)])
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env["IMPORT_LOG"] = str(tmp_path / "imports.jsonl")
        full_env["EVENT_LOG"] = str(tmp_path / "events.jsonl")
        full_env.update(env or {})
        argv = list(args)
        port = None
        unix_path = None
        if unix:
            unix_path = str(tmp_path / "gunicorn.sock")
            argv = ["--bind", f"unix:{unix_path}", *argv]
        elif bind:
            port = free_port()
            argv = ["--bind", f"127.0.0.1:{port}", *argv]
        if not any(a.startswith("--smartspawn-socket") for a in argv) and "-c" not in argv:
            argv = ["--smartspawn-socket", str(tmp_path / f"ss{len(servers)}.sock"), *argv]
        if not any(a.startswith("--control-socket") for a in argv) and _has_control_socket():
            argv = ["--control-socket", str(tmp_path / f"ctl{len(servers)}.sock"), *argv]
        log_path = tmp_path / (log_name or f"server{len(servers)}.log")
        server = Server(argv, log_path, full_env, cwd or tmp_path, port=port, unix_path=unix_path)
        if launcher:
            server.launcher = launcher
        servers.append(server)
        return server.start()

    yield start

    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    leftovers: list[int] = []
    for server in servers:
        leftovers += server.kill_all()
    if failed:
        for server in servers:
            sys.stderr.write(f"\n===== log of gunicorn {' '.join(server.args)} =====\n{server.log()}\n")
    assert not leftovers, f"processes left behind: {leftovers}"


def _has_control_socket() -> bool:
    import gunicorn.config

    return "control_socket" in gunicorn.config.Config().settings


@pytest.fixture
def import_log(tmp_path: Path) -> Path:
    return tmp_path / "imports.jsonl"


@pytest.fixture
def event_log(tmp_path: Path) -> Path:
    return tmp_path / "events.jsonl"
