"""Fork safety: what a preloader hands its workers, found and handled.

A worker forked from a preloader inherits every descriptor the app opened
while it was imported, and none of its threads (Passenger's caveats #1 and
#2). This module runs at two points of the preloader's life::

    preloader: app imported, before the first fork
        inspect_preloader()   connected sockets (peer, owner), threads, and the
                              connections of known libraries -> Findings;
                              each finding logged once per preloader load
    worker: right after fork, before on_event("starting_worker_process")
        prepare_worker()      fork_safety_libraries: known libraries drop their
                                inherited connections (the _RESETS table)
                              fork_safety="fence": every other inherited
                                connection found at preload is replaced (dup2)
                                by a socket whose peer is gone

Rules every step keeps:

* Nothing ever writes to, shuts down or finalizes the preloader's connection.
  A worker only drops *its own* descriptor: ``close()`` or ``dup2()`` over a
  descriptor that the preloader still holds never sends a FIN, while
  ``shutdown()``, a protocol goodbye (PostgreSQL's Terminate) or a TLS
  close_notify would reach the server and end the connection for everyone.
* Never walk the heap in a worker: ``gc.get_objects()`` touches every
  object's reference count and unshares the copy-on-write image. Objects are
  found once, in the preloader, and reached again through weak references.
* Only libraries the app already imported are looked at (``sys.modules``);
  this module imports none of them.

See docs/fork-safety.md for what each library gets and why.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import logging
import os
import socket
import stat
import sys
import threading
import types
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

DOC: Final = "docs/fork-safety.md"
EVENT: Final = 'on_event("starting_worker_process")'
#: At most this many findings are logged one per line; the rest are counted.
MAX_LINES: Final = 20
#: How far up the reference graph the owner of a socket is looked for (one heap traversal each).
_OWNER_DEPTH: Final = 3
_CONTAINERS: Final = (dict, list, tuple, set, frozenset)
#: Modules whose objects only wrap a socket: look past them for its owner.
_WRAPPER_MODULES: Final = frozenset({"socket", "_socket", "ssl", "_ssl", "io", "_io", "selectors", "collections"})
_FAMILIES: Final[dict[int, str]] = {int(socket.AF_INET): "tcp", int(socket.AF_INET6): "tcp", int(socket.AF_UNIX): "unix"}

#: Objects a worker set aside: never used again, never finalized (their
#: finalizers could say goodbye on the preloader's connection). Workers leave
#: through ``os._exit``, which runs no finalizer.
_set_aside: list[Any] = []


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

    def __bool__(self) -> bool:
        return bool(self.sockets or self.threads or self.native_threads or self.libraries)


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
            infos.append(f"workers inherit {what}: {RESET_WORDS.get(found.library, 'reset in each worker')} (fork_safety_libraries)")
        else:
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
            warnings.append(f"workers inherit the connection {what}, opened at import: {what_happens}. {fix}; see {DOC}")
    for thread in findings.threads:
        warnings.append(
            f"{describe_thread(thread)} was started at import and does not exist in workers "
            f"forked from this preloader (fork copies only the forking thread). Start it again "
            f"in {EVENT}; see {DOC}"
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
        lines = lines[: MAX_LINES - 1] + [(logging.WARNING, f"... and {more} more finding(s); see {DOC}")]
    return lines


# -- the preloader: looking at itself ----------------------------------------------------------------


def connected_sockets(exclude_fds: Iterable[int] = ()) -> list[SocketFinding]:
    """Connected TCP, UDP and Unix sockets of this process, read from /proc/self/fd.

    Listening sockets, unconnected ones and ``exclude_fds`` are left out.
    """
    excluded = set(exclude_fds)
    found = []
    try:
        entries = os.listdir("/proc/self/fd")
    except OSError:
        return []
    for entry in sorted(entries, key=lambda e: int(e) if e.isdigit() else -1):
        if not entry.isdigit() or int(entry) in excluded:
            continue
        fd = int(entry)
        try:
            inode = parse_socket_link(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor, for one)
        if inode is None:
            continue
        finding = _probe_socket(fd, inode)
        if finding is not None:
            found.append(finding)
    return found


def _probe_socket(fd: int, inode: int) -> SocketFinding | None:
    try:
        duplicate = os.dup(fd)
    except OSError:
        return None
    try:
        sock = socket.socket(fileno=duplicate)
    except OSError:  # a family Python does not know
        os.close(duplicate)
        return None
    try:
        if sock.family not in _FAMILIES:
            return None
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return None
        try:
            peer = sock.getpeername()
        except OSError:
            return None  # not connected
        try:
            local = sock.getsockname()
        except OSError:
            local = ""
        return SocketFinding(
            fd=fd,
            inode=inode,
            family=int(sock.family),
            type=int(sock.type),
            local=format_address(sock.family, local),
            peer=format_address(sock.family, peer),
        )
    except OSError:
        return None
    finally:
        sock.close()  # the duplicate only: the app's descriptor stays as it was


def python_threads() -> list[ThreadFinding]:
    """Threads known to ``threading`` other than the calling one."""
    current = threading.current_thread()
    found = []
    for thread in threading.enumerate():
        if thread is current or not thread.is_alive():
            continue
        target = getattr(thread, "_target", None)
        if target is not None:
            target_name: str | None = qualified_name(target)
        elif type(thread).run is not threading.Thread.run:
            target_name = f"{qualified_name(type(thread))}.run"
        else:
            target_name = None
        found.append(ThreadFinding(thread.name, thread.daemon, target_name, thread.native_id))
    return found


def native_threads(known_native_ids: Iterable[int | None]) -> list[str]:
    """Names (``comm``) of this process's OS threads that ``threading`` does not know."""
    known = {tid for tid in known_native_ids if tid is not None}
    known.add(threading.get_native_id())
    names = []
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return []
    for tid in sorted(tids):
        if not tid.isdigit() or int(tid) in known:
            continue
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            continue
    return names


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


