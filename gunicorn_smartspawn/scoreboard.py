"""The scoreboards: one slot of shared memory per worker, as in Apache httpd.

Every app has its own scoreboard, its own anonymous shared mapping
(:class:`Scoreboards`). The master maps an app's board before it forks that
app's first preloader or direct worker, so they inherit its pages; a fresh
child of the master unmaps every other app's board before any app code runs
(``Scoreboards.keep_only``), so a worker can reach its own app's slots and
no other app's. Each worker owns the slot the master assigned it and writes
there around each request: how many requests it has in flight, how many it
served, when the last one began. No lock between processes: a slot has one
writer, and a torn read of a counter is off by one request at worst.

The master only reads, and believes nothing it reads: a process that ran
app code may have written anything into its app's board (another worker's
slot, a NaN, a count of a billion). :func:`check_slot` turns a slot into a
:class:`SlotReading` only if it is plausible for the worker the slot was
assigned to, else None ("unknown"); nothing else of a slot reaches the
master's answers. The master reads a worker's slot one way, wherever it
reads it (the dynamic pool, refork, ``smartspawn status``):
:meth:`Scoreboards.reading`, which takes the slot's index and the bounds from
the master's own record of the worker, never from the slot.

Slot layout (32 bytes, native byte order)::

    0      4      8              16             24             32
    +------+------+--------------+--------------+--------------+
    | pid  | busy | requests u64 | last request | started      |
    | i32  | u32  |              | f64 epoch s  | f64 epoch s  |
    +------+------+--------------+--------------+--------------+

``busy`` counts requests in flight: at most one for a sync worker, its
threads for gthread, thousands for a gevent or ASGI worker.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass
from typing import Final

SLOT: Final = struct.Struct("=iIQdd")
#: The most requests in flight a slot can say (a u32).
MAX_BUSY: Final = 2**32 - 1
#: Slots of one app's board (``smartspawn scale`` sets at most 1000 workers).
DEFAULT_SLOTS: Final = 1024
#: The most requests a slot may claim: beyond, JSON readers lose exactness.
MAX_REQUESTS: Final = 2**53
#: The most requests per second a worker is believed to start, to bound a count by the worker's uptime.
MAX_REQUEST_RATE: Final = 1_000_000
#: How far in the future (seconds) a worker's clock reading may be: it read the clock after the master did.
CLOCK_SKEW: Final = 2.0


@dataclass(frozen=True)
class SlotView:
    """A slot as its bytes say, unchecked: what a worker (or anything that ran app code) wrote."""

    pid: int
    busy: int
    requests: int
    last_request: float
    started: float


@dataclass(frozen=True)
class SlotReading:
    """A slot the master checked (:func:`check_slot`): safe to show and to serialize."""

    requests: int
    busy: int
    #: epoch seconds of the last request's start; None: none yet
    last_request: float | None


def check_slot(view: SlotView, *, pid: int, threads: int, wall: float, uptime: float | None = None) -> SlotReading | None:
    """What the master believes of ``view``, the slot it assigned to worker ``pid``; None: unknown.

    ``threads`` is the most requests the worker can have in flight (its
    request model's capacity: 1 for sync, its threads for gthread, its
    ``worker_connections`` for gevent and ASGI), ``wall`` the master's ``time.time()``, ``uptime`` how long
    the master has known the worker (seconds), if it does. A slot is
    believed only whole: its pid is the worker's; busy is within 0 and
    ``threads``; requests is within 0 and :data:`MAX_REQUESTS`, and within
    :data:`MAX_REQUEST_RATE` per second of uptime; its times are finite,
    not negative, and the last request not later than ``wall`` plus
    :data:`CLOCK_SKEW`.
    """
    if pid <= 0 or view.pid != pid:
        return None  # not written yet, or not by this worker
    if not 0 <= view.busy <= max(1, threads):
        return None
    bound = MAX_REQUESTS
    if uptime is not None and math.isfinite(uptime):
        bound = min(bound, int(MAX_REQUEST_RATE * (max(0.0, uptime) + CLOCK_SKEW)))
    if not 0 <= view.requests <= bound:
        return None
    if not (math.isfinite(view.started) and view.started >= 0.0):
        return None
    last = view.last_request
    if not (math.isfinite(last) and 0.0 <= last <= wall + CLOCK_SKEW):
        return None
    return SlotReading(requests=view.requests, busy=view.busy, last_request=last if last > 0.0 else None)


def capacity_of(worker: object) -> int:
    """The most requests ``worker`` (the master's own record of it) may have in flight: its request
    model's capacity (threads for gthread, worker_connections for gevent and ASGI), else its
    configured threads; 1 when that is not a positive int."""
    capacity = getattr(worker, "capacity", None)
    if capacity is None:
        capacity = getattr(getattr(worker, "cfg", None), "threads", 1)
    return capacity if isinstance(capacity, int) and not isinstance(capacity, bool) and capacity >= 1 else 1


class Scoreboard:
    """One app's shared table; :meth:`slot` gives a worker its writer."""

    def __init__(self, slots: int = DEFAULT_SLOTS) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, SLOT.size * slots, flags=mmap.MAP_SHARED)
        self._free = list(range(slots - 1, -1, -1))

    @property
    def closed(self) -> bool:
        return bool(self._map.closed)

    def close(self) -> None:
        """Unmap the table (in a child: that app's slots are out of its reach from here on)."""
        self._map.close()
        self._free = []

    # -- the master ---------------------------------------------------------------------

    def assign(self) -> int | None:
        """A free slot for a new worker (zeroed), or None when all are taken."""
        if not self._free:
            return None
        index = self._free.pop()
        SLOT.pack_into(self._map, index * SLOT.size, 0, 0, 0, 0.0, 0.0)
        return index

    def release(self, index: int | None) -> None:
        if index is not None and 0 <= index < self.slots and index not in self._free and not self.closed:
            SLOT.pack_into(self._map, index * SLOT.size, 0, 0, 0, 0.0, 0.0)
            self._free.append(index)

    def read(self, index: int) -> SlotView:
        """The slot's bytes, unchecked (see :meth:`check`)."""
        return SlotView(*SLOT.unpack_from(self._map, index * SLOT.size))

    def check(self, index: int | None, *, pid: int, threads: int, wall: float, uptime: float | None = None) -> SlotReading | None:
        """Slot ``index`` as the master may believe it (:func:`check_slot`); None when unknown."""
        if index is None or not 0 <= index < self.slots or self.closed:
            return None
        return check_slot(self.read(index), pid=pid, threads=threads, wall=wall, uptime=uptime)

    def reading(self, worker: object, *, pid: int, started_at: float, now: float, wall: float) -> SlotReading | None:
        """What the master may believe of worker ``pid``'s slot; None when unknown.

        ``worker`` is the master's own record of it, never what the worker wrote: its
        ``scoreboard_index`` names the slot, its capacity (:func:`capacity_of`) bounds busy, and its
        uptime ``now - started_at`` (both the master's monotonic clock) bounds the count of requests;
        ``wall`` is the master's ``time.time()``. The slot itself goes through :meth:`check`.
        """
        index = getattr(worker, "scoreboard_index", None)
        if not isinstance(index, int) or isinstance(index, bool):
            return None
        return self.check(index, pid=pid, threads=capacity_of(worker), wall=wall, uptime=now - started_at)

    # -- a worker -------------------------------------------------------------------------

    def slot(self, index: int | None, threaded: bool) -> SlotWriter | None:
        if index is None or not 0 <= index < self.slots or self.closed:
            return None
        return (LockedSlotWriter if threaded else SlotWriter)(self._map, index * SLOT.size)


