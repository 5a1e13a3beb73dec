"""Descriptors: the socket inode behind one, the one behind an object, and fencing one in a worker.

Used by the preloader's inspection (:mod:`.detect`), by the known
libraries' resets (:mod:`.libraries`) and by :func:`.worker.prepare_worker`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from collections.abc import Sequence
from typing import Any


def _socket_inode(fd: int) -> int | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_ino if stat.S_ISSOCK(st.st_mode) else None


def _fd_of(obj: Any) -> int | None:
    """The descriptor behind a socket or DB-API connection, if it says."""
    try:
        fileno = obj.fileno()
    except Exception:  # closed, or a driver without fileno(): sqlite3, for one
        return None
    return fileno if isinstance(fileno, int) and fileno >= 0 else None


def fence(fd: int, inode: int, sock_type: int = socket.SOCK_STREAM) -> bool:
    """Put a socket whose peer is gone on ``fd`` if it still is socket ``inode``.

    The new socket reads EOF and fails writes with EPIPE at once, what a
    client library sees when a server closes the connection, so it
    reconnects. Blocking mode and close-on-exec of ``fd`` are kept. The
    connection it replaces is left as it was: other processes holding it
    (the preloader) keep it open.
    """
    if _socket_inode(fd) != inode:
        return False  # closed, or reused since the preloader looked
    kind = sock_type if sock_type in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET) else socket.SOCK_STREAM
    ours, theirs = socket.socketpair(socket.AF_UNIX, kind)
    try:
        ours.shutdown(socket.SHUT_RDWR)
        theirs.close()
        nonblocking = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)
        ours.setblocking(not nonblocking)
        os.dup2(ours.fileno(), fd, inheritable=os.get_inheritable(fd))
    except OSError as exc:
        if exc.errno == errno.EBADF:
            return False
        raise
    finally:
        ours.close()
        theirs.close()
    return True


def _retire(fds: Sequence[tuple[int, int]]) -> None:
    for fd, inode in fds:
        fence(fd, inode)
