"""The scoreboard: one slot of shared memory per worker, as in Apache httpd.

The master maps it (anonymous, shared) before it forks anything, so every
preloader and worker inherits the same pages. Each worker owns the slot the
master assigned it and writes there around each request: how many requests
it has in flight, how many it served, when the last one began. The master
only reads. No lock between processes: a slot has one writer, and a torn
read of a counter is off by one request at worst.

Slot layout (32 bytes, native byte order)::

    0      4      5      8              16             24             32
    +------+------+------+--------------+--------------+--------------+
    | pid  |busy  | pad  | requests u64 | last request | started      |
    | i32  | u8   |      |              | f64 epoch s  | f64 epoch s  |
    +------+------+------+--------------+--------------+--------------+
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass
from typing import Final

SLOT: Final = struct.Struct("=iB3xQdd")
DEFAULT_SLOTS: Final = 1024


@dataclass(frozen=True)
class SlotView:
    pid: int
    busy: int
    requests: int
    last_request: float
    started: float


class Scoreboard:
    """The shared table; :meth:`slot` gives a worker its writer."""

    def __init__(self, slots: int = DEFAULT_SLOTS) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, SLOT.size * slots, flags=mmap.MAP_SHARED)
        self._free = list(range(slots - 1, -1, -1))

    # -- the master ---------------------------------------------------------------------

    def assign(self) -> int | None:
        """A free slot for a new worker (zeroed), or None when all are taken."""
        if not self._free:
            return None
        index = self._free.pop()
        SLOT.pack_into(self._map, index * SLOT.size, 0, 0, 0, 0.0, 0.0)
        return index

    def release(self, index: int | None) -> None:
        if index is not None and 0 <= index < self.slots and index not in self._free:
            SLOT.pack_into(self._map, index * SLOT.size, 0, 0, 0, 0.0, 0.0)
            self._free.append(index)

    def read(self, index: int) -> SlotView:
        return SlotView(*SLOT.unpack_from(self._map, index * SLOT.size))

    # -- a worker -------------------------------------------------------------------------

    def slot(self, index: int | None, threaded: bool) -> SlotWriter | None:
        if index is None or not 0 <= index < self.slots:
            return None
        return SlotWriter(self._map, index * SLOT.size, threaded)


class SlotWriter:
    """A worker's own slot. ``begin``/``end`` bracket each request."""

    __slots__ = ("_busy", "_last", "_lock", "_map", "_offset", "_requests", "_started")

    def __init__(self, shared: mmap.mmap, offset: int, threaded: bool) -> None:
        self._map = shared
        self._offset = offset
        self._lock = threading.Lock() if threaded else None
        self._busy = 0
        self._requests = 0
        self._last = 0.0
        self._started = time.time()
        self._write()

    def _write(self) -> None:
        SLOT.pack_into(self._map, self._offset, os.getpid(), min(self._busy, 255), self._requests, self._last, self._started)

    def begin(self) -> None:
        if self._lock is not None:
            with self._lock:
                self._begin()
        else:
            self._begin()

    def _begin(self) -> None:
        self._busy += 1
        self._requests += 1
        self._last = time.time()
        self._write()

    def end(self) -> None:
        if self._lock is not None:
            with self._lock:
                self._busy -= 1
                self._write()
        else:
            self._busy -= 1
            self._write()