def _weak(obj: Any) -> Callable[[], Any]:
    try:
        return weakref.ref(obj)
    except TypeError:
        return lambda: obj


# -- known libraries ------------------------------------------------------------------------------------
#
# Each library has a finder (preloader: the objects to reset, from one pass
# over the heap or from the library's own registry) and a reset (worker).
# A finder receives the heap objects of the types it named.


def _type_from(module: str, name: str) -> type | None:
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return cls if isinstance(cls, type) else None


def _wanted_types() -> dict[type, str]:
    """Classes of imported libraries whose instances the heap pass collects."""
    wanted = {
        "sqlalchemy-engine": _type_from("sqlalchemy.engine.base", "Engine"),
        "sqlalchemy-record": _type_from("sqlalchemy.pool.base", "_ConnectionRecord"),
        "pymemcache": _type_from("pymemcache.client.base", "Client"),
        "python-memcached": _type_from("memcache", "_Host"),
        "redis-py": _type_from("redis.connection", "AbstractConnection")
        or _type_from("redis.connection", "Connection"),
    }
    return {cls: tag for tag, cls in wanted.items() if cls is not None}


def _find_django() -> list[LibraryConnection]:
    """Django's open connections of this thread, from ``django.db.connections``."""
    db = sys.modules.get("django.db")
    conf = sys.modules.get("django.conf")
    if db is None or conf is None or not getattr(conf.settings, "configured", False):
        return []
    connections = db.connections
    try:
        wrappers = connections.all(initialized_only=True)  # Django >= 4.1
    except TypeError:
        wrappers = [connections[a] for a in connections if hasattr(connections._connections, a)]
    found = []
    for wrapper in wrappers:
        alias = wrapper.alias
        raw = wrapper.connection
        if raw is None:
            continue
        fd = _fd_of(raw)
        inode = _socket_inode(fd) if fd is not None else None
        fds = ((fd, inode),) if fd is not None and inode is not None else ()
        found.append(LibraryConnection("django", f"django connection {alias!r}", lambda: None, fds, key=alias))
    return found


