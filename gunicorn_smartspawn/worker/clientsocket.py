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
  the socket that could see its mode (any method but the mode's own, ``fileno()``,
  which a poller asks for, and ``close()``) makes the call first. A request
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

#: What a deferred socket answers without making its mode real first: the mode's own calls, and
#: what a poller (``fileno()``) or ``close()`` asks, none of which depends on the mode. Every other
#: method of CPython's socket makes it real first (:func:`_making_real`).
UNTOUCHED: Final = frozenset({
    "settimeout", "setblocking", "gettimeout", "getblocking", "fileno", "close", "_real_close",
})
#: Timeouts above this take CPython's own path (which checks that they fit its clock).
LONGEST: Final = 1e9
_NS: Final = 1_000_000_000
_gettimeout = socket.socket.gettimeout
_fileno = socket.socket.fileno
_setblocking = socket.socket.setblocking
_settimeout = socket.socket.settimeout


def plain_timeout(value: Any) -> bool:
    """Is ``value`` a timeout CPython takes as it is (a non-negative int or float that fits its
    clock)? Anything else takes CPython's own path, which checks it and raises."""
    return type(value) in (int, float) and 0 <= value <= LONGEST  # NaN fails


def reported(value: float) -> float:
    """A plain timeout as ``gettimeout()`` reports it once set (CPython rounds up to the nanosecond)."""
    ns = math.ceil(value * 1e9)
    return float(ns // _NS) if ns % _NS == 0 else ns / 1e9


class ClientSocket(socket.socket):
    """A client socket whose blocking-mode calls are made only when they change something."""

    __slots__ = ("_pending",)

    _pending: float  # the timeout asked for and not made yet (DeferredClientSocket)

    def setblocking(self, flag: bool) -> None:
        if type(flag) in (bool, int) and _fileno(self) != -1:
            current = _gettimeout(self)
            if flag:
                if current is None:
                    return  # blocking already
            elif current is None:
                self._pending = 0.0
                _become(self, DeferredClientSocket)
                return
            elif current == 0.0:
                return  # non-blocking already
        _setblocking(self, flag)

    def settimeout(self, value: float | None) -> None:
        if _fileno(self) != -1:
            if value is None:
                if _gettimeout(self) is None:
                    return  # blocking already
            elif plain_timeout(value):
                current = _gettimeout(self)
                if current is None:
                    self._pending = value
                    _become(self, DeferredClientSocket)
                    return
                if current == reported(value):
                    return  # that timeout already
        _settimeout(self, value)


class DeferredClientSocket(ClientSocket):
    """A :class:`ClientSocket` asked to stop blocking, still blocking until it is used (:meth:`_flush`)."""

    __slots__ = ()

    def gettimeout(self) -> float | None:
        return reported(self._pending)

    def getblocking(self) -> bool:
        return bool(self._pending != 0)

    @property
    def timeout(self) -> float | None:
        return reported(self._pending)

    def setblocking(self, flag: bool) -> None:
        if type(flag) in (bool, int) and _fileno(self) != -1:
            if flag:
                _become(self, ClientSocket)  # blocking again, as it still is
            else:
                self._pending = 0.0
            return
        self._flush()
        _setblocking(self, flag)

    def settimeout(self, value: float | None) -> None:
        if _fileno(self) != -1:
            if value is None:
                _become(self, ClientSocket)
                return
            if plain_timeout(value):
                self._pending = value
                return
        self._flush()
        _settimeout(self, value)

    def _flush(self) -> None:
        """Make the mode asked for real (the system call the request left out)."""
        _become(self, ClientSocket)
        try:
            _settimeout(self, self._pending)
        except OSError:
            if _fileno(self) != -1:
                raise
            # closed: the call the caller makes next raises for itself, as it would have


def _making_real(name: str) -> Any:
    method = getattr(socket.socket, name)

    def call(self: DeferredClientSocket, *args: Any, **kwargs: Any) -> Any:
        self._flush()
        return method(self, *args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"CPython's ``socket.{name}``, once the deferred mode is made real."
    return call


for _name in dir(socket.socket):
    if _name in UNTOUCHED or _name.startswith("__") or not callable(getattr(socket.socket, _name)):
        continue
    setattr(DeferredClientSocket, _name, _making_real(_name))
for _name in ("__repr__", "__getstate__", "__enter__"):
    if hasattr(socket.socket, _name):
        setattr(DeferredClientSocket, _name, _making_real(_name))


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
