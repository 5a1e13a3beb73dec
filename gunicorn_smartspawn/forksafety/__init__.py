"""Fork safety: what a preloader hands its workers, found and handled.

A worker forked from a preloader inherits every descriptor the app opened
while it was imported, and none of its threads (Passenger's caveats #1 and
#2). This package runs at two points of the preloader's life::

    preloader: app imported, before the first fork
        inspect_preloader()   connected sockets (peer, owner), threads, and the
                              connections of known libraries -> Findings;
                              each finding logged once per preloader load
        inspect_before_fork() the same when workers wait (boot): only what the
                              workers act on is taken before the fork; the
                              report (the heap walk) runs in a child after it
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
  this package imports none of them.

The modules, in the order they depend on each other:

* ``findings``: what is found (dataclasses) and how it is worded for the log
  (:func:`report`); pure.
* ``fencing``: a descriptor's socket inode, the descriptor behind an object,
  and :func:`fence`.
* ``libraries``: the known libraries' finders (preloader) and resets
  (worker, the ``_RESETS`` table).
* ``detect``: the preloader looking at itself (:func:`inspect_preloader`).
* ``worker``: the worker making the inheritance safe (:func:`prepare_worker`).

See docs/fork-safety.md for what each library gets and why.
"""

from __future__ import annotations

from gunicorn_smartspawn.forksafety.detect import (
    Survey,
    _is_log_sink,
    connected_sockets,
    inspect_before_fork,
    inspect_preloader,
    native_threads,
    python_threads,
    survey,
)
from gunicorn_smartspawn.forksafety.fencing import fence
from gunicorn_smartspawn.forksafety.findings import (
    DOC,
    EVENT,
    MAX_LINES,
    RESET_WORDS,
    Findings,
    LibraryConnection,
    SocketFinding,
    ThreadFinding,
    describe_socket,
    describe_thread,
    format_address,
    parse_socket_link,
    qualified_name,
    report,
    socket_kind,
)
from gunicorn_smartspawn.forksafety.libraries import _set_aside, find_libraries
from gunicorn_smartspawn.forksafety.worker import prepare_worker

__all__ = [
    "DOC",
    "EVENT",
    "MAX_LINES",
    "RESET_WORDS",
    "Findings",
    "LibraryConnection",
    "SocketFinding",
    "Survey",
    "ThreadFinding",
    # private, used by the unit tests
    "_is_log_sink",
    "_set_aside",
    "connected_sockets",
    "describe_socket",
    "describe_thread",
    "fence",
    "find_libraries",
    "format_address",
    "inspect_before_fork",
    "inspect_preloader",
    "native_threads",
    "parse_socket_link",
    "prepare_worker",
    "python_threads",
    "qualified_name",
    "report",
    "socket_kind",
    "survey",
]
