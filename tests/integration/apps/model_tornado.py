"""Test app for the tornado request model: a ``tornado.web.Application`` (not WSGI).

``/`` answers pid and version; ``/sleep?S`` waits S seconds on the IOLoop
first. Events go to EVENT_LOG, the import to IMPORT_LOG. The version is the
text of the file MODEL_VERSION_FILE ("v1" without one).
"""

import asyncio
import json
import os
import time

import tornado.web

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
_record("IMPORT_LOG", module="model_tornado", version=VERSION)
STATE = {"forked": None}


@on_event("starting_worker_process")
def _starting(forked):
    STATE["forked"] = forked
    _record("EVENT_LOG", event="starting_worker_process", forked=forked)


@on_event("stopping_worker_process")
def _stopping():
    _record("EVENT_LOG", event="stopping_worker_process")


class Index(tornado.web.RequestHandler):
    async def get(self):
        if self.request.path == "/sleep":
            await asyncio.sleep(float(self.request.query or "1"))
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"pid": os.getpid(), "forked": STATE["forked"], "version": VERSION,
                               "path": self.request.path}))


app = tornado.web.Application([(r"/", Index), (r"/sleep", Index)])