class Scoreboards:
    """The master's boards, one :class:`Scoreboard` (one shared mapping) per app name.

    A board is mapped when its app first needs one, in the master, before the
    fork that must inherit it; it lives as long as the app. A fresh child
    keeps only its own app's board (:meth:`keep_only`).
    """

    def __init__(self, slots: int = DEFAULT_SLOTS) -> None:
        self.slots = slots
        self._boards: dict[str, Scoreboard] = {}

    def for_app(self, name: str) -> Scoreboard:
        """``name``'s board, mapped now if it has none yet."""
        board = self._boards.get(name)
        if board is None:
            board = self._boards[name] = Scoreboard(self.slots)
        return board

    def get(self, name: str) -> Scoreboard | None:
        return self._boards.get(name)

    def names(self) -> list[str]:
        return list(self._boards)

    def reading(self, name: str, worker: object, *, pid: int, started_at: float, now: float, wall: float) -> SlotReading | None:
        """Worker ``pid`` of app ``name`` as its slot says, checked (:meth:`Scoreboard.reading`); None
        when unknown, or when the app has no board."""
        board = self._boards.get(name)
        if board is None:
            return None
        return board.reading(worker, pid=pid, started_at=started_at, now=now, wall=wall)

    def assign(self, name: str) -> int | None:
        """A free slot of ``name``'s board for a new worker of that app, or None."""
        return self.for_app(name).assign()

    def release(self, name: str | None, index: int | None) -> None:
        board = self._boards.get(name) if name is not None else None
        if board is not None:
            board.release(index)

    def drop(self, name: str) -> None:
        """Unmap ``name``'s board (an app removed from the configuration, all its processes gone)."""
        board = self._boards.pop(name, None)
        if board is not None:
            board.close()

    def keep_only(self, name: str) -> None:
        """In a fresh child of the master: unmap every board but ``name``'s."""
        for other in [n for n in self._boards if n != name]:
            self.drop(other)

    def close(self) -> None:
        for name in list(self._boards):
            self.drop(name)


