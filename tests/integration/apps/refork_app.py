"""Test app for refork_after: state a request builds lazily, as Django builds its URL resolver.

Each answer says which process built the lazy state: a worker forked from a
promoted worker answers with the promoted worker's pid there, never its own.
Environment: IMPORT_LOG (path) records each import.
"""

import json
import os
import time

LAZY: dict = {}


def _log_import():
    path = os.environ.get("IMPORT_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "t": time.time()}) + "\n")


_log_import()


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/slow":
        time.sleep(0.2)  # the promoted worker is mostly in a request: a window for a squatter
    if not LAZY:
        LAZY["built_by"] = os.getpid()
        LAZY["table"] = [str(i) * 8 for i in range(2000)]  # what a first request builds and keeps
    body = json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "built_by": LAZY["built_by"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
