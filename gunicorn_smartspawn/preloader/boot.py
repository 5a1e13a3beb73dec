"""What a preloader does differently at boot, when workers already wait for it (process.py).

::

    import done -> what workers act on (forksafety.inspect_before_fork), gc.freeze(), malloc_trim(),
                   the inspector forked (inspector.py), PreloaderReady sent
    first SpawnWorker of the batch -> clone; wait until that worker is in its request loop
                                      (its heartbeat file changed; at most HEAD_START seconds)
    the rest of the batch          -> clone each

The head start is gunicorn's own pacing: its arbiter sleeps up to 0.1 s
between two spawns. On a machine with few cores the next clones (page
tables copied in the preloader) and the next workers' start would otherwise
compete with the first worker for the CPU until it answers.
"""

from __future__ import annotations

import os
import time

#: Seconds the preloader lets the boot's first worker reach its request loop before it forks the next.
HEAD_START = 0.1
#: The kernel's sleep, bound when the master imported this module (gevent: see process.py).
_sleep = time.sleep


def heartbeat(fd: int) -> float | None:
    """The heartbeat file's mtime, which a worker's first ``notify()`` changes; None if unreadable."""
    try:
        return os.fstat(fd).st_mtime
    except OSError:
        return None


def head_start(fd: int, mark: float | None, seconds: float = HEAD_START) -> None:
    """Wait until the worker whose heartbeat file is ``fd`` has entered its request loop (the
    file's mtime is no longer ``mark``), at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while mark is not None and heartbeat(fd) == mark and time.monotonic() < deadline:
        _sleep(0.001)
