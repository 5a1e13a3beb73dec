"""The dynamic pool with real processes: grow under load, shrink when idle, wake from zero, share one pool size."""

from __future__ import annotations

import signal
from pathlib import Path

from harness import SMART, Load, app_pids, free_port, get_json, wait_for


def test_grows_to_max_under_slow_requests_and_shrinks_after_the_idle_timeout(server_factory):
    server = server_factory(*SMART, "--min-workers", "1", "--max-workers", "4", "--worker-idle-timeout", "2",
                            "probe_app:app")
    server.wait_workers(1)
    with Load(server, threads=6, path="/sleep?0.4") as load:
        wait_for(lambda: len(server.workers()) == 4, 20, "4 workers under load")
        load.wait_more(10, timeout=20)
        assert len(server.workers()) == 4, "never above max_workers"
    assert not load.failures, [f.why for f in load.failures[:3]]
    assert "scale up 1->" in server.log() and "connection(s) waiting" in server.log()
    wait_for(lambda: len(server.workers()) == 1, 30, "back to min_workers after the idle timeout")
    assert "scale down" in server.log() and "idle for" in server.log()
    assert server.get_json()["pid"] in server.workers()


def test_an_app_at_zero_workers_is_woken_by_its_first_connection(server_factory):
    server = server_factory(*SMART, "--min-workers", "0", "--max-workers", "2", "--worker-idle-timeout", "1",
                            "probe_app:app")
    server.wait_workers(1)
    wait_for(lambda: server.workers() == [], 20, "scaled to zero")
    assert server.preloaders(), "the preloader stays (its own idle timeout still applies)"
    answer = server.get_json("/", timeout=20)  # waits in the backlog, never refused
    assert answer["pid"] in server.workers()
    assert "waiting at zero workers" in server.log()


def test_an_app_woken_at_zero_after_its_preloader_idled_out_imports_again_and_answers(server_factory):
    server = server_factory(*SMART, "--min-workers", "0", "--max-workers", "1", "--worker-idle-timeout", "1",
                            "--preloader-idle-timeout", "1", "probe_app:app")
    server.wait_workers(1)
    wait_for(lambda: server.workers() == [] and server.preloaders() == [], 30, "nothing but the socket")
    assert server.get_json("/", timeout=20)["pid"] in server.workers()


def test_two_apps_share_max_pool_size_and_load_evicts_the_other_apps_idle_worker(tmp_path: Path, server_factory):
    ports = {"shop": free_port(), "admin": free_port()}
    apps = {
        "shop": {"app": "probe_app:app", "bind": f"127.0.0.1:{ports['shop']}", "min_workers": 1, "max_workers": 3},
        "admin": {"app": "probe_app:app", "bind": f"127.0.0.1:{ports['admin']}", "min_workers": 0, "max_workers": 2,
                  "workers": 2},
    }
    conf = tmp_path / "c.py"
    conf.write_text(f"worker_class = 'smartspawn.Worker'\napps = {apps!r}\nmax_pool_size = 3\nworker_idle_timeout = 300\n")
    server = server_factory("-c", str(conf), bind=False)
    wait_for(lambda: len(app_pids(server, "worker", "shop")) == 1 and len(app_pids(server, "worker", "admin")) == 2,
             20, "shop 1, admin 2")
    server.port = ports["shop"]
    with Load(server, threads=4, path="/sleep?0.4") as load:
        wait_for(lambda: len(app_pids(server, "worker", "shop")) >= 2, 20, "shop grows by evicting")
        load.wait_more(8, timeout=20)
    assert not load.failures, [f.why for f in load.failures[:3]]
    assert "evicted for app shop" in server.log()
    assert len(app_pids(server, "worker", "shop")) + len(app_pids(server, "worker", "admin")) <= 3
    assert get_json(ports["admin"], timeout=20)["pid"] in app_pids(server, "worker", "admin")


def test_ttin_and_scale_move_min_workers_of_a_dynamic_pool(server_factory):
    server = server_factory(*SMART, "--min-workers", "1", "--max-workers", "3", "probe_app:app")
    server.wait_workers(1)
    server.signal(signal.SIGTTIN)
    server.wait_workers(2)
    assert server.control({"command": "scale", "app": "probe_app", "workers": 3})["ok"]
    server.wait_workers(3)


def test_bad_bounds_are_refused_at_start(tmp_path: Path, server_factory):
    import subprocess
    import sys

    from harness import APPS, REPO

    env = {"PYTHONPATH": f"{APPS}:{REPO}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "gunicorn", "-k", "smartspawn.Worker", "--min-workers", "3",
                           "--max-workers", "2", "-b", f"127.0.0.1:{free_port()}", "probe_app:app"],
                          capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert "min_workers=3 is above max_workers=2: expected min_workers <= max_workers" in done.stdout + done.stderr


def test_status_shows_the_pool_and_its_last_decision(server_factory):
    import subprocess
    import sys

    server = server_factory(*SMART, "--min-workers", "1", "--max-workers", "3", "probe_app:app")
    server.wait_workers(1)
    with Load(server, threads=4, path="/sleep?0.4"):
        wait_for(lambda: len(server.workers()) == 3, 20, "3 workers")
    status = server.control({"command": "status"})["result"]
    [app] = status["apps"]
    assert app["pool"]["min_workers"] == 1 and app["pool"]["max_workers"] == 3
    assert "scale up" in app["pool"]["last_decision"]["what"]
    shown = subprocess.run([sys.executable, "-m", "gunicorn_smartspawn", "status", "-s", server.arg("--smartspawn-socket")],
                           capture_output=True, text=True, timeout=30)
    assert "pool 1..3" in shown.stdout and "last: scale up" in shown.stdout, shown.stdout + shown.stderr
