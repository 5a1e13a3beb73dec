"""A 60-second chaos soak: two apps under two users, one of them hostile, and every fault at once.

Run with ``python -m pytest -m slow`` (CI runs it as its own step). Set
SOAK_SECONDS to shorten it while developing.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
from harness import Load, app_pids, fd_targets, free_port, wait_for
from test_app_isolation import users  # noqa: F401  (the fixture: two unprivileged users)

pytestmark = pytest.mark.slow


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_chaos_soak(tmp_path: Path, server_factory, users):  # noqa: F811
    honest_user, hostile_user = users
    seconds = float(os.environ.get("SOAK_SECONDS", "60"))
    root = tmp_path / "honest"
    (root / "tmp").mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    ports = {"honest": free_port(), "hostile": free_port()}
    apps = {
        "honest": {"app": "probe_app:app", "bind": f"127.0.0.1:{ports['honest']}", "workers": 2, "chdir": str(root),
                   "user": honest_user.name, "group": honest_user.name, "pythonpath": str(Path(__file__).parent / "apps")},
        "hostile": {"app": "hostile_app:app", "bind": f"127.0.0.1:{ports['hostile']}", "workers": 1,
                    "user": hostile_user.name, "group": hostile_user.name,
                    "pythonpath": str(Path(__file__).parent / "apps")},
    }
    conf = tmp_path / "soak.conf.py"
    conf.write_text(f"worker_class = 'smartspawn.Worker'\napps = {apps!r}\ngraceful_timeout = 5\n")
    # (no import/event logs: the apps run as users that cannot write below pytest's tmp dirs)
    server = server_factory("-c", str(conf), "--smartspawn-socket", str(tmp_path / "ss.sock"), bind=False,
                            env={"IMPORT_LOG": "", "EVENT_LOG": ""})
    server.port = ports["honest"]
    wait_for(lambda: len(app_pids(server, "worker", "honest")) == 2, 30, "the honest app")
    wait_for(lambda: "protocol violation" in server.log() or "sent a bad frame" in server.log(), 30,
             "the hostile preloader caught")
    fds_start = len(fd_targets(server.pid))
    rss_start = rss_kib(server.pid)
    rng = random.Random(1234)
    kills = 0
    deadline = time.monotonic() + seconds
    with Load(server, threads=2) as load:
        while time.monotonic() < deadline:
            action = rng.choice(["hup", "ttin", "ttou", "kill-worker", "kill-preloader", "restart-txt", "scale"])
            if action == "hup":
                server.signal(signal.SIGHUP)
            elif action == "ttin":
                server.signal(signal.SIGTTIN)
            elif action == "ttou":
                server.signal(signal.SIGTTOU)
            elif action == "kill-worker":
                workers = app_pids(server, "worker", "honest")
                if workers:
                    os.kill(rng.choice(workers), signal.SIGKILL)
                    kills += 1
            elif action == "kill-preloader":
                for pid in app_pids(server, "preloader", "honest")[:1]:
                    os.kill(pid, signal.SIGKILL)
            elif action == "restart-txt":
                (root / "tmp" / "restart.txt").write_text(str(time.time()))
            else:
                server.control({"command": "scale", "app": "honest", "workers": rng.randint(1, 4)})
            time.sleep(rng.uniform(0.2, 0.6))
            assert server.proc.poll() is None, "the master died"
        # settle: both apps back to their first size, every rollout done
        server.control({"command": "scale", "app": "honest", "workers": 2})
        server.control({"command": "scale", "app": "hostile", "workers": 1})
        wait_for(lambda: _settled(server), 90, "the honest app to settle at 2 workers of one generation")
        load.wait_more(20, timeout=30)
    failures = load.failures
    print(f"\nsoak {seconds:.0f}s: {len(load.results)} requests, {len(failures)} failed, {kills} worker kills, "
          f"master fds {fds_start} -> {len(fd_targets(server.pid))}, rss {rss_start} -> {rss_kib(server.pid)} KiB")
    # only requests in flight on a killed worker may be lost (a sync worker runs one at a time)
    assert len(failures) <= kills, (len(failures), kills, [f.why for f in failures[:5]])
    assert len(load.results) > 100
    wait_for(lambda: len(fd_targets(server.pid)) <= fds_start + 1, 30,
             f"the master's descriptors back to {fds_start} (now {len(fd_targets(server.pid))})")
    assert rss_kib(server.pid) <= rss_start + 10 * 1024, (rss_start, rss_kib(server.pid))
    server.signal(signal.SIGTERM)
    server.wait_exit(30)
    for user in (honest_user, hostile_user):
        wait_for(lambda user=user: not _processes_of(user.uid), 10, f"no process of {user.name} left")


def _settled(server) -> bool:
    status = server.control({"command": "status"})
    if not status.get("ok"):
        return False
    for app in status["result"]["apps"]:
        if app["name"] != "honest":
            continue
        workers = [w for w in app["workers"] if not w["retiring"]]
        return len(workers) == 2 and all(w["ready"] and w["generation"] == app["generation"] for w in workers)
    return False


def _processes_of(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    found.append(int(entry))
            except OSError:
                pass
    return found
