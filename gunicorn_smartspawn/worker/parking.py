"""A spare worker's park (``spare_workers``): initialised, waiting before its request loop.

The worker has run everything gunicorn runs before the loop (``post_fork``,
``starting_worker_process``, ``post_worker_init``). It first runs the
``preloader_warmup`` requests through its app (:func:`warm_up`), so that the
first request it serves once released is as fast as a warm worker's: what a
new process does on its first requests (copy-on-write faults on the pages a
request writes, per-process caches) is done while nobody waits. It blocks SIGCONT,
touches its heartbeat file once (the master's only sign that it is parked;
it holds no channel to the master or its preloader, and nothing it could
send), then waits for SIGCONT, which the master sends only to a spare it
verified and registered. The wake-up is one signal: no fork, no import, no
initialisation left on the path of the request that needed the worker.

While parked, SIGTERM, SIGQUIT and SIGINT end it as they end any worker
(gunicorn's handlers); it also leaves when its parent is no longer the
master.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Any

from gunicorn import util

from gunicorn_smartspawn import _compat
from gunicorn_smartspawn.worker import warmup

#: The master's wake-up: harmless (its default action is to continue) to any other process.
WAKE = signal.SIGCONT
#: How often a parked spare looks at its parent and at gunicorn's ``alive`` flag.
CHECK_SECONDS = 0.25


def warm_up(worker: Any) -> warmup.Summary | None:
    """The app's ``preloader_warmup`` requests, once more, in this spare; None when there are none.

    They run through the app as loaded, before the scoreboard's count wraps it: a
    warm-up is not a request served. Failures are logged and never fatal, and
    ``preloader_warmup_timeout`` bounds the whole, as in the preloader."""
    app = getattr(worker, "plain_app", None)
    if app is None:
        return None
    return warmup.run_configured(app, worker.cfg, worker.model, worker.log, f"app={worker.app_name} spare pid={os.getpid()}")


def warm_request_path(worker: Any) -> bool:
    """One synthetic request through gunicorn's own request path, without the app: parsed from
    a socket pair by gunicorn's parser, its WSGI environ built, an empty response written back.

    A released spare's first request then finds that code's pages already its own (the
    copy-on-write faults are taken now); no hook, access log line or count. Only for a WSGI
    request model (the ASGI ones parse with their own server). False if anything failed:
    nothing depends on it."""
    if worker.model is not None and worker.model.interface != "wsgi":
        return False
    from gunicorn.http import wsgi

    client, server = socket.socketpair()
    try:
        client.sendall(b"GET /smartspawn-spare-warm-up HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
        addr = ("127.0.0.1", 0)
        request = next(_compat.request_parser(worker.cfg, server, addr))
        response, _environ = wsgi.create(request, server, addr, addr, worker.cfg)
        response.start_response("204 No Content", [])
        response.write(b"")
        response.close()
        server.shutdown(socket.SHUT_WR)
        while client.recv(65536):
            pass
        return True
    except Exception as exc:  # gunicorn's internals of another version: the spare serves anyway
        worker.log.debug("app=%s spare pid=%d request path warm-up skipped: %r", worker.app_name, os.getpid(), exc)
        return False
    finally:
        client.close()
        server.close()


def park(worker: Any) -> bool:
    """Wait for the master's wake-up; True to serve, False to leave (stopped, or orphaned)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {WAKE})
    util._setproctitle(f"spare [{worker.app_name}]")
    worker.notify()  # parked: the master may release it from now on
    woken = False
    try:
        while worker.alive and not woken:
            if os.getppid() != worker.ppid:
                worker.log.info("Parent changed, shutting down: %s", worker)
                return False
            woken = signal.sigtimedwait({WAKE}, CHECK_SECONDS) is not None
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {WAKE})
    if woken:
        util._setproctitle(f"worker [{worker.app_name}]")
    return woken and bool(worker.alive)
