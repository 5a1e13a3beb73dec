"""gunicorn-smartspawn: Phusion Passenger's smart spawning for gunicorn.

Use it with the stock command: ``gunicorn -k smartspawn.Worker APP_MODULE``.
Importing this package does not import gunicorn, so an application can
register its events unconditionally::

    from gunicorn_smartspawn import on_event

    @on_event("starting_worker_process")
    def reconnect(forked):
        if forked:
            ...
"""

from __future__ import annotations

from typing import Any

from gunicorn_smartspawn._version import __version__
from gunicorn_smartspawn.events import KNOWN_EVENTS, on_event

__all__ = ["KNOWN_EVENTS", "Worker", "__version__", "on_event"]


def __getattr__(name: str) -> Any:
    # ``-k gunicorn_smartspawn.Worker``: the worker module imports gunicorn, so load it on demand
    if name == "Worker":
        from gunicorn_smartspawn.worker import Worker

        return Worker
    raise AttributeError(f"module 'gunicorn_smartspawn' has no attribute {name!r}")
