"""Refork: a worker that served traffic becomes its app's next preloader (``refork_after``).

::

    master   binds the abstract socket  \\0smartspawn-mold-<master pid>-<worker pid>,
             then sends SIGURG to the worker (a registered child of the app)
    worker   finishes the request in hand and leaves its request loop (worker/classes.py);
             gunicorn's worker_exit runs, the heartbeat file is closed
    here     drop what made it a worker, connect to that socket, send PreloaderReady, and
             from then on serve spawn requests exactly as a preloader does (process.py)

Until it connects, the process holds no channel: a worker never does. The
master accepts one peer on that socket, the promoted pid (``SO_PEERCRED``),
and from then on believes it no more than any preloader. What real traffic
built in this process (lazily built objects, caches, modules imported by a
request) is frozen (``gc.freeze()``) and shared copy-on-write by every
worker forked from it. Every way out is ``os._exit`` (``leave``).
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, NoReturn

from gunicorn import util

from gunicorn_smartspawn import _linux, forksafety
from gunicorn_smartspawn.errors import PRELOADER_EXIT_OK
from gunicorn_smartspawn.wire import COMMANDS, Channel, PreloaderReady
from gunicorn_smartspawn.worker.runtime import leave

if TYPE_CHECKING:
    from gunicorn_smartspawn.preloader.process import Preloader

#: Seconds a promoted worker tries to reach the master before it gives up and exits.
CONNECT_DEADLINE = 5.0
#: Seconds it waits for its request threads (gthread) to end before it forks anyway (double fork).
THREADS_DEADLINE = 2.0


def address(master_pid: int, worker_pid: int) -> str:
    """The abstract unix address the master listens on for promoted worker ``worker_pid``."""
    return f"\0smartspawn-mold-{master_pid}-{worker_pid}"


def become_preloader(preloader: Preloader, worker: Any, signals: dict[str, Any]) -> NoReturn:
    """Turn the promoted ``worker`` (this process) into the app's preloader; never returns.

    ``signals``: the preloader's dispositions by signal name (ignored, TERM, USR1)."""
    started = time.perf_counter()
    log = preloader.log
    _linux.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != preloader.master_pid:
        leave(PRELOADER_EXIT_OK)  # the master is gone
    _leave_worker(worker, signals)
    preloader.listeners = _listeners(preloader.listeners, worker)
    sock = _connect(address(preloader.master_pid, os.getpid()))
    if sock is None:
        log.warning("app=%s pid=%d could not reach the master to become the next preloader; exiting",
                    preloader.app_name, os.getpid())
        leave(PRELOADER_EXIT_OK)
    preloader.channel = Channel(sock, COMMANDS, blocking=True)
    preloader.generation += 1
    util._setproctitle(f"preloader [{preloader.app_name}]")
    preloader.fork_findings = forksafety.inspect_preloader(
        log, preloader.app_name, preloader.generation, preloader.cfg,
        exclude_fds=[preloader.channel.fileno(), *(lnr.fileno() for lnr in preloader.listeners)],
    )
    if preloader.gc_freeze:
        gc.disable()
        gc.collect()
        gc.freeze()
    how = preloader._choose_fork()
    seconds = time.perf_counter() - started
    log.info("app=%s preloader pid=%d promoted from a worker in %.1fms, workers by %s",
             preloader.app_name, os.getpid(), seconds * 1000, how)
    # no code fingerprint: the same files as the preloader it was forked from, whose
    # fingerprint the master keeps for the next restart to compare with
    preloader._send(PreloaderReady(pid=os.getpid(), load_seconds=round(seconds, 6)))
    preloader._serve()
    leave(PRELOADER_EXIT_OK)


def _leave_worker(worker: Any, signals: dict[str, Any]) -> None:
    """What made this process a worker: its signal handlers, wake-up pipe and request threads."""
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass
    for name, disposition in signals.items():
        signal.signal(getattr(signal, name), disposition)
    signal.signal(signal.SIGURG, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in getattr(worker, "PIPE", ()):
        try:
            os.close(fd)
        except OSError:
            pass
    pool = getattr(worker, "tpool", None)  # gthread: its threads would force the double fork
    if pool is not None:
        pool.shutdown(wait=False)
    deadline = time.monotonic() + THREADS_DEADLINE
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))


def _listeners(originals: list[Any], worker: Any) -> list[Any]:
    """The app's listeners for the workers to come: the preloader's own objects where they are still
    open, remade from the copies the worker took where its request model closed them (gthread); the
    worker's own listeners (``--reuse-port``) are closed, so that no connection waits on them."""
    copies = list(worker.promote_fds or [])
    sockets = list(worker.sockets)
    kept: list[Any] = []
    for lnr in originals:
        if lnr in sockets and _closed(lnr) and copies:
            fd = copies[sockets.index(lnr)]
            copies[sockets.index(lnr)] = -1
            lnr = type(lnr)(lnr.cfg_addr, worker.cfg, worker.log, fd=fd)
        kept.append(lnr)
    for own in sockets:
        if all(own is not lnr for lnr in originals) and not _closed(own):
            own.close()
    for fd in copies:
        if fd >= 0:
            os.close(fd)
    worker.promote_fds = []
    return kept


def _closed(listener: Any) -> bool:
    """gunicorn's listener objects drop their socket when closed (``sock`` None)."""
    if getattr(listener, "sock", True) is None:
        return True
    try:
        return bool(listener.fileno() < 0)
    except (AttributeError, OSError, ValueError):
        return True


def _connect(where: str) -> socket.socket | None:
    deadline = time.monotonic() + CONNECT_DEADLINE
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.set_inheritable(False)
        try:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock.connect(where)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)  # the master binds before it signals: only a race with its loop lands here
