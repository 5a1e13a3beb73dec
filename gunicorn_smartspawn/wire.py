"""The master <-> preloader wire protocol: messages, framing, and the channel.

One ``socketpair(AF_UNIX, SOCK_STREAM)`` per preloader. Every message is one
frame: a u32 big-endian length, then that many bytes of a JSON object
(``{"type": "SpawnWorker", "age": 7, "slot": 3}``). A message class that
carries descriptors (``FDS > 0``) sends them with ``SCM_RIGHTS`` in the same
``sendmsg`` as its frame; the receiver hands each message the next ``FDS``
in arrival order. Commands (master -> preloader) are imperative, events
(preloader -> master) past tense. JSON only, never pickle; unknown types,
missing or extra fields and wrong types are a :class:`ProtocolError`.

A preloader runs application code, maybe as another user: the master's end
(:data:`EVENT_LIMITS`) bounds what it takes, and past a bound ``receive()``
raises a ProtocolError that names it (then refuses everything after).
Descriptors: 0, any that arrive are closed at once. Frame: 64 KiB, refused
from its length alone. Text: :data:`TEXT_LIMITS` (``send()`` cuts an event
to fit, :func:`fit`). Rate: a bucket of 2048 frames refilled at 2000 a
second (1000 spawn answers at once take half; no preloader forks 2000
workers a second). Order: one load report, first, then one answer per
``SpawnWorker`` sent (:class:`EventOrder`), so what a preloader makes the
master log is bounded by what the master asked of it. Reads: 32 of 64 KiB
per ``receive()``. The preloader's end (``COMMANDS``) takes frames up to
1 MiB and holds at most one descriptor ahead of its frame.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Final

from gunicorn_smartspawn.errors import ProtocolError

HEADER: Final = struct.Struct("!I")
MAX_FRAME: Final = 1 << 20  # any frame; commands
MAX_EVENT_FRAME: Final = 64 * 1024  # an event's frame: what the master buffers per channel
MAX_FDS_PER_READ: Final = 16  # one recvmsg; the kernel closes the rest (MSG_CTRUNC)
READ_SIZE: Final = 64 * 1024
MAX_READS_PER_RECEIVE: Final = 32  # a peer that writes without pause cannot hold the reader
SEND_TIMEOUT: Final = 5.0  # a peer that does not take a small frame within this many seconds is hung
MAX_TEXT: Final = 32 * 1024  # longest traceback text a preloader sends; the rest is cut, marked
MAX_ERROR_TEXT: Final = 4096  # longest error text (one line) an event carries
EVENT_BURST: Final = 2048  # event frames a channel may deliver at once ...
EVENT_RATE: Final = 2000.0  # ... and refilled per second


def cut_text(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters, marked, so that a frame (or a log line) stays bounded."""
    return text if len(text) <= limit else text[: max(0, limit - 20)] + "\n... (truncated)"


@dataclass(frozen=True)
class SpawnWorker:
    """Command: fork a worker of this ``age``; carries its heartbeat file.

    ``slot`` is its scoreboard slot, -1 for none."""

    age: int
    slot: int = -1
    spare: int = 0  # 1: park before the request loop until the master's SIGCONT (spare_workers)
    FDS: ClassVar[int] = 1


@dataclass(frozen=True)
class PreloaderReady:
    """Event: the app is imported and the preloader waits for commands."""

    pid: int
    load_seconds: float
    code: str = ""  # a fingerprint of the code it imported (hex): a restart may find other code
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
EVENTS: Final[dict[str, type[Any]]] = {cls.__name__: cls for cls in (PreloaderReady, PreloaderFailed, WorkerSpawned, SpawnFailed)}
_TYPES: Final = {**COMMANDS, **EVENTS}
_FIELD_TYPES: Final[dict[str, tuple[type, ...]]] = {"int": (int,), "float": (float, int), "str": (str,)}
#: Longest text of each text field, in characters: longer is refused on decode, cut by ``send()``.
TEXT_LIMITS: Final[Mapping[str, Mapping[str, int]]] = {
    "PreloaderReady": {"code": 64},
    "PreloaderFailed": {"error": MAX_ERROR_TEXT, "traceback": MAX_TEXT},
    "SpawnFailed": {"error": MAX_ERROR_TEXT},
}


@dataclass(frozen=True)
class Limits:
    """What one end of a channel takes before it calls its peer hostile."""

    side: str  # names the side in errors: "events" (the master's end) or "commands"
    max_frame: int  # JSON bytes
    max_held_fds: int  # descriptors received ahead of the frame that claims them
    burst: int = 0  # token bucket of frames (0: no rate bound) ...
    rate: float = 0.0  # ... refilled per second
    ordered: bool = False  # events follow :class:`EventOrder`


EVENT_LIMITS: Final = Limits("events", MAX_EVENT_FRAME, 0, EVENT_BURST, EVENT_RATE, ordered=True)
#: A ``SpawnWorker``'s descriptor arrives with its frame's first byte: at most one waits.
COMMAND_LIMITS: Final = Limits("commands", MAX_FRAME, 1)


