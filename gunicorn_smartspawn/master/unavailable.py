"""An answer instead of a hang: 503 from the master for an app that has nothing to serve with.

While an app has no worker and none on its way because it failed to start
(backing off after import errors, say), connections to its port would sit in
the backlog until the client gives up. Passenger answers with an error page;
so does the master here: it watches such an app's listeners in its select,
accepts each waiting connection, reads what the client already sent, and
answers ``503 Service Unavailable`` with a short plain body naming the app and
when it is tried again. With ``friendly_errors`` on (development only: it
shows the app's traceback to anyone who connects) the body also holds the
error and its traceback, as Passenger's friendly error pages do.

The master never reads a request to the end and never runs app code here: it
answers at most :data:`MAX_PER_PASS` connections per loop pass, each with one
non-blocking read and one non-blocking send.
"""

from __future__ import annotations

import socket
from typing import Any

#: Connections answered per listener and loop pass (the rest wait for the next pass).
MAX_PER_PASS = 64
#: The most of a request the master reads before it answers (so that closing does not reset).
READ_AT_MOST = 65536


def body(app: str, error: str | None, retry_in: float | None, traceback: str | None) -> bytes:
    lines = [f"Service Unavailable: the app {app!r} failed to start."]
    if retry_in is not None:
        lines.append(f"The server tries again in {max(1, round(retry_in))} s.")
    if traceback is not None:  # friendly_errors: development only
        lines += ["", error or "", "", traceback]
    return ("\n".join(lines) + "\n").encode("utf-8", "replace")


def response(text: bytes, retry_in: float | None) -> bytes:
    head = [
        "HTTP/1.1 503 Service Unavailable",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(text)}",
        "Connection: close",
    ]
    if retry_in is not None:
        head.append(f"Retry-After: {max(1, round(retry_in))}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + text


def failed_to_start(pool: Any) -> bool:
    """Did the app never serve, after failures, with nothing on its way? (An app that served
    once and lost its workers, a kill storm say, lets connections wait for the respawn.)"""
    loading = any(s is not None and not s.ready and not s.failed for s in (pool.preloader, pool.candidate))
    return bool(pool.failures) and not pool.ever_ready and not pool.workers and not pool.pending and not loading


def answer_waiting(listener: Any, payload: bytes) -> int:
    """Answer every connection waiting on ``listener`` (up to :data:`MAX_PER_PASS`); how many."""
    answered = 0
    try:
        listener.setblocking(False)  # (workers keep their listeners non-blocking too)
    except OSError:
        return 0
    while answered < MAX_PER_PASS:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        answered += 1
        try:
            conn.setblocking(False)
            try:
                conn.recv(READ_AT_MOST)
            except (BlockingIOError, InterruptedError):
                pass
            conn.send(payload)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            conn.close()
    return answered


def apps(master: Any) -> list[Any]:
    """Specs of the apps that failed to start and have nothing to serve with."""
    table = master.apps
    return [s for n, s in table.specs.items() if not s.removed and failed_to_start(table.pools[n])]


def answer(master: Any, now: float) -> None:
    """Answer what waits at each such app's listeners with a 503 (one pass of the master's loop)."""
    for spec in apps(master):
        pool = master.apps.pools[spec.name]
        retry_in = pool.retry_at - now if pool.retry_at > now else None
        trace = master.reaper.tracebacks.get(spec.name, "") if spec.cfg.friendly_errors else None
        payload = response(body(spec.name, pool.last_error, retry_in, trace), retry_in)
        for listener in spec.listeners:
            answered = answer_waiting(listener, payload)
            if answered:
                master.log.warning("app=%s answered %d connection(s) with 503: it failed to start", spec.name, answered)
