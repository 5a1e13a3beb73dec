"""``smartspawn status`` / ``memory`` / ``scale`` / ``restart`` against a real two-app server, checked against /proc.

The server runs ``shop`` (smart: one preloader imports ~40 MB of data, its
workers share it copy-on-write) and ``blog`` (direct: every worker imports
its own copy), so the sharing must show in PSS for shop and not for blog.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from harness import Server, app_pids, free_port, get_json, read_stat, wait_for

MB = 2**20
TOOL = [sys.executable, "-m", "gunicorn_smartspawn.control.cli"]


def smartspawn(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    """Run the tool as a user would; it must exit with ``expect``."""
    done = subprocess.run([*TOOL, *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == expect, (done.returncode, done.stdout, done.stderr)
    if expect:
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    return done


def as_json(*args: str) -> Any:
    return json.loads(smartspawn(*args, "--json").stdout)


def vm_rss(pid: int) -> int:
    """RSS as /proc/PID/status tells it: a source independent of smaps."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture
def start_two_apps(tmp_path: Path, server_factory: Callable[..., Server]) -> Callable[..., tuple[Server, dict[str, int], str]]:
    def start(socket_setting: str | None = None) -> tuple[Server, dict[str, int], str]:
        ports = {"shop": free_port(), "blog": free_port()}
        apps = {
            "shop": {"app": "ballast_app:app", "bind": f"127.0.0.1:{ports['shop']}", "workers": 3},
            "blog": {"app": "ballast_app:app", "bind": f"127.0.0.1:{ports['blog']}", "workers": 2,
                     "spawn_method": "direct"},
        }
        conf = tmp_path / "tools.conf.py"
        conf.write_text(f"worker_class = 'smartspawn.Worker'\napps = {apps!r}\n")
        path = socket_setting or str(tmp_path / "smartspawn.sock")
        server = server_factory("-c", str(conf), "--smartspawn-socket", path, bind=False)
        wait_for(lambda: len(app_pids(server, "worker", "shop")) == 3 and len(app_pids(server, "worker", "blog")) == 2,
                 timeout=20, what="3 shop and 2 blog workers")
        server.extra["ports"] = ports
        return server, ports, path

    return start


def check_memory_report(report: dict[str, Any], server: Server) -> None:
    """The report against /proc: the very processes of the tree, their roles, and visible sharing."""
    assert report["protocol"] == 1
    rows = {p["pid"]: p for p in report["processes"]}
    assert set(rows) == {server.pid, *server.children()}
    assert rows[server.pid]["role"] == "master" and report["processes"][0]["pid"] == server.pid
    for role in ("preloader", "worker"):
        for name in ("shop", "blog"):
            for pid in app_pids(server, role, name):
                assert (rows[pid]["role"], rows[pid]["app"]) == (role, name)
    assert [p for p in rows.values() if p["role"] == "preloader"] == [rows[pid] for pid in app_pids(server, "preloader", "shop")]
    for pid, row in rows.items():
        assert row["rss"] == pytest.approx(vm_rss(pid), rel=0.15), pid
        assert row["private"] + row["shared"] == row["rss"]
    for pid in app_pids(server, "worker", "shop"):  # 40 MB shared four ways (preloader + 3 workers)
        assert rows[pid]["pss"] < rows[pid]["rss"] / 2, rows[pid]
        assert rows[pid]["shared"] > 40 * MB and rows[pid]["private"] < 25 * MB
    for pid in app_pids(server, "worker", "blog"):  # each its own 40 MB
        assert rows[pid]["pss"] > 0.6 * rows[pid]["rss"], rows[pid]
        assert rows[pid]["private"] > 40 * MB
    totals = report["totals"]
    for key, value in totals.items():
        assert value == sum(p[key] for p in rows.values()), key
    assert report["saved_by_sharing"] == totals["rss"] - totals["pss"] > 80 * MB
    assert set(report["by_app"]) == {"shop", "blog"}
    assert report["by_app"]["shop"]["pss"] < report["by_app"]["blog"]["pss"]


