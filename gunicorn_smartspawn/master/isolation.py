"""What a fresh child of the master drops before it becomes one app's preloader or worker.

Runs right after ``fork()`` in the child, before any application code: the
child keeps only what belongs to its own app. Closed: the master's private
descriptors (wake-up pipe, control sockets, every preloader channel), the
heartbeat files of every other worker, and the listeners of every other app.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from gunicorn_smartspawn.config.apps import AppSpec


def leave_master(master: Any, spec: AppSpec, private_fds: list[int]) -> None:
    """In a fresh child of the master: drop what belongs to the master and to other apps."""
    signal.set_wakeup_fd(-1)
    for fd in [*private_fds, *master.apps.foreign_listener_fds(spec)]:
        try:
            os.close(fd)
        except OSError:
            pass
    for worker in [*master.children.workers.values(), *master.children.pending_workers()]:
        worker.tmp.close()
