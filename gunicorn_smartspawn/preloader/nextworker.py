"""The gunicorn worker object of a preloader's next spawn, built before the request for it.

gunicorn builds a worker object before its fork, in the process that forks
(``Worker.__init__`` "is called pre-fork"); a preloader used to build it in
the new worker, after the clone, where it cost the spawn about 1.5 ms: the
constructor's first run in a copy-on-write child, and a ``WorkerTmp`` file
created only to be closed again (a forked worker heartbeats through the
master's file, passed with the request). Here the preloader builds the next
one while it has nothing to do (:data:`IDLE_BUILD` after its last message)
or, when a request finds none ready, right before the clone::

    idle             build: worker_class(...) -> close its WorkerTmp (unlinked, never used);
                     rehearse the request's decoding (see :func:`rehearse`)
    SpawnWorker(age) take it (nothing is left for the next clone to inherit)
                     clone -> the worker: its age, listeners, heartbeat file, context; then gunicorn's run

Each object serves exactly one worker: a built object is never reused.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final

from gunicorn_smartspawn import _linux
from gunicorn_smartspawn.wire import COMMANDS, FrameDecoder, SpawnWorker, encode
from gunicorn_smartspawn.worker.runtime import SpawnContext

#: Seconds without a message after which an idle preloader builds its next worker object: after a
#: burst of spawns (a boot), the new workers start first.
IDLE_BUILD: Final = 0.1


class NextWorker:
    """Holds at most one built worker object; :meth:`take` hands it over (or builds one now)."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._ready: Any = None

    @property
    def ready(self) -> bool:
        return self._ready is not None

    def build(self) -> None:
        """Build the next worker object now, unless one waits already."""
        if self._ready is None:
            self._ready = self._make()
            rehearse()

    def take(self) -> Any:
        """The object for the spawn in hand: the one built ahead, else a new one."""
        worker, self._ready = self._ready, None
        return worker if worker is not None else self._make()

    def drop(self) -> None:
        """Forget the object built ahead (a refork: the promoted worker builds its own)."""
        self._ready = None

    def _make(self) -> Any:
        worker = self._build()
        # gunicorn's constructor made a heartbeat file (created and unlinked); the worker uses the
        # master's instead (Worker.use_heartbeat_fd), so neither process keeps this one open
        worker.tmp.close()
        return worker


def settle(worker: Any, request: SpawnWorker, heartbeat_fd: int, sockets: list[Any], app_name: str, scoreboard: Any) -> None:
    """In the new worker: make the object built ahead this worker (its age, pid, listeners, heartbeat file, context)."""
    worker.age, worker.pid, worker.sockets = request.age, os.getpid(), sockets
    worker.use_heartbeat_fd(heartbeat_fd)  # first: attach() reads the heartbeat file
    worker.attach(
        SpawnContext(
            app_name=app_name,
            forked=True,
            scoreboard=scoreboard,
            slot=request.slot if request.slot >= 0 else None,
            spare=bool(request.spare),
        )
    )


def rehearse() -> None:
    """Go through what the preloader does between a request's arrival and the clone, without I/O:
    decode a request, count the OS threads. Each clone shares every page with the new worker again,
    so the first request after it copied those pages on its way (about 0.3 ms measured); rehearsed
    while idle, the copies are made before the request comes."""
    decoder = FrameDecoder(COMMANDS)
    decoder.feed(encode(SpawnWorker(age=1)), [-1])
    for _message in decoder:
        pass
    _linux.os_thread_count()
