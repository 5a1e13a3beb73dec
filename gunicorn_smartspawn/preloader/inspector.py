"""The inspector: a child of the preloader that works out, while the boot's workers are
forked, what only the master and the log need.

::

    preloader   app imported; forksafety.inspect_before_fork(): what workers act on; gc.freeze()
      --fork--> inspector   code fingerprint -> pipe; then, gc.unfreeze()d, the fork-safety
                            report (a heap walk) -> the log; os._exit
    preloader   forks the waiting workers and holds their WorkerSpawned; reads the fingerprint;
                sends PreloaderReady(code), then the held reports (process.py);
                reaps the inspector once its pipe reaches EOF

Why a child: the fingerprint reaches every module of the app and the report every
object of the heap (``gc.get_objects()``), and each object reached has its reference
count written. Done by the preloader once it has forked, that would unshare the pages
those objects sit on from its workers; done here, only the inspector's copies are
written, and they go with it. ``gc.get_objects()`` misses frozen objects, so the
inspector unfreezes its own copy (a list splice, no object touched in the preloader).

The inspector is forked right before the boot's first worker, so that the fingerprint
is ready when the batch of forks is done (the master then learns of the workers about
when they start to answer); a preloader with native thread pools (OpenBLAS) would
make a throwaway fork there anyway (process.py, ``_choose_fork``), and the inspector's
fork stops them the same way. The report runs at nice 10, after the fingerprint. The
preloader waits for the fingerprint at most :data:`FINGERPRINT_DEADLINE` seconds (then
computes it itself) and kills an inspector still running after
:data:`INSPECTOR_DEADLINE` seconds.
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
from gunicorn_smartspawn.preloader.code import code_fingerprint
from gunicorn_smartspawn.preloader.fork import reap

#: Seconds the preloader waits for the inspector's fingerprint before it computes one itself.
FINGERPRINT_DEADLINE = 3.0
#: Seconds after which an inspector still running is killed.
INSPECTOR_DEADLINE = 60.0
#: Bound on what the preloader reads from the pipe: one fingerprint line.
_MAX_LINE = 256
#: The kernel's calls, bound when the master imported this module (gevent: see process.py).
_fork, _select = os.fork, select.select


class Inspector:
    """The preloader's handle on its inspector: the read end of its pipe and its pid."""

    def __init__(self, pid: int, read_end: int) -> None:
        self.pid = pid
        self._fd = read_end
        self._data = b""
        self.deadline = time.monotonic() + INSPECTOR_DEADLINE

    @classmethod
    def start(
        cls, title: str, inherited: set[str], report: Callable[[], None] | None, close: Callable[[], None]
    ) -> Inspector | None:
        """Fork the inspector; None if that failed (the preloader then computes the fingerprint
        itself, and the report is not logged). ``close`` drops, in the child, what it must not hold."""
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
            _inspect(parent, title, write_end, inherited, report, close)
        os.close(write_end)
        return cls(pid, read_end)

    def fileno(self) -> int:
        return self._fd

    def fingerprint(self, timeout: float = FINGERPRINT_DEADLINE) -> str | None:
        """The code fingerprint the inspector wrote; None if none came within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._data:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._read(remaining) == b"":
                return None
        line = self._data.split(b"\n", 1)[0].decode("ascii", "replace")
        return line if line.isalnum() else None

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
        if not ready:
            return None
        chunk = os.read(self._fd, _MAX_LINE)
        self._data = (self._data + chunk)[:_MAX_LINE]
        return chunk


def _inspect(
    parent: int, title: str, write_end: int, inherited: set[str], report: Callable[[], None] | None,
    close: Callable[[], None],
) -> NoReturn:
    """The inspector's life: the fingerprint first (the preloader waits for it), then the report."""
    code = 0
    try:
        _linux.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(0)
        util._setproctitle(title)
        close()
        gc.disable()  # no collection here, so no finalizer of the app's objects runs in this process
        os.write(write_end, code_fingerprint(inherited).encode("ascii") + b"\n")
        if report is not None:
            os.nice(10)  # the workers forked meanwhile come first
            gc.unfreeze()  # this process's copy only: the heap walk sees the frozen objects again
            report()
    except BaseException:
        code = 1
    finally:
        os._exit(code)
