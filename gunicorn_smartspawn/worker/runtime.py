"""A worker process's life around gunicorn's worker object: its context, its run, its exit.

The master (direct spawning) or a preloader (smart spawning) builds the
worker object, attaches a :class:`SpawnContext`, and calls
:func:`run_worker_process` in the new process, which leaves through
:func:`leave`.
"""

from __future__ import annotations

import atexit
import os
import pwd
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, NoReturn

from gunicorn import util
from gunicorn.errors import AppImportError

from gunicorn_smartspawn import events
from gunicorn_smartspawn.errors import APP_LOAD_ERROR, WORKER_BOOT_ERROR


@dataclass(frozen=True)
class SpawnContext:
    """What smart spawning adds to a gunicorn worker object, attached after construction."""

    app_name: str = "default"
    forked: bool = False
    #: the master's descriptors a direct worker closes first
    private_fds: tuple[int, ...] = ()
    scoreboard: Any = None
    slot: int | None = None
    #: a spare (``spare_workers``): park before the request loop until the master's SIGCONT
    spare: bool = False


class InheritedTmp:
    """A worker's heartbeat file created by the master and passed over the channel.

    Same interface and clock as gunicorn's ``WorkerTmp``: the master reads the
    change of the file's mtime through its own descriptor of the same file.
    It holds the descriptor itself: a file object around it only added its
    creation to every spawn.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def notify(self) -> None:
        now = time.monotonic()
        os.utime(self.fileno(), (now, now))

    def last_update(self) -> float:
        return os.fstat(self.fileno()).st_mtime

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("the heartbeat file is closed")  # as a closed file object says
        return self._fd

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


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
        if getattr(worker, "promote_fds", None) is not None and code == 0:
            log.info("app=%s worker pid=%s leaves its request loop to become the next preloader (refork)",
                     worker.app_name, worker.pid)
        else:
            log.info("Worker exiting (pid: %s)", worker.pid)
        try:
            worker.tmp.close()
            cfg.worker_exit(server, worker)
        except Exception:
            log.warning("Exception during worker exit:\n%s", traceback.format_exc())
    return code


def drop_root(cfg: Any) -> bool:
    """As root, become ``cfg``'s user and group (``--user``/``--group``, or an app's
    ``user``/``group``) before any app code runs; True when it did.

    Done by a preloader before it imports the app, and by a direct worker
    before gunicorn's own ``set_owner_process``, which then has nothing left
    to do (and which, with ``--initgroups``, would leave the group root's).
    """
    if os.geteuid() != 0 or (cfg.uid, cfg.gid) == (os.geteuid(), os.getegid()):
        return False
    become_user(cfg.uid, cfg.gid)
    if cfg.initgroups:
        cfg.set("initgroups", False)  # done; gunicorn would call initgroups() again, which only root may
    return True


def become_user(uid: int, gid: int) -> None:
    """Give up root for good: group ``gid``, the user's supplementary groups, then user ``uid``.

    Unlike gunicorn's ``set_owner_process``, the supplementary groups are
    always those of the user (``initgroups``), never root's; a uid without a
    name in the user database gets none.
    """
    if uid != 0:
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            os.setgroups([])
        else:
            os.initgroups(name, gid)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise RuntimeError(f"could not become uid={uid} gid={gid}")


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
