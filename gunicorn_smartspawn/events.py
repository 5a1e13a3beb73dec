"""Passenger-compatible process events: ``on_event("starting_worker_process")``.

Importing this module has no side effect and does not import gunicorn, so an
application can register its callbacks unconditionally, whether it runs under
gunicorn-smartspawn, stock gunicorn, or a test runner.

Callbacks registered in the preloader (by the application's import) or in the
master (by ``gunicorn.conf.py``) are inherited by every worker through fork.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, overload

STARTING_WORKER_PROCESS: Final = "starting_worker_process"
STOPPING_WORKER_PROCESS: Final = "stopping_worker_process"
PRELOADER_LOADED: Final = "preloader_loaded"

#: Event name -> what the callback receives.
KNOWN_EVENTS: Final[dict[str, str]] = {
    STARTING_WORKER_PROCESS: "fn(forked: bool): in each worker before it serves",
    STOPPING_WORKER_PROCESS: "fn(): in each worker as it leaves",
    PRELOADER_LOADED: "fn(): in the preloader once the app is imported, before any fork",
}

Callback = Callable[..., Any]

_callbacks: dict[str, list[Callback]] = {name: [] for name in KNOWN_EVENTS}


def _check(name: str) -> None:
    if name not in KNOWN_EVENTS:
        known = ", ".join(repr(n) for n in KNOWN_EVENTS)
        raise ValueError(f"unknown event {name!r}: expected one of {known}")


@overload
def on_event(name: str) -> Callable[[Callback], Callback]: ...
@overload
def on_event(name: str, callback: Callback) -> Callback: ...


def on_event(name: str, callback: Callback | None = None) -> Any:
    """Register ``callback`` for event ``name``; without it, act as a decorator.

    ``on_event("starting_worker_process", fn)`` calls ``fn(forked)`` in each
    worker before it serves its first request: ``forked`` is True when the
    worker was forked from a preloader (smart spawning), False when it
    imported the app itself (direct spawning). Registering the same function
    twice has no further effect.
    """
    _check(name)

    def register(fn: Callback) -> Callback:
        if not callable(fn):
            raise TypeError(f"on_event({name!r}, ...) needs a callable, got {type(fn).__name__}")
        if fn not in _callbacks[name]:
            _callbacks[name].append(fn)
        return fn

    if callback is None:
        return register
    return register(callback)


def callbacks(name: str) -> tuple[Callback, ...]:
    """The callbacks registered for ``name``, in registration order."""
    _check(name)
    return tuple(_callbacks[name])


def fire(name: str, *args: Any) -> None:
    """Call every callback of ``name``. An exception propagates to the caller."""
    for fn in callbacks(name):
        fn(*args)


def clear(module: str | None = None) -> None:
    """Forget registrations: every one, or those of functions defined in ``module``.

    On HUP the master forgets what ``gunicorn.conf.py`` registered before it
    executes the file again; callbacks of modules the file imports stay, as
    those modules are not executed again."""
    for registered in _callbacks.values():
        registered[:] = [fn for fn in registered if module is not None and getattr(fn, "__module__", None) != module]
