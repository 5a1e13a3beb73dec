"""The worker class users name with ``-k smartspawn.Worker``.

It wraps gunicorn's own workers: the sync worker, or the threaded worker when
``--threads`` is above 1. The wrapper adds only what smart spawning needs:
the Passenger events at start and stop, and closing the master's private
descriptors in a direct worker. The request path is gunicorn's, untouched.
"""

from __future__ import annotations

import atexit

# gunicorn's worker seeds random with a string, which imports hashlib; a worker
# that has switched to its app's own user may no longer be allowed to read it
import hashlib  # noqa: F401
import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, NoReturn

from gunicorn.errors import AppImportError
from gunicorn.workers.base import Worker as _GunicornWorker
from gunicorn.workers.gthread import ThreadWorker as _GunicornThreadWorker
from gunicorn.workers.sync import SyncWorker as _GunicornSyncWorker

from gunicorn import util

from gunicorn_smartspawn import events
from gunicorn_smartspawn.errors import APP_LOAD_ERROR, WORKER_BOOT_ERROR, HookNotInstalled

HOOK_HELP = (
    "-k smartspawn.Worker needs gunicorn-smartspawn's startup hook, which did not run "
    "(the file gunicorn_smartspawn.pth was not processed: a copy on PYTHONPATH instead of "
    "an install, or python -S). Install the package into the environment that runs "
    "gunicorn: pip install gunicorn-smartspawn (from a checkout: pip install .)"
)


@dataclass
class SpawnContext:
    """What the master knows about the next worker it builds (set just before)."""

    app_name: str = "default"
    forked: bool = False
    private_fds: tuple[int, ...] = ()
    scoreboard: Any = None
    slot: int | None = None


#: Set by the master right before it constructs a worker object.
spawn_context = SpawnContext()


class Worker(_GunicornWorker):  # type: ignore[misc]
    """gunicorn-smartspawn's worker: gunicorn's sync or threaded worker, spawned smartly."""

    app_name: str
    forked: bool
    private_fds: tuple[int, ...]
    first_heartbeat_mark: float

    def __new__(cls, age: int, ppid: int, sockets: Any, app: Any, timeout: float, cfg: Any, log: Any) -> Any:
        if cls is Worker:
            cls = ThreadedWorker if cfg.threads > 1 else SyncWorker
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app_name = spawn_context.app_name
        self.forked = spawn_context.forked
        self.private_fds = spawn_context.private_fds
        self.scoreboard_index = spawn_context.slot
        self._scoreboard = spawn_context.scoreboard
        self._score: Any = None
        # WorkerTmp.notify() writes a monotonic clock reading over the file's
        # creation time: any change from this mark is the first heartbeat.
        self.first_heartbeat_mark = self.tmp.last_update()

    @classmethod
    def setup(cls) -> None:
        from gunicorn_smartspawn import plugin

        if not plugin.installed():
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


class InheritedTmp:
    """A worker's heartbeat file created by the master and passed over the channel.

    Same interface and clock as gunicorn's ``WorkerTmp``: the master reads the
    change of the file's mtime through its own descriptor of the same file.
    """

    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(fd, "w+b", 0)

    def notify(self) -> None:
        now = time.monotonic()
        os.utime(self._file.fileno(), (now, now))

    def last_update(self) -> float:
        return os.fstat(self._file.fileno()).st_mtime

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()


def run_worker_process(server: Any, worker: Any) -> int:
    """Run ``worker`` in the new process it already is; return its exit code.

    The same sequence as gunicorn's own ``spawn_worker`` child, for both
    spawning methods; a forked worker fires ``starting_worker_process``
    first (its app is already imported), a direct one after its import.
    """
    cfg, log = worker.cfg, worker.log
    code = 0
    try:
        util._setproctitle(f"worker [{worker.app_name}]")
        log.info("Booting worker with pid: %s", worker.pid)
        if worker.forked:
            events.fire(events.STARTING_WORKER_PROCESS, True)
        cfg.post_fork(server, worker)
        worker.init_process()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except AppImportError as exc:
        log.debug("Exception while loading the application", exc_info=True)
        print(str(exc), file=sys.stderr, flush=True)
        code = APP_LOAD_ERROR
    except BaseException as exc:
        log.exception("Exception in worker process")
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        code = 255 if worker.booted else WORKER_BOOT_ERROR
    finally:
        log.info("Worker exiting (pid: %s)", worker.pid)
        try:
            worker.tmp.close()
            cfg.worker_exit(server, worker)
        except Exception:
            log.warning("Exception during worker exit:\n%s", traceback.format_exc())
    return code


def leave(code: int) -> NoReturn:
    """Exit a forked process: run atexit callbacks, flush, ``_exit``."""
    try:
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(code & 0xFF)
