"""What a preloader finds in itself, and how it is worded for the log.

The records (sockets, threads, known libraries' connections) and pure
helpers: parsing ``/proc`` links, naming sockets, addresses and objects, and
:func:`report`, the log lines for a preloader's findings. Nothing here looks
at the process or touches a descriptor.
"""

from __future__ import annotations

import logging
import socket
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

DOC: Final = "docs/fork-safety.md"
EVENT: Final = 'on_event("starting_worker_process")'
#: At most this many findings are logged one per line; the rest are counted.
MAX_LINES: Final = 20
_FAMILIES: Final[dict[int, str]] = {int(socket.AF_INET): "tcp", int(socket.AF_INET6): "tcp", int(socket.AF_UNIX): "unix"}


# -- what is found ------------------------------------------------------------------------


@dataclass(frozen=True)
class SocketFinding:
    """A connected socket the preloader holds, so every worker inherits it."""

    fd: int
    inode: int
    family: int
    type: int
    local: str
    peer: str
    #: What holds it: ``pymemcache.client.base.Client``, ``module app``; None if unknown (C code).
    owner: str | None = None
    #: The known library that resets it in each worker (fork_safety_libraries), and which
    #: of its objects holds it: ``"django"``, ``"django connection 'default'"``.
    library: str | None = None
    library_label: str | None = None
    #: Why sharing it does no harm, when it does none.
    harmless: str | None = None

    @property
    def kind(self) -> str:
        return socket_kind(self.family, self.type)


@dataclass(frozen=True)
class ThreadFinding:
    """A thread alive in the preloader: it does not exist in any worker."""

    name: str
    daemon: bool
    target: str | None = None
    native_id: int | None = None


@dataclass(frozen=True)
class LibraryConnection:
    """A known library's connection, found in the preloader, reset in each worker."""

    library: str
    label: str
    #: Returns the library object (a weak reference), or None once it is gone.
    ref: Callable[[], Any]
    #: (fd, inode) of each socket this connection holds.
    fds: tuple[tuple[int, int], ...] = ()
    key: str = ""


@dataclass(frozen=True)
class Findings:
    """What a preloader found in itself after importing its app."""

    sockets: tuple[SocketFinding, ...] = ()
    threads: tuple[ThreadFinding, ...] = ()
    #: OS threads not started through ``threading`` (C libraries' pools), by name.
    native_threads: tuple[str, ...] = ()
    libraries: tuple[LibraryConnection, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    #: asyncio event loops the import left open, described: ``module.Loop (the main thread's current loop)``.
    event_loops: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.sockets or self.threads or self.native_threads or self.libraries or self.event_loops)


# -- pure helpers: parsing and wording ------------------------------------------------------------


#: What each worker does with a known library's inherited connection, for the log.
RESET_WORDS: Final = {
    "django": "each worker sets the connection aside unused (nothing is sent on it) and Django opens its own",
    "sqlalchemy": "each worker calls engine.dispose(close=False), sets the old pool aside unused and opens its own",
    "pymemcache": "each worker closes its copy (the preloader keeps the connection) and pymemcache reconnects",
    "python-memcached": "each worker closes its copy (the preloader keeps the connection) and python-memcached reconnects",
    "redis-py": "each worker closes its copy with redis-py's fork-aware disconnect() and redis-py reconnects",
}


def parse_socket_link(link: str) -> int | None:
    """The inode of ``/proc/self/fd/N``'s target ``socket:[12345]``; None for anything else."""
    if link.startswith("socket:[") and link.endswith("]"):
        digits = link[len("socket:[") : -1]
        if digits.isdigit():
            return int(digits)
    return None


def socket_kind(family: int, sock_type: int) -> str:
    """``tcp``, ``udp``, ``unix``, ``unix-dgram``, ``unix-seqpacket``."""
    base = _FAMILIES.get(family, f"family-{family}")
    if family in (socket.AF_INET, socket.AF_INET6):
        return "udp" if sock_type == socket.SOCK_DGRAM else base
    if sock_type == socket.SOCK_DGRAM:
        return f"{base}-dgram"
    if sock_type == socket.SOCK_SEQPACKET:
        return f"{base}-seqpacket"
    return base


def format_address(family: int, address: Any) -> str:
    """``127.0.0.1:11211``, ``[::1]:6379``, ``unix:/run/x.sock``, ``unix:@abstract``, ``unix:(unnamed)``."""
    if family == socket.AF_INET and isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    if family == socket.AF_INET6 and isinstance(address, tuple):
        return f"[{address[0]}]:{address[1]}"
    if family == socket.AF_UNIX:
        if isinstance(address, bytes):
            if address.startswith(b"\0"):
                return "unix:@" + address[1:].decode(errors="backslashreplace")
            address = address.decode(errors="backslashreplace")
        if not address:
            return "unix:(unnamed)"
        if address.startswith("\0"):
            return "unix:@" + str(address[1:])
        return f"unix:{address}"
    return str(address)