def _find_sqlalchemy(engines: list[Any], records: list[Any]) -> list[LibraryConnection]:
    option_mixin = _type_from("sqlalchemy.engine.base", "OptionEngineMixin")
    by_pool: dict[int, list[tuple[int, int]]] = {}
    for record in records:
        pool = getattr(record, "_ConnectionRecord__pool", None)
        fd = _fd_of(getattr(record, "dbapi_connection", None))
        inode = _socket_inode(fd) if fd is not None else None
        if pool is not None and fd is not None and inode is not None:
            by_pool.setdefault(id(pool), []).append((fd, inode))
    found = []
    for engine in engines:
        if option_mixin is not None and isinstance(engine, option_mixin):
            continue  # shares its parent's pool, which is reset through the parent
        try:
            url = engine.url.render_as_string(hide_password=True)
        except Exception:
            url = "?"
        fds = tuple(by_pool.get(id(engine.pool), ()))
        found.append(LibraryConnection("sqlalchemy", f"sqlalchemy engine {url}", _weak(engine), fds))
    return found


def _find_socket_holders(library: str, objects: list[Any], attr: str, label: Callable[[Any], str]) -> list[LibraryConnection]:
    found = []
    for obj in objects:
        sock = getattr(obj, attr, None)
        fd = _fd_of(sock) if sock is not None else None
        inode = _socket_inode(fd) if fd is not None else None
        if fd is None or inode is None:
            continue
        found.append(LibraryConnection(library, f"{library} {label(obj)}", _weak(obj), ((fd, inode),)))
    return found


def _server(obj: Any, attr: str) -> str:
    server = getattr(obj, attr, "?")
    if isinstance(server, tuple) and len(server) == 2:
        return f"{server[0]}:{server[1]}"
    return str(server)


def _redis_label(conn: Any) -> str:
    host, port, path = getattr(conn, "host", None), getattr(conn, "port", None), getattr(conn, "path", None)
    where = f"{host}:{port}" if host else f"unix:{path}"
    return f"connection {where}/{getattr(conn, 'db', 0)}"


def find_libraries(heap: dict[str, list[Any]]) -> list[LibraryConnection]:
    """The known libraries' inherited connections, from the heap pass's objects by tag."""
    found = _find_django()
    found += _find_sqlalchemy(heap.get("sqlalchemy-engine", []), heap.get("sqlalchemy-record", []))
    found += _find_socket_holders("pymemcache", heap.get("pymemcache", []), "sock", lambda c: f"client {_server(c, 'server')}")
    found += _find_socket_holders(
        "python-memcached", heap.get("python-memcached", []), "socket", lambda h: f"client {_server(h, 'address')}"
    )
    found += _find_socket_holders("redis-py", heap.get("redis-py", []), "_sock", _redis_label)
    return found


def _reset_django(conn: LibraryConnection) -> bool:
    """Replace the wrapper of ``conn.key`` with a new, unconnected one.

    Not ``close()``: that sends PostgreSQL's Terminate (or MySQL's COM_QUIT)
    on the connection the preloader and every sibling share. The old wrapper
    is set aside, so its driver connection is never finalized either.
    """
    connections = sys.modules["django.db"].connections
    wrapper = connections[conn.key]
    if wrapper.connection is None:
        return False
    _set_aside.append(wrapper)
    _retire(conn.fds)
    create = getattr(connections, "create_connection", None)
    if create is not None:
        connections[conn.key] = create(conn.key)
    else:  # an older Django: drop the driver connection from the wrapper
        wrapper.connection = None
    return True


def _reset_sqlalchemy(conn: LibraryConnection) -> bool:
    """``engine.dispose(close=False)``, as SQLAlchemy documents for a forked child."""
    engine = conn.ref()
    if engine is None:
        return False
    _set_aside.append(engine.pool)  # its connections are never checked in, closed or finalized here
    _retire(conn.fds)
    try:
        engine.dispose(close=False)
    except TypeError:  # SQLAlchemy < 1.4.33: what dispose(close=False) does
        engine.pool = engine.pool.recreate()
    return True


def _reset_pymemcache(conn: LibraryConnection) -> bool:
    client = conn.ref()
    if client is None or client.sock is None:
        return False
    client.close()  # socket.close() only, no shutdown: the preloader's copy stays open
    return True


def _reset_python_memcached(conn: LibraryConnection) -> bool:
    host = conn.ref()
    if host is None or not host.socket:
        return False
    host.close_socket()  # socket.close() only; the next command reconnects
    host.buffer = b""
    return True


