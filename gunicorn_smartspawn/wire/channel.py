"""The wire protocol's framing and the channel: one socket end with its receive bounds."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from gunicorn_smartspawn.errors import ProtocolError
from gunicorn_smartspawn.wire.messages import (
    _TYPES,
    COMMAND_LIMITS,
    EVENT_LIMITS,
    EVENTS,
    HEADER,
    MAX_FDS_PER_READ,
    MAX_FRAME,
    MAX_READS_PER_RECEIVE,
    READ_SIZE,
    SEND_TIMEOUT,
    EventOrder,
    Limits,
    Message,
    SpawnWorker,
    decode_body,
    encode,
    fit,
)


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
