"""The master's answers to control commands: status, memory, restart, scale.

A mixin of :class:`gunicorn_smartspawn.arbiter.SmartArbiter`. Requests come
from the master's own control socket (served in its loop) or from gunicorn's
``gunicornc`` thread (handed to the loop through a queue); either way the
handlers below run in the master's main thread, so the pool state is never
touched concurrently.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from gunicorn_smartspawn import control as controlmod
from gunicorn_smartspawn import pool as poolmod
from gunicorn_smartspawn import status as statusmod
from gunicorn_smartspawn.control import CommandError, ControlServer


class Commands:
    """Control commands; state lives on the arbiter."""

    # provided by SmartArbiter / gunicorn's Arbiter
    cfg: Any
    log: Any
    pid: int
    pools: dict[str, poolmod.AppPool]
    WORKERS: dict[int, Any]
    scoreboard: Any
    started_at: float
    multi: bool
    num_workers: int
    control: ControlServer | None
    _control_candidate: ControlServer | None
    _control_retry_at: float
    _thread_requests: queue.SimpleQueue[tuple[dict[str, Any], threading.Event, list[Any]]]

    # (annotations only: a method here would shadow gunicorn's in the MRO)
    manage_workers: Callable[[], None]
    wakeup: Callable[[], None]

    def _open_control(self) -> None:
        path = self.cfg.smartspawn_socket
        if path == "off" or self.control is not None:
            return
        now = time.monotonic()
        if self._control_candidate is None:
            self._control_candidate = ControlServer(
                os.path.abspath(path) if path else controlmod.default_socket_path(),
                self._command_handlers(),
                self.log,
            )
        elif now < self._control_retry_at:
            return
        self._control_retry_at = now + 2.0  # e.g. after USR2, until the old master has left
        server = self._control_candidate
        try:
            if server.open():
                self.control, self._control_candidate = server, None
        except OSError as exc:
            if not server.warned:
                server.warned = True
                self.log.warning("smartspawn control socket %s not served: %s", server.path, exc)

    def _command_handlers(self) -> dict[str, controlmod.Handler]:
        return {"status": self._cmd_status, "memory": self._cmd_memory, "restart": self._cmd_restart, "scale": self._cmd_scale}

    def _cmd_status(self, request: dict[str, Any]) -> dict[str, Any]:
        import gunicorn

        return statusmod.snapshot(
            self.pools,
            self.WORKERS,
            self.scoreboard,
            master_pid=self.pid,
            gunicorn_version=gunicorn.__version__,
            started_at=self.started_at,
            now=time.monotonic(),
            wall=time.time(),
        )

    def _cmd_memory(self, request: dict[str, Any]) -> dict[str, Any]:
        from gunicorn_smartspawn import memory

        report: dict[str, Any] = memory.memory_report(memory.process_tree(self.pid))
        return report

    def _pool_named(self, request: dict[str, Any]) -> poolmod.AppPool:
        name = request.get("app")
        if not isinstance(name, str) or name not in self.pools:
            raise CommandError(f"unknown app {name!r}: this master runs {', '.join(sorted(self.pools))}")
        return self.pools[name]

    def _cmd_restart(self, request: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool_named(request)
        self.log.info("app=%s restart requested over the control socket", pool.name)
        pool.request_reload(time.monotonic())
        self.manage_workers()
        return {"app": pool.name, "restarting": True}

    def _cmd_scale(self, request: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool_named(request)
        workers, delta = request.get("workers"), request.get("delta")
        if isinstance(workers, int) and not isinstance(workers, bool) and delta is None:
            target = workers
        elif isinstance(delta, int) and not isinstance(delta, bool) and workers is None:
            target = pool.target + delta
        else:
            raise CommandError('scale needs "workers": N or "delta": +N/-N (whole numbers)')
        if target < 1:
            raise CommandError(f"app {pool.name!r} cannot have {target} workers: expected at least 1")
        previous = pool.target
        if self.multi:
            pool.target = target
        else:
            self.num_workers = target  # gunicorn's own count (nworkers_changed runs)
        self.log.info("app=%s workers %d -> %d (control socket)", pool.name, previous, target)
        self.manage_workers()
        return {"app": pool.name, "previous": previous, "workers": target}

    def _serve_thread_requests(self) -> None:
        """Run commands that gunicornc's server thread handed to the main loop."""
        while True:
            try:
                request, done, result = self._thread_requests.get_nowait()
            except queue.Empty:
                return
            line = controlmod.handle_request(self._command_handlers(), self.log, json.dumps(request).encode())
            result.append(json.loads(line))
            done.set()

    def call_from_thread(self, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """From another thread: have the main loop run a command, wait for its answer."""
        done, result = threading.Event(), []  # type: ignore[var-annotated]
        self._thread_requests.put((request, done, result))
        self.wakeup()
        if not done.wait(timeout):
            return {"ok": False, "error": "the master did not answer in time"}
        answer: dict[str, Any] = result[0]
        return answer

    def _start_control_server(self) -> None:  # gunicorn >= 25.1: gunicornc learns our commands
        super()._start_control_server()  # type: ignore[misc]
        server = getattr(self, "_control_server", None)
        if server is not None:
            from gunicorn_smartspawn.gunicornc import extend

            extend(server, self)