def _reset_redis(conn: LibraryConnection) -> bool:
    """``Connection.disconnect()``: redis-py's own fork-aware close.

    In a process other than the one that connected it closes the socket
    without ``shutdown()``. Pools would do it themselves (they compare the
    pid), but a single-connection client, a PubSub or a pipeline holding a
    connection would use the shared socket as is.
    """
    connection = conn.ref()
    if connection is None or getattr(connection, "_sock", None) is None:
        return False
    connection.disconnect()
    connection.pid = os.getpid()  # reconnected here, it belongs to this worker
    return True


_RESETS: Final[dict[str, Callable[[LibraryConnection], bool]]] = {
    "django": _reset_django,
    "sqlalchemy": _reset_sqlalchemy,
    "pymemcache": _reset_pymemcache,
    "python-memcached": _reset_python_memcached,
    "redis-py": _reset_redis,
}


# -- owners of sockets ------------------------------------------------------------------------------------


def _heap_pass(socket_fds: set[int], wanted: dict[type, str]) -> tuple[dict[int, list[Any]], dict[str, list[Any]]]:
    """One pass over the heap: Python socket objects on ``socket_fds``, and instances of ``wanted``.

    Types are compared with ``type(obj)`` only: ``isinstance`` would ask
    ``obj.__class__``, which a lazy proxy (Django's ``SimpleLazyObject``)
    answers by evaluating itself.
    """
    socket_objects: dict[int, list[Any]] = {}
    by_tag: dict[str, list[Any]] = {}
    tags: dict[type, str | None] = {}
    for obj in gc.get_objects():
        cls = type(obj)
        try:
            tag = tags[cls]
        except KeyError:
            tag = None
            if issubclass(cls, socket.socket):
                tag = "socket"
            else:
                for base, name in wanted.items():
                    if issubclass(cls, base):
                        tag = name
                        break
            tags[cls] = tag
        if tag is None:
            continue
        if tag == "socket":
            fd = _fd_of(obj)
            if fd is not None and fd in socket_fds:
                socket_objects.setdefault(fd, []).append(obj)
        else:
            by_tag.setdefault(tag, []).append(obj)
    return socket_objects, by_tag


def _owners(sockets: dict[int, Any], ignore: set[int]) -> dict[int, str]:
    """Who holds each socket object (by fd): the nearest referrer that is neither a
    container nor a socket wrapper, a module for a global; one heap traversal per
    level for all sockets together.
    """
    found: dict[int, str] = {}
    frontier = list(sockets.values())
    fds_of: dict[int, tuple[int, ...]] = {id(obj): (fd,) for fd, obj in sockets.items()}
    seen = set(fds_of)
    for _ in range(_OWNER_DEPTH):
        if not frontier:
            break
        targets = tuple(frontier)
        referrers = gc.get_referrers(*targets)
        skip = ignore | {id(frontier), id(targets), id(referrers)}
        following: list[Any] = []
        following_fds: dict[int, tuple[int, ...]] = {}
        candidates: dict[int, list[str]] = {}
        for ref in referrers:
            kind = type(ref)  # type(), not isinstance(): see qualified_name
            if id(ref) in skip or id(ref) in seen or kind is types.FrameType:
                continue
            seen.add(id(ref))
            fds = sorted({fd for x in gc.get_referents(ref) for fd in fds_of.get(id(x), ())} - found.keys())
            if not fds:
                continue
            if issubclass(kind, types.ModuleType):
                name = f"module {ref.__name__}"
            elif kind in _CONTAINERS or kind.__module__ in _WRAPPER_MODULES:
                following.append(ref)
                following_fds[id(ref)] = tuple(fds)
                continue
            elif issubclass(kind, (type, types.FunctionType, types.CellType, types.MethodType)):
                continue
            else:
                name = qualified_name(ref)
            for fd in fds:
                candidates.setdefault(fd, []).append(name)
        for fd, names in candidates.items():
            # an object's attribute says more than a module global pointing at the same socket
            found[fd] = min(names, key=lambda n: n.startswith("module "))
        following = [ref for ref in following if set(following_fds[id(ref)]) - found.keys()]
        frontier, fds_of = following, following_fds
        ignore = ignore | {id(following)}
    return found


