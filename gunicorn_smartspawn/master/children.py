"""One registry of the master's children: every worker and preloader, one record per pid.

The master asks it "is this pid mine, and what is it?" before it reaps,
signals or reports anything. gunicorn's own ``WORKERS`` dict is a view of
its workers (:class:`WorkersView`), so gunicorn's base-class code and the
plugin read and write the same table. Spawn requests still on their way to
a preloader wait here too, keyed by the app and the worker's age, with the
worker object the master built for them.

Pure bookkeeping: no system calls, tested without forking. What each app
*should* have lives in its :class:`~gunicorn_smartspawn.master.pool.AppPool`;
this table holds what *is* (objects, descriptors) and where each pid belongs.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["worker", "preloader", "spare"]  # a spare: parked, not in WORKERS until released


@dataclass
class Child:
    """A live child of the master."""

    pid: int
    role: Role
    app: str
    generation: int
    born: float  # monotonic
    worker: Any = None  # gunicorn's worker object (role "worker")
    channel: Any = None  # the master's end of the channel (role "preloader"), None once closed


@dataclass
class PendingSpawn:
    """A worker the master asked a preloader for, not reported yet."""

    app: str
    age: int
    preloader_pid: int
    worker: Any
    spare: bool = False


class Children:
    """Every worker and preloader of this master, and the spawn requests in flight."""

    def __init__(self) -> None:
        self._table: dict[int, Child] = {}
        self._pending: dict[tuple[str, int], PendingSpawn] = {}
        self.workers = WorkersView(self)

    # -- records ---------------------------------------------------------------------------

    def add(self, child: Child) -> Child:
        if child.pid in self._table:
            raise ValueError(f"pid {child.pid} is already registered as {self._table[child.pid].role}")
        self._table[child.pid] = child
        return child

    def get(self, pid: int) -> Child | None:
        return self._table.get(pid)

    def remove(self, pid: int) -> Child | None:
        return self._table.pop(pid, None)

    def __contains__(self, pid: object) -> bool:
        return pid in self._table

    def __len__(self) -> int:
        return len(self._table)

    def of_role(self, role: Role, app: str | None = None) -> list[Child]:
        return [c for c in self._table.values() if c.role == role and (app is None or c.app == app)]

    def preloader(self, pid: int) -> Child | None:
        child = self._table.get(pid)
        return child if child is not None and child.role == "preloader" else None

    def pids(self) -> set[int]:
        return set(self._table)

    # -- spawn requests ------------------------------------------------------------------------

    def expect(self, app: str, age: int, preloader_pid: int, worker: Any, spare: bool = False) -> None:
        self._pending[(app, age)] = PendingSpawn(app, age, preloader_pid, worker, spare)

    def claim(self, app: str, age: int, preloader_pid: int) -> PendingSpawn | None:
        """The request ``age`` of ``app`` made to ``preloader_pid``, removed; None if there is none."""
        pending = self._pending.get((app, age))
        if pending is None or pending.preloader_pid != preloader_pid:
            return None
        return self._pending.pop((app, age))

    def drop_pending(self, app: str, ages: list[int]) -> list[Any]:
        """Forget requests that will never be answered; their worker objects, to discard."""
        dropped = [self._pending.pop((app, age), None) for age in ages]
        return [p.worker for p in dropped if p is not None]

    def pending_workers(self) -> list[Any]:
        return [p.worker for p in self._pending.values()]

    # -- in a fresh child of the master ------------------------------------------------------------

    def forget_other_apps(self, app: str) -> None:
        """Drop the worker records and spawn requests of every app but ``app`` (and the
        worker objects, with their app's configuration, that they hold)."""
        for pid in [pid for pid, c in self._table.items() if c.role in ("worker", "spare") and c.app != app]:
            del self._table[pid]
        for key in [key for key in self._pending if key[0] != app]:
            del self._pending[key]


class WorkersView(MutableMapping[int, Any]):
    """gunicorn's ``WORKERS`` (pid -> worker object), backed by the registry."""

    def __init__(self, children: Children) -> None:
        self._children = children

    def _records(self) -> dict[int, Child]:
        return {pid: c for pid, c in self._children._table.items() if c.role == "worker"}

    def __getitem__(self, pid: int) -> Any:
        child = self._children.get(pid)
        if child is None or child.role != "worker":
            raise KeyError(pid)
        return child.worker

    def __setitem__(self, pid: int, worker: Any) -> None:
        raise TypeError("workers are registered through Children.add, with their app")

    def __delitem__(self, pid: int) -> None:
        if pid not in self:
            raise KeyError(pid)
        self._children.remove(pid)

    def __contains__(self, pid: object) -> bool:
        child = self._children.get(pid) if isinstance(pid, int) else None
        return child is not None and child.role == "worker"

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._records()))

    def __len__(self) -> int:
        return len(self._records())
