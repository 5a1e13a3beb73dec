"""Test app for the request models (WSGI): sync, gthread, gevent, tornado.

Records its import (with the class ``socket.socket`` was at import time: a
gevent preloader patches before the import) and its events to IMPORT_LOG and
EVENT_LOG. Answers ``/`` with its pid, version and that class; ``/sleep?S``
sleeps S seconds first (``time.sleep``: cooperative once gevent patched it).
The version is the text of the file MODEL_VERSION_FILE ("v1" without one).
"""

import json
import os
import socket
import threading
import time

from gunicorn_smartspawn import on_event


def _record(path_var, **fields):
    path = os.environ.get(path_var)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "t": time.time(), **fields}) + "\n")


def _version():
    path = os.environ.get("MODEL_VERSION_FILE")
    if not path or not os.path.exists(path):
        return "v1"
    with open(path) as f:
        return f.read().strip()


VERSION = _version()
SOCKET_AT_IMPORT = socket.socket.__module__
LOCK_AT_IMPORT = type(threading.Lock()).__module__
_record("IMPORT_LOG", module="model_wsgi", version=VERSION, socket=SOCKET_AT_IMPORT, lock=LOCK_AT_IMPORT)
STATE = {"forked": None}


@on_event("starting_worker_process")
def _starting(forked):
    STATE["forked"] = forked
    _record("EVENT_LOG", event="starting_worker_process", forked=forked)


@on_event("stopping_worker_process")
def _stopping():
    _record("EVENT_LOG", event="stopping_worker_process")


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/sleep":
        time.sleep(float(environ.get("QUERY_STRING") or "1"))
    body = json.dumps(
        {"pid": os.getpid(), "forked": STATE["forked"], "version": VERSION, "socket": SOCKET_AT_IMPORT,
         "lock": LOCK_AT_IMPORT, "path": path, "multithread": environ.get("wsgi.multithread")}
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