def _is_log_sink(owner: str | None, sock_type: int) -> bool:
    """A datagram socket of a logging handler or of gunicorn's logger (statsd, syslog)."""
    return sock_type == socket.SOCK_DGRAM and owner is not None and owner.startswith(("logging.", "gunicorn."))


def inspect_preloader(log: Any, app_name: str, generation: int, cfg: Any, exclude_fds: list[int]) -> Findings:
    """Called in the preloader once the app is imported, before the first fork.

    Finds what workers inherit and cannot use as is, logs it once (this runs
    once per preloader load), and returns it for :func:`prepare_worker`.
    Must run before the preloader's ``gc.freeze()``: frozen objects are not
    in ``gc.get_objects()``. A failure here is logged and never stops the
    app from loading.
    """
    mode = getattr(cfg, "fork_safety", "warn")
    libraries = bool(getattr(cfg, "fork_safety_libraries", True))
    if mode == "off" and not libraries:
        return Findings()
    prefix = f"app={app_name} preloader gen={generation} pid={os.getpid()} fork safety: "
    try:
        findings = _inspect(mode, exclude_fds)
    except Exception as exc:
        log.error("%scould not inspect the preloader (%s: %s); workers get no fork-safety help", prefix, type(exc).__name__, exc)
        return Findings()
    if mode != "off":
        for level, message in report(findings, mode=mode, libraries=libraries):
            (log.warning if level >= logging.WARNING else log.info)(prefix + message)
    return findings


def _inspect(mode: str, exclude_fds: list[int]) -> Findings:
    sockets = connected_sockets(exclude_fds)
    threads = python_threads()
    natives = native_threads(t.native_id for t in threads)
    socket_objects, heap = _heap_pass({s.fd for s in sockets}, _wanted_types())
    known = find_libraries(heap)
    library_of = {fd: lib for lib in known for fd, _ in lib.fds}
    owners: dict[int, str] = {}
    if mode != "off":  # owners are for the log only
        unknown = {fd: objects[0] for fd, objects in socket_objects.items() if fd not in library_of}
        ignore = {id(socket_objects), id(heap), id(unknown), *map(id, socket_objects.values()), *map(id, heap.values())}
        owners = _owners(unknown, ignore)
        del unknown
    del socket_objects, heap
    annotated = []
    for found in sockets:
        owner = owners.get(found.fd)
        harmless = None
        if _is_log_sink(owner, found.type):
            harmless = "a datagram log sink: each message is sent whole and nothing is read"
        lib = library_of.get(found.fd)
        annotated.append(
            SocketFinding(
                fd=found.fd, inode=found.inode, family=found.family, type=found.type,
                local=found.local, peer=found.peer, owner=owner, harmless=harmless,
                library=lib.library if lib else None, library_label=lib.label if lib else None,
            )
        )
    return Findings(tuple(annotated), tuple(threads), tuple(natives), tuple(known))


# -- the worker: making the inheritance safe -----------------------------------------------------------


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


def prepare_worker(findings: Findings, cfg: Any, log: Any) -> None:
    """Called in each forked worker before its events and hooks run."""
    if not findings:
        return
    done: list[str] = []
    if getattr(cfg, "fork_safety_libraries", True):
        for conn in findings.libraries:
            try:
                if _RESETS[conn.library](conn):
                    done.append(conn.label)
            except Exception as exc:
                log.error(
                    "fork safety: worker pid=%d could not reset %s (%s: %s); it may share the preloader's connection",
                    os.getpid(), conn.label, type(exc).__name__, exc,
                )
    fenced = []
    if getattr(cfg, "fork_safety", "warn") == "fence":
        for found in findings.sockets:
            if found.harmless is not None:
                continue
            try:
                if fence(found.fd, found.inode, found.type):
                    fenced.append(found.peer)
            except OSError as exc:  # out of descriptors, for one
                log.error("fork safety: worker pid=%d could not fence %s (%s)", os.getpid(), describe_socket(found), exc)
    if done or fenced:
        log.debug(
            "fork safety: worker pid=%d reset %s; fenced %s",
            os.getpid(), ", ".join(done) or "no library", ", ".join(fenced) or "no connection",
        )
