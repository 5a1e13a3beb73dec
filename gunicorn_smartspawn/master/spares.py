"""Spare workers (``spare_workers``): forked ahead, parked before their request loop.

A spare is a worker of the app's current generation that a preloader forked
ahead of need. It runs gunicorn's whole initialisation (``post_fork``,
``starting_worker_process``, ``post_worker_init``), touches its heartbeat
file once to say it is parked, and blocks until the master sends it SIGCONT.
While parked it is not a serving worker: not in gunicorn's ``WORKERS``, not
in the pool's worker count, not retired one for one, not subject to
gunicorn's heartbeat timeout. When the pool needs a worker (TTIN, a dynamic
pool growing, a worker that died), a parked spare is released instead of a
fork: it becomes a worker at once, and a new spare is forked behind it.

Pure, like :class:`~gunicorn_smartspawn.master.pool.AppPool`: functions of a
pool and the monotonic time, returning the actions the master carries out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gunicorn_smartspawn.errors import describe_status
from gunicorn_smartspawn.master import actions as act
from gunicorn_smartspawn.master import states as st

if TYPE_CHECKING:
    from gunicorn_smartspawn.master.pool import AppPool

#: Seconds after a release before a new spare is asked for: the fork and the new spare's
#: initialisation would compete for the CPUs with the released worker's first requests.
REPARK_DELAY = 0.5


def spawned(pool: AppPool, request: st.PendingSpawn, pid: int, now: float) -> None:
    """The preloader reports the spare asked for in ``request``."""
    pool.spares[pid] = st.SpareState(pid, request.age, request.generation, now)


def parked(pool: AppPool, pid: int) -> None:
    """Spare ``pid`` touched its heartbeat file: it waits, initialised, to be released."""
    spare = pool.spares.get(pid)
    if spare is not None:
        spare.parked = True


def exited(pool: AppPool, pid: int, status: int, now: float) -> None:
    """A spare was reaped: unless the master discarded it, a boot failure (backoff)."""
    spare = pool.spares.pop(pid)
    if not spare.stopping:
        where = "parked" if spare.parked else "before it parked"
        pool.record_failure(f"spare worker died {where} (worker pid={pid}, {describe_status(status)})", now)


def release(pool: AppPool, need: int, now: float) -> list[act.Action]:
    """Up to ``need`` parked spares of the current generation become serving workers, oldest first."""
    ready = [s for s in pool.spares.values() if s.parked and not s.stopping and s.generation == pool.generation]
    actions: list[act.Action] = []
    for spare in sorted(ready, key=lambda s: s.age)[: max(0, need)]:
        del pool.spares[spare.pid]
        pool.workers[spare.pid] = st.WorkerState(spare.pid, spare.age, spare.generation, forked=True, started_at=now)
        pool.worker_ready(spare.pid)  # it initialised already; the master's wake-up is all it waits for
        actions.append(act.ReleaseSpare(spare.pid))
        pool.repark_at = now + REPARK_DELAY
    return actions


def upkeep(pool: AppPool, now: float) -> list[act.Action]:
    """Discard spares of a replaced generation or above ``spare_workers``; kill one that never
    parked within ``spawn_timeout`` (a boot failure)."""
    actions: list[act.Action] = []
    keep = max(0, pool.spare_target)
    for spare in sorted((s for s in pool.spares.values() if not s.stopping), key=lambda s: s.age):
        if spare.generation != pool.generation:
            reason, kill = f"generation {spare.generation} replaced", False
        elif not spare.parked and pool.spawn_timeout > 0 and now - spare.started_at > pool.spawn_timeout:
            reason, kill = f"not parked within {pool.spawn_timeout:g}s (spawn_timeout)", True
            pool.record_failure(f"spare worker pid={spare.pid} did not park {reason[11:]}: killed", now)
        elif keep <= 0:
            reason, kill = "above spare_workers", False
        else:
            keep -= 1
            continue
        spare.stopping = True
        actions.append(act.DiscardSpare(spare.pid, reason, kill))
    return actions


def refill(pool: AppPool, now: float) -> list[act.Action]:
    """Ask the current preloader for the spares missing, once every worker of the current
    generation serves (a spare never delays a worker) and no reload is under way."""
    preloader = pool.preloader
    if (
        pool.spare_target <= 0
        or now < max(pool.retry_at, pool.repark_at)  # backing off (maybe from a failure found this
        # tick), or a spare was just released
        or preloader is None
        or not preloader.ready
        or preloader.stop_reason is not None
        or pool.candidate is not None
        or pool.reload_requested
    ):
        return []
    current = [w for w in pool.workers.values() if w.generation == pool.generation and not w.retiring]
    if len(current) < pool.target or not all(w.ready for w in current):
        return []
    if any(not p.spare for p in pool.pending.values() if p.generation == pool.generation):
        return []
    live = sum(1 for s in pool.spares.values() if not s.stopping and s.generation == pool.generation)
    in_flight = sum(1 for p in pool.pending.values() if p.spare)
    need = min(pool.spare_target - live - in_flight, st.SPAWN_BURST)
    return [act.SpawnFromPreloader(preloader.pid, need, spare=True)] if need > 0 else []
