"""A worker's heartbeat, written at most once per short window, each write claiming the window ahead.

gunicorn's request loops call ``notify()`` on every turn: the sync worker once
per accepted connection (and again before each ``select``), gthread once per
turn of its poller, which turns about twice per request. Each call is a
``utimensat`` on the worker's heartbeat file (``WorkerTmp``), whose mtime the
master compares with ``timeout`` (here: ``Arbiter.murder_workers``). Under load,
that is a system call per request that tells the master nothing new.

:class:`Heartbeat` writes when its window has run out, and writes the end of
the new window (now + ``window``), not now::

    turns:      t0    t0+a  t0+b ...          t1 >= t0+window
    writes:     mtime=t0+window               mtime=t1+window
    stock:      mtime=t0, t0+a, t0+b, ...     mtime=t1

Every turn that wrote nothing falls inside the window the last write claimed,
so the master's reading is never older than stock's: a worker that stops
turning is killed no earlier than stock gunicorn kills it, and at most
``window`` later (a hundredth of ``timeout``, at most 0.1 s; the master itself
looks once a second). The first call always writes (the master's sign of a
first heartbeat, :meth:`~gunicorn_smartspawn.worker.classes.Worker.has_heartbeat`).
``timeout = 0`` (no timeout) writes on every call, as gunicorn does.
"""

from __future__ import annotations

import math
import os
import time
from typing import Final

#: The longest window a write claims, seconds.
MAX_WINDOW: Final = 0.1
#: The window as a share of ``timeout``.
SHARE: Final = 0.01


def window_for(timeout: float) -> float:
    """The window of a worker whose master kills it after ``timeout`` seconds of silence."""
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout)) or timeout <= 0:
        return 0.0
    return min(MAX_WINDOW, timeout * SHARE)


class Heartbeat:
    """When to touch the heartbeat file, and with which time (:meth:`due`); :meth:`beat` does both."""

    __slots__ = ("_until", "window")

    def __init__(self, window: float) -> None:
        self.window = max(0.0, window)
        self._until = -math.inf  # the end of the window the last write claimed

    def due(self, now: float) -> float | None:
        """The time to write at ``now`` (monotonic seconds), or None: the last write still covers ``now``."""
        if now < self._until:
            return None
        self._until = claim = now + self.window
        return claim

    def beat(self, fd: int) -> None:
        """gunicorn's ``WorkerTmp.notify()`` on the heartbeat file ``fd`` (same clock), when due."""
        claim = self.due(time.monotonic())
        if claim is not None:
            os.utime(fd, (claim, claim))

    def reset(self) -> None:
        """Write at the next call (the file was replaced, or the master wrote it)."""
        self._until = -math.inf