def max_frame_of(cls: type[Any]) -> int:
    return MAX_EVENT_FRAME if cls.__name__ in EVENTS else MAX_FRAME


def _body(message: Message) -> bytes:
    body = {"type": type(message).__name__, **asdict(message)}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")


def encode(message: Message) -> bytes:
    """One frame for ``message``; refuses one over its kind's frame limit (see :func:`fit`)."""
    data = _body(message)
    limit = max_frame_of(type(message))
    if len(data) > limit:
        raise ProtocolError(f"{type(message).__name__} frame of {len(data)} bytes exceeds the {limit}-byte limit")
    return HEADER.pack(len(data)) + data


def fit(message: Message) -> Message:
    """``message`` with each text field cut to its bound, then all of them to half
    as long until the frame fits (a JSON escape is up to 12 bytes a character)."""
    cls: type[Any] = type(message)
    bounds = TEXT_LIMITS.get(cls.__name__, {})
    cap = max((len(getattr(message, name)) for name in bounds), default=0)
    while True:
        cut = {name: cut_text(getattr(message, name), min(bound, cap)) for name, bound in bounds.items()}
        fitted: Message = cls(**{**asdict(message), **cut})
        if not bounds or cap == 0 or len(_body(fitted)) <= max_frame_of(cls):
            return fitted
        cap //= 2


def decode_body(data: bytes, allowed: dict[str, type[Any]] = _TYPES) -> Message:
    """The message in one frame's JSON bytes, checked field by field."""
    try:
        body = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame is not UTF-8 JSON: {cut_text(str(exc), 80)}") from None
    except RecursionError:
        raise ProtocolError("frame nests JSON too deeply") from None
    if not isinstance(body, dict):
        raise ProtocolError("frame is not a JSON object")
    name = body.pop("type", None)
    cls = allowed.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {cut_text(repr(name), 60)}: expected one of {sorted(allowed)}")
    expected = {f.name: f for f in fields(cls)}
    if set(body) != set(expected):
        raise ProtocolError(f"{name} has fields {cut_text(repr(sorted(body)), 80)}: expected {sorted(expected)}")
    for key, value in body.items():
        kinds = _FIELD_TYPES[str(expected[key].type)]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ProtocolError(f"{name}.{key}={cut_text(repr(value), 40)} is not of type {expected[key].type}")
    for key, bound in TEXT_LIMITS.get(name, {}).items():
        if len(body[key]) > bound:
            raise ProtocolError(f"{name}.{key} of {len(body[key])} characters exceeds the {bound}-character limit")
    message: Message = cls(**body)
    for key in ("pid", "age"):
        value = body.get(key)
        if value is not None and value < (2 if key == "pid" else 1):
            raise ProtocolError(f"{name}.{key}={value!r} is out of range")
    return message


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


