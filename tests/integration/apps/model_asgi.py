"""Test app for the ASGI request models (gunicorn's ``asgi``, ``uvicorn_worker.UvicornWorker``): Starlette.

Its lifespan records each startup and shutdown (with the pid that ran it) to
EVENT_LOG, as do its events; its import goes to IMPORT_LOG with whether an
event loop existed then. ``/`` answers pid, version and how many lifespan
startups this process ran; ``/sleep?S`` awaits S seconds first.
MODEL_LOOP_AT_IMPORT=1 makes the import leave an event loop behind (what
the fork-safety report must name). The version is the text of the file
MODEL_VERSION_FILE ("v1" without one).
"""

import asyncio
import contextlib
import json
import os
import time

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

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
if os.environ.get("MODEL_LOOP_AT_IMPORT"):
    LEFT_BEHIND = asyncio.new_event_loop()
    asyncio.set_event_loop(LEFT_BEHIND)
_record("IMPORT_LOG", module="model_asgi", version=VERSION)
STATE = {"forked": None, "startups": 0}


@on_event("starting_worker_process")
def _starting(forked):
    STATE["forked"] = forked
    _record("EVENT_LOG", event="starting_worker_process", forked=forked)


@on_event("stopping_worker_process")
def _stopping():
    _record("EVENT_LOG", event="stopping_worker_process")


@contextlib.asynccontextmanager
async def lifespan(app):
    STATE["startups"] += 1
    _record("EVENT_LOG", event="lifespan_startup")
    yield
    _record("EVENT_LOG", event="lifespan_shutdown")


def _answer(request, **extra):
    return JSONResponse(
        {"pid": os.getpid(), "forked": STATE["forked"], "version": VERSION, "startups": STATE["startups"],
         "path": request.url.path, **extra}
    )


async def index(request):
    return _answer(request)


async def sleep(request):
    await asyncio.sleep(float(request.url.query or "1"))
    return _answer(request)


app = Starlette(routes=[Route("/", index), Route("/sleep", sleep)], lifespan=lifespan)
