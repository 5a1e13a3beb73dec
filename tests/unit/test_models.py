"""Request models: resolving smart_worker_class, composing the worker class, the pairing check, the master's check."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn import __version__ as GUNICORN_VERSION
from gunicorn.config import Config
from gunicorn.errors import AppImportError
from gunicorn.glogging import Logger
from gunicorn.workers import SUPPORTED_WORKERS
from gunicorn.workers.base import Worker as GunicornWorker
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker as GunicornSyncWorker

from gunicorn_smartspawn.config.apps import validate_apps
from gunicorn_smartspawn.worker import SyncWorker, ThreadedWorker, Worker, compose, models


def require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is not installed: .ci/run installs it (pip install -e '.[test]')")
        pytest.skip(f"{module} is not installed")


def config(**settings: Any) -> Config:
    cfg = Config()
    for name, value in settings.items():
        cfg.set(name, value)
    return cfg


# -- resolving the setting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "threads", "expected"),
    [
        (None, 1, GunicornSyncWorker),
        ("", 1, GunicornSyncWorker),
        (None, 4, ThreadWorker),  # as gunicorn: more than one thread is gthread
        ("sync", 4, ThreadWorker),  # as gunicorn reads -k sync --threads 4
        ("gthread", 1, ThreadWorker),  # gthread named is gthread, even with one thread
        ("gunicorn.workers.sync.SyncWorker", 1, GunicornSyncWorker),
        (ThreadWorker, 1, ThreadWorker),
    ],
)
def test_the_setting_names_a_model_as_k_does(value: Any, threads: int, expected: type) -> None:
    assert models.resolve(value, threads).base is expected


@pytest.mark.parametrize(("name", "module"), [("gevent", "gevent"), ("gevent_pywsgi", "gevent"), ("tornado", "tornado")])
def test_gunicorns_other_models_resolve(name: str, module: str) -> None:
    require(module)
    model = models.resolve(name, 1)
    assert model.name == name and models.qualified(model.base) == f"{SUPPORTED_WORKERS[name]}"


def test_facts_of_each_known_model() -> None:
    require("gevent")
    require("tornado")
    require("uvicorn_worker")
    expected = {
        "sync": ("wsgi", "sync", 1, False),
        "gthread": ("wsgi", "threads", 3, True),
        "gevent": ("wsgi", "gevent", 50, False),
        "gevent_pywsgi": ("wsgi", "gevent", 50, False),
        "tornado": ("tornado", "ioloop", 50, False),
        "uvicorn_worker.UvicornWorker": ("asgi", "asyncio", 50, False),
        "uvicorn_worker.UvicornH11Worker": ("asgi", "asyncio", 50, False),
        **({"asgi": ("asgi", "asyncio", 50, False)} if "asgi" in SUPPORTED_WORKERS else {}),
    }
    cfg = config(threads=3, worker_connections=50)
    for name, (interface, concurrency, capacity, threaded) in expected.items():
        model = models.resolve(name, 3 if name == "gthread" else 1)
        assert (model.interface, model.concurrency, model.capacity(cfg), model.threaded) == (
            interface, concurrency, capacity, threaded), name


def test_an_unknown_class_serves_anything_with_a_generous_capacity() -> None:
    class Custom(GunicornWorker):  # type: ignore[misc]
        pass

    model = models.resolve(Custom, 1)
    assert (model.interface, model.concurrency, model.threaded) == ("any", "unknown", True)
    assert model.capacity(config(threads=4, worker_connections=30)) == 30


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("no_such_model", "smart_worker_class='no_such_model': gunicorn {v} has no worker named 'no_such_model' (it has: sync"),
        ("no_such_module_anywhere.Worker", "smart_worker_class='no_such_module_anywhere.Worker': cannot import "
                                           "no_such_module_anywhere.Worker (ModuleNotFoundError: No module named"),
        ("gunicorn.workers.sync.NoSuchWorker", "cannot import gunicorn.workers.sync.NoSuchWorker (AttributeError"),
        ("gunicorn.workers.sync.util", "gunicorn.workers.sync.util is not a class"),
        ("egg:no_such_dist#x", "smart_worker_class='egg:no_such_dist#x': "),
        ("smartspawn.Worker", "is the plugin's own worker class: smart_worker_class names the request model"),
        ("gunicorn.workers.base.Worker", "is gunicorn's abstract Worker, which serves nothing"),
        (dict, "smart_worker_class='dict' is not a gunicorn worker class"),
        (42, "smart_worker_class=42 is not a worker class"),
    ],
)
def test_what_names_no_model_is_one_line_naming_the_setting(value: Any, message: str) -> None:
    with pytest.raises(models.ModelError) as info:
        models.resolve(value, 1)
    text = str(info.value)
    assert message.format(v=GUNICORN_VERSION) in text
    assert "\n" not in text


def test_a_gunicorn_without_the_asgi_worker_says_so() -> None:
    if "asgi" in SUPPORTED_WORKERS:
        pytest.skip(f"gunicorn {GUNICORN_VERSION} has the asgi worker")
    with pytest.raises(models.ModelError, match=rf"^smart_worker_class='asgi': gunicorn {GUNICORN_VERSION} has no worker named 'asgi'"):
        models.resolve("asgi", 1)


def test_errors_of_an_app_of_the_table_name_its_key() -> None:
    with pytest.raises(models.ModelError, match=r"^apps\['api'\]\['smart_worker_class'\]='nope': "):
        models.resolve("nope", 1, models.where("api"))


# -- composing the worker class ----------------------------------------------------------------------------------


@pytest.fixture
def build() -> Iterator[Any]:
    """``build(cfg, worker_class=Worker)``: a worker object as the master builds it (its heartbeat file closed after)."""
    made: list[Any] = []

    def make(cfg: Config, worker_class: type = Worker) -> Any:
        worker = worker_class(1, os.getpid(), [], object(), 15.0, cfg, Logger(cfg))
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.tmp.close()


def test_the_default_is_the_sync_worker_and_gthread_with_threads(build: Any) -> None:
    assert type(build(config())) is SyncWorker
    assert type(build(config(threads=4))) is ThreadedWorker
    one_thread = build(config(smart_worker_class="gthread", threads=1))
    assert type(one_thread) is ThreadedWorker and one_thread.capacity == 1 and one_thread.model.threaded


def test_a_model_is_composed_once_under_the_plugins_worker(build: Any) -> None:
    require("gevent")
    from gunicorn.workers.ggevent import GeventWorker

    worker = build(config(smart_worker_class="gevent", worker_connections=64))
    cls = type(worker)
    assert cls.__name__ == "SmartGeventWorker" and cls.__mro__[1:3] == (Worker, GeventWorker)
    assert isinstance(worker, Worker) and isinstance(worker, GeventWorker)
    assert worker.capacity == 64 and not worker.model.threaded and worker.model.name == "gevent"
    assert type(build(config(smart_worker_class="gevent"))) is cls  # cached
    assert compose(Worker, GeventWorker) is cls


def test_the_composition_runs_the_models_own_setup() -> None:
    calls: list[type] = []

    class WithSetup(GunicornSyncWorker):  # type: ignore[misc]
        @classmethod
        def setup(cls) -> None:
            calls.append(cls)

    composed = compose(Worker, WithSetup)
    assert calls == [WithSetup]
    assert compose(Worker, WithSetup) is composed and calls == [WithSetup]  # once


def test_a_hand_made_mix_is_kept_and_a_bare_subclass_gets_the_setting(build: Any) -> None:
    class HandMade(Worker, ThreadWorker):  # type: ignore[misc]
        pass

    class Bare(Worker):  # type: ignore[misc]
        pass

    worker = build(config(threads=4), HandMade)
    assert type(worker) is HandMade and worker.model.base is ThreadWorker and worker.capacity == 4
    bare = build(config(), Bare)
    assert type(bare).__mro__[1:3] == (Bare, Worker) and isinstance(bare, GunicornSyncWorker)
    assert models.base_of(HandMade) is ThreadWorker
    assert models.base_of(Bare) is None and models.base_of(Worker) is None


def test_check_config_is_the_models_own(build: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(ThreadWorker, "check_config", classmethod(lambda cls, cfg, log: seen.append(cls)), raising=False)
    Worker.check_config(config(threads=2), None)
    assert seen == [ThreadWorker]


# -- the application against its model -----------------------------------------------------------------------------


async def asgi_function(scope: Any, receive: Any, send: Any) -> None: ...


class AsgiClass:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...


class WsgiClass:
    def __call__(self, environ: Any, start_response: Any) -> Any: ...


def wsgi_function(environ: Any, start_response: Any) -> Any: ...


def sync_asgi_wrapper(scope: Any, receive: Any, send: Any) -> Any: ...


def one_argument(request: Any) -> Any: ...


def anything(*args: Any) -> Any: ...


@pytest.mark.parametrize(
    ("app", "kind"),
    [
        (asgi_function, "asgi"),
        (AsgiClass(), "asgi"),
        (functools.partial(asgi_function), "asgi"),
        (sync_asgi_wrapper, "asgi"),  # three positional parameters
        (wsgi_function, "wsgi"),
        (WsgiClass(), "wsgi"),
        (functools.partial(sync_asgi_wrapper, {}), "wsgi"),
        (one_argument, None),  # a tornado application's __call__(request)
        (anything, None),
        (AsgiClass, None),  # a class: ASGI 2 style, not told
        (42, None),
    ],
)
def test_what_kind_of_application(app: Any, kind: str | None) -> None:
    assert models.interface_of(app) == kind


def test_starlette_and_flask_like_apps_are_told_apart() -> None:
    require("starlette")
    from starlette.applications import Starlette

    assert models.interface_of(Starlette()) == "asgi"


@pytest.mark.parametrize(
    ("model", "app", "words"),
    [
        ("sync", asgi_function, "is an ASGI application (called with scope, receive, send), and the request model 'sync' "
                                "serves WSGI: set smart_worker_class (--smart-worker-class) to "),
        ("gthread", AsgiClass(), "the request model 'gthread' serves WSGI"),
        ("uvicorn_worker.UvicornWorker", wsgi_function,
         "is a WSGI application (called with environ, start_response), and the request model "
         "'uvicorn_worker.UvicornWorker' serves ASGI: set smart_worker_class (--smart-worker-class) to sync, gthread or gevent"),
        ("tornado", asgi_function, "serves WSGI or a tornado.web.Application"),
    ],
)
def test_an_app_its_model_cannot_serve_is_refused_in_one_line(model: str, app: Any, words: str) -> None:
    if "." in model or model == "tornado":
        require(model.split(".")[0])
    resolved = models.resolve(model, 1)
    with pytest.raises(models.PairingError) as info:
        models.check_pairing(resolved, app, "shop.main:app", models.setting_words(None))
    text = str(info.value)
    assert isinstance(info.value, AppImportError)  # exit code 4 in a worker, a failed load in a preloader
    assert text.startswith("shop.main:app is ") and words in text and "\n" not in text
    if "serves WSGI" in words:
        assert text.endswith("uvicorn_worker.UvicornWorker")
        assert ("asgi or " in text) is ("asgi" in SUPPORTED_WORKERS)


def test_a_matching_or_unknown_pair_passes() -> None:
    sync = models.resolve("sync", 1)
    models.check_pairing(sync, wsgi_function, "x:app")
    models.check_pairing(sync, one_argument, "x:app")

    class Custom(GunicornWorker):  # type: ignore[misc]
        pass

    models.check_pairing(models.resolve(Custom, 1), asgi_function, "x:app")


def test_an_app_of_the_table_is_told_its_key() -> None:
    with pytest.raises(models.PairingError, match=r"set apps\['api'\]\['smart_worker_class'\] to "):
        models.check_pairing(models.resolve(None, 1), asgi_function, "api:app", models.setting_words("api"))


# -- the master's check ------------------------------------------------------------------------------------------------


def test_the_master_checks_every_apps_model() -> None:
    apps = validate_apps({
        "web": {"app": "web:app", "bind": "127.0.0.1:8001"},
        "api": {"app": "api:app", "bind": "127.0.0.1:8002", "smart_worker_class": "no_such_model"},
    })
    with pytest.raises(models.ModelError, match=r"^apps\['api'\]\['smart_worker_class'\]='no_such_model': "):
        models.check_config(config(apps=apps), Worker)
    models.check_config(config(smart_worker_class="gthread"), Worker)


def test_the_master_refuses_two_models_for_one_app() -> None:
    class HandMade(Worker, ThreadWorker):  # type: ignore[misc]
        pass

    models.check_config(config(), HandMade)
    models.check_config(config(smart_worker_class="gthread"), HandMade)
    with pytest.raises(models.ModelError, match="name two request models: keep one"):
        models.check_config(config(smart_worker_class="sync"), HandMade)


def test_eventlet_cannot_be_preloaded() -> None:
    eventlet = type("EventletWorker", (GunicornWorker,), {"__module__": "gunicorn.workers.geventlet"})
    with pytest.raises(models.ModelError, match="eventlet cannot be preloaded"):
        models.check_config(config(smart_worker_class=eventlet), Worker)
    models.check_config(config(smart_worker_class=eventlet, spawn_method="direct"), Worker)


def test_gevent_patches_in_the_preloader_only(monkeypatch: pytest.MonkeyPatch) -> None:
    require("gevent")
    from gevent import monkey

    patched: list[bool] = []
    monkeypatch.setattr(monkey, "patch_all", lambda: patched.append(True))
    assert models.resolve("gevent", 1).before_import() == "gevent monkey-patched before the import"
    assert patched == [True]
    assert models.resolve("sync", 1).before_import() is None
    assert models.resolve(None, 1).after_fork() is None


def test_asyncio_loops_are_never_made_here() -> None:
    # resolving and checking a model must not leave a loop behind in a preloader
    models.resolve("uvicorn_worker.UvicornWorker" if importlib.util.find_spec("uvicorn_worker") else "sync", 1)
    policy = asyncio.get_event_loop_policy()
    assert getattr(getattr(policy, "_local", None), "_loop", None) is None


def test_a_model_that_vanished_on_hup_fails_the_workers_load_not_the_master(build: Any) -> None:
    worker = build(config(smart_worker_class="no_such_model", threads=3))
    assert type(worker) is Worker and worker.model is None and worker.capacity == 3  # the master's record
    with pytest.raises(AppImportError, match=r"^smart_worker_class='no_such_model': gunicorn .* has no worker named"):
        worker.init_process()  # a direct worker: exit code 4, which backs off


def test_the_master_refuses_at_start_and_warns_on_hup() -> None:
    from gunicorn.app import base  # noqa: F401  (the startup hook finishes its work when this is imported)

    from gunicorn_smartspawn.master.setup import setup_notes

    class App:
        cfg = config(worker_class="smartspawn.Worker", smart_worker_class="no_such_model")
        app_uri = "x:app"

    with pytest.raises(models.ModelError):
        setup_notes(App(), reloading=False)
    [note] = [n for n in setup_notes(App(), reloading=True) if "no_such_model" in n]
    assert note.endswith("workers that run keep running; new ones fail to load until it is fixed")
