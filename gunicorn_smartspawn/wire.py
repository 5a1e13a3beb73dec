"""The master <-> preloader wire protocol: messages, framing, and the channel.

One ``socketpair(AF_UNIX, SOCK_STREAM)`` per preloader. Every message is one
frame::

    0        4                                    4+length
    +--------+-------------------------------------+
    | length | JSON object, UTF-8                  |
    | u32 BE | {"type": "SpawnWorker", "age": 7}   |
    +--------+-------------------------------------+

``length`` counts the JSON bytes only and is at most ``MAX_FRAME``. A message
class that carries file descriptors (``FDS > 0``) sends them with
``SCM_RIGHTS`` in the same ``sendmsg`` as its frame; the receiver keeps
descriptors in arrival order and hands each message the next ``FDS`` of them.

Commands (master -> preloader) are imperative, events (preloader -> master)
past tense. JSON only, never pickle: a worker or a compromised preloader
cannot make the master run code by what it sends. Unknown types, missing or
extra fields and wrong types are a :class:`ProtocolError`.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Final

from gunicorn_smartspawn.errors import ProtocolError

HEADER: Final = struct.Struct("!I")
MAX_FRAME: Final = 1 << 20
MAX_FDS_PER_READ: Final = 16
#: A peer that does not take a small frame within this many seconds is hung.
SEND_TIMEOUT: Final = 5.0
#: Longest traceback text a preloader sends; the rest is cut, marked.
MAX_TEXT: Final = 32 * 1024


def cut_text(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters, marked, so that a frame (or a log line) stays bounded."""
    return text if len(text) <= limit else text[: max(0, limit - 20)] + "\n... (truncated)"


@dataclass(frozen=True)
class SpawnWorker:
    """Command: fork a worker of this ``age``; carries its heartbeat file.

    ``slot`` is its scoreboard slot, -1 for none."""

    age: int
    slot: int = -1
    FDS: ClassVar[int] = 1


@dataclass(frozen=True)
class PreloaderReady:
    """Event: the app is imported and the preloader waits for commands."""

    pid: int
    load_seconds: float
    FDS: ClassVar[int] = 0


@dataclass(frozen=True)
class PreloaderFailed:
    """Event: the app could not be imported; the preloader exits next."""

    error: str
    traceback: str
    FDS: ClassVar[int] = 0


@dataclass(frozen=True)
class WorkerSpawned:
    """Event: worker ``age`` runs as ``pid``, a child of the master."""

    age: int
    pid: int
    fork_ms: float
    FDS: ClassVar[int] = 0


@dataclass(frozen=True)
class SpawnFailed:
    """Event: worker ``age`` could not be forked."""

    age: int
    error: str
    FDS: ClassVar[int] = 0


Message = SpawnWorker | PreloaderReady | PreloaderFailed | WorkerSpawned | SpawnFailed
COMMANDS: Final[dict[str, type[Any]]] = {"SpawnWorker": SpawnWorker}
EVENTS: Final[dict[str, type[Any]]] = {
    cls.__name__: cls
    for cls in (PreloaderReady, PreloaderFailed, WorkerSpawned, SpawnFailed)
}
_TYPES: Final = {**COMMANDS, **EVENTS}
_FIELD_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "int": (int,),
    "float": (float, int),
    "str": (str,),
}


def encode(message: Message) -> bytes:
    """One frame for ``message``."""
    body = {"type": type(message).__name__, **asdict(message)}
    data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"{type(message).__name__} frame of {len(data)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(len(data)) + data


def decode_body(data: bytes, allowed: dict[str, type[Any]] = _TYPES) -> Message:
    """The message in one frame's JSON bytes, checked field by field."""
    try:
        body = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("frame nests JSON too deeply") from None
    if not isinstance(body, dict):
        raise ProtocolError("frame is not a JSON object")
    name = body.pop("type", None)
    cls = allowed.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {name!r}: expected one of {sorted(allowed)}")
    expected = {f.name: f for f in fields(cls)}
    if set(body) != set(expected):
        raise ProtocolError(
            f"{name} has fields {sorted(body)}: expected {sorted(expected)}"
        )
    for key, value in body.items():
        kinds = _FIELD_TYPES[str(expected[key].type)]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ProtocolError(f"{name}.{key}={value!r} is not of type {expected[key].type}")
    message: Message = cls(**body)
    for key in ("pid", "age"):
        value = body.get(key)
        if value is not None and value < (2 if key == "pid" else 1):
            raise ProtocolError(f"{name}.{key}={value!r} is out of range")
    return message


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


