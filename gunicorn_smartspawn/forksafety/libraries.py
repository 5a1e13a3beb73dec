"""Known libraries: their connections found in the preloader, reset in each worker.

Django, SQLAlchemy, pymemcache, python-memcached and redis-py; see
docs/fork-safety.md for what each gets and why.
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Callable
from typing import Any, Final

from gunicorn_smartspawn.forksafety.fencing import _fd_of, _retire, _socket_inode
from gunicorn_smartspawn.forksafety.findings import LibraryConnection

#: Objects a worker set aside: never used again, never finalized (their
#: finalizers could say goodbye on the preloader's connection). Workers leave
#: through ``os._exit``, which runs no finalizer.
_set_aside: list[Any] = []


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
