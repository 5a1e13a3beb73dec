"""The dynamic pool's policy: how many workers each app should have now, and which to stop.

Pure: the master samples what it can read without touching a request (each
worker's busy count from the scoreboard, each listener's accept queue) and
asks :func:`decide` per app, then :func:`share` across apps for the one
``max_pool_size``. Unit-tested with plain values.

The policy, and why (docs/pool.md compares it with Passenger and uWSGI):

* **Up, at once, only under real pressure.** An app grows while *every*
  ready worker is busy *and* connections wait in the accept queue (or, where
  the queue cannot be read, the listener is readable): Passenger's "spawn
  while the wait list is non-empty". It asks for as many workers as
  connections wait, up to ``max_workers``, so a surge is met in one pass
  instead of one worker per pass. Workers still booting and spawns on their
  way count as taking one waiting connection each, so a pass never asks
  twice for the same connection.
* **Down, slowly, one at a time.** A worker is stopped only after
  ``worker_idle_timeout`` seconds without a request, the longest idle
  first, and only while the app has more than ``min_workers``. The gap
  between "up within milliseconds of a queue" and "down after minutes of
  silence" is the hysteresis: a load that comes and goes keeps its workers,
  so the pool never flaps.
* **From zero.** An app at zero workers grows when a connection waits; the
  connection sits in the backlog until the new worker accepts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WorkerLoad:
    """One worker as the master sees it (``idle_since``: monotonic time of its last request's end)."""

    pid: int
    ready: bool
    busy: int
    threads: int
    idle_since: float


@dataclass(frozen=True)
class AppLoad:
    """One app's workers and what waits for them."""

    name: str
    min_workers: int
    max_workers: int
    idle_timeout: float
    workers: tuple[WorkerLoad, ...]
    pending: int = 0  # spawns asked for and not yet serving
    waiting: int = 0  # connections in the accept queue (1 when only "readable" is known)
    target: int | None = None  # the pool's target now (None: as many as it has)

    @property
    def busy(self) -> int:
        return sum(1 for w in self.workers if w.ready and w.busy >= w.threads)

    @property
    def saturated(self) -> bool:
        ready = [w for w in self.workers if w.ready]
        return all(w.busy >= w.threads for w in ready)


@dataclass(frozen=True)
class Decision:
    """What an app should have: ``target`` workers, ``retire`` these idle ones first."""

    app: str
    target: int
    retire: tuple[int, ...] = ()
    reason: str = ""
    #: workers of other apps to stop to make room in the pool (filled by :func:`share`)
    evict: tuple[tuple[str, int], ...] = field(default=())


def decide(load: AppLoad, now: float) -> Decision:
    """The target for one app, by its own limits (the pool-wide limit comes after, in :func:`share`)."""
    total = len(load.workers) + load.pending
    floor = load.min_workers
    now_target = total if load.target is None else load.target
    keep = max(floor, min(load.max_workers, now_target))
    if load.waiting > 0 and load.saturated:
        # each worker still booting, and each spawn on its way, will take one waiting connection
        coming = sum(1 for w in load.workers if not w.ready)
        want = min(load.max_workers, len(load.workers) + max(load.waiting - coming, 0))
        if want > max(total, keep):
            reason = (
                f"{load.busy} of {len(load.workers)} busy, {load.waiting} connection(s) waiting"
                if load.workers else f"{load.waiting} connection(s) waiting at zero workers"
            )
            return Decision(load.name, want, reason=reason)
        return Decision(load.name, keep)
    if keep > now_target:
        return Decision(load.name, keep, reason=f"below min_workers={floor}")
    if load.idle_timeout > 0 and len(load.workers) > floor and load.pending == 0:
        idle = sorted(
            (w for w in load.workers if w.ready and w.busy == 0 and now - w.idle_since >= load.idle_timeout),
            key=lambda w: w.idle_since,
        )
        if idle:
            oldest = idle[0]
            return Decision(
                load.name,
                len(load.workers) - 1,
                retire=(oldest.pid,),
                reason=f"worker pid={oldest.pid} idle for {now - oldest.idle_since:.0f}s",
            )
    return Decision(load.name, keep)


def share(decisions: list[Decision], loads: dict[str, AppLoad], max_pool_size: int | None, now: float) -> list[Decision]:
    """Fit the apps' targets into ``max_pool_size`` workers in all.

    An app that must grow gets room from the idle workers of other apps, the
    longest idle first (Passenger's eviction), never taking another app below
    its ``min_workers`` nor below one worker while that app has connections
    waiting. Without room it waits: its target is cut to what fits.
    """
    if max_pool_size is None:
        return decisions
    current = {name: len(load.workers) + load.pending for name, load in loads.items()}
    room = _Room(loads, max_pool_size - sum(current.values()))
    out: list[Decision] = []
    for decision in decisions:
        grow = decision.target - current[decision.app]
        if grow <= 0:
            out.append(decision)
            continue
        evict = room.make(decision.app, grow)
        granted = min(grow, room.free)
        room.free -= granted
        reason = decision.reason if granted == grow else f"{decision.reason}; pool full at max_pool_size={max_pool_size}"
        out.append(Decision(decision.app, current[decision.app] + granted, decision.retire, reason, tuple(evict)))
    # an app that gives up workers lowers its own target by as many, whatever it decided alone
    given = {name: sum(1 for d in out for app, _ in d.evict if app == name) for name in loads}
    return [
        d if not given[d.app] else Decision(d.app, min(d.target, room.remaining[d.app]), d.retire, d.reason, d.evict)
        for d in out
    ]


class _Room:
    """Free places in the pool, and the idle workers that can be evicted for more (longest idle first)."""

    def __init__(self, loads: dict[str, AppLoad], free: int) -> None:
        self.loads = loads
        self.free = max(0, free)
        self.remaining = {name: len(load.workers) for name, load in loads.items()}
        self.evicted: set[int] = set()
        self.idle = sorted((w.idle_since, name, w.pid) for name, load in loads.items() for w in load.workers
                           if w.ready and w.busy == 0)

    def make(self, app: str, wanted: int) -> list[tuple[str, int]]:
        """Evict until ``wanted`` places are free (or nothing more may go); the evicted (app, pid)."""
        evict: list[tuple[str, int]] = []
        for _, name, pid in self.idle:
            if self.free >= wanted:
                break
            other = self.loads[name]
            keep = max(other.min_workers, 1 if other.waiting else 0)
            if name == app or pid in self.evicted or self.remaining[name] - 1 < keep:
                continue
            self.evicted.add(pid)
            self.remaining[name] -= 1
            evict.append((name, pid))
            self.free += 1
        return evict
