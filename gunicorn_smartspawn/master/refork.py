"""Refork (``refork_after``): promote a worker that served enough requests to be its app's preloader.

One service of the master's loop. Each tick (at most every
:data:`CHECK_EVERY` seconds) it reads the request counts of the current
generation's workers from the app's scoreboard (checked, as every slot);
when one has served the next count of ``refork_after``, and the app is
calm (no reload, rollout or failure in progress), the master:

1. binds ``\\0smartspawn-mold-<master pid>-<worker pid>`` (abstract: no
   file, gone with the master) and sends SIGURG to that worker, a
   registered child of the app;
2. accepts on it the one peer whose ``SO_PEERCRED`` pid is that worker's
   (any other is closed unheard), and turns the record into a preloader's
   with a channel like any other: the pool takes it as the candidate of
   the next generation (``AppPool.preloader_started``);
3. from its ``PreloaderReady`` on, the pool rolls the workers onto it
   exactly as after a HUP: old workers retire one for one as new ones
   serve, and the previous preloader backfills until then.

A worker that does not connect within its app's ``timeout`` plus
:data:`GRACE` seconds ends the promotion (the socket is closed) and stops
this app's reforks until its next fresh preloader: nothing is retried hot.
``due`` is the pure choice, tested without processes.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gunicorn_smartspawn.master.children import Child
from gunicorn_smartspawn.preloader.mold import address
from gunicorn_smartspawn.wire import EVENTS, Channel
from gunicorn_smartspawn.worker.classes import PROMOTE_SIGNAL, can_refork

if TYPE_CHECKING:
    from gunicorn_smartspawn.master.arbiter import SmartArbiter
    from gunicorn_smartspawn.master.pool import AppPool

#: Seconds between two looks at the request counts.
CHECK_EVERY = 0.5
#: Seconds a promoted worker has, beyond its app's ``timeout`` (its request in hand), to connect.
GRACE = 5.0
_CREDS = struct.Struct("3i")
#: Connections accepted (and, if strangers, closed) per wake-up of the master's loop.
ACCEPTS_PER_WAKE = 16


@dataclass(frozen=True)
class Served:
    """What the master believes one worker has served (from its checked scoreboard slot)."""

    pid: int
    requests: int


def due(thresholds: Sequence[int], reforks: int, served: Iterable[Served]) -> Served | None:
    """The worker to promote now, or None: the one that served most, once it reached the next count."""
    if reforks >= len(thresholds):
        return None
    best = max(served, key=lambda s: (s.requests, -s.pid), default=None)
    return best if best is not None and best.requests >= thresholds[reforks] else None


@dataclass
class Lineage:
    """The reforks since an app's last fresh preloader (one that imported the app)."""

    root: int
    reforks: int = 0
    stopped: bool = False  # a promotion failed: no more until the next fresh preloader


@dataclass
class Promotion:
    app: str
    pid: int
    requests: int
    listener: socket.socket
    deadline: float
    refused: int = 0


