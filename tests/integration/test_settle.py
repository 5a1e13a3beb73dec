"""Failures settle: nothing respawns hot, and a stuck rollout never drains capacity."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from harness import SMART, Load, wait_for


def starts(directory: Path) -> int:
    try:
        return len((directory / "starts").read_text().split())
    except OSError:
        return 0


def faulty(server_factory, tmp_path: Path, *args: str, env: dict[str, str] | None = None, **kwargs):
    directory = tmp_path / "faulty"
    directory.mkdir(exist_ok=True)
    server = server_factory(*SMART, *args, "faulty_app:app", env={"FAULTY_DIR": str(directory), **(env or {})}, **kwargs)
    return server, directory


def test_a_worker_that_dies_before_its_first_heartbeat_backs_off(server_factory, tmp_path):
    for fault in ("exit-at-start", "segv-at-start"):
        directory = tmp_path / fault
        directory.mkdir()
        (directory / fault).touch()
        server = server_factory(*SMART, "-w", "2", "faulty_app:app", env={"FAULTY_DIR": str(directory)})
        wait_for(lambda: starts(directory) >= 2, 20, "the first worker starts")
        first = time.monotonic()
        wait_for(lambda: "worker died before serving" in server.log(), 10, "the failure logged")
        time.sleep(4.0)  # a measurement window, not synchronisation: count boots in it
        boots = starts(directory)
        # backoff 1, 2, 4 s: a handful of boots in ~4 s (hot respawning made ~1,000)
        assert boots <= 12, f"{fault}: {boots} boots in {time.monotonic() - first:.1f}s"
        assert "backing off" in server.log() or "next try in" in server.log()
        assert server.proc.poll() is None, "a crash that is not gunicorn's boot error never halts the server"
        # once the fault is gone, the app comes up by itself
        (directory / fault).unlink()
        server.wait_workers(2, timeout=90)
        assert server.get_json()["generation"] == "1"
        server.kill_all()


def test_an_app_that_ignores_sigchld_at_import_does_not_break_double_fork_spawning(server_factory, tmp_path):
    server, directory = faulty(
        server_factory, tmp_path, "-w", "2", "--smart-fork", "double-fork", env={"FAULTY_IGNORE_SIGCHLD": "1"}
    )
    workers = server.wait_workers(2)
    [preloader] = server.preloaders()
    for pid in workers:  # two respawns through the preloader
        server_pid_before = set(server.workers())
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: len(set(server.workers()) - server_pid_before) >= 1 and len(server.workers()) == 2, 20, "respawn")
    wait_for(lambda: server.preloaders() == [preloader], 5, "the preloader, alive after every spawn")
    time.sleep(1.0)  # a window to see growth, not synchronisation
    assert len(server.workers()) == 2
    assert "crashed" not in server.log()


def test_new_workers_stuck_in_boot_never_drain_the_old_generation(server_factory, tmp_path):
    server, directory = faulty(server_factory, tmp_path, "-w", "2", "--max-requests", "10", "--spawn-timeout", "0")
    old = server.wait_workers(2)
    assert server.get_json()["generation"] == "1"
    (directory / "block-gen-2").touch()
    (directory / "generation").write_text("2")
    server.signal(signal.SIGHUP)
    wait_for(lambda: "preloader gen=2" in server.log() and " ready" in server.log().split("preloader gen=2", 1)[1], 20,
             "generation 2 loaded")
    with Load(server, threads=2) as load:
        # old workers are recycled by max_requests over and over while generation 2 hangs in its boot
        load.wait_more(200, timeout=60)
        assert not load.failures, load.failures[:3]
        assert set(load.answers("generation")) == {"1"}
        assert not set(old) & set(server.workers()), "the old workers were recycled and replaced"
        (directory / "block-gen-2").unlink()
        wait_for(lambda: "2" in load.answers("generation")[-20:], 30, "generation 2 serves")
    assert not load.failures, load.failures[:3]


def test_a_worker_that_never_serves_is_killed_after_the_spawn_timeout(server_factory, tmp_path):
    directory = tmp_path / "faulty"
    directory.mkdir()
    (directory / "block-at-start").touch()
    server = server_factory(*SMART, "-w", "1", "--spawn-timeout", "2", "faulty_app:app", env={"FAULTY_DIR": str(directory)})
    server.wait_log("did not serve within 2s (spawn_timeout): killed", timeout=20)
    assert server.proc.poll() is None or server.wait_exit() == 3
    (directory / "block-at-start").unlink()


def test_a_listener_shut_down_by_a_worker_is_bound_again(server_factory, tmp_path):
    server, directory = faulty(server_factory, tmp_path, "-w", "2")
    server.wait_workers(2)
    try:
        server.request("/shutdown-listener", timeout=3)
    except Exception:
        pass  # the answer may be lost with the listener
    server.wait_log("stopped accepting connections: binding it again", timeout=10)
    wait_for(lambda: server.get_json()["generation"] == "1", 20, "answers again on the same port")
    assert server.proc.poll() is None


def test_a_preloader_that_hangs_in_an_at_fork_hook_is_killed_after_the_spawn_timeout(server_factory, tmp_path):
    server, directory = faulty(server_factory, tmp_path, "-w", "1", "--spawn-timeout", "2")
    [first] = server.wait_workers(1)
    [preloader] = server.preloaders()
    (directory / "hang-at-fork").touch()
    os.kill(first, signal.SIGKILL)  # the replacement's fork hangs in the app's hook
    server.wait_log(f"preloader pid={preloader} did not answer a spawn request within 2s (spawn_timeout): killed", timeout=20)
    wait_for(lambda: preloader not in server.preloaders(), 10, "the hung preloader gone")
    (directory / "hang-at-fork").unlink()
    server.wait_workers(1, timeout=60)
    assert server.proc.poll() is None


def test_running_out_of_descriptors_while_spawning_is_a_failure_not_a_crash(server_factory, tmp_path):
    server, directory = faulty(server_factory, tmp_path, "-w", "1", launcher=["prlimit", "--nofile=40:40", sys.executable, "-m", "gunicorn"])
    server.wait_workers(1)
    assert server.control({"command": "scale", "app": "faulty_app", "workers": 30})["ok"]
    server.wait_log("Too many open files", timeout=30)
    wait_for(lambda: "backing off" in server.log() or "next try in" in server.log(), 10, "the backoff")
    assert server.proc.poll() is None, "EMFILE never stops the master"
    assert server.control({"command": "scale", "app": "faulty_app", "workers": 1})["ok"]
    assert server.get_json()["generation"] == "1"