class FrameDecoder:
    """Turns received bytes and descriptors back into messages. Pure: no I/O.

    A length over ``max_frame`` is refused as soon as its 4 bytes are in."""

    def __init__(self, allowed: dict[str, type[Any]] = _TYPES, max_frame: int = MAX_FRAME, side: str = "frames") -> None:
        self._allowed, self._max_frame, self._side = allowed, max_frame, side
        self._buffer = bytearray()
        self._fds: deque[int] = deque()

    def feed(self, data: bytes, fds: Sequence[int] = ()) -> None:
        self._buffer += data
        self._fds.extend(fds)

    def __iter__(self) -> Iterator[tuple[Message, tuple[int, ...]]]:
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self._max_frame:
                raise ProtocolError(f"frame of {length} bytes exceeds the {self._max_frame}-byte limit for {self._side}")
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


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` a second of ``clock``; :meth:`take` spends one."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._at = float(burst), clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class EventOrder:
    """What a preloader may say next: its load once and first (``PreloaderReady``, or
    ``PreloaderFailed`` and then nothing); after ``PreloaderReady``, one
    ``WorkerSpawned`` or ``SpawnFailed`` per ``SpawnWorker`` sent to it."""

    def __init__(self) -> None:
        self.loaded: str | None = None
        self.requests = self.answers = 0

    def check(self, message: Message) -> None:
        name = type(message).__name__
        if isinstance(message, PreloaderReady | PreloaderFailed):
            if self.loaded is not None:
                raise ProtocolError(f"{name} after {self.loaded}: the limit is one load report per preloader")
            self.loaded = name
        elif self.loaded != "PreloaderReady":
            when = f"after {self.loaded}" if self.loaded else "before PreloaderReady"
            raise ProtocolError(f"{name} {when}: spawn answers come only from a ready preloader")
        elif self.answers >= self.requests:
            raise ProtocolError(f"{name} would be answer {self.answers + 1} to {self.requests} SpawnWorker"
                                " request(s): the limit is one answer per request")
        else:
            self.answers += 1


class Channel:
    """One end of a preloader channel: framed sends, non-blocking, bounded receives.

    The master's end takes events (``EVENTS``), the preloader's commands
    (``COMMANDS``); ``limits`` follow, ``clock`` drives the rate bound.
    ``blocking`` sends wait as long as it takes (the preloader: its only peer is
    the master); others at most ``SEND_TIMEOUT`` (the master never hangs on a preloader)."""

    def __init__(self, sock: socket.socket, allowed: dict[str, type[Any]], blocking: bool = False, *,
                 limits: Limits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.sock = sock
        # an end that takes only events is the master's
        self.limits = limits or (EVENT_LIMITS if allowed and set(allowed) <= set(EVENTS) else COMMAND_LIMITS)
        self._decoder = FrameDecoder(allowed, self.limits.max_frame, self.limits.side)
        self._send_timeout = None if blocking else SEND_TIMEOUT
        self._budget = TokenBucket(self.limits.rate, self.limits.burst, clock) if self.limits.burst else None
        self._order = EventOrder() if self.limits.ordered else None
        self._broken: str | None = None  # the bound the peer broke: nothing more is received
        sock.setblocking(False)  # receives never block

    @classmethod
    def pair(cls, clock: Callable[[], float] = time.monotonic) -> tuple[Channel, socket.socket]:
        """(the master's end, the preloader's raw socket); the master's end is close-on-exec."""
        master_end, preloader_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        master_end.set_inheritable(False)
        preloader_end.set_inheritable(False)
        return cls(master_end, EVENTS, clock=clock), preloader_end

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def held_fds(self) -> int:
        """Descriptors received that no message claimed yet (on the master's end, always 0)."""
        return len(self._decoder._fds)

    @property
    def buffered(self) -> int:
        """Bytes of a frame not complete yet (at most 4 + the side's frame limit)."""
        return len(self._decoder._buffer)

    def send(self, message: Message, fds: Sequence[int] = ()) -> None:
        if len(fds) != type(message).FDS:
            raise ProtocolError(f"{type(message).__name__} carries {type(message).FDS} descriptor(s), got {len(fds)}")
        frame = encode(fit(message))
        self.sock.settimeout(self._send_timeout)
        try:
            sent = socket.send_fds(self.sock, [frame], list(fds)) if fds else self.sock.send(frame)
            if self._order is not None and isinstance(message, SpawnWorker):
                self._order.requests += 1  # some of it left: an answer may come
            if sent < len(frame):
                self.sock.sendall(frame[sent:])
        finally:
            self.sock.setblocking(False)

    def receive(self) -> list[tuple[Message, tuple[int, ...]]]:
        """Every complete message available now, in at most ``MAX_READS_PER_RECEIVE`` reads. EOFError
        when the peer is gone, ProtocolError past a bound. Then every descriptor received is in a
        returned message that declares it, waits for its frame (commands only), or is closed."""
        if self._broken is not None:
            raise ProtocolError(self._broken)
        out: list[tuple[Message, tuple[int, ...]]] = []
        try:
            for _ in range(MAX_READS_PER_RECEIVE):
                try:
                    data, fds, flags, _addr = socket.recv_fds(self.sock, READ_SIZE, MAX_FDS_PER_READ, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionResetError:
                    data, fds, flags = b"", [], 0
                self._check_fds(fds, flags)
                if not data:
                    _close_all(self._decoder.leftover_fds())  # a frame that can no longer complete
                    if out:
                        break  # report what arrived; EOF shows again on the next call
                    raise EOFError("channel closed by peer")
                self._decoder.feed(data, fds)
                self._drain(out)
        except BaseException as exc:
            for _message, claimed in out:
                _close_all(claimed)
            _close_all(self._decoder.leftover_fds())
            if isinstance(exc, ProtocolError):
                self._broken = str(exc)
            raise
        return out

    def _check_fds(self, fds: list[int], flags: int) -> None:
        if fds and self.limits.max_held_fds == 0:
            _close_all(fds)
            raise ProtocolError(f"{len(fds)} descriptor(s) arrived with {self.limits.side}: the limit is 0")
        if flags & socket.MSG_CTRUNC:
            _close_all(fds)
            raise ProtocolError(f"descriptors were cut off (over {MAX_FDS_PER_READ} in one send, or the fd table is full)")

    def _drain(self, out: list[tuple[Message, tuple[int, ...]]]) -> None:
        for message, fds in self._decoder:
            out.append((message, fds))  # first, so that an error below closes its descriptors
            if self._budget is not None and not self._budget.take():
                raise ProtocolError(f"{type(message).__name__} frame over the rate limit for {self.limits.side}: "
                                    f"{self._budget.burst} at once, {self._budget.rate:g} a second")
            if self._order is not None:
                self._order.check(message)
        if self.held_fds > self.limits.max_held_fds:
            raise ProtocolError(f"{self.held_fds} descriptor(s) wait for a frame: the limit is "
                                f"{self.limits.max_held_fds} for {self.limits.side}")

    def close(self) -> None:
        _close_all(self._decoder.leftover_fds())
        self.sock.close()


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
