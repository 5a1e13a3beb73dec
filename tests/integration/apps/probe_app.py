"""Test app: records each import and each event to JSON-lines files.

Environment: IMPORT_LOG, EVENT_LOG (paths), PROBE_IMPORT_SLEEP (seconds),
PROBE_FAIL_IMPORT (raise at import when set).
"""

import json
import os
import time

from gunicorn_smartspawn import on_event


def _record(path_var, **fields):
    path = os.environ.get(path_var)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "t": time.time(), **fields}) + "\n")


if os.environ.get("PROBE_FAIL_IMPORT"):
    raise RuntimeError("probe_app refuses to import (PROBE_FAIL_IMPORT is set)")
time.sleep(float(os.environ.get("PROBE_IMPORT_SLEEP", "0")))
_record("IMPORT_LOG", module="probe_app")

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
        _record("EVENT_LOG", event="request_sleeping")
        time.sleep(float(environ.get("QUERY_STRING") or "1"))
    elif path == "/hang":
        while True:
            time.sleep(1)
    body = json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "forked": STATE["forked"], "path": path}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
