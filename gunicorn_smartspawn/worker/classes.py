"""The worker classes users name with ``-k smartspawn.Worker``.

It wraps gunicorn's own workers: the sync worker, or the threaded worker when
``--threads`` is above 1. The wrapper adds only what smart spawning needs:
the Passenger events at start and stop, and closing the master's private
descriptors in a direct worker. The request path is gunicorn's, untouched.
"""

from __future__ import annotations

# gunicorn's worker seeds random with a string, which imports hashlib; a worker
# that has switched to its app's own user may no longer be allowed to read it
import hashlib  # noqa: F401
import os
from typing import Any

from gunicorn.errors import AppImportError
from gunicorn.workers.base import Worker as _GunicornWorker
from gunicorn.workers.gthread import ThreadWorker as _GunicornThreadWorker
from gunicorn.workers.sync import SyncWorker as _GunicornSyncWorker

from gunicorn_smartspawn import events
from gunicorn_smartspawn.errors import HookNotInstalled
from gunicorn_smartspawn.hook import state as hook_state
from gunicorn_smartspawn.worker.runtime import InheritedTmp, SpawnContext, drop_root

HOOK_HELP = (
    "-k smartspawn.Worker needs gunicorn-smartspawn's startup hook, which did not run "
    "(the file gunicorn_smartspawn.pth was not processed: a copy on PYTHONPATH instead of "
    "an install, or python -S). Install the package into the environment that runs "
    "gunicorn: pip install gunicorn-smartspawn (from a checkout: pip install .)"
)


class Worker(_GunicornWorker):  # type: ignore[misc]
    """gunicorn-smartspawn's worker: gunicorn's sync or threaded worker, spawned smartly."""

    app_name: str
    forked: bool
    private_fds: tuple[int, ...]
    first_heartbeat_mark: float
    tmp: Any  # gunicorn's WorkerTmp, or InheritedTmp in a forked worker

    def __new__(cls, age: int, ppid: int, sockets: Any, app: Any, timeout: float, cfg: Any, log: Any) -> Any:
        if cls is Worker:
            cls = ThreadedWorker if cfg.threads > 1 else SyncWorker
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attach(SpawnContext())

    def attach(self, context: SpawnContext) -> None:
        """Give the worker what the master (or its preloader) knows about it.

        Called right after construction: gunicorn fixes ``Worker.__init__``'s
        signature, so what smart spawning adds travels here instead.
        """
        self.app_name = context.app_name
        self.forked = context.forked
        self.private_fds = context.private_fds
        self.scoreboard_index = context.slot
        self._scoreboard = context.scoreboard
        self._score: Any = None
        # WorkerTmp.notify() writes a monotonic clock reading over the file's
        # creation time: any change from this mark is the first heartbeat.
        self.first_heartbeat_mark = self.tmp.last_update()

    def use_heartbeat_fd(self, fd: int) -> None:
        """In a forked worker: heartbeat through the file the master made (passed over the channel)."""
        self.tmp.close()
        self.tmp = InheritedTmp(fd)

    @classmethod
    def setup(cls) -> None:
        if not hook_state.installed():
            raise HookNotInstalled(HOOK_HELP)

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        if cls is Worker:
            (ThreadedWorker if cfg.threads > 1 else SyncWorker).check_config(cfg, log)
            return
        parent = super()
        if hasattr(parent, "check_config"):
            parent.check_config(cfg, log)

    def has_heartbeat(self) -> bool:
        """Has the worker entered its request loop (master side)?"""
        try:
            return bool(self.tmp.last_update() != self.first_heartbeat_mark)
        except (OSError, ValueError):
            return False

    def init_process(self) -> None:
        for fd in self.private_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.private_fds = ()
        if self._scoreboard is not None:
            self._score = self._scoreboard.slot(self.scoreboard_index, threaded=self.cfg.threads > 1)
        if not self.forked:
            drop_root(self.cfg)  # a forked worker's preloader did, before it imported the app
        super().init_process()

    def load_wsgi(self) -> None:
        try:
            super().load_wsgi()
        except AppImportError:
            raise
        except Exception as exc:
            # gunicorn calls any other error a boot failure (exit 3); it is the
            # app that failed to load: exit 4 like a failed preloader
            self.log.exception("app=%s failed to load in worker pid=%s", self.app_name, os.getpid())
            raise AppImportError(f"{type(exc).__name__}: {exc}") from exc
        if not self.forked:
            # direct spawning: the app registered its callbacks while this worker imported it
            events.fire(events.STARTING_WORKER_PROCESS, False)

    def handle_request(self, *args: Any, **kwargs: Any) -> Any:
        score = self._score
        if score is None:
            return super().handle_request(*args, **kwargs)
        score.begin()
        try:
            return super().handle_request(*args, **kwargs)
        finally:
            score.end()

    def run(self) -> None:
        try:
            super().run()
        finally:
            try:
                events.fire(events.STOPPING_WORKER_PROCESS)
            except Exception:
                self.log.exception("app=%s stopping_worker_process callback failed", self.app_name)


class SyncWorker(Worker, _GunicornSyncWorker):  # type: ignore[misc]
    """gunicorn's sync worker under smart spawning."""


class ThreadedWorker(Worker, _GunicornThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker under smart spawning (``--threads`` > 1)."""
