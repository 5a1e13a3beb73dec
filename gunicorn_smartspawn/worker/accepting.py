"""The sync worker's accept, without the system calls that change nothing.

gunicorn's ``SyncWorker.accept`` (the same in 23.0 to 27.x) makes, for every
connection::

    client, addr = listener.accept()
    client.setblocking(1)          # ioctl(FIONBIO, 0)
    util.close_on_exec(client)     # fcntl(F_GETFD), fcntl(F_SETFD)
    self.handle(listener, client, addr)   # ... listener.getsockname(): getsockname(2)

and each of those four calls finds things as they already are:

* Close-on-exec: Python creates every socket non-inheritable (PEP 446, Python
  3.4): ``accept()`` is ``accept4(..., SOCK_CLOEXEC)``, or ``accept()`` followed
  by clearing inheritance where ``accept4`` is missing.
* Blocking: on Linux a socket from ``accept4`` does not inherit ``O_NONBLOCK``
  from the listener (accept(2)), Python passes no ``SOCK_NONBLOCK``, and
  ``socket.accept()`` leaves the new socket in blocking mode with no timeout
  unless ``socket.setdefaulttimeout()`` set one; then ``gettimeout()`` says so
  and :func:`make_blocking` calls ``setblocking(1)`` as gunicorn does. Other
  systems (the BSDs pass ``O_NONBLOCK`` on) always get the call.
* The listener's address: a bound, listening socket keeps it for its life, so
  :class:`NamedListener` reads it once per worker, not once per request.
"""

from __future__ import annotations

import sys
from typing import Any, Final

#: Does an accepted socket start blocking whatever the listener's mode (Linux: yes)?
ACCEPTED_BLOCKING: Final = sys.platform.startswith("linux")


def make_blocking(client: Any, accepted_blocking: bool = ACCEPTED_BLOCKING) -> bool:
    """Make ``client``, fresh from ``accept()``, blocking as gunicorn's ``setblocking(1)`` does;
    True when that took a system call, False when it already was."""
    if accepted_blocking and client.gettimeout() is None:
        return False
    client.setblocking(1)
    return True


class NamedListener:
    """A listener whose ``getsockname()`` was read once; everything else is the listener's own.

    What gunicorn's sync ``handle``/``handle_request`` receive as ``listener``
    (they only ask it for its address).
    """

    __slots__ = ("_name", "listener")

    def __init__(self, listener: Any) -> None:
        self.listener = listener
        self._name = listener.getsockname()

    def getsockname(self) -> Any:
        return self._name

    def __getattr__(self, name: str) -> Any:
        return getattr(self.listener, name)

    def __repr__(self) -> str:
        return f"NamedListener({self.listener!r})"


def named(cache: dict[Any, NamedListener], listener: Any) -> NamedListener:
    """``listener``'s :class:`NamedListener`, made at its first connection."""
    found = cache.get(listener)
    if found is None:
        found = cache[listener] = NamedListener(listener)
    return found