def qualified_name(obj: Any) -> str:
    """``module.QualName`` of a class or function, or of an object's class.

    Looks only at ``type(obj)``: never ``isinstance``, which asks the object
    for ``__class__`` (a lazy proxy answers by evaluating itself).
    """
    kind = type(obj)
    target: Any = obj if issubclass(kind, (type, types.FunctionType, types.MethodType)) else kind
    if kind is types.MethodType:
        target = obj.__func__
    module = getattr(target, "__module__", None) or "?"
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)
    return name if module == "builtins" else f"{module}.{name}"


def describe_socket(finding: SocketFinding) -> str:
    """``fd=7 tcp 127.0.0.1:48812 -> 127.0.0.1:11211 (held by app.Cache)``."""
    text = f"fd={finding.fd} {finding.kind} {finding.local} -> {finding.peer}"
    holders = [h for h in (finding.library_label, finding.owner) if h]
    if holders:
        text += f" (held by {holders[0]})"
    return text


def describe_thread(thread: ThreadFinding) -> str:
    """``thread 'refresher' (daemon, target app._refresh)``."""
    details = ["daemon" if thread.daemon else "non-daemon"]
    if thread.target:
        details.append(f"target {thread.target}")
    return f"thread {thread.name!r} ({', '.join(details)})"


def _connection_warning(found: Any, what: str, mode: str) -> str:
    """The warning for an inherited connection the app must handle itself."""
    fix = f"Reconnect it in {EVENT}"
    if found.library:
        fix += " (or turn fork_safety_libraries on)"
    if mode == "fence":
        what_happens = (
            "fork_safety='fence' cuts it in every worker (reads see EOF, writes fail with EPIPE), "
            "so its first use in a worker fails"
        )
    else:
        fix += " or set fork_safety='fence'"
        if found.type == socket.SOCK_DGRAM:
            what_happens = "every worker forked from this preloader shares it, and replies reach whichever reads first"
        else:
            what_happens = (
                "every worker forked from this preloader shares it, so their requests interleave "
                "on it and they read each other's replies"
            )
    return f"workers inherit the connection {what}, opened at import: {what_happens}. {fix}; see {DOC}"


def report(findings: Findings, *, mode: str, libraries: bool) -> list[tuple[int, str]]:
    """The log lines for ``findings``: (logging level, message), most urgent first.

    Pure: the caller prefixes each with the app, generation and pid. A
    connection or thread the app must handle itself is a WARNING naming it
    and saying what to do; what is handled automatically, or is harmless, is
    INFO.
    """
    warnings: list[str] = []
    infos: list[str] = []
    for found in findings.sockets:
        what = describe_socket(found)
        if found.harmless:
            infos.append(f"workers share {what}: harmless, {found.harmless}")
        elif found.library and libraries:
            reset = RESET_WORDS.get(found.library, "reset in each worker")
            infos.append(f"workers inherit {what}: {reset} (fork_safety_libraries)")
        else:
            warnings.append(_connection_warning(found, what, mode))
    for thread in findings.threads:
        warnings.append(
            f"{describe_thread(thread)} was started at import and does not exist in workers "
            f"forked from this preloader (fork copies only the forking thread). Start it again "
            f"in {EVENT}; see {DOC}"
        )
    for loop in findings.event_loops:
        warnings.append(
            f"an asyncio event loop, {loop}, was created at import: workers inherit it (its selector and "
            "self-pipe) but never run it, and an ASGI worker builds and runs its own loop, so anything "
            "bound to this one (clients, pools, locks, futures) fails in workers. Create those in the "
            f"lifespan startup or on first use; see docs/request-models.md and {DOC}"
        )
    if findings.native_threads:
        names = ", ".join(repr(n) for n in findings.native_threads)
        infos.append(
            f"{len(findings.native_threads)} OS thread(s) not started through threading ({names}): "
            "a C library's pool; such libraries usually restart it after fork themselves"
        )
    lines = [(logging.WARNING, w) for w in warnings] + [(logging.INFO, i) for i in infos]
    if len(lines) > MAX_LINES:
        more = len(lines) - (MAX_LINES - 1)
        lines = [*lines[:MAX_LINES - 1], (logging.WARNING, f"... and {more} more finding(s); see {DOC}")]
    return lines
