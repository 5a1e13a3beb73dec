"""How a preloader creates a worker that the master owns: one clone, or a double fork.

::

    clone(CLONE_PARENT)   preloader --clone--> worker            (born a child of the master)
    double fork           preloader --fork--> intermediate --fork--> worker
                          the intermediate writes the worker's pid on a pipe and _exits;
                          the worker is re-parented to the master (a child subreaper)

The clone copies the preloader's page tables once and is used while the
preloader runs a single OS thread; the double fork works everywhere. The
intermediate must leave at once, so that the worker never has a parent
other than the master for long: it ``_exit``s without running anything of
Python's shutdown, and the preloader waits for it at most
:data:`INTERMEDIATE_DEADLINE` seconds (an ``os.register_at_fork`` hook of an
app that hangs there must not hang the preloader), then kills it.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import time
from collections.abc import Callable
from typing import NoReturn

from gunicorn_smartspawn import _linux
from gunicorn_smartspawn.errors import INTERMEDIATE_FORK_ERROR, WORKER_BOOT_ERROR

_PID = struct.Struct("!q")
#: Seconds the preloader waits for an intermediate to report the worker's pid and exit.
INTERMEDIATE_DEADLINE = 10.0
#: The kernel's calls, bound when the master imported this module: gevent, patched into a
#: preloader before its app's import, replaces them with calls that run on its hub.
_fork, _waitpid, _select, _sleep = os.fork, os.waitpid, select.select, time.sleep


class SpawnError(OSError):
    """The worker could not be created; the message says why."""


class Forker:
    """Creates workers as children of the master; ``use_clone`` False forces the double fork."""

    def __init__(self, use_clone: bool) -> None:
        self.clone = _linux.CloneParent() if use_clone else None

    def method(self) -> str:
        """What the next spawn will use, for the log."""
        if self.clone is None:
            return "double fork (smart_fork=double-fork)"
        if self.clone.usable():
            return "clone(CLONE_PARENT)"
        return f"double fork ({_linux.os_thread_count()} OS threads in the preloader)"

    def spawn(self, child: Callable[[], NoReturn]) -> int:
        """Run ``child`` in a new process that is the master's child; its pid, or :class:`SpawnError`."""
        if self.clone is not None and self.clone.usable():
            try:
                pid = self.clone()
            except OSError as exc:
                raise SpawnError(exc.errno, str(exc)) from None
            if pid == 0:
                _run_child(child)
            return pid
        return self._double_fork(child)

    def _double_fork(self, child: Callable[[], NoReturn]) -> int:
        read_end, write_end = os.pipe()
        try:
            intermediate = _fork()
        except OSError as exc:
            os.close(read_end)
            os.close(write_end)
            raise SpawnError(exc.errno, f"fork failed: {exc.strerror or exc}") from None
        if intermediate == 0:
            os.close(read_end)
            _intermediate(child, write_end)
        os.close(write_end)
        deadline = time.monotonic() + INTERMEDIATE_DEADLINE
        try:
            data = _read_pid(read_end, deadline)
        finally:
            os.close(read_end)
        reap(intermediate, deadline)
        if len(data) != _PID.size:
            raise SpawnError(0, "the intermediate process did not report the worker's pid in time")
        (pid,) = _PID.unpack(data)
        return int(pid)


def _run_child(child: Callable[[], NoReturn]) -> NoReturn:
    """The new worker never returns into the preloader's code, whatever ``child`` does."""
    try:
        child()
    finally:
        os._exit(WORKER_BOOT_ERROR)


def _intermediate(child: Callable[[], NoReturn], write_end: int) -> NoReturn:
    try:
        pid = _fork()
    except OSError:
        os._exit(INTERMEDIATE_FORK_ERROR)
    if pid == 0:
        os.close(write_end)
        _run_child(child)
    try:
        os.write(write_end, _PID.pack(pid))
    finally:
        os._exit(0)  # no atexit, no flush: the worker must be re-parented now


def _read_pid(fd: int, deadline: float) -> bytes:
    data = b""
    while len(data) < _PID.size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            ready, _, _ = _select([fd], [], [], remaining)
        except InterruptedError:
            continue
        if not ready:
            break
        chunk = os.read(fd, _PID.size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def reap(pid: int, deadline: float) -> None:
    """Wait for the intermediate until ``deadline``, then kill it; tolerate SIGCHLD set to SIG_IGN."""
    if not _wait_exit(pid, deadline):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        _waitpid(pid, 0)
    except ChildProcessError:
        pass  # already reaped: an app that set SIGCHLD to SIG_IGN makes the kernel reap


def _wait_exit(pid: int, deadline: float) -> bool:
    """True once ``pid`` has exited (not reaped), False at ``deadline``."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = -1
    try:
        while True:
            remaining = deadline - time.monotonic()
            if pidfd >= 0:
                try:
                    ready, _, _ = _select([pidfd], [], [], max(0.0, remaining))
                except InterruptedError:
                    continue
                return bool(ready)
            stat = _linux.proc_stat(pid)
            if stat is None or stat.state == "Z":
                return True
            if remaining <= 0:
                return False
            _sleep(0.0005)
    finally:
        if pidfd >= 0:
            os.close(pidfd)
