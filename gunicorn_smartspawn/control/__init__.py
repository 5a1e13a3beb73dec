"""Control: the master's control socket and the ``smartspawn`` tool that talks to it.

Rooms, from the wire outwards::

    protocol   the request/reply format, the socket's address, the protocol version
    server     the socket served from the master's loop (owner-only, bounded)
    handlers   status, memory, restart, scale: one method each, composed with the master
    service    the server as a service of the master's loop; gunicornc's commands
    status     the status snapshot (pure)
    memory     /proc readers for ``smartspawn memory`` (also a public API)
    client     the client side; ``cli`` the ``smartspawn`` command; ``gunicornc`` its spellings

Importing this package imports neither gunicorn nor the master.
"""

from __future__ import annotations

from typing import Any


def attach_control(master: Any) -> Any:
    """The master's control service (handed to the master by the startup hook)."""
    from gunicorn_smartspawn.control.service import attach

    return attach(master)
