"""The control socket as a service of the master's loop, and its ``gunicornc`` commands.

:func:`attach` is handed to the master by the startup hook, so the master
never imports this package: the arrow points from control to master.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from gunicorn_smartspawn.control import gunicornc
from gunicorn_smartspawn.control.handlers import CommandHandlers
from gunicorn_smartspawn.control.protocol import default_socket_path
from gunicorn_smartspawn.control.server import ControlServer, handle_request

#: Seconds between attempts to serve a socket another master still holds (after USR2).
RETRY_SECONDS = 2.0


class ControlService:
    """Opens (and retries) the control socket; serves it from the master's select."""

    def __init__(self, master: Any, path: str) -> None:
        self.master = master
        self.handlers = CommandHandlers(master)
        self.server = ControlServer(path, self.handlers.table(), master.log)
        self._open = False
        self._retry_at = 0.0
        self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        if self._open:
            self.server.expire(now)
            return
        if now < self._retry_at:
            return
        self._retry_at = now + RETRY_SECONDS
        try:
            self._open = self.server.open()
        except OSError as exc:
            if not self.server.warned:
                self.server.warned = True
                self.master.log.warning("smartspawn control socket %s not served: %s", self.server.path, exc)

    def fds(self) -> list[int]:
        return self.server.fds() if self._open else []

    def ready(self, fd: int) -> None:
        self.server.ready(fd)

    def close(self) -> None:
        self.server.close()
        self._open = False
        self._retry_at = float("inf")

    def extend_gunicornc(self, server: Any) -> None:
        """Teach gunicorn's control thread our commands; each runs in the master's loop."""

        def run(request: dict[str, Any]) -> dict[str, Any]:
            line = json.dumps(request).encode()
            ok, answer = self.master.run_from_thread(lambda: handle_request(self.handlers.table(), self.master.log, line))
            if not ok:
                return {"ok": False, "error": "the master did not answer in time"}
            result: dict[str, Any] = json.loads(answer)
            return result

        gunicornc.extend(server, run)


class _Off:
    """``--smartspawn-socket off``: nothing to serve."""

    def fds(self) -> list[int]:
        return []

    def ready(self, fd: int) -> None:
        pass

    def tick(self, now: float) -> None:
        pass

    def close(self) -> None:
        pass


def attach(master: Any) -> ControlService | _Off:
    path = master.cfg.smartspawn_socket
    if path == "off":
        return _Off()
    return ControlService(master, os.path.abspath(path) if path else default_socket_path())
