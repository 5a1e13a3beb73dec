"""gunicorn.conf.py: log when a new worker reaches each of gunicorn's hooks.

Used by spawn_time.py's breakdown samples (not by the timed ones): each hook
appends "pid event CLOCK_MONOTONIC" to ``$SPAWN_BREAKDOWN_LOG``, so the
harness can split a spawn into: until the new worker runs (``post_fork``),
gunicorn's worker initialisation (``post_worker_init``), waiting to accept
(``pre_request`` of the first request), and the first request itself.
"""

import os
import time


def _log(event):
    path = os.environ.get("SPAWN_BREAKDOWN_LOG")
    if path:
        with open(path, "a") as f:
            f.write("%d %s %.6f\n" % (os.getpid(), event, time.monotonic()))


def post_fork(server, worker):
    _log("post_fork")


def post_worker_init(worker):
    _log("post_worker_init")


def pre_request(worker, req):
    _log("pre_request")


def post_request(worker, req, environ, resp):
    _log("post_request")
