"""preloader/nextworker.py: the next worker's gunicorn object, built ahead in the preloader."""

from __future__ import annotations

import gc
import os
import tempfile
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from gunicorn_smartspawn.preloader.nextworker import NextWorker, assign, assigned, forget, rehearse
from gunicorn_smartspawn.wire import SpawnWorker
from gunicorn_smartspawn.worker import SyncWorker
from gunicorn_smartspawn.worker.models import interface_of
from gunicorn_smartspawn.worker.runtime import InheritedTmp


def _build() -> Any:
    cfg = Config()
    return SyncWorker(0, os.getpid(), [], object(), 15.0, cfg, Logger(cfg))


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def test_a_built_object_keeps_no_heartbeat_file_open() -> None:
    before = _open_fds()
    worker = NextWorker(_build).make()
    assert _open_fds() <= before
    with pytest.raises(ValueError):
        worker.tmp.fileno()


def test_build_holds_one_object_and_take_hands_it_over_once() -> None:
    built: list[Any] = []
    ahead = NextWorker(lambda: built.append(_build()) or built[-1])
    assert not ahead.ready
    ahead.build()
    ahead.build()  # one waits already: nothing more
    assert ahead.ready and len(built) == 1
    assert ahead.take() is built[0]
    assert not ahead.ready
    assert ahead.take() is built[1]  # none ready: built now
    assert len(built) == 2


def test_a_constructor_that_raises_leaves_the_building_to_each_worker() -> None:
    calls = []

    def broken() -> Any:
        calls.append(1)
        raise RuntimeError("no")

    ahead = NextWorker(broken)
    ahead.build()
    assert ahead.ready  # nothing more to build while idle ...
    assert ahead.take() is None  # ... and the worker builds its own
    ahead.build()
    assert len(calls) == 1  # not tried again in the preloader
    with pytest.raises(RuntimeError):
        ahead.make()  # in the worker, the error is a failed boot


def test_assign_gives_the_object_its_age_heartbeat_file_and_context() -> None:
    worker = NextWorker(_build).make()
    with tempfile.TemporaryFile() as f:
        fd = os.dup(f.fileno())
        assign(worker, SpawnWorker(age=7, slot=3, spare=1), fd, "shop", None)
        assert worker.age == 7
        assert isinstance(worker.tmp, InheritedTmp) and worker.tmp.fileno() == fd
        assert worker.first_heartbeat_mark == os.fstat(fd).st_mtime
        assert (worker.app_name, worker.forked, worker.scoreboard_index, worker.spare) == ("shop", True, 3, True)
        worker.tmp.close()
        with pytest.raises(ValueError):
            worker.tmp.fileno()
        worker.tmp.close()  # twice: nothing more


def test_assigned_answers_none_instead_of_raising() -> None:
    assert assigned(None, SpawnWorker(age=1), -1, "default", None) is None
    worker = NextWorker(_build).make()
    assert assigned(worker, SpawnWorker(age=1), -1, "default", None) is None  # fstat(-1) fails


def test_forget_breaks_a_cycle_through_the_object() -> None:
    worker = NextWorker(_build).make()
    worker.callback = worker.notify  # a bound method: a cycle, as a request model's callback makes
    gc.collect()
    gc.disable()
    try:
        forget(worker)
        forget(None)
        del worker
        assert gc.collect() == 0  # freed by reference counting alone
    finally:
        gc.enable()


def test_rehearse_runs_without_io() -> None:
    before = _open_fds()
    rehearse()
    assert _open_fds() == before


def test_interface_of_remembers_its_answer_per_object() -> None:
    class App:
        def __call__(self, environ: Any, start_response: Any) -> Any:
            return []

    app = App()
    assert interface_of(app) == "wsgi"
    App.__call__ = lambda self, scope, receive, send: None  # type: ignore[method-assign,assignment]
    assert interface_of(app) == "wsgi"  # remembered: the preloader's answer, in its workers
    assert interface_of(App()) == "asgi"  # another object: asked anew
