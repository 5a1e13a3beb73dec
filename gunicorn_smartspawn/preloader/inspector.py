"""The inspector: a child of the preloader that logs the fork-safety report while the
boot's workers are forked.

::

    preloader   app imported; forksafety.inspect_before_fork(): what workers act on;
                gc.freeze(); malloc_trim()
      --fork--> inspector   gc.unfreeze() (its own copy), the fork-safety report (a heap
                            walk) -> the log, at nice 10; os._exit
    preloader   sends PreloaderReady, forks the waiting workers (process.py, boot.py);
                reaps the inspector once its pipe reaches EOF

Why a child: the report reaches every object of the heap (``gc.get_objects()``), and
each object reached has its reference count written. Done by the preloader once it
has forked, that would unshare the pages those objects sit on from its workers; done
here, only the inspector's copies are written, and they go with it. Done by the
preloader before its first fork, it delayed the first worker by the walk (60-90 ms on
the benchmark app). ``gc.get_objects()`` misses frozen objects, so the inspector
unfreezes its own copy (a list splice, no object touched in the preloader).

The inspector is forked right before the boot's first worker: a preloader with native
thread pools (OpenBLAS) would make a throwaway fork there anyway (process.py,
``_choose_fork``), and the inspector's fork stops them the same way. The preloader kills
an inspector still running after :data:`INSPECTOR_DEADLINE` seconds.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import time
from collections.abc import Callable
from typing import NoReturn

from gunicorn import util

from gunicorn_smartspawn import _linux
from gunicorn_smartspawn.preloader.fork import reap

#: Seconds after which an inspector still running is killed.
INSPECTOR_DEADLINE = 60.0
#: The kernel's calls, bound when the master imported this module (gevent: see process.py).
_fork, _select = os.fork, select.select


class Inspector:
    """The preloader's handle on its inspector: the read end of its pipe and its pid."""

    def __init__(self, pid: int, read_end: int) -> None:
        self.pid = pid
        self._fd = read_end
        self.deadline = time.monotonic() + INSPECTOR_DEADLINE

    @classmethod
    def start(cls, title: str, report: Callable[[], None], close: Callable[[], None]) -> Inspector | None:
        """Fork the inspector; None if that failed (the report is then not logged). ``close``
        drops, in the child, what it must not hold."""
        try:
            read_end, write_end = os.pipe()
        except OSError:
            return None
        parent = os.getpid()
        try:
            pid = _fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            return None
        if pid == 0:
            os.close(read_end)
            _inspect(parent, title, report, close)  # (the pipe's write end stays open until it leaves)
        os.close(write_end)
        return cls(pid, read_end)

    def fileno(self) -> int:
        return self._fd

    def poll(self) -> bool:
        """Called when its pipe is readable, or at :attr:`deadline`: True once it is reaped."""
        late = time.monotonic() >= self.deadline
        if self._read(0) != b"" and not late:
            return False
        self.stop(kill=late)
        return True

    def stop(self, kill: bool = False) -> None:
        """Reap the inspector (killed first with ``kill``) and close the pipe."""
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        reap(self.pid, time.monotonic() + 5.0)
        self.close()

    def close(self) -> None:
        """Close the pipe only (a worker forked meanwhile drops its copy)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _read(self, timeout: float) -> bytes | None:
        """What the pipe holds within ``timeout`` seconds: b"" at EOF (the inspector is gone or
        going), None if nothing came."""
        try:
            ready, _, _ = _select([self._fd], [], [], timeout)
        except InterruptedError:
            return None
        return os.read(self._fd, 64) if ready else None


def _inspect(parent: int, title: str, report: Callable[[], None], close: Callable[[], None]) -> NoReturn:
    """The inspector's life; its pipe's write end closes when it leaves."""
    code = 0
    try:
        _linux.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(0)
        util._setproctitle(title)
        close()
        os.nice(10)  # the workers forked meanwhile come first
        gc.disable()  # no collection here, so no finalizer of the app's objects runs in this process
        gc.unfreeze()  # this process's copy only: the heap walk sees the frozen objects again
        report()
    except BaseException:
        code = 1
    finally:
        os._exit(code)
