"""Every difference between the gunicorn releases the plugin supports (23.0 to 27.x), in one place.

Elsewhere the code calls these and never tests a version or probes an
attribute of gunicorn itself. What differs (see also shared notes in
docs/architecture.md, "gunicorn versions"):

* the main loop's wait: 23 ``sleep()`` on a self-pipe with ``SIG_QUEUE`` a
  list; 25+ ``wait_for_signals()`` on a ``queue.SimpleQueue`` with a
  ``WAKEUP_REQUEST`` sentinel;
* 25+ has a dirty arbiter child and counts spawns in ``_stats``;
* 25.1+ serves ``gunicornc`` from a control thread (``_control_server``);
* 27 reads ``reload_extra_files`` entries with ``*?[`` as globs, re-expanded per check;
* 27 gives each worker its own ``--reuse-port`` listener, which the arbiter
  leaves unbound (``LISTENERS`` empty);
* the gthread worker of 27 finishes the connections it accepted when its loop
  ends (``set_accept_enabled``); 23's drops those not yet dispatched.
"""

from __future__ import annotations

import queue
from typing import Any, Final

from gunicorn.arbiter import Arbiter


def gthread_drains() -> bool:
    """Does gunicorn's gthread worker finish the connections it accepted once its loop ends?

    (27: it stops accepting and serves them; 23: those waiting to be read are dropped, reset.)"""
    from gunicorn.workers.gthread import ThreadWorker

    return hasattr(ThreadWorker, "set_accept_enabled")


#: gunicorn >= 25 waits on a queue (``wait_for_signals``); 23 selects on a self-pipe (``sleep``).
QUEUE_LOOP: Final = hasattr(Arbiter, "wait_for_signals")


def drain_signal_queue(arbiter: Any) -> list[int]:
    """Signals queued for the loop, wake-up sentinels left out; the queue is emptied."""
    signals: list[int] = []
    if not QUEUE_LOOP:
        signals.extend(arbiter.SIG_QUEUE)
        del arbiter.SIG_QUEUE[:]
        return signals
    sentinel = getattr(arbiter, "WAKEUP_REQUEST", None)
    while True:
        try:
            sig = arbiter.SIG_QUEUE.get_nowait()
        except queue.Empty:
            return signals
        if sig != sentinel:
            signals.append(sig)


def peek_signals(arbiter: Any) -> list[int]:
    """Signals queued for the loop, left in place where the queue allows it (23: a list)."""
    if not QUEUE_LOOP:
        return list(arbiter.SIG_QUEUE)
    return drain_signal_queue(arbiter)


def self_pipe(arbiter: Any) -> list[int]:
    """gunicorn 23's self-pipe (both ends), empty on 25+."""
    return [] if QUEUE_LOOP else [fd for fd in arbiter.PIPE if fd >= 0]


def dirty_pid(arbiter: Any) -> int:
    """The pid of gunicorn's dirty arbiter (25+), or 0."""
    return int(getattr(arbiter, "dirty_arbiter_pid", 0) or 0)


def count(arbiter: Any, stat: str) -> None:
    """Bump one of gunicorn's own counters (25+: ``workers_spawned``, ``reloads``)."""
    stats = getattr(arbiter, "_stats", None)
    if isinstance(stats, dict) and stat in stats:
        stats[stat] += 1


def gunicornc_server(arbiter: Any) -> Any:
    """gunicorn's control-socket server object (25.1+), or None."""
    return getattr(arbiter, "_control_server", None)


def per_worker_listeners(cfg: Any, sockets: list[Any], log: Any) -> list[Any]:
    """gunicorn 27's ``--reuse-port``: the arbiter binds nothing, each worker binds its own."""
    if sockets or not getattr(cfg, "reuse_port", False):
        return sockets
    from gunicorn import sock

    return list(sock.create_sockets(cfg, log))


def is_reload_pattern(entry: str) -> bool:
    """A ``reload_extra_files`` entry gunicorn re-expands as a glob (27+); 23 takes every entry as a path."""
    from gunicorn import util

    probe = getattr(util, "is_glob_pattern", None)
    return bool(probe(entry)) if probe is not None else False


def request_parser(cfg: Any, source: Any, addr: Any) -> Any:
    """The parser gunicorn's request loops use for ``source``: ``http.get_parser`` (27, which also
    picks the uwsgi protocol's), else ``http.RequestParser`` (23)."""
    from gunicorn import http

    get_parser = getattr(http, "get_parser", None)
    return get_parser(cfg, source, addr) if get_parser is not None else http.RequestParser(cfg, source, addr)
