"""The pool's time limits: a preloader that does not load, a spawn request or a worker that does not come up.

Pure functions of an :class:`~gunicorn_smartspawn.master.pool.AppPool` and the
monotonic time (split out of pool.py); each limit passed is a failure, which
backs off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gunicorn_smartspawn.errors import APP_LOAD_ERROR, WORKER_BOOT_ERROR
from gunicorn_smartspawn.master import actions as act

if TYPE_CHECKING:
    from gunicorn_smartspawn.master.pool import AppPool


def loading(pool: AppPool, now: float) -> None:
    """Kill a preloader still loading after ``start_timeout`` (Passenger's start_timeout)."""
    for state in (pool.preloader, pool.candidate):
        if (
            state is None
            or state.ready
            or state.failed
            or pool.start_timeout <= 0
            or now - state.started_at <= pool.start_timeout
        ):
            continue
        state.failed = True
        pool.record_failure(
            f"preloader pid={state.pid} did not load the app within {pool.start_timeout:g}s "
            "(preloader_start_timeout): killed",
            now,
            APP_LOAD_ERROR,
        )
        # detached now; its spawn requests stay pending until it is
        # reaped, so that preloader_exited hands them back to the master
        pool._detach(state)
        pool._retire_preloader(state, "start timeout")
        if pool.halt is not None:
            return


def spawns(pool: AppPool, now: float) -> list[act.Action]:
    """Kill what has not come up within ``spawn_timeout``; each counts as a failure."""
    if pool.spawn_timeout <= 0:
        return []
    actions: list[act.Action] = []
    limit = f"within {pool.spawn_timeout:g}s (spawn_timeout)"
    for request in list(pool.pending.values()):
        state = pool._preloader(request.preloader_pid)
        if state is None or state.stop_reason is not None or now - request.requested_at <= pool.spawn_timeout:
            continue
        pool.record_failure(f"preloader pid={state.pid} did not answer a spawn request {limit}: killed", now)
        pool._detach(state)
        pool._retire_preloader(state, "spawn timeout", kill=True)
    for worker in pool.workers.values():
        if worker.ready or worker.retiring or now - worker.started_at <= pool.spawn_timeout:
            continue
        worker.retiring = True
        pool.record_failure(f"worker pid={worker.pid} did not serve {limit}: killed", now, WORKER_BOOT_ERROR)
        actions.append(act.KillWorker(worker.pid, f"no first heartbeat {limit}"))
    return actions
