"""Test app that reports its process, working directory and one environment variable."""

import json
import os

from gunicorn_smartspawn import on_event

STATE = {"forked": None}


@on_event("starting_worker_process")
def _starting(forked):
    STATE["forked"] = forked


def app(environ, start_response):
    body = json.dumps({
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "forked": STATE["forked"],
        "cwd": os.getcwd(),
        "flavor": os.environ.get("APP_FLAVOR"),
        "app": "env_app",
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