class FrameDecoder:
    """Turns received bytes and descriptors back into messages. Pure: no I/O."""

    def __init__(self, allowed: dict[str, type[Any]] = _TYPES) -> None:
        self._allowed = allowed
        self._buffer = bytearray()
        self._fds: deque[int] = deque()

    def feed(self, data: bytes, fds: Sequence[int] = ()) -> None:
        self._buffer += data
        self._fds.extend(fds)

    def __iter__(self) -> Iterator[tuple[Message, tuple[int, ...]]]:
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > MAX_FRAME:
                raise ProtocolError(f"frame length {length} exceeds {MAX_FRAME}")
            if len(self._buffer) < HEADER.size + length:
                return
            body = bytes(self._buffer[HEADER.size : HEADER.size + length])
            del self._buffer[: HEADER.size + length]
            message = decode_body(body, self._allowed)
            wanted = type(message).FDS
            if len(self._fds) < wanted:
                raise ProtocolError(f"{type(message).__name__} arrived without its {wanted} descriptor(s)")
            yield message, tuple(self._fds.popleft() for _ in range(wanted))

    def leftover_fds(self) -> list[int]:
        """Descriptors no message claimed (to be closed by the owner)."""
        fds = list(self._fds)
        self._fds.clear()
        return fds


class Channel:
    """One end of a preloader channel: framed sends, non-blocking receives.

    The master's end takes events (``EVENTS``), the preloader's commands
    (``COMMANDS``). ``blocking`` sends wait as long as it takes (the
    preloader: its only peer is the master); otherwise a send waits at most
    ``SEND_TIMEOUT`` (the master never hangs on a preloader).
    """

    def __init__(self, sock: socket.socket, allowed: dict[str, type[Any]], blocking: bool = False) -> None:
        self.sock = sock
        self._decoder = FrameDecoder(allowed)
        self._send_timeout = None if blocking else SEND_TIMEOUT
        sock.setblocking(False)  # receives never block

    @classmethod
    def pair(cls) -> tuple[Channel, socket.socket]:
        """(the master's end, the preloader's raw socket); the master's end is close-on-exec."""
        master_end, preloader_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        master_end.set_inheritable(False)
        preloader_end.set_inheritable(False)
        return cls(master_end, EVENTS), preloader_end

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: Message, fds: Sequence[int] = ()) -> None:
        if len(fds) != type(message).FDS:
            raise ProtocolError(f"{type(message).__name__} carries {type(message).FDS} descriptor(s), got {len(fds)}")
        frame = encode(message)
        self.sock.settimeout(self._send_timeout)
        try:
            sent = socket.send_fds(self.sock, [frame], list(fds)) if fds else self.sock.send(frame)
            if sent < len(frame):
                self.sock.sendall(frame[sent:])
        finally:
            self.sock.setblocking(False)

    def receive(self) -> list[tuple[Message, tuple[int, ...]]]:
        """Every complete message available now. Raises EOFError when the peer is gone."""
        got_any = False
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(
                    self.sock, 65536, MAX_FDS_PER_READ, socket.MSG_DONTWAIT
                )
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionResetError:
                data, fds = b"", []
            if not data:
                for fd in fds:
                    os.close(fd)
                if got_any:
                    break  # report what arrived; EOF shows again on the next call
                raise EOFError("channel closed by peer")
            got_any = True
            self._decoder.feed(data, fds)
        return list(self._decoder)

    def close(self) -> None:
        for fd in self._decoder.leftover_fds():
            os.close(fd)
        self.sock.close()
