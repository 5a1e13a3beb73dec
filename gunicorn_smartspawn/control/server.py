"""The master's own control socket, served from its select loop (no thread).

One request per connection, in the format of :mod:`.protocol`. The socket
is a unix socket of mode 0600 (bound under umask 0177, so it is
never reachable by others, not even for an instant); a live socket of
another master at the same path is left alone, a stale file is replaced.
Requests are read without blocking the master: a client gets at most
``CLIENT_TIMEOUT`` seconds to send its line. JSON only, never pickle.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from gunicorn_smartspawn.control.protocol import MAX_REQUEST, response

CLIENT_TIMEOUT: Final = 5.0
MAX_CLIENTS: Final = 16

Handler = Callable[[dict[str, Any]], Any]


class CommandError(Exception):
    """A request the master refuses; the message goes back to the client as is."""


@dataclass
class _Client:
    sock: socket.socket
    since: float
    buffer: bytearray = field(default_factory=bytearray)


class ControlServer:
    """Accepts, reads and answers requests when the master's loop says a socket is ready."""

    def __init__(self, path: str, handlers: dict[str, Handler], log: Any) -> None:
        self.path = path
        self.handlers = handlers
        self.log = log
        self.sock: socket.socket | None = None
        self.clients: dict[int, _Client] = {}
        self._inode = -1
        self.warned = False

    def open(self) -> bool:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if os.path.lexists(self.path):
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                self.log.error("control socket path %s exists and is not a socket; not serving one", self.path)
                return False
            if _alive(self.path):
                if not self.warned:  # the master tries again later (after USR2, the old one leaves)
                    self.warned = True
                    self.log.warning("control socket %s belongs to another running master; not serving it yet", self.path)
                return False
            os.unlink(self.path)  # stale: its master is gone
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(self.path)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        self._inode = os.stat(self.path).st_ino
        sock.listen(MAX_CLIENTS)
        sock.setblocking(False)
        self.sock = sock
        self.log.info("smartspawn control socket listening at %s", self.path)
        return True

    def fds(self) -> list[int]:
        if self.sock is None:
            return []
        return [self.sock.fileno(), *self.clients]

    def ready(self, fd: int) -> None:
        if self.sock is not None and fd == self.sock.fileno():
            self._accept()
        elif fd in self.clients:
            self._read(self.clients[fd])

    def expire(self, now: float) -> None:
        for client in [c for c in self.clients.values() if now - c.since > CLIENT_TIMEOUT]:
            self._drop(client)

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            try:
                if os.stat(self.path).st_ino == self._inode:  # still ours, not a newer master's
                    os.unlink(self.path)
            except OSError:
                pass

    # -- internals --------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self.sock is not None
        while len(self.clients) < MAX_CLIENTS:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.log.warning("control socket accept failed: %s", exc)
                return
            conn.setblocking(False)
            self.clients[conn.fileno()] = _Client(conn, time.monotonic())

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        if not data:
            self._drop(client)
            return
        client.buffer += data
        if b"\n" not in client.buffer:
            if len(client.buffer) > MAX_REQUEST:
                self._answer(client, response(error=f"request longer than {MAX_REQUEST} bytes"))
            return
        line = bytes(client.buffer.split(b"\n", 1)[0])
        self._answer(client, self.handle(line))

    def handle(self, line: bytes) -> bytes:
        """The response to one request line."""
        return handle_request(self.handlers, self.log, line)

    def _answer(self, client: _Client, data: bytes) -> None:
        try:
            client.sock.settimeout(1.0)
            client.sock.sendall(data)
        except OSError:
            pass
        self._drop(client)

    def _drop(self, client: _Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        client.sock.close()


def handle_request(handlers: dict[str, Handler], log: Any, line: bytes) -> bytes:
    """Parse one request line, run its handler, and encode the response line."""
    try:
        request = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return response(error="request is not a JSON object on one line")
    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
        return response(error='request needs a "command" string')
    handler = handlers.get(request["command"])
    if handler is None:
        known = ", ".join(sorted(handlers))
        return response(error=f"unknown command {request['command']!r}: expected one of {known}")
    try:
        return response(handler(request))
    except CommandError as exc:
        return response(error=str(exc))
    except Exception as exc:  # never let a request take the master down
        log.exception("control command %r failed", request["command"])
        return response(error=f"command failed in the master: {type(exc).__name__}: {exc}")


def _alive(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
        return True
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
