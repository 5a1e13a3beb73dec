"""How the master stops: every process of every app ends with it, at any depth.

Listeners close first (no new connection is accepted), preloaders are told
to go, workers get gunicorn's graceful (TERM) or quick (QUIT) stop and
``graceful_timeout`` to finish, then whatever is left is killed. Last, the
master walks its tree of descendants (it is a child subreaper, so orphans
of orphans come back to it) and kills what is still there until it is
empty: a daemon a worker started, and that daemon's own children. A new
master started by USR2 (and everything below it) is never touched.
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING

from gunicorn import sock

from gunicorn_smartspawn import _compat, _linux

if TYPE_CHECKING:
    from gunicorn_smartspawn.master.arbiter import SmartArbiter

#: Seconds the final sweep keeps killing and reaping descendants.
SWEEP_SECONDS = 2.0


def stop(master: SmartArbiter, graceful: bool) -> None:
    master.readiness.stopping()
    for service in master.services:
        service.close()
    master.services = []
    unlink = master.reexec_pid == master.master_pid == 0 and not master.systemd and not master.cfg.reuse_port
    sock.close_sockets([*master.LISTENERS, *master.apps.retired_listeners], unlink)
    master.LISTENERS = []
    master.apps.retired_listeners = []
    for spec in master.apps.specs.values():
        spec.listeners = []
    for pool in master.apps.pools.values():
        pool.stop_all_preloaders("the master is stopping")
    for child in master.children.of_role("preloader"):
        master.spawner.close_channel(child)
        master.spawner.kill(child.pid, signal.SIGTERM)
    for child in master.children.of_role("spare"):  # parked: nothing to finish
        master.spawner.kill(child.pid, signal.SIGTERM)
    _stop_workers(master, graceful)
    master.kill_workers(signal.SIGKILL)
    for child in master.children.of_role("preloader"):
        master.spawner.kill(child.pid, signal.SIGKILL)
    if _compat.dirty_pid(master):
        master.kill_dirty_arbiter(signal.SIGKILL)
    sweep_descendants(master)


def _stop_workers(master: SmartArbiter, graceful: bool) -> None:
    sig = signal.SIGTERM if graceful else signal.SIGQUIT
    limit = time.time() + master.cfg.graceful_timeout
    master.kill_workers(sig)
    if _compat.dirty_pid(master):
        master.kill_dirty_arbiter(sig)
    quick = not graceful
    while (len(master.children) or _compat.dirty_pid(master)) and time.time() < limit:
        if not quick and _quick_shutdown_requested(master):
            quick = True
            master.log.info("Quick shutdown requested")
            master.kill_workers(signal.SIGQUIT)
            limit = time.time() + 2.0
        _reap_for(master, 0.1)


def sweep_descendants(master: SmartArbiter) -> None:
    """Kill every process below the master (but a USR2 successor's tree) until none is left."""
    deadline = time.monotonic() + SWEEP_SECONDS
    reported = False
    while time.monotonic() < deadline:
        spared = {master.reexec_pid, *(_linux.descendants(master.reexec_pid) if master.reexec_pid else [])}
        left = [pid for pid in _linux.descendants(master.pid) if pid not in spared and _alive(pid)]
        if not left and not len(master.children):
            break
        if left and not reported:
            reported = True
            master.log.info("Stopping %d leftover process(es) below the master: %s", len(left), left[:10])
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _reap_for(master, 0.05)
    master.loop.chld = True
    master._wait(0.0)


def _alive(pid: int) -> bool:
    stat = _linux.proc_stat(pid)
    return stat is not None and stat.state != "Z"


def _reap_for(master: SmartArbiter, seconds: float) -> None:
    master.loop.chld = True
    master._wait(seconds)


def _quick_shutdown_requested(master: SmartArbiter) -> bool:
    return any(sig in (signal.SIGINT, signal.SIGQUIT) for sig in _compat.peek_signals(master))
