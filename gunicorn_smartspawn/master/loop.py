"""The master's wait: one ``select`` over signals, preloader channels and services.

Signal handlers only queue (gunicorn's) and write to a wake-up pipe
(``signal.set_wakeup_fd``); SIGCHLD only sets a flag. So reaping, pool
bookkeeping and hooks always run here, in the main loop, on every gunicorn
version. Work from other threads (gunicorn's ``gunicornc`` server) is handed
over through :meth:`Loop.call_soon_threadsafe`-style requests
(:meth:`run_from_thread`) and runs here too, so no state is ever touched
concurrently.
"""

from __future__ import annotations

import os
import queue
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from gunicorn import util

from gunicorn_smartspawn import _compat


class Service(Protocol):
    """Something the master serves from its loop (the control socket)."""

    def fds(self) -> list[int]: ...

    def ready(self, fd: int) -> None: ...

    def tick(self, now: float) -> None: ...

    def close(self) -> None: ...


class Loop:
    """The wake-up pipe, the SIGCHLD flag, and the wait that dispatches what woke it."""

    def __init__(self, arbiter: Any) -> None:
        self.arbiter = arbiter
        self.wake_r = self.wake_w = -1
        self.chld = False
        self._from_threads: queue.SimpleQueue[tuple[Callable[[], Any], threading.Event, list[Any]]] = queue.SimpleQueue()

    def init_signals(self) -> None:
        for fd in (self.wake_r, self.wake_w):
            if fd >= 0:
                os.close(fd)
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            util.set_non_blocking(fd)
            util.close_on_exec(fd)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, self._on_sigchld)

    def _on_sigchld(self, sig: int, frame: Any) -> None:
        self.chld = True  # the C-level handler already wrote to the wake-up fd

    def private_fds(self) -> list[int]:
        return [self.wake_r, self.wake_w, *_compat.self_pipe(self.arbiter)]

    def wake(self) -> None:
        try:
            os.write(self.wake_w, b"\0")
        except OSError:
            pass

    def wait(
        self,
        timeout: float,
        channels: dict[int, Any],
        services: Iterable[Service],
        on_chld: Callable[[], None],
        on_channel: Callable[[Any], None],
        watch: Iterable[int] = (),
    ) -> None:
        """Sleep until a signal, a message or ``timeout``; then reap, read and serve."""
        services = list(services)
        service_fds = {fd: s for s in services for fd in s.fds()}
        own = [self.wake_r, *_compat.self_pipe(self.arbiter)[:1]]
        readable: list[int] = []
        if not self.chld:
            try:
                readable, _, _ = select.select([*own, *channels, *service_fds, *watch], [], [], timeout)
            except InterruptedError:
                readable = []
        for fd in own:
            try:
                while os.read(fd, 4096):
                    pass
            except OSError:
                pass
        if self.chld:
            self.chld = False
            on_chld()
        for fd in readable:
            if fd in channels:
                on_channel(channels[fd])
            elif fd in service_fds:
                service_fds[fd].ready(fd)
        now = time.monotonic()
        for service in services:
            service.tick(now)
        self._run_thread_requests()

    # -- work handed over by other threads ----------------------------------------------------

    def run_from_thread(self, work: Callable[[], Any], timeout: float = 5.0) -> tuple[bool, Any]:
        """From another thread: have the loop run ``work``; (True, its result) or (False, None) on timeout."""
        done, result = threading.Event(), []  # type: ignore[var-annotated]
        self._from_threads.put((work, done, result))
        self.wake()
        if not done.wait(timeout):
            return False, None
        return True, result[0]

    def _run_thread_requests(self) -> None:
        while True:
            try:
                work, done, result = self._from_threads.get_nowait()
            except queue.Empty:
                return
            try:
                result.append(work())
            except Exception as exc:  # the thread gets the error, the loop goes on
                result.append(exc)
            done.set()
