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
    SpawnWorker(age) take it (nothing is left for the next clone to inherit); its age, heartbeat
                     file and context; clone -> the worker: its pid and listeners; then gunicorn's run
                     the preloader forgets its copy

Each object serves exactly one worker: a built object is never reused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from gunicorn_smartspawn import _linux
from gunicorn_smartspawn.wire import COMMANDS, FrameDecoder, SpawnWorker, encode
from gunicorn_smartspawn.worker.runtime import SpawnContext

#: Seconds without a message after which an idle preloader builds its next worker object: after a
#: burst of spawns (a boot), the new workers start first.
IDLE_BUILD: Final = 0.1


class NextWorker:
    """Holds at most one built worker object; :meth:`take` hands it over (or builds one now).

    A constructor that raises here is not the preloader's failure: from then on each worker builds
    its own object again (:meth:`make`), where the error is a failed boot, as it always was."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._ready: Any = None
        self._failed = False

    @property
    def ready(self) -> bool:
        return self._ready is not None or self._failed

    def build(self) -> None:
        """Build the next worker object now, unless one waits already."""
        if self._ready is None and not self._failed:
            self._ready = self._guarded()
            rehearse()

    def take(self) -> Any:
        """The object for the spawn in hand: the one built ahead, else a new one; None if it cannot be
        built here (the new worker then calls :meth:`make`)."""
        worker, self._ready = self._ready, None
        return worker if worker is not None or self._failed else self._guarded()

    def make(self) -> Any:
        """A worker object, built in the calling process; what the constructor raises propagates."""
        worker = self._build()
        # gunicorn's constructor made a heartbeat file (created and unlinked); the worker uses the
        # master's instead (Worker.use_heartbeat_fd), so neither process keeps this one open
        worker.tmp.close()
        return worker

    def _guarded(self) -> Any:
        try:
            return self.make()
        except Exception:
            self._failed = True
            return None


def assign(worker: Any, request: SpawnWorker, heartbeat_fd: int, app_name: str, scoreboard: Any) -> None:
    """Make a built object the requested worker (its age, heartbeat file, context); the preloader does
    it before the clone, where this path is warm. The new worker then sets its pid and listeners."""
    worker.age = request.age
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


def assigned(worker: Any, request: SpawnWorker, heartbeat_fd: int, app_name: str, scoreboard: Any) -> Any:
    """:func:`assign` in the preloader: ``worker``, or None (the new worker then builds its own, where an
    error is a failed boot, not the preloader's) when there is none or assigning it fails."""
    if worker is None:
        return None
    try:
        assign(worker, request, heartbeat_fd, app_name, scoreboard)
    except Exception:
        return None
    return worker


def forget(worker: Any) -> None:
    """In the preloader, after the clone: its copy of the object is garbage. Its references go now, so
    that a cycle through it (a request model's bound callback) is not kept for ever by ``gc.freeze()``
    (the preloader's collector does not run)."""
    if worker is not None:
        vars(worker).clear()


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
