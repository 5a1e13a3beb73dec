"""The records an :class:`~gunicorn_smartspawn.master.pool.AppPool` keeps, and its backoff.

Pure values: no system calls, no clock of their own (times are the monotonic
readings the master passes in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

SpawnMethod = Literal["smart", "direct"]

BACKOFF_FIRST: Final = 1.0
BACKOFF_MAX: Final = 60.0
#: The most workers one app asks for in one pass of the master's loop: a large
#: ``scale`` or TTIN is paced over several passes instead of one burst of forks.
SPAWN_BURST: Final = 32


def backoff_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failures in a row: 1, 2, 4, ... capped at 60."""
    if failures <= 0:
        return 0.0
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1)))


@dataclass
class PreloaderState:
    pid: int
    generation: int
    started_at: float
    last_used: float
    ready_at: float | None = None
    load_seconds: float | None = None
    stop_reason: str | None = None  # set once the master was told to stop it
    kill: bool = False  # stop it with SIGKILL, not by closing its channel (it hangs)
    failed: bool = False

    @property
    def ready(self) -> bool:
        return self.ready_at is not None and not self.failed


@dataclass
class WorkerState:
    pid: int
    age: int
    generation: int
    forked: bool
    started_at: float
    ready: bool = False
    retiring: bool = False


@dataclass
class PendingSpawn:
    age: int
    generation: int
    preloader_pid: int
    requested_at: float
    spare: bool = False  # a spare, parked before its request loop until the master releases it


@dataclass
class SpareState:
    """A worker forked ahead and parked before its request loop (``spare_workers``)."""

    pid: int
    age: int
    generation: int
    started_at: float
    parked: bool = False  # it reached its park (its one heartbeat): it may be released
    stopping: bool = False  # the master was told to discard it


def old_to_retire(pool: Any) -> list[WorkerState]:
    """Old-generation workers to retire now: as many as current-generation ones serve beyond
    what the target still needs from the old generation, oldest first."""
    current = pool.generation
    ready_current = sum(1 for w in pool.workers.values() if w.generation == current and not w.retiring and w.ready)
    old = sorted((w for w in pool.workers.values() if w.generation < current and not w.retiring), key=lambda w: w.age)
    return old[: max(0, len(old) - max(0, pool.target - ready_current))]
