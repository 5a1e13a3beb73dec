"""The glue to stock gunicorn: which worker classes are ours, which arbiter runs."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn.app import base as app_base
from gunicorn.arbiter import Arbiter
from gunicorn.config import Config
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

from gunicorn_smartspawn.hook import plugin, state
from gunicorn_smartspawn.worker import Worker


@pytest.mark.parametrize(
    "worker_class",
    ["smartspawn.Worker", "gunicorn_smartspawn.Worker", "gunicorn_smartspawn.worker.classes.SyncWorker", "gunicorn_smartspawn.worker.Worker"],
)
def test_our_worker_names(worker_class: str) -> None:
    assert plugin.uses_smartspawn(worker_class) is True


@pytest.mark.parametrize(
    "worker_class",
    [
        "sync",
        "gthread",
        "gevent",
        "egg:gunicorn#sync",
        "gunicorn.workers.sync.SyncWorker",
        "gunicorn.workers.gthread.ThreadWorker",
        "no_such_module_anywhere.Worker",
        "smartspawnish.Worker",
        "gunicorn_smartspawnx.Worker",
    ],
)
def test_other_worker_names(worker_class: str) -> None:
    assert plugin.uses_smartspawn(worker_class) is False


def test_worker_class_objects() -> None:
    class MyWorker(Worker):
        pass

    assert plugin.uses_smartspawn(Worker) is True
    assert plugin.uses_smartspawn(MyWorker) is True
    assert plugin.uses_smartspawn(SyncWorker) is False
    assert plugin.uses_smartspawn(ThreadWorker) is False
    assert plugin.uses_smartspawn(object) is False
    assert plugin.uses_smartspawn(42) is False
    assert plugin.uses_smartspawn(None) is False


@pytest.fixture
def third_party_workers(monkeypatch: pytest.MonkeyPatch) -> str:
    """A module elsewhere that subclasses our worker, and one that subclasses gunicorn's."""
    module = types.ModuleType("thirdparty_workers_for_test")

    class Ours(Worker):
        pass

    class Theirs(SyncWorker):
        pass

    module.Ours = Ours  # type: ignore[attr-defined]
    module.Theirs = Theirs  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, module.__name__, module)
    return module.__name__


def test_dotted_name_of_a_subclass_elsewhere(third_party_workers: str) -> None:
    assert plugin.uses_smartspawn(f"{third_party_workers}.Ours") is True
    assert plugin.uses_smartspawn(f"{third_party_workers}.Theirs") is False
    assert plugin.uses_smartspawn(f"{third_party_workers}.Missing") is False


# -- select_arbiter --------------------------------------------------------------------------


class FakeApp:
    """Just enough of a gunicorn application for an arbiter's constructor."""

    def __init__(self, worker_class: str) -> None:
        self.cfg = Config()
        self.cfg.set("worker_class", worker_class)
        self.app_uri = "example_app.wsgi:application"
        self.loaded = False

    def wsgi(self) -> Any:
        self.loaded = True
        raise AssertionError("the master must not import the application")

    def reload(self) -> None: ...


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Arbiter.__init__ sets SERVER_SOFTWARE; monkeypatch restores the environment after
    monkeypatch.setenv("SERVER_SOFTWARE", "pytest")
    yield


def test_the_hook_put_the_selector_in_place() -> None:
    assert app_base.Arbiter is plugin.select_arbiter
    assert plugin.installed()
    assert state.stock_arbiter() is Arbiter


def test_hook_does_not_wrap_twice() -> None:
    plugin.on_gunicorn_module("gunicorn.app.base", app_base)
    assert app_base.Arbiter is plugin.select_arbiter
    assert state.stock_arbiter() is Arbiter


@pytest.mark.parametrize("worker_class", ["sync", "gthread", "gunicorn.workers.sync.SyncWorker"])
def test_stock_worker_gets_the_stock_arbiter(worker_class: str, clean_environ: None) -> None:
    app = FakeApp(worker_class)
    arbiter = plugin.select_arbiter(app)
    assert type(arbiter) is Arbiter
    assert arbiter.app is app
    assert not app.loaded


def test_our_worker_gets_the_smart_arbiter(clean_environ: None) -> None:
    from gunicorn_smartspawn.master.arbiter import SmartArbiter

    app = FakeApp("smartspawn.Worker")
    arbiter = plugin.select_arbiter(app)
    assert type(arbiter) is SmartArbiter
    assert isinstance(arbiter, Arbiter)
    assert not app.loaded
    assert list(arbiter.apps.pools) == ["example_app.wsgi"]


