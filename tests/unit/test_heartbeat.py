"""worker/heartbeat.py: gunicorn's notify() at most once per window, never claiming less than stock does."""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger
from hypothesis import given
from hypothesis import strategies as st

from gunicorn_smartspawn.worker import SyncWorker, ThreadedWorker
from gunicorn_smartspawn.worker.heartbeat import MAX_WINDOW, Heartbeat, window_for


@pytest.mark.parametrize(
    ("timeout", "window"),
    [(30, MAX_WINDOW), (10, MAX_WINDOW), (5, 0.05), (1, 0.01), (0, 0.0), (-1, 0.0), (math.nan, 0.0), (math.inf, 0.0)],
)
def test_the_window_is_a_hundredth_of_the_timeout_and_at_most_a_tenth_of_a_second(timeout: float, window: float) -> None:
    assert window_for(timeout) == pytest.approx(window)


def test_the_first_call_writes_then_nothing_until_the_window_runs_out() -> None:
    beat = Heartbeat(0.1)
    assert beat.due(100.0) == pytest.approx(100.1)
    assert beat.due(100.0) is None
    assert beat.due(100.099) is None
    assert beat.due(100.1) == pytest.approx(100.2)
    assert beat.due(250.0) == pytest.approx(250.1)


def test_no_window_writes_every_call_as_gunicorn_does() -> None:
    beat = Heartbeat(0.0)
    assert [beat.due(t) for t in (1.0, 1.0, 1.5)] == [1.0, 1.0, 1.5]


def test_reset_writes_at_the_next_call() -> None:
    beat = Heartbeat(0.1)
    beat.due(5.0)
    beat.reset()
    assert beat.due(5.01) == pytest.approx(5.11)


@given(
    window=st.floats(min_value=0.0, max_value=1.0),
    gaps=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=60),
)
def test_what_the_master_reads_is_never_older_than_stock_and_at_most_a_window_newer(window: float, gaps: list[float]) -> None:
    """At every turn, the file's mtime is at least the turn's time (stock writes exactly that),
    and at most one window past it: the timeout fires no earlier than stock's, at most a window later."""
    beat = Heartbeat(window)
    now, mtime = 1000.0, -math.inf
    for gap in gaps:
        now += gap
        claim = beat.due(now)
        if claim is not None:
            assert claim >= mtime
            mtime = claim
        assert now <= mtime <= now + window + 1e-9


def test_beat_writes_the_claim_on_the_monotonic_clock_of_workertmp() -> None:
    fd, path = tempfile.mkstemp()
    os.unlink(path)
    try:
        beat = Heartbeat(0.1)
        before = time.monotonic()
        beat.beat(fd)
        written = os.fstat(fd).st_mtime
        assert before + 0.1 - 0.01 <= written <= time.monotonic() + 0.1 + 0.01
        os.utime(fd, (1.0, 1.0))
        beat.beat(fd)  # within the window: no write
        assert os.fstat(fd).st_mtime == 1.0
    finally:
        os.close(fd)


@pytest.fixture
def worker() -> Iterator[Any]:
    """``worker(worker_class, timeout)``: a worker object as the master builds it."""
    made: list[Any] = []

    def make(worker_class: type, timeout: int) -> Any:
        cfg = Config()
        cfg.set("timeout", timeout)
        made.append(worker_class(1, os.getpid(), [], object(), timeout / 2.0, cfg, Logger(cfg)))
        return made[-1]

    yield make
    for w in made:
        w.tmp.close()


@pytest.mark.parametrize("worker_class", [SyncWorker, ThreadedWorker])
def test_a_workers_notify_is_a_first_heartbeat_then_quiet_within_the_window(worker: Any, worker_class: type) -> None:
    w = worker(worker_class, 30)
    assert w.smart_heartbeat.window == MAX_WINDOW and not w.has_heartbeat()
    w.notify()
    assert w.has_heartbeat()
    first = w.tmp.last_update()
    assert time.monotonic() <= first <= time.monotonic() + MAX_WINDOW
    w.notify()
    assert w.tmp.last_update() == first


def test_a_worker_without_a_timeout_notifies_every_call(worker: Any) -> None:
    w = worker(SyncWorker, 0)
    w.notify()
    os.utime(w.tmp.fileno(), (1.0, 1.0))
    w.notify()
    assert w.tmp.last_update() != 1.0


MODELS = [
    "gunicorn.workers.sync.SyncWorker",
    "gunicorn.workers.gthread.ThreadWorker",
    "gunicorn.workers.gtornado.TornadoWorker",
    "gunicorn.workers.ggevent.GeventWorker",
    "gunicorn.workers.gasgi.ASGIWorker",
    "uvicorn_worker.UvicornWorker",
]


@pytest.mark.parametrize("path", MODELS)
def test_what_the_plugin_sets_on_a_worker_names_nothing_of_a_request_model(worker: Any, path: str) -> None:
    """An attribute of the plugin's that a model also names would hide the model's (tornado's worker
    has a ``heartbeat`` method, called every second)."""
    import importlib

    from gunicorn.workers.base import Worker as Abstract

    module, _, name = path.rpartition(".")
    try:
        model = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        pytest.skip(f"{path} is not installed")
    cfg = Config()
    bare = Abstract(1, os.getpid(), [], object(), 15.0, cfg, Logger(cfg))
    try:
        ours = set(vars(worker(SyncWorker, 30))) - set(vars(bare))
    finally:
        bare.tmp.close()
    ours |= {n for n in vars(SyncWorker) if not n.startswith("__")} - {"accept"}
    assert ours and not {n for n in ours if hasattr(model, n)}