@dataclass
class Reforker:
    """The master's refork service (fds, ready, tick, close: master/loop.py's Service)."""

    master: SmartArbiter
    lineages: dict[str, Lineage] = field(default_factory=dict)
    promotions: dict[int, Promotion] = field(default_factory=dict)  # by the listener's fd
    molds: set[int] = field(default_factory=set)  # pids of preloaders that were workers
    _checked_at: float = 0.0
    _told: set[str] = field(default_factory=set)

    # -- Service --------------------------------------------------------------------------------

    def fds(self) -> list[int]:
        return list(self.promotions)

    def ready(self, fd: int) -> None:
        for _ in range(ACCEPTS_PER_WAKE):  # strangers in the backlog must not hide the worker
            promotion = self.promotions.get(fd)
            if promotion is None:
                return
            try:
                conn, _ = promotion.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._end(fd, f"accept failed: {exc.strerror or exc}")
                return
            try:
                pid, _uid, _gid = _CREDS.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size))
            except OSError:
                pid = -1
            if pid != promotion.pid:
                conn.close()  # not the worker asked: unheard (the abstract name is reachable by others)
                promotion.refused += 1
                if promotion.refused == 1:  # once per promotion: a flood of strangers costs one line
                    self.master.log.warning("app=%s refork: a connection from pid=%d, not worker pid=%d, was refused",
                                            promotion.app, pid, promotion.pid)
                continue
            del self.promotions[fd]
            promotion.listener.close()
            self._adopt(promotion, conn, time.monotonic())
            return

    def tick(self, now: float) -> None:
        for fd, promotion in list(self.promotions.items()):
            if now >= promotion.deadline:
                self._end(fd, "it did not connect in time")
        if now - self._checked_at < CHECK_EVERY:
            return
        self._checked_at = now
        self.molds &= {c.pid for c in self.master.children.of_role("preloader")}
        for name, pool in list(self.master.apps.pools.items()):
            thresholds = self._thresholds(name)
            if thresholds:
                self._consider(name, pool, thresholds, now)

    def close(self) -> None:
        for promotion in self.promotions.values():
            promotion.listener.close()
        self.promotions.clear()

    # -- choosing --------------------------------------------------------------------------------

    def _thresholds(self, name: str) -> list[int]:
        spec = self.master.apps.specs.get(name)
        thresholds = list(getattr(spec.cfg, "refork_after", None) or []) if spec is not None else []
        pool = self.master.apps.pools.get(name)
        if thresholds and pool is not None and pool.spawn_method != "smart":
            self._tell_once(name, "refork_after is ignored: only smart spawning has a preloader to replace")
            return []
        return thresholds

    def _consider(self, name: str, pool: AppPool, thresholds: list[int], now: float) -> None:
        preloader = pool.preloader
        if preloader is None or not preloader.ready or preloader.stop_reason is not None:
            return
        lineage = self.lineages.get(name)
        if lineage is None or (preloader.pid != lineage.root and preloader.pid not in self.molds):
            lineage = self.lineages[name] = Lineage(root=preloader.pid)  # a fresh import: counts start again
        if (lineage.stopped or pool.candidate is not None or pool.previous is not None or pool.reload_requested
                or pool.failures or pool.halt is not None or any(p.app == name for p in self.promotions.values())):
            return
        choice = due(thresholds, lineage.reforks, self._served(name, pool))
        if choice is not None:
            self._promote(name, pool, choice, now)

    def _served(self, name: str, pool: AppPool) -> list[Served]:
        boards = self.master.scoreboards
        if boards.get(name) is None:
            return []
        wall, now = time.time(), time.monotonic()
        served = []
        for child in self.master.children.of_role("worker", name):
            state = pool.workers.get(child.pid)
            model = getattr(child.worker, "model", None)
            if (state is None or not state.ready or state.retiring or not state.forked
                    or state.generation != pool.generation):
                continue
            if not can_refork(model):
                self._tell_once(name, f"refork_after is ignored: {getattr(model, 'name', 'these')} workers cannot "
                                      "become a preloader without dropping connections (sync can; gthread from "
                                      "gunicorn 27, whose gthread worker finishes what it accepted)")
                return []
            reading = boards.reading(name, child.worker, pid=child.pid, started_at=state.started_at, now=now, wall=wall)
            if reading is not None:
                served.append(Served(child.pid, reading.requests))
        return served

    # -- promoting -------------------------------------------------------------------------------

    def _promote(self, name: str, pool: AppPool, choice: Served, now: float) -> None:
        master = self.master
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(address(master.pid, choice.pid))
            listener.listen(ACCEPTS_PER_WAKE)
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            self._stop(name, f"could not listen for worker pid={choice.pid}: {exc.strerror or exc}")
            return
        timeout = float(getattr(master.apps.specs[name].cfg, "timeout", 30) or 30)
        self.promotions[listener.fileno()] = Promotion(name, choice.pid, choice.requests, listener, now + timeout + GRACE)
        master.log.info("app=%s refork: worker pid=%d served %d requests; asking it to become the next preloader",
                        name, choice.pid, choice.requests)
        master.spawner.kill(choice.pid, PROMOTE_SIGNAL)

    def _adopt(self, promotion: Promotion, conn: socket.socket, now: float) -> None:
        master, name, pid = self.master, promotion.app, promotion.pid
        pool = master.apps.pools.get(name)
        child = master.children.get(pid)
        if pool is None or child is None or child.role != "worker" or child.app != name or pid not in pool.workers:
            conn.close()  # it was reaped, retired or its app removed meanwhile: nothing to adopt
            return
        if pool.candidate is not None or pool.reload_requested or pool.workers[pid].retiring:
            # a HUP came meanwhile: its generation wins; the worker, refused, exits and is replaced
            conn.close()
            master.log.info("app=%s refork: worker pid=%d not adopted, a reload came first", name, pid)
            return
        lineage = self.lineages[name]
        master.children.remove(pid)
        master.spawner.discard(child.worker)
        pool.workers.pop(pid)
        generation = pool.generation + 1
        conn.setblocking(False)
        master.children.add(Child(pid, "preloader", name, generation, now, channel=Channel(conn, EVENTS)))
        pool.preloader_started(pid, generation, now)
        self.molds.add(pid)
        lineage.reforks += 1
        master.log.info("app=%s refork %d: worker pid=%d (%d requests) is the preloader of generation %d",
                        name, lineage.reforks, pid, promotion.requests, generation)

    def _end(self, fd: int, why: str) -> None:
        promotion = self.promotions.pop(fd)
        promotion.listener.close()
        self._stop(promotion.app, f"worker pid={promotion.pid} was not promoted: {why}")

    def _stop(self, name: str, why: str) -> None:
        lineage = self.lineages.get(name)
        if lineage is not None:
            lineage.stopped = True
        self.master.log.warning("app=%s refork: %s; no more reforks until its next preloader", name, why)

    def _tell_once(self, name: str, line: str) -> None:
        if name not in self._told:
            self._told.add(name)
            self.master.log.warning("app=%s %s", name, line)


