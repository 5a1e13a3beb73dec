"""What a request model's server imports as each worker starts, imported once in the preloader instead.

An ASGI worker builds its server when it starts, and the server imports its
protocol modules then: uvicorn's ``Config.load()`` imports the HTTP protocol
(h11 or httptools), the websockets protocol and the lifespan class (24
modules, about 20 ms on the benchmark machine); gunicorn's own ASGI worker
imports its lifespan manager and, with ``asgi_loop`` auto, uvloop. A worker
forked from a preloader would repeat those imports in private memory on
every spawn; :func:`prepare` runs them in the preloader, once the app is
loaded and before the first fork, so that every worker finds them in
``sys.modules``, shared copy-on-write.

Only imports: no server is built, no event loop made or set, no socket
touched. The WSGI models (sync, gthread, gevent) import nothing as a worker
starts. Whatever fails here is the worker's to meet again, so :func:`prepare`
never raises: it says what it did, or why not, for the preloader's log.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Worker classes (``module.qualname`` in the MRO) whose server is uvicorn's.
UVICORN = ("uvicorn_worker._workers.UvicornWorker", "uvicorn.workers.UvicornWorker")
GUNICORN_ASGI = "gunicorn.workers.gasgi.ASGIWorker"


def _names(cls: type) -> set[str]:
    return {f"{k.__module__}.{k.__qualname__}" for k in cls.__mro__}


def prepare(worker_class: type, cfg: Any) -> str | None:
    """Import what ``worker_class``'s server imports when a worker starts; for the log, what was
    imported (or why not); None for a model that imports nothing at start."""
    names = _names(worker_class)
    try:
        if names.intersection(UVICORN):
            return _uvicorn(worker_class)
        if GUNICORN_ASGI in names:
            return _gunicorn_asgi(cfg)
    except Exception as exc:  # the worker meets it again, and reports it there
        return f"server modules not imported ({type(exc).__name__}: {exc})"
    return None


def _uvicorn(worker_class: type) -> str:
    from uvicorn import config as uvicorn_config

    make_config: Any = uvicorn_config.Config  # the app is None, as in the worker's own at first
    options = dict(getattr(worker_class, "CONFIG_KWARGS", None) or {})
    config = make_config(app=None, log_config=None, **options)  # a throwaway: the worker builds its own
    config.load()  # imports the protocol and lifespan classes the options name
    loop_factory = getattr(config, "get_loop_factory", None)
    if loop_factory is not None:
        loop_factory()  # imports uvloop for loop="auto" when it is installed; makes no loop
    return "uvicorn's protocol modules imported"


def _gunicorn_asgi(cfg: Any) -> str:
    importlib.import_module("gunicorn.asgi.lifespan")
    if getattr(cfg, "asgi_loop", "auto") in ("auto", "uvloop"):
        try:
            importlib.import_module("uvloop")
        except ImportError:
            pass
    return "gunicorn's ASGI lifespan imported"
