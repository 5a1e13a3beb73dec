"""Faults on purpose: kills, a dead master, stuck imports, reload storms, hostile input."""

from __future__ import annotations

import os
import random
import signal
import socket
import struct
import time

import pytest

from harness import (
    SMART,
    Load,
    ask_control,
    fd_targets,
    free_port,
    holds_unix_sockets_at,
    read_stat,
    steal_fd,
    unix_socket_inodes,
    wait_for,
)


def zombies_under(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat and stat[1] == pid and stat[0] == "Z":
                out.append(int(entry))
    return out


def test_kill_storm_under_load(server_factory):
    server = server_factory(*SMART, "-w", "4", "probe_app:app")
    server.wait_workers(4)
    server.wait_serving()
    worker_kills: list[float] = []
    preloader_kills = 0
    rng = random.Random(7)
    with Load(server, threads=4) as load:
        end = time.monotonic() + 20
        next_preloader = time.monotonic() + 2
        while time.monotonic() < end:
            workers = server.workers()
            if workers:
                victim = rng.choice(workers)
                worker_kills.append(time.monotonic())
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() >= next_preloader:
                next_preloader += 2
                for pid in server.preloaders():
                    os.kill(pid, signal.SIGKILL)
                    preloader_kills += 1
            time.sleep(0.2)  # the storm's own pace, not synchronisation
    assert len(load.results) > 500
    assert preloader_kills >= 5
    # a failed request must have been in flight when a worker was killed
    unexplained = [f for f in load.failures if not any(f.started - 0.05 <= k <= f.ended + 0.05 for k in worker_kills)]
    assert unexplained == [], unexplained[:5]
    workers = server.wait_workers(4, timeout=10)
    assert all(read_stat(p)[1] == server.pid for p in workers)
    wait_for(lambda: zombies_under(server.pid) == [], what="no zombies under the master")
    server.pids_answering(set(workers))


def test_master_death_takes_everything_down(server_factory):
    port_server = server_factory(*SMART, "-w", "2", "--timeout", "4", "probe_app:app")
    pids = port_server.wait_workers(2) + port_server.preloaders()
    port_server.signal(signal.SIGKILL)
    port_server.wait_exit()
    wait_for(lambda: all(read_stat(p) is None or read_stat(p)[0] == "Z" for p in pids), timeout=6,
             what="workers and preloader to exit within the worker timeout")
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port_server.port))


def test_master_death_while_the_preloader_is_stuck_in_import(server_factory):
    server = server_factory(*SMART, "-w", "1", "probe_app:app", env={"PROBE_IMPORT_SLEEP": "60"})
    wait_for(lambda: server.preloaders(), what="the preloader")
    [preloader] = server.preloaders()
    server.signal(signal.SIGKILL)
    server.wait_exit()
    wait_for(lambda: read_stat(preloader) is None or read_stat(preloader)[0] == "Z", timeout=5,
             what="the importing preloader to exit")


def test_stuck_preloader_is_killed_after_the_start_timeout(tmp_path, server_factory):
    ports = {"good": free_port(), "stuck": free_port()}
    conf = tmp_path / "c.py"
    ctl = tmp_path / "ss.sock"
    apps = {
        "good": {"app": "probe_app:app", "bind": f"127.0.0.1:{ports['good']}", "workers": 1},
        "stuck": {"app": "probe_app:app", "bind": f"127.0.0.1:{ports['stuck']}", "workers": 1,
                  "preloader_start_timeout": 2, "env": {"PROBE_IMPORT_SLEEP": "600"}},
    }
    conf.write_text(f"worker_class = 'smartspawn.Worker'\nsmartspawn_socket = {str(ctl)!r}\napps = {apps!r}\n")
    server = server_factory("-c", str(conf), bind=False)
    server.wait_log("did not load the app within 2s (preloader_start_timeout): killed", timeout=15)
    [(_, first)] = server.preloaders_started("stuck")[:1]
    wait_for(lambda: read_stat(first) is None or read_stat(first)[0] == "Z", what="the stuck preloader to be killed")
    # started again after its backoff: a second preloader of the same generation
    wait_for(lambda: [pid for gen, pid in server.preloaders_started("stuck") if gen == 1 and pid != first],
             timeout=15, what="a new preloader of the stuck app")
    status = ask_control(ctl, {"command": "status"})  # the master stays responsive
    stuck = next(a for a in status["result"]["apps"] if a["name"] == "stuck")
    assert stuck["state"] in ("backing off", "starting")
    assert "preloader_start_timeout" in (stuck["last_error"] or "")
    good = next(a for a in status["result"]["apps"] if a["name"] == "good")
    assert good["state"] == "running"
    server.port = ports["good"]
    assert server.get_json("/")["forked"] is True


