"""Request models: which gunicorn worker class serves an app, and what it needs around the fork.

``-k smartspawn.Worker`` names the plugin; the setting ``smart_worker_class``
(``--smart-worker-class``, per app in the ``apps`` table) names the request
model, spelled as gunicorn spells ``-k``: a short name (``sync``,
``gthread``, ``gevent``, ``tornado``, ``asgi`` where gunicorn has it), a
dotted path (``uvicorn_worker.UvicornWorker``) or, in ``gunicorn.conf.py``,
the class itself. Unset: ``sync``, or ``gthread`` when ``--threads`` is above 1,
as gunicorn does. ``gthread`` is ``gthread`` whatever ``--threads`` says.

A :class:`Model` knows, per worker class (found by name in its MRO, so
nothing is imported to ask):

* the interface its application must have: ``wsgi``, ``asgi``, ``tornado``
  (WSGI or a tornado application), or ``any`` (a class this module does not
  know; nothing is checked);
* how it runs requests at once (``concurrency``), hence how many a worker
  may have in flight (:meth:`Model.capacity`) and whether the scoreboard
  needs a lock;
* what a preloader does before it imports the app (:meth:`Model.before_import`:
  gevent monkey-patches there, so the app's modules see patched sockets,
  locks and ssl) and what a forked worker does before any app code runs
  (:meth:`Model.after_fork`: gevent's hub is initialised again).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from gunicorn.errors import AppImportError

SETTING: Final = "smart_worker_class"
FLAG: Final = "--smart-worker-class"

#: Worker classes this module knows, by ``module.qualname``: (interface, concurrency).
KNOWN: Final[dict[str, tuple[str, str]]] = {
    "gunicorn.workers.sync.SyncWorker": ("wsgi", "sync"),
    "gunicorn.workers.gthread.ThreadWorker": ("wsgi", "threads"),
    "gunicorn.workers.ggevent.GeventWorker": ("wsgi", "gevent"),
    "gunicorn.workers.geventlet.EventletWorker": ("wsgi", "eventlet"),
    "gunicorn.workers.gtornado.TornadoWorker": ("tornado", "ioloop"),
    "gunicorn.workers.gasgi.ASGIWorker": ("asgi", "asyncio"),
    "uvicorn_worker._workers.UvicornWorker": ("asgi", "asyncio"),
    "uvicorn.workers.UvicornWorker": ("asgi", "asyncio"),
}
#: What to name for each interface in a message.
SERVES: Final = {
    "wsgi": "WSGI",
    "asgi": "ASGI",
    "tornado": "WSGI or a tornado.web.Application",
}
WSGI_CHOICES: Final = "sync, gthread or gevent"


class ModelError(RuntimeError):
    """``smart_worker_class`` names nothing usable; the message is one line and names the setting."""


class PairingError(AppImportError):  # type: ignore[misc]
    """The application is not of the kind its request model serves; one line, no traceback needed."""


@dataclass(frozen=True)
class Model:
    """A request model: a gunicorn worker class and what the plugin knows of it."""

    name: str  # as the user spelled it, or gunicorn's short name
    base: type  # the gunicorn worker class
    interface: str  # "wsgi", "asgi", "tornado" or "any"
    concurrency: str  # "sync", "threads", "gevent", "eventlet", "ioloop", "asyncio" or "unknown"

    def capacity(self, cfg: Any) -> int:
        """The most requests one worker may have in flight (the scoreboard's bound on busy)."""
        threads = max(1, int(getattr(cfg, "threads", 1) or 1))
        connections = max(1, int(getattr(cfg, "worker_connections", 1000) or 1000))
        if self.concurrency == "sync":
            return 1
        if self.concurrency == "threads":
            return threads
        if self.concurrency == "unknown":
            return max(threads, connections)
        return connections

    @property
    def threaded(self) -> bool:
        """Do requests run in several OS threads (the scoreboard slot then takes a lock)?"""
        return self.concurrency in ("threads", "unknown")

    def before_import(self) -> str | None:
        """In a preloader, before the app is imported; what was done, for the log."""
        if self.concurrency == "gevent":
            from gevent import monkey

            monkey.patch_all()
            return "gevent monkey-patched before the import"
        return None

    def after_fork(self) -> None:
        """In a forked worker, before any app code (events, hooks) runs."""
        if self.concurrency == "gevent" and "gevent" in sys.modules:
            import gevent

            gevent.reinit()  # the hub and its loop, if the import made one, belong to the preloader


# -- naming a class -------------------------------------------------------------------------------


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def is_plugin_class(cls: Any) -> bool:
    """Is ``cls`` the plugin's worker class or built on it (marked, so nothing is imported to ask)?"""
    return isinstance(cls, type) and any(vars(c).get("__smartspawn__") for c in cls.__mro__)


def base_of(cls: type) -> type | None:
    """The request model mixed into ``cls``: the first class of its MRO that is neither the
    plugin's nor gunicorn's abstract ``Worker``; None when there is none."""
    from gunicorn.workers.base import Worker as Abstract

    for klass in cls.__mro__:
        if klass is Abstract or klass is object or is_plugin_class(klass):
            continue
        if issubclass(klass, Abstract):
            return klass
    return None


def facts(cls: type) -> tuple[str, str]:
    """(interface, concurrency) of a worker class: the nearest known class in its MRO."""
    for klass in cls.__mro__:
        known = KNOWN.get(qualified(klass))
        if known is not None:
            return known
    return ("any", "unknown")


def short_name(cls: type) -> str:
    """gunicorn's short name for ``cls`` (``gevent``), else its dotted path."""
    from gunicorn.workers import SUPPORTED_WORKERS

    path = qualified(cls)
    return next((name for name, target in SUPPORTED_WORKERS.items() if target == path), path)


def model_of(cls: type, name: str | None = None) -> Model:
    interface, concurrency = facts(cls)
    return Model(name or short_name(cls), cls, interface, concurrency)


# -- the setting ------------------------------------------------------------------------------------


def setting_of(cfg: Any) -> Any:
    settings = getattr(cfg, "settings", None)
    if isinstance(settings, Mapping) and SETTING in settings:
        return settings[SETTING].get()
    return None


def resolve(value: Any, threads: int, where: str = SETTING) -> Model:
    """The model ``value`` (the setting's value) names; :class:`ModelError` if none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return _cached(("gthread" if threads > 1 else "sync"), where)
    if isinstance(value, str):
        name = value.strip()
        if name == "sync" and threads > 1:
            name = "gthread"  # as gunicorn reads -k sync --threads N
        return _cached(name, where)
    if not isinstance(value, type):
        raise ModelError(f"{where}={value!r} is not a worker class: name one as -k does (gevent, asgi, module.Class)")
    return _checked(value, value.__name__, where)


@functools.lru_cache(maxsize=64)
def _cached(name: str, where: str) -> Model:
    return _checked(load(name, where), name, where)


def _checked(cls: type, name: str, where: str) -> Model:
    from gunicorn.workers.base import Worker as Abstract

    if not (isinstance(cls, type) and issubclass(cls, Abstract)):
        raise ModelError(f"{where}={name!r} is not a gunicorn worker class (a subclass of gunicorn.workers.base.Worker)")
    if is_plugin_class(cls):
        raise ModelError(
            f"{where}={name!r} is the plugin's own worker class: {where} names the request model "
            "under it (sync, gthread, gevent, tornado, asgi, uvicorn_worker.UvicornWorker)"
        )
    if base_of(cls) is None:
        raise ModelError(f"{where}={name!r} is gunicorn's abstract Worker, which serves nothing")
    return model_of(cls, name)


def load(name: str, where: str = SETTING) -> type:
    """The class ``name`` spells, as ``-k`` reads it; one line naming ``where`` if it cannot."""
    from gunicorn import __version__ as version
    from gunicorn import util
    from gunicorn.workers import SUPPORTED_WORKERS

    if name.startswith("egg:"):
        try:
            cls: type = util.load_class(name)
        except Exception as exc:
            raise ModelError(f"{where}={name!r}: {_last_line(str(exc))}") from None
        return cls
    path = name.lstrip("#")
    if "." not in path:
        if path not in SUPPORTED_WORKERS:
            known = ", ".join(SUPPORTED_WORKERS)
            raise ModelError(f"{where}={name!r}: gunicorn {version} has no worker named {path!r} (it has: {known})")
        path = SUPPORTED_WORKERS[path]
    module, _, attr = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attr)
    except Exception as exc:
        raise ModelError(f"{where}={name!r}: cannot import {path} ({type(exc).__name__}: {_last_line(str(exc))})") from None
    if not isinstance(found, type):
        raise ModelError(f"{where}={name!r}: {path} is not a class")
    return found


def _last_line(text: str) -> str:
    """The last line that says something of a message that ends a traceback (gunicorn's load_class)."""
    lines = [line.strip().strip("[]").strip() for line in text.strip().splitlines()]
    lines = [line for line in lines if any(c.isalnum() for c in line)]
    return lines[-1] if lines else text


def for_worker(worker_class: type, cfg: Any, where: str = SETTING) -> Model:
    """The model a worker of ``worker_class`` runs for ``cfg``: the class's own, if it mixes one
    in (``class Mine(gunicorn_smartspawn.Worker, UvicornWorker)``), else the setting's."""
    base = base_of(worker_class)
    threads = int(getattr(cfg, "threads", 1) or 1)
    if base is None:
        return resolve(setting_of(cfg), threads, where)
    try:
        named = resolve(setting_of(cfg), threads, where)
    except ModelError:
        named = None
    return named if named is not None and named.base is base else model_of(base)


# -- the application against the model ----------------------------------------------------------------


#: interface_of's answers by application object (kept alive here, so that its id stays its own). The
#: preloader's check after the import fills it, and its workers, forked with the same object, read it:
#: ``inspect.signature`` in a new worker cost its initialisation about 0.8 ms.
_INTERFACES: dict[int, tuple[Any, str | None]] = {}
_INTERFACES_KEPT: Final = 64


def interface_of(app: Any) -> str | None:
    """``asgi`` (a coroutine function, or ``(scope, receive, send)``), ``wsgi`` (a plain callable of
    ``(environ, start_response)``), or None when it cannot be told."""
    known = _INTERFACES.get(id(app))
    if known is not None and known[0] is app:
        return known[1]
    kind = _interface(app)
    if len(_INTERFACES) < _INTERFACES_KEPT:
        _INTERFACES[id(app)] = (app, kind)
    return kind


def _interface(app: Any) -> str | None:
    if inspect.isclass(app) or not callable(app):
        return None
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(type(app).__call__):
        return "asgi"
    try:
        signature = inspect.signature(app)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = signature.parameters.values()
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
        return None
    required = [p for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]
    return {2: "wsgi", 3: "asgi"}.get(len(required))


def describe(app: Any) -> str:
    kind = interface_of(app)
    if kind == "asgi":
        return "an ASGI application (called with scope, receive, send)"
    return "a WSGI application (called with environ, start_response)"


def asgi_choices() -> str:
    from gunicorn.workers import SUPPORTED_WORKERS

    return "asgi or uvicorn_worker.UvicornWorker" if "asgi" in SUPPORTED_WORKERS else "uvicorn_worker.UvicornWorker"


def table_name(app: Any) -> str | None:
    """The app's name when it is an entry of the ``apps`` table (messages then name its key)."""
    from gunicorn_smartspawn.config.apps import AppLoader

    return app.config.name if isinstance(app, AppLoader) else None


def where(app_name: str | None) -> str:
    """The setting's name in a message of the model's resolution."""
    return f"apps[{app_name!r}][{SETTING!r}]" if app_name else SETTING


def app_uri(app: Any) -> str:
    return str(getattr(app, "app_uri", None) or "the application")


def setting_words(app_name: str | None) -> str:
    """How a message names the setting: the flag in the one-app form, the table's key for an app of it."""
    return f"apps[{app_name!r}][{SETTING!r}]" if app_name else f"{SETTING} ({FLAG})"


def check_pairing(model: Model, app: Any, app_uri: str, where: str = SETTING) -> None:
    """Refuse, at load, an application the model cannot serve: one line naming the app, what it is
    and the setting to change (raised as gunicorn's ``AppImportError``)."""
    kind = interface_of(app)
    if kind is None or model.interface == "any":
        return
    if kind == "asgi" and model.interface in ("wsgi", "tornado"):
        choices = asgi_choices()
    elif kind == "wsgi" and model.interface == "asgi":
        choices = WSGI_CHOICES
    else:
        return
    raise PairingError(
        f"{app_uri} is {describe(app)}, and the request model {model.name!r} serves "
        f"{SERVES[model.interface]}: set {where} to {choices}"
    )


# -- the master's check, at start and on HUP ----------------------------------------------------------


def check_config(cfg: Any, worker_class: type) -> None:
    """Every app's request model resolves and can run as configured; :class:`ModelError` (one line,
    naming the setting) if one cannot. Run by the master before it binds or forks anything."""
    apps = getattr(cfg, "apps", None) or {}
    entries = [(None, {})] if not apps else [(name, dict(entry.overrides)) for name, entry in apps.items()]
    mixed = base_of(worker_class)
    for name, overrides in entries:
        where_ = where(name)
        value = overrides.get(SETTING, setting_of(cfg))
        threads = int(overrides.get("threads", getattr(cfg, "threads", 1)) or 1)
        model = resolve(value, threads, where_)
        if mixed is not None:
            if value is not None and model.base is not mixed:
                raise ModelError(
                    f"{where_}={value!r} and the worker class {qualified(worker_class)}, which already mixes in "
                    f"{qualified(mixed)}, name two request models: keep one"
                )
            model = model_of(mixed)
        method = overrides.get("spawn_method", getattr(cfg, "spawn_method", "smart"))
        if model.concurrency == "eventlet" and method == "smart":
            raise ModelError(
                f"{where_}={model.name!r}: eventlet cannot be preloaded (it must patch before the import and "
                "has no way to start its hub again after a fork): use spawn_method='direct', or gevent"
            )
