"""The master believes nothing a preloader says about pids until it has checked it."""

from __future__ import annotations

import subprocess
import sys

from harness import SMART, wait_for


def test_a_preloader_cannot_make_the_master_adopt_or_signal_a_foreign_pid(server_factory, tmp_path):
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    forged = tmp_path / "forged.jsonl"
    try:
        server = server_factory(*SMART, "-w", "1", "--preloader-idle-timeout", "0", "forger_app:app",
                                env={"VICTIM_PID": str(victim.pid), "FORGED_LOG": str(forged)})
        wait_for(lambda: forged.exists() and forged.read_text(), 20, "the forged report")
        server.wait_log(f"as pid={victim.pid}, which is not a child of the master: protocol violation", timeout=20)
        assert victim.poll() is None, "the victim was signalled"
        assert victim.pid not in server.workers()
        # the master lives on, and stopping it never touches the victim either
        assert server.proc.poll() is None
        server.kill_all()
        assert victim.poll() is None, "the victim was signalled at shutdown"
    finally:
        victim.kill()
        victim.wait()


def test_a_report_for_a_spawn_nobody_asked_for_is_ignored(server_factory):
    import os
    import struct

    from test_reliability import _preloader_channel

    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        server = server_factory(*SMART, "-w", "1", "probe_app:app")
        [worker] = server.wait_workers(1)
        server.wait_registered([worker])  # the master read the preloader's reports before the theft
        [preloader] = server.preloaders()
        stolen = _preloader_channel(preloader, server.pid)
        body = ('{"type":"WorkerSpawned","age":424242,"pid":%d,"fork_ms":1.0}' % victim.pid).encode()
        os.write(stolen, struct.pack("!I", len(body)) + body)
        os.close(stolen)
        # refused by the channel's own bound (one answer per request) or by the master's check
        wait_for(lambda: f"pid={preloader} sent a bad frame" in server.log()
                 or f"reported worker age=424242 pid={victim.pid} that it was not asked for" in server.log(),
                 10, "the report refused")
        assert victim.poll() is None
        assert server.get_json("/")["pid"] == worker
    finally:
        victim.kill()
        victim.wait()