def test_reload_storm_under_load(server_factory):
    server = server_factory(*SMART, "-w", "2", "probe_app:app")
    first_workers = set(server.wait_workers(2))
    [first_preloader] = server.preloaders()
    server.wait_serving()
    # the master's descriptors are complete once it serves its control socket(s): gunicorn >= 25.1
    # opens its own (gunicornc) only after the first workers are spawned
    control_paths = [p for p in (server.arg("--smartspawn-socket"), server.arg("--control-socket")) if p]
    wait_for(lambda: holds_unix_sockets_at(server.pid, control_paths), what=f"the master to serve {control_paths}")
    wait_for(lambda: all(w["ready"] for w in server.control({"command": "status"})["result"]["apps"][0]["workers"]),
             what="both workers to report ready")
    fds_before = len(fd_targets(server.pid))
    with Load(server, threads=3) as load:
        for _ in range(20):
            server.signal(signal.SIGHUP)
            time.sleep(0.05)  # "quick succession": the storm's pace
        wait_for(lambda: server.log().count("Handling signal: hup") >= 20, timeout=20, what="20 HUPs handled")

        def settled_on_a_new_generation() -> bool:
            app = server.control({"command": "status"})["result"]["apps"][0]
            preloader = app["preloader"]
            workers = server.workers()
            return (
                preloader is not None
                and preloader["pid"] != first_preloader
                and preloader["generation"] == app["generation"] >= 2
                and server.preloaders() == [preloader["pid"]]
                and len(workers) == 2
                and not first_workers & set(workers)
                and sorted(w["pid"] for w in app["workers"]) == sorted(workers)
                and all(w["generation"] == app["generation"] and w["ready"] for w in app["workers"])
            )

        wait_for(settled_on_a_new_generation, timeout=30,
                 what="one new preloader and two new workers, all of the newest generation")
        load.wait_more(20)  # and the new generation serves
    assert load.failures == [], load.failures[:5]
    assert len(load.results) > 50
    wait_for(lambda: len(fd_targets(server.pid)) <= fds_before, timeout=10,
             what=f"the master's fds to return to {fds_before} (now {len(fd_targets(server.pid))})")


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x10\x00\x01" + b"x" * 16,  # one byte over the 1 MiB limit
        struct.pack("!I", 11) + b"not json!!!",
        struct.pack("!I", 18) + b'{"type":"Nothing"}',
        struct.pack("!I", 54) + b'{"type":"WorkerSpawned","age":1,"pid":1,"fork_ms":1.0}',
        b"\xff\xff\xff\xff",
    ],
    ids=["oversized", "not-json", "unknown-type", "pid-1", "max-length"],
)
def test_hostile_frames_to_the_master(server_factory, garbage):
    server = server_factory(*SMART, "-w", "1", "probe_app:app")
    [worker] = server.wait_workers(1)
    server.wait_registered([worker])  # the master read the preloader's reports before the theft
    [preloader] = server.preloaders()
    stolen = _preloader_channel(preloader, server.pid)
    os.write(stolen, garbage)
    os.close(stolen)
    server.wait_log(f"preloader pid={preloader} sent a bad frame")
    wait_for(lambda: preloader not in server.preloaders(), what="the hostile preloader to be stopped")
    assert server.proc.poll() is None
    assert server.get_json("/")["pid"] == worker
    server.signal(signal.SIGTTIN)  # a new preloader comes up on demand
    server.wait_workers(2)
    assert len(server.preloaders()) == 1


def test_hostile_frames_to_the_preloader(server_factory):
    server = server_factory(*SMART, "-w", "1", "probe_app:app")
    [worker] = server.wait_workers(1)
    server.wait_registered([worker])  # the master read the preloader's reports before the theft
    [preloader] = server.preloaders()
    master_end = _master_channel(preloader, server.pid)
    os.write(master_end, struct.pack("!I", 16) + b'{"type":"Hello"}')
    os.close(master_end)
    server.wait_log(f"preloader pid={preloader} refuses a frame from the master")
    server.wait_log(f"pid={preloader} exited (exit code 16)")
    assert server.proc.poll() is None
    assert server.get_json("/")["pid"] == worker


def _preloader_channel(preloader: int, master: int) -> int:
    """Steal the preloader's end of its channel: its only unix socket the master does not share."""
    master_inodes = set(fd_targets(master).values())
    unix = unix_socket_inodes()
    candidates = [
        fd for fd, t in fd_targets(preloader).items() if t in unix and unix[t] == "" and t not in master_inodes
    ]
    assert len(candidates) == 1, candidates
    return steal_fd(preloader, candidates[0])


def _master_channel(preloader: int, master: int) -> int:
    """Steal the master's end: the master's unix socket whose peer is the preloader's end."""
    mine = _preloader_channel(preloader, master)
    try:
        peer_inode = _peer_inode(mine)
    finally:
        os.close(mine)
    for fd, target in fd_targets(master).items():
        if target == f"socket:[{peer_inode}]":
            return steal_fd(master, fd)
    raise AssertionError("the master's end of the channel was not found")


def _peer_inode(fd: int) -> int:
    """The inode of a unix socket's peer (the kernel's sock_diag, through iproute2's ss)."""
    import subprocess

    inode = int(os.readlink(f"/proc/self/fd/{fd}")[8:-1])
    out = subprocess.run(["ss", "-xn"], capture_output=True, text=True, timeout=10).stdout
    for line in out.splitlines():
        parts = line.split()
        # Netid State Recv-Q Send-Q Local-Address:Port Peer-Address:Port
        if len(parts) >= 8 and parts[5] == str(inode):
            return int(parts[7])
    raise AssertionError(f"no peer for inode {inode} in ss output")


def test_workers_cannot_reach_control_sockets(server_factory, tmp_path):
    ctl = tmp_path / "ss.sock"
    server = server_factory(*SMART, "-w", "2", "--smartspawn-socket", str(ctl), "probe_app:app")
    workers = server.wait_workers(2)
    wait_for(lambda: ctl.exists(), what="the control socket")
    assert ctl.stat().st_mode & 0o777 == 0o600
    named = unix_socket_inodes()
    control_paths = {str(ctl)} | {a for a in server.args if a.endswith(".sock")}
    for path in control_paths:
        if os.path.exists(path):
            assert os.stat(path).st_mode & 0o777 == 0o600, path
    for pid in [*workers, *server.preloaders()]:
        held = {named.get(t) for t in fd_targets(pid).values() if t.startswith("socket:")}
        assert not held & control_paths, (pid, held & control_paths)
    # that no module imports pickle at all is tests/unit/test_layers.py's test_no_module_of_the_package_imports_pickle
