"""The preloader looking at itself: connected sockets, threads, who holds each socket.

:func:`inspect_preloader` runs once the app is imported, before the first
fork, and returns the :class:`~.findings.Findings` each worker acts on.

When workers wait for the preloader (boot), :func:`inspect_before_fork`
splits it: what the workers act on is taken before the first fork (cheap
unless a known library is imported whose objects only a heap walk finds,
or ``fork_safety='fence'`` meets a connected socket), and the full report,
whose heap walk (``gc.get_objects()``, the owners of sockets) costs tens
of milliseconds, is returned to be run later in a child of the preloader
(preloader/inspector.py).
"""

from __future__ import annotations

import _socket
import gc
import logging
import os
import socket
import sys
import threading
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from gunicorn_smartspawn.forksafety.fencing import _fd_of
from gunicorn_smartspawn.forksafety.findings import (
    _FAMILIES,
    Findings,
    SocketFinding,
    ThreadFinding,
    format_address,
    parse_socket_link,
    qualified_name,
    report,
)
from gunicorn_smartspawn.forksafety.libraries import _wanted_types, find_libraries

#: How far up the reference graph the owner of a socket is looked for (one heap traversal each).
_OWNER_DEPTH: Final = 3
_CONTAINERS: Final = (dict, list, tuple, set, frozenset)
#: Modules whose objects only wrap a socket: look past them for its owner.
_WRAPPER_MODULES: Final = frozenset({
    "socket", "_socket", "ssl", "_ssl", "io", "_io", "selectors", "collections",
    "gevent._socket3", "gevent._socketcommon", "gevent.socket", "gevent._ssl3", "gevent.ssl",
})
#: The C socket type: under the stdlib's socket.socket and gevent's alike, and never monkey-patched
#: (gevent, patched into a preloader, replaces socket.socket with its own class).
_SOCKET_TYPE: Final = _socket.socket


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
        sock = _SOCKET_TYPE(fileno=duplicate)  # not socket.socket: gevent's would make it non-blocking
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


def _loop_types() -> dict[type, str]:
    """asyncio's event loop base class, when the app imported asyncio (uvloop's loops derive from it)."""
    asyncio = sys.modules.get("asyncio")
    base = getattr(asyncio, "AbstractEventLoop", None)
    return {base: "event-loop"} if isinstance(base, type) else {}


def event_loops(loops: Iterable[Any]) -> list[str]:
    """Event loops the import left open in the preloader, each described: workers inherit them,
    and an ASGI worker builds and runs a loop of its own."""
    asyncio = sys.modules.get("asyncio")
    policy = getattr(getattr(asyncio, "events", None), "_event_loop_policy", None)
    current = getattr(getattr(policy, "_local", None), "_loop", None)
    found = []
    for loop in loops:
        try:
            if loop.is_closed():
                continue
            notes = ["the main thread's current loop" if loop is current else "not set as current"]
            if loop.is_running():
                notes.append("running")
            if getattr(loop, "_default_executor", None) is not None:
                notes.append("with a default executor")
        except Exception:
            continue
        found.append(f"{qualified_name(loop)} ({', '.join(notes)})")
    return found


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
            if issubclass(cls, _SOCKET_TYPE):
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


@dataclass(frozen=True)
class Survey:
    """The cheap part of an inspection, read from ``/proc`` and ``threading``: what a fork would
    change (a child has none of its parent's threads), so always taken in the preloader itself."""

    sockets: tuple[SocketFinding, ...] = ()
    threads: tuple[ThreadFinding, ...] = ()
    natives: tuple[str, ...] = ()


def survey(exclude_fds: Iterable[int] = ()) -> Survey:
    """Connected sockets (but ``exclude_fds``), Python threads and other OS threads of this process."""
    threads = python_threads()
    return Survey(tuple(connected_sockets(exclude_fds)), tuple(threads), tuple(native_threads(t.native_id for t in threads)))


