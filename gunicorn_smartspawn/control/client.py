"""The client side of the master's control socket (format: :mod:`.protocol`).

The master serves an owner-only unix socket (``--smartspawn-socket``) from
its own select loop. Every failure is a :class:`ControlError` whose message is one line that
names the socket and says what to do: no master there, a stale socket file,
permission denied, no answer in time, or a master speaking another protocol.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import time
from collections.abc import Mapping
from typing import Any, Final

from gunicorn_smartspawn._version import __version__
from gunicorn_smartspawn.control.protocol import PROTOCOL, SOCKET_ENV, default_socket_path, socket_path
from gunicorn_smartspawn.errors import SmartSpawnError

__all__ = ["PROTOCOL", "SOCKET_ENV", "ControlError", "check_reply", "default_socket_path", "request", "socket_path"]

DEFAULT_TIMEOUT: Final = 5.0
#: Largest reply read (a status of thousands of workers is far below it).
MAX_REPLY: Final = 16 * 1024 * 1024


class ControlError(SmartSpawnError):
    """The master could not be asked, or refused. The message is one line."""


def request(path: str, message: Mapping[str, Any], timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Send one command to the master at ``path``; return the reply's ``result``."""
    reply = _exchange(path, (json.dumps(dict(message)) + "\n").encode(), timeout)
    return check_reply(path, reply)


def check_reply(path: str, raw: bytes) -> Any:
    """The ``result`` of one raw reply line, or :class:`ControlError`."""
    try:
        reply = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ControlError(
            f"the server at {path} answered something that is not a smartspawn reply "
            f"({_preview(raw)}); is it a smartspawn control socket (--smartspawn-socket)?"
        ) from None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ControlError(f"the server at {path} answered something that is not a smartspawn reply ({_preview(raw)})")
    protocol = reply.get("protocol")
    if protocol != PROTOCOL:
        theirs = reply.get("version")
        master = f"gunicorn-smartspawn {theirs}" if isinstance(theirs, str) else "the master"
        raise ControlError(
            f"{master} at {path} speaks control protocol {protocol!r}, this smartspawn ({__version__}) speaks "
            f"{PROTOCOL}: use the smartspawn installed with the running server"
        )
    if reply["ok"] is not True:
        error = reply.get("error")
        text = error if isinstance(error, str) and error.strip() else "no reason given"
        raise ControlError(f"the master refused: {_one_line(text)}")
    if "result" not in reply:
        raise ControlError(f"the master at {path} answered ok without a result")
    return reply["result"]


def _exchange(path: str, payload: bytes, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as exc:
            raise _connect_error(path, exc) from None
        try:
            sock.sendall(payload)
            return _read_line(sock, path, deadline)
        except TimeoutError:
            raise ControlError(f"no answer from the master at {path} within {timeout:g}s") from None
        except (BrokenPipeError, ConnectionResetError):
            raise ControlError(f"the master at {path} closed the connection without an answer") from None
        except OSError as exc:
            raise ControlError(f"talking to the master at {path} failed: {exc.strerror or exc}") from None
    finally:
        sock.close()


def _read_line(sock: socket.socket, path: str, deadline: float) -> bytes:
    data = bytearray()
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            if data:
                break  # a reply without its newline is still a reply
            raise ControlError(
                f"the server at {path} closed the connection without an answer (if it is gunicorn's own "
                "--control-socket, use gunicornc, or give smartspawn the --smartspawn-socket path)"
            )
        data += chunk
        if len(data) > MAX_REPLY:
            raise ControlError(f"the answer of the server at {path} is longer than {MAX_REPLY // 2**20} MB")
    return bytes(data.split(b"\n", 1)[0])


def _connect_error(path: str, exc: OSError) -> ControlError:
    code = exc.errno
    if isinstance(exc, TimeoutError):
        return ControlError(f"no answer from the master at {path} within the timeout (connect)")
    if code == errno.ENOENT:
        return ControlError(
            f"no smartspawn master at {path}: no such socket (is the server running, with --smartspawn-socket {path}?)"
        )
    if code in (errno.EACCES, errno.EPERM):
        owner = _owner(path)
        return ControlError(
            f"permission denied on {path}: the control socket is owner-only{owner}; "
            "run smartspawn as the server's user or as root"
        )
    if code == errno.ECONNREFUSED:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = None
        if mode is not None and not stat.S_ISSOCK(mode):
            return ControlError(f"{path} is not a socket: give the master's --smartspawn-socket path")
        return ControlError(
            f"stale socket {path}: nothing is listening there (the master that made it is gone); "
            "start the server, or remove the file"
        )
    if code == errno.ENOTDIR:
        return ControlError(f"no smartspawn master at {path}: a part of that path is not a directory")
    return ControlError(f"cannot connect to {path}: {exc.strerror or exc}")


def _owner(path: str) -> str:
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return ""
    try:
        import pwd

        return f" (it belongs to {pwd.getpwuid(uid).pw_name}, uid {uid})"
    except (ImportError, KeyError):
        return f" (it belongs to uid {uid})"


def _preview(raw: bytes) -> str:
    return repr(raw[:40]) + ("..." if len(raw) > 40 else "")


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines) if len(lines) <= 2 else f"{lines[-1]} (and {len(lines) - 1} more lines)"