#: What a request's begin writes: busy, requests and last request (the slot's bytes 4 to 24).
_BEGIN: Final = struct.Struct("=IQd")
#: What a request's end writes: busy alone (bytes 4 to 8).
_END: Final = struct.Struct("=I")
#: Where busy starts in a slot (the pid before it is written once, by the writer's constructor).
_BUSY_AT: Final = 4


class SlotWriter:
    """A worker's own slot. ``begin``/``end`` bracket each request.

    Built for the request path: the pid and the start are written once, here;
    a begin writes the three fields it changes in one ``pack_into``, an end the
    one it changes (busy cannot pass :data:`MAX_BUSY`: no worker holds four
    billion requests at once). No system call (``time.time`` reads the vDSO), no lock: a
    sync, gevent or asyncio worker runs each begin and end whole, in one OS
    thread (:class:`LockedSlotWriter` is the gthread worker's).
    """

    __slots__ = ("_at", "_busy", "_lock", "_map", "_requests")

    def __init__(self, shared: mmap.mmap, offset: int) -> None:
        self._map = shared
        self._at = offset + _BUSY_AT
        self._lock: threading.Lock | None = None
        self._busy = 0
        self._requests = 0
        SLOT.pack_into(shared, offset, os.getpid(), 0, 0, 0.0, time.time())

    def begin(self) -> None:
        self._busy = busy = self._busy + 1
        self._requests = requests = self._requests + 1
        _BEGIN.pack_into(self._map, self._at, busy, requests, time.time())

    def end(self) -> None:
        busy = self._busy - 1
        self._busy = busy = busy if busy > 0 else 0  # an end without its begin cannot go below zero
        _END.pack_into(self._map, self._at, busy)


class LockedSlotWriter(SlotWriter):
    """The slot of a worker whose requests run in several OS threads (gthread): each update under a
    lock, so that no count is lost between threads and the last write is the latest count."""

    __slots__ = ()

    def __init__(self, shared: mmap.mmap, offset: int) -> None:
        super().__init__(shared, offset)
        self._lock = threading.Lock()

    # acquire/release rather than ``with``: the same, a quarter cheaper per request (no context manager calls)

    def begin(self) -> None:
        lock = self._lock
        lock.acquire()  # type: ignore[union-attr]
        try:
            self._busy = busy = self._busy + 1
            self._requests = requests = self._requests + 1
            _BEGIN.pack_into(self._map, self._at, busy, requests, time.time())
        finally:
            lock.release()  # type: ignore[union-attr]

    def end(self) -> None:
        lock = self._lock
        lock.acquire()  # type: ignore[union-attr]
        try:
            busy = self._busy - 1
            self._busy = busy = busy if busy > 0 else 0
            _END.pack_into(self._map, self._at, busy)
        finally:
            lock.release()  # type: ignore[union-attr]