def inspect_preloader(log: Any, app_name: str, generation: int, cfg: Any, exclude_fds: list[int]) -> Findings:
    """Called in the preloader once the app is imported, before the first fork.

    Finds what workers inherit and cannot use as is, logs it once (this runs
    once per preloader load), and returns it for :func:`prepare_worker`.
    Must run before the preloader's ``gc.freeze()``: frozen objects are not
    in ``gc.get_objects()``; and before its first fork: the heap walk writes
    every object's reference count, which after a fork would unshare the
    preloader's pages from its workers. A failure here is logged and never
    stops the app from loading.
    """
    findings, report = inspect_before_fork(log, app_name, generation, cfg, exclude_fds, defer=False)
    assert report is None
    return findings


def inspect_before_fork(
    log: Any, app_name: str, generation: int, cfg: Any, exclude_fds: list[int], defer: bool = True
) -> tuple[Findings, Callable[[], None] | None]:
    """The findings workers act on, taken now, and the report still to log (None: logged already).

    With ``defer``, the heap walk is left to the report when the workers need
    nothing from it: no known library whose objects only it finds
    (SQLAlchemy, pymemcache, python-memcached, redis-py) is imported, and no
    connected socket is to be fenced. What the workers act on is then the
    same as a full inspection's (Django's connections come from its own
    registry). The report walks the heap: run it in a child forked after
    ``gc.freeze()`` with its own copy unfrozen (preloader/inspector.py).
    """
    mode = getattr(cfg, "fork_safety", "warn")
    libraries = bool(getattr(cfg, "fork_safety_libraries", True))
    if mode == "off" and not libraries:
        return Findings(), None
    prefix = f"app={app_name} preloader gen={generation} pid={os.getpid()} fork safety: "
    try:
        found = survey(exclude_fds)
        if defer and not (libraries and _wanted_types()) and not (mode == "fence" and found.sockets):
            known = tuple(find_libraries({})) if libraries else ()
            now = Findings(found.sockets, found.threads, found.natives, known)
            return now, (lambda: _report_later(log, prefix, mode, libraries, found)) if mode != "off" else None
        findings = _annotate(mode, found)
    except Exception as exc:
        log.error("%scould not inspect the preloader (%s: %s); workers get no fork-safety help", prefix, type(exc).__name__, exc)
        return Findings(), None
    _log(log, prefix, findings, mode, libraries)
    return findings, None


def _report_later(log: Any, prefix: str, mode: str, libraries: bool, found: Survey) -> None:
    try:
        findings = _annotate(mode, found)
    except Exception as exc:
        log.error("%scould not finish the report (%s: %s)", prefix, type(exc).__name__, exc)
        return
    _log(log, prefix, findings, mode, libraries)


def _log(log: Any, prefix: str, findings: Findings, mode: str, libraries: bool) -> None:
    if mode != "off":
        for level, message in report(findings, mode=mode, libraries=libraries):
            (log.warning if level >= logging.WARNING else log.info)(prefix + message)


def _annotate(mode: str, found: Survey) -> Findings:
    """The heap walk: known libraries' connections, event loops and (for the log) who holds each socket."""
    socket_objects, heap = _heap_pass({s.fd for s in found.sockets}, {**_wanted_types(), **_loop_types()})
    loops = event_loops(heap.pop("event-loop", []))
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
    for sock in found.sockets:
        owner = owners.get(sock.fd)
        harmless = None
        if _is_log_sink(owner, sock.type):
            harmless = "a datagram log sink: each message is sent whole and nothing is read"
        lib = library_of.get(sock.fd)
        annotated.append(
            SocketFinding(
                fd=sock.fd, inode=sock.inode, family=sock.family, type=sock.type,
                local=sock.local, peer=sock.peer, owner=owner, harmless=harmless,
                library=lib.library if lib else None, library_label=lib.label if lib else None,
            )
        )
    return Findings(tuple(annotated), found.threads, found.natives, tuple(known), event_loops=tuple(loops))
