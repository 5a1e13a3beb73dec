"""What a pool asks the master to do: small frozen values, carried out by the arbiter.

Commands, imperative, as on the wire: the pure pool returns them from
:meth:`~gunicorn_smartspawn.master.pool.AppPool.tick` and never acts itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StartPreloader:
    generation: int


@dataclass(frozen=True)
class SpawnFromPreloader:
    preloader_pid: int
    count: int
    spare: bool = False  # spares (``spare_workers``): parked until released, not serving


@dataclass(frozen=True)
class SpawnDirect:
    count: int


@dataclass(frozen=True)
class StopPreloader:
    pid: int
    reason: str
    kill: bool = False  # SIGKILL at once: it hangs, or nothing of it is worth waiting for


@dataclass(frozen=True)
class RetireWorker:
    pid: int
    reason: str


@dataclass(frozen=True)
class KillWorker:
    """SIGKILL a worker that never came up (no first heartbeat in time)."""

    pid: int
    reason: str


@dataclass(frozen=True)
class ReleaseSpare:
    """Wake parked spare ``pid``: it becomes a serving worker (the pool already counts it)."""

    pid: int


@dataclass(frozen=True)
class DiscardSpare:
    """Stop spare ``pid`` (SIGTERM): of a replaced generation, surplus, or never parked."""

    pid: int
    reason: str
    kill: bool = False


@dataclass(frozen=True)
class Halt:
    reason: str
    exit_status: int


Action = (
    StartPreloader | SpawnFromPreloader | SpawnDirect | StopPreloader | RetireWorker | KillWorker
    | ReleaseSpare | DiscardSpare | Halt
)