# -- plugin settings given to a stock run ----------------------------------------------------------------


def test_a_plugin_setting_is_explicit_only_once_given() -> None:
    cfg = Config()
    assert not cfg.settings["spawn_method"].explicit  # the default is not a choice the user made
    assert not cfg.settings["smart_worker_class"].explicit
    cfg.set("spawn_method", "smart")  # given, even with the default's value
    assert cfg.settings["spawn_method"].explicit
    assert cfg.settings["spawn_method"].copy().explicit


@pytest.mark.parametrize(
    ("worker_class", "threads", "settings", "expected"),
    [
        ("gevent", 1, {"spawn_method": "smart"},
         "spawn_method is a gunicorn-smartspawn setting and -k gevent is not its worker: "
         "use -k smartspawn.Worker --smart-worker-class gevent"),
        ("uvicorn_worker.UvicornWorker", 1, {"gc_freeze": False, "smart_fork": "auto"},
         "gc_freeze, smart_fork are gunicorn-smartspawn settings and -k uvicorn_worker.UvicornWorker is not its "
         "worker: use -k smartspawn.Worker --smart-worker-class uvicorn_worker.UvicornWorker"),
        ("sync", 1, {"preloader_idle_timeout": 0}, "use -k smartspawn.Worker"),
        ("sync", 4, {"smart_worker_class": "gthread"}, "-k gthread is not its worker: use -k smartspawn.Worker "
                                                     "--smart-worker-class gthread"),
        (ThreadWorker, 1, {"spawn_method": "direct"}, "-k gunicorn.workers.gthread.ThreadWorker is not its worker"),
    ],
)
def test_plugin_settings_on_a_stock_run_say_how_to_ask_for_them(
    worker_class: Any, threads: int, settings: dict[str, Any], expected: str
) -> None:
    cfg = Config()
    cfg.set("worker_class", worker_class)
    cfg.set("threads", threads)
    for name, value in settings.items():
        cfg.set(name, value)
    note = plugin.foreign_worker_note(cfg)
    assert note is not None and expected in note and note.endswith(note.split(": use ")[-1]), note
    assert "\n" not in note


def test_a_stock_run_without_plugin_settings_hears_nothing(clean_environ: None) -> None:
    cfg = Config()
    cfg.set("worker_class", "gevent")
    cfg.set("workers", 3)
    assert plugin.foreign_worker_note(cfg) is None


def test_the_stock_arbiter_logs_the_note(clean_environ: None, monkeypatch: pytest.MonkeyPatch) -> None:
    app = FakeApp("sync")
    app.cfg.set("spawn_method", "direct")
    logged: list[str] = []
    monkeypatch.setattr("gunicorn.glogging.Logger.warning", lambda self, msg, *args, **kw: logged.append(msg % args))
    arbiter = plugin.select_arbiter(app)
    assert type(arbiter) is Arbiter
    assert logged == ["spawn_method is a gunicorn-smartspawn setting and -k sync is not its worker: use -k smartspawn.Worker"]


def _parsed(monkeypatch: pytest.MonkeyPatch, *argv: str) -> Any:
    from gunicorn.app.wsgiapp import WSGIApplication

    monkeypatch.setattr("sys.argv", ["gunicorn", *argv])
    return WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]")


def test_a_stock_run_keeps_only_gunicorns_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    stock = _parsed(monkeypatch, "-k", "gevent", "--spawn-method", "smart", "probe_app:app")
    assert not [n for n, s in stock.cfg.settings.items() if s.section == "Smart Spawning"]  # as stock as gunicorn's
    assert stock._smartspawn_note == (
        "spawn_method is a gunicorn-smartspawn setting and -k gevent is not its worker: "
        "use -k smartspawn.Worker --smart-worker-class gevent"
    )
    quiet = _parsed(monkeypatch, "-k", "gevent", "probe_app:app")
    assert quiet._smartspawn_note is None
    ours = _parsed(monkeypatch, "-k", "smartspawn.Worker", "--smart-worker-class", "gevent", "probe_app:app")
    assert ours.cfg.smart_worker_class == "gevent" and ours.cfg.spawn_method == "smart"
    assert getattr(ours, "_smartspawn_note", None) is None