def test_status_and_memory_of_a_two_app_server(start_two_apps: Callable[..., tuple[Server, dict[str, int], str]]) -> None:
    server, ports, sock = start_two_apps()
    answered = [get_json(ports["shop"])["pid"] for _ in range(12)]

    def status_counts_requests() -> Any:
        status = as_json("status", "-s", sock)
        shop = next(a for a in status["apps"] if a["name"] == "shop")
        return status if sum(w["requests"] or 0 for w in shop["workers"]) >= 12 else None

    status = wait_for(status_counts_requests, timeout=10, what="12 requests in the status")
    assert status["master"]["pid"] == server.pid
    assert status["master"]["smartspawn"] == "0.1.0" and status["master"]["uptime"] > 0
    apps = {a["name"]: a for a in status["apps"]}
    assert set(apps) == {"shop", "blog"}
    shop, blog = apps["shop"], apps["blog"]
    assert (shop["spawn_method"], shop["state"], shop["target"], shop["generation"]) == ("smart", "running", 3, 1)
    assert (blog["spawn_method"], blog["state"], blog["target"], blog["preloader"]) == ("direct", "running", 2, None)
    assert [shop["preloader"]["pid"]] == app_pids(server, "preloader", "shop")
    assert shop["preloader"]["loaded_in"] > 0 and shop["preloader"]["idle_timeout"] == 0  # a fixed pool keeps it
    for app in (shop, blog):
        pids = [w["pid"] for w in app["workers"]]
        assert sorted(pids) == app_pids(server, "worker", app["name"])
        assert all(read_stat(pid)[1] == server.pid for pid in pids)  # type: ignore[index]
        assert all(w["forked"] is (app is shop) and w["ready"] and w["generation"] == 1 for w in app["workers"])
    served = {w["pid"]: w["requests"] for w in shop["workers"]}
    assert served == {pid: answered.count(pid) for pid in served}
    assert all(w["busy"] is False for w in shop["workers"])

    human = smartspawn("status", "-s", sock).stdout
    assert all(len(line) <= 100 for line in human.splitlines())
    assert f"master {server.pid}" in human.splitlines()[0]
    for pid in served:
        [row] = [line for line in human.splitlines() if line.split()[:1] == [str(pid)]]
        pss_mb, private_mb = (float(x) for x in row.split()[-2:])  # memory from /proc
        assert 0 < private_mb < pss_mb < 40

    report = as_json("memory", "-s", sock)
    check_memory_report(report, server)
    human = smartspawn("memory", "-s", sock).stdout
    assert all(len(line) <= 100 for line in human.splitlines())
    assert human.splitlines()[-1].startswith("Sharing saves ")

    # scale and restart go through the same socket
    assert smartspawn("scale", "shop", "+1", "-s", sock).stdout == "app shop: workers 3 -> 4\n"
    wait_for(lambda: len(app_pids(server, "worker", "shop")) == 4, timeout=10, what="a fourth shop worker")
    old = set(app_pids(server, "worker", "blog"))
    assert smartspawn("restart", "blog", "-s", sock).stdout == "app blog: restart requested\n"
    wait_for(lambda: not old & set(app_pids(server, "worker", "blog")) and len(app_pids(server, "worker", "blog")) == 2,
             timeout=15, what="blog's workers replaced")
    refused = smartspawn("scale", "nosuch", "2", "-s", sock, expect=1).stderr
    assert refused == "smartspawn: the master refused: unknown app 'nosuch': this master runs blog, shop\n"


def test_memory_by_pid_needs_no_socket(start_two_apps: Callable[..., tuple[Server, dict[str, int], str]],
                                       tmp_path: Path) -> None:
    server, ports, _ = start_two_apps("off")
    check_memory_report(as_json("memory", "--pid", str(server.pid)), server)
    human = smartspawn("memory", "--pid", str(server.pid)).stdout
    assert all(len(line) <= 100 for line in human.splitlines())
    assert human.splitlines()[0] == f"Memory of gunicorn master {server.pid} and its processes, in MB (2^20 bytes)"
    assert "Sharing saves" in human

    [worker, *_] = app_pids(server, "worker", "shop")
    err = smartspawn("memory", "--pid", str(worker), expect=1).stderr
    assert err == (f"smartspawn: pid {worker} is a gunicorn worker of app 'shop', not the master; "
                   f"its master is probably pid {server.pid}\n")
    err = smartspawn("status", "-s", str(tmp_path / "smartspawn.sock"), expect=1).stderr
    assert err.startswith(f"smartspawn: no smartspawn master at {tmp_path / 'smartspawn.sock'}: no such socket")


def test_a_killed_master_leaves_a_stale_socket(start_two_apps: Callable[..., tuple[Server, dict[str, int], str]]) -> None:
    server, _, sock = start_two_apps()
    assert as_json("status", "-s", sock)["master"]["pid"] == server.pid
    server.signal(signal.SIGKILL)
    server.wait_exit()
    assert os.path.exists(sock)
    err = smartspawn("status", "-s", sock, expect=1).stderr
    assert err.startswith(f"smartspawn: stale socket {sock}: nothing is listening there")
    err = smartspawn("memory", "--pid", str(server.pid), expect=1).stderr
    assert err == f"smartspawn: no process with pid {server.pid}\n"


def test_the_console_script_is_declared() -> None:
    [script] = metadata.entry_points(group="console_scripts", name="smartspawn")
    assert script.value == "gunicorn_smartspawn.control.cli:main"
