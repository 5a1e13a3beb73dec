"""A small WSGI app that shows what smart spawning does.

``GET /`` answers with this worker's pid, its parent, whether it was forked
from a preloader, and how long ago (and in which process) the app was
imported. Under ``--spawn-method=smart`` every worker reports the same
import pid: the preloader's.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from gunicorn_smartspawn import on_event

IMPORTED_AT = time.time()
IMPORTED_BY = os.getpid()
# Something worth sharing: a table built once at import time.
SQUARES = [i * i for i in range(200_000)]

state: dict[str, Any] = {"forked": None, "started_at": None}


@on_event("starting_worker_process")
def _started(forked: bool) -> None:
    # Reconnect clients and restart threads here when forked is True.
    state["forked"] = forked
    state["started_at"] = time.time()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = json.dumps(
        {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "forked": state["forked"],
            "imported_by": IMPORTED_BY,
            "imported_seconds_ago": round(time.time() - IMPORTED_AT, 3),
            "path": environ.get("PATH_INFO", "/"),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
