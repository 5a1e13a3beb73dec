"""The dynamic pool in the master: sample each app's load, ask the policy, carry it out.

An app is dynamic when ``min_workers`` or ``max_workers`` is set (globally
or in its ``apps`` entry); otherwise its pool stays fixed at ``workers``
and nothing here touches it. Every pass of the master's loop:

1. **sample** (no request is touched): each worker's busy count and last
   request from its app's scoreboard (checked, see ``scoreboard.check_slot``),
   and the accept queue of each listener (``TCP_INFO`` on a listening TCP
   socket reports the queue length; for a unix socket only whether a
   connection waits, by polling it);
2. **decide** with :mod:`.scaling` (pure), then fit every app into
   ``max_pool_size``;
3. **carry out**: set the pool's target (the pool spawns), stop the chosen
   idle workers gracefully, log each change as one line.

An app at zero workers has its listeners watched by the master's select, so
the first connection wakes it; while a dynamic app may still grow the loop
samples every :data:`POLL` seconds (every :data:`FAST_POLL` while it is
saturated) instead of gunicorn's every second.
"""

from __future__ import annotations

import select
import signal
import socket
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gunicorn_smartspawn.master import scaling
from gunicorn_smartspawn.scoreboard import capacity_of

if TYPE_CHECKING:
    from gunicorn_smartspawn.master.arbiter import SmartArbiter

#: Seconds between samples while an app is saturated and may still grow.
FAST_POLL = 0.02
#: Seconds between samples while any dynamic app may still grow (instead of gunicorn's 1 s).
POLL = 0.1
#: ``struct tcp_info``: 8 bytes of u8 fields, then u32 rto, ato, snd_mss, rcv_mss; then
#: ``tcpi_unacked``, which for a listening socket is its accept queue, and ``tcpi_sacked`` its backlog.
_TCP_INFO_QUEUE = struct.Struct("=II")
_TCP_INFO_QUEUE_AT = 24


@dataclass
class Limits:
    """One dynamic app's bounds; TTIN, TTOU and ``scale`` move ``min_workers``."""

    min_workers: int
    max_workers: int
    idle_timeout: float


def limits_for(cfg: Any, workers: int, where: str) -> Limits | None:
    """The app's bounds, or None for a fixed pool. ``where`` names the app in errors."""
    low, high = cfg.min_workers, cfg.max_workers
    if low is None and high is None:
        return None
    if high is None:
        high = max(workers, low)
    if low is None:
        low = min(1, high)
    if low > high:
        raise ValueError(f"{where}min_workers={low} is above max_workers={high}: expected min_workers <= max_workers")
    if high < 1:
        raise ValueError(f"{where}max_workers={high} is not valid: expected at least 1")
    if workers > high:
        raise ValueError(f"{where}workers={workers} is above max_workers={high}: expected workers <= max_workers "
                         "(workers is the starting count of a dynamic pool)")
    return Limits(low, high, float(cfg.worker_idle_timeout))


def accept_queue(listener: Any) -> int:
    """Connections waiting in ``listener``'s accept queue (for a unix socket: 1 if any, else 0)."""
    try:
        if listener.family in (socket.AF_INET, socket.AF_INET6):
            raw = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            unacked, _backlog = _TCP_INFO_QUEUE.unpack_from(raw, _TCP_INFO_QUEUE_AT)
            return int(unacked)
        readable, _, _ = select.select([listener.fileno()], [], [], 0)
        return 1 if readable else 0
    except (OSError, ValueError, struct.error):
        return 0


