"""The gthread worker's client sockets, without the blocking-mode system calls that change nothing.

gunicorn's gthread worker switches each client socket between blocking and
non-blocking mode around every request (``ioctl(FIONBIO)`` each), though it
never reads or writes the socket while it is non-blocking. gunicorn 27 on a
kept-alive connection, per request::

    worker thread   sock.setblocking(True)                 ioctl  (the poller's mode undone)
                    parser: settimeout(prior)              ioctl  (the mode it already has)
                    finish_body: settimeout(5 s), read     ioctl  (no body: nothing is read)
                                 settimeout(prior)         ioctl
    main thread     sock.setblocking(False), to the poller ioctl

23.0 makes two of these (the poller's mode, undone), and a new connection
makes two to four more. A :class:`ClientSocket` is Python's own socket with
two rules, which give every caller the same answers and the same errors:

* A call that asks for the mode the socket has does nothing (CPython would
  repeat the ``ioctl``).
* A blocking socket asked to stop blocking (``setblocking(False)``, or a
  timeout) records the request and reports it (``gettimeout()``,
  ``getblocking()``, ``timeout``) without the system call; the first use of
  the socket that could see its mode (any other attribute than the mode's own
  and ``fileno()``, which a poller asks for) makes the call first. A request
  to block again before any such use cancels it: no call at all.

A socket closed (``fileno() == -1``) always takes CPython's own path, so it
raises as CPython does. The kernel's mode is never read back: a program that
changes ``O_NONBLOCK`` on the descriptor itself, behind the socket object,
would no longer be corrected by a later, identical call (gunicorn does not).
An SSL connection wraps the socket in an ``SSLSocket``, which is CPython's.

:class:`ThreadListener` is a listener whose ``accept()`` makes them, as
``socket.accept()`` makes its sockets, and whose address is read once.
"""

from __future__ import annotations

import math
import socket
from typing import Any, Final

from gunicorn_smartspawn.worker.accepting import NamedListener

#: Attributes a deferred socket serves without setting its mode first: the mode's own, and what a
#: poller or ``close()`` asks for, none of which depends on the mode.
UNTOUCHED: Final = frozenset({
    "_pending", "_flush", "_set", "settimeout", "setblocking", "gettimeout", "getblocking", "timeout",
    "fileno", "close", "_real_close", "_closed", "_io_refs", "__class__",
})
#: Timeouts above this take CPython's own path (which checks that they fit its clock).
LONGEST: Final = 1e9
_NS: Final = 1_000_000_000


def as_timeout(value: Any) -> float | bool | None:
    """``value`` as ``gettimeout()`` reports it once set (CPython rounds up to the nanosecond);
    False when it is not a plain, valid timeout (CPython's own path then checks it and raises)."""
    if value is None:
        return None
    if type(value) not in (int, float) or not (0 <= value <= LONGEST):  # NaN fails both
        return False
    ns = math.ceil(value * 1e9)
    return float(ns // _NS) if ns % _NS == 0 else ns / 1e9


def as_flag(flag: Any) -> float | bool | None:
    """``setblocking(flag)`` as a timeout; False for what CPython's own path must check."""
    if type(flag) not in (bool, int):
        return False
    return None if flag else 0.0


class ClientSocket(socket.socket):
    """A client socket whose blocking-mode calls are made only when they change something."""

    __slots__ = ("_pending",)

    def setblocking(self, flag: bool) -> None:
        self._set(as_flag(flag), flag, True)

    def settimeout(self, value: float | None) -> None:
        self._set(as_timeout(value), value, False)

    def _set(self, wanted: float | bool | None, value: Any, blocking_call: bool) -> None:
        if wanted is not False and self.fileno() != -1:
            current = socket.socket.gettimeout(self)
            if wanted == current:
                return
            if current is None and wanted is not None:
                self._pending = wanted
                _become(self, DeferredClientSocket)
                return
        if blocking_call:
            socket.socket.setblocking(self, value)
        else:
            socket.socket.settimeout(self, value)


class DeferredClientSocket(ClientSocket):
    """A :class:`ClientSocket` asked to stop blocking, still blocking until it is used (:meth:`_flush`)."""

    __slots__ = ()

    def gettimeout(self) -> float | None:
        pending: float = self._pending
        return pending

    def getblocking(self) -> bool:
        return bool(self._pending != 0.0)

    @property
    def timeout(self) -> float | None:
        pending: float = self._pending
        return pending

    def _set(self, wanted: float | bool | None, value: Any, blocking_call: bool) -> None:
        if wanted is not False and self.fileno() != -1:
            if wanted is None:
                _become(self, ClientSocket)  # blocking again, as it still is
            else:
                self._pending = wanted
            return
        self._flush()
        ClientSocket._set(self, wanted, value, blocking_call)

    def _flush(self) -> None:
        """Make the mode asked for real (the system call the request left out)."""
        pending = self._pending
        _become(self, ClientSocket)
        try:
            socket.socket.settimeout(self, pending)
        except OSError:
            if self.fileno() != -1:
                raise
            # closed: the call the caller makes next raises for itself, as it would have

    def __getattribute__(self, name: str) -> Any:
        if name not in UNTOUCHED:
            object.__getattribute__(self, "_flush")()
        return object.__getattribute__(self, name)


def _become(sock: socket.socket, cls: type[socket.socket]) -> None:
    """Switch ``sock`` between the two classes (the same layout: no system call, nothing copied)."""
    sock.__class__ = cls


class ThreadListener(NamedListener):
    """A gthread worker's listener: its address read once (:class:`NamedListener`), and
    ``accept()`` returning a :class:`ClientSocket`, made as ``socket.accept()`` makes its own."""

    __slots__ = ("_accept",)

    def __init__(self, listener: Any) -> None:
        super().__init__(listener)
        self._accept = getattr(listener, "_accept", None)  # the C accept of the socket under it

    def accept(self) -> tuple[Any, Any]:
        if self._accept is None:
            accepted: tuple[Any, Any] = self.listener.accept()
            return accepted
        fd, addr = self._accept()
        listener = self.listener
        client = ClientSocket(listener.family, listener.type, listener.proto, fileno=fd)
        if socket.getdefaulttimeout() is None and listener.gettimeout():
            client.setblocking(True)  # what socket.accept() does
        return client, addr


def wrapped(listeners: list[Any]) -> list[Any]:
    """``listeners`` as :class:`ThreadListener` objects (each once)."""
    return [lnr if isinstance(lnr, ThreadListener) else ThreadListener(lnr) for lnr in listeners]