class DynamicPools:
    """Carries out the policy for every dynamic app of one master."""

    def __init__(self, master: SmartArbiter) -> None:
        self.master = master
        self.log = master.log
        self.limits: dict[str, Limits] = {}
        self.last: dict[str, tuple[float, str]] = {}  # app -> (when, the last decision's line)
        self.waiting: dict[str, int] = {}
        self.busy: dict[str, int] = {}
        #: the longest the master's loop may sleep before the next sample
        self.poll = 1.0

    def configure(self, num_workers: int) -> None:
        """Bounds from each app's configuration (refusals raise ValueError naming the app)."""
        apps = self.master.apps
        fresh: dict[str, Limits] = {}
        for name, spec in apps.specs.items():
            workers = num_workers if not apps.multi else spec.cfg.workers
            limits = limits_for(spec.cfg, workers, f"apps[{name!r}]: " if apps.multi else "")
            if limits is not None:
                fresh[name] = limits
        total_min = sum(lim.min_workers for lim in fresh.values())
        size = self.master.cfg.max_pool_size
        if size is not None and total_min > size:
            raise ValueError(
                f"max_pool_size={size} is below the apps' min_workers together ({total_min}): "
                "expected max_pool_size >= the sum of min_workers"
            )
        for name, limits in fresh.items():
            pool = apps.pools[name]
            if name not in self.limits:  # a new dynamic app starts at workers, within its bounds
                start = num_workers if not apps.multi else apps.specs[name].cfg.workers
                pool.target = max(limits.min_workers, min(limits.max_workers, start))
        self.limits = fresh

    def is_dynamic(self, name: str) -> bool:
        return name in self.limits

    def move_min(self, name: str, delta: int) -> None:
        """TTIN/TTOU on a dynamic app: one more or one fewer worker kept at the least."""
        limits = self.limits[name]
        limits.min_workers = max(0, limits.min_workers + delta)
        limits.max_workers = max(limits.max_workers, limits.min_workers)

    def set_min(self, name: str, count: int) -> None:
        limits = self.limits[name]
        limits.min_workers = count
        limits.max_workers = max(limits.max_workers, count)

    # -- each pass ---------------------------------------------------------------------------

    def step(self, now: float) -> None:
        if not self.limits:
            self.poll = 1.0
            return
        loads = {name: self._sample(name, now) for name in self.limits if name in self.master.apps.pools}
        decisions = [scaling.decide(load, now) for load in loads.values()]
        decisions = scaling.share(decisions, loads, self.master.cfg.max_pool_size, now)
        self.poll = 1.0
        for decision in decisions:
            self._apply(decision, loads[decision.app], now)

    def _sample(self, name: str, now: float) -> scaling.AppLoad:
        master = self.master
        pool = master.apps.pools[name]
        spec = master.apps.specs[name]
        wall = time.time()
        workers = []
        for child in master.children.of_role("worker", name):
            state = pool.workers.get(child.pid)
            if state is None or state.retiring:
                continue
            capacity = capacity_of(child.worker)  # the request model's: gevent, ASGI: connections
            reading = master.scoreboards.reading(name, child.worker, pid=child.pid, started_at=state.started_at,
                                                 now=now, wall=wall)
            busy = reading.busy if reading is not None else 0
            last = reading.last_request if reading is not None else None
            idle_since = now - max(0.0, wall - last) if last is not None else state.started_at
            workers.append(scaling.WorkerLoad(child.pid, state.ready, busy, capacity, idle_since))
        pending = len(pool.pending) + sum(1 for w in pool.workers.values() if not w.ready and not w.retiring)
        pending -= sum(1 for w in workers if not w.ready)
        waiting = sum(accept_queue(lnr) for lnr in spec.listeners)
        self.waiting[name] = waiting
        limits = self.limits[name]
        return scaling.AppLoad(name, limits.min_workers, limits.max_workers, limits.idle_timeout, tuple(workers),
                               pending=max(0, pending), waiting=waiting, target=pool.target)

    def _apply(self, decision: scaling.Decision, load: scaling.AppLoad, now: float) -> None:
        master = self.master
        pool = master.apps.pools[decision.app]
        self.busy[decision.app] = load.busy
        master.metrics.gauge(f"smartspawn.{decision.app}.busy", load.busy)
        master.metrics.gauge(f"smartspawn.{decision.app}.queue", load.waiting)
        for app, pid in decision.evict:
            other = master.apps.pools[app]
            if pid in other.workers and not other.workers[pid].retiring:
                other.target = max(self.limits[app].min_workers, other.target - 1)
                line = f"scale down {other.target + 1}->{other.target}: worker pid={pid} evicted for app {decision.app}"
                self._say(app, line, now)
                master.kill_worker(other.retire(pid, f"evicted for app {decision.app}").pid, signal.SIGTERM)
        for pid in decision.retire:
            if pid in pool.workers and not pool.workers[pid].retiring:
                master.kill_worker(pool.retire(pid, decision.reason).pid, signal.SIGTERM)
        before = pool.target
        pool.target = decision.target
        if decision.target != before and decision.reason:
            verb = "up" if decision.target > before else "down"
            self._say(decision.app, f"scale {verb} {before}->{decision.target}: {decision.reason}", now)
        if len(load.workers) + load.pending < load.max_workers:
            self.poll = min(self.poll, FAST_POLL if load.saturated and load.workers else POLL)

    def _say(self, app: str, line: str, now: float) -> None:
        self.last[app] = (now, line)
        self.log.info("app=%s %s", app, line)

    def watch_fds(self) -> list[int]:
        """Listeners of dynamic apps at zero workers with nothing on its way: the first connection wakes the master."""
        fds: list[int] = []
        for name in self.limits:
            pool = self.master.apps.pools.get(name)
            spec = self.master.apps.specs.get(name)
            if pool is None or spec is None or pool.workers or pool.pending:
                continue
            if pool.preloader is not None and not pool.preloader.ready:
                continue  # importing: the connection waits for it anyway
            fds.extend(lnr.fileno() for lnr in spec.listeners)
        return fds
