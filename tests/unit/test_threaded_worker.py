"""worker/classes.py's ThreadedWorker: what it changes around gunicorn's gthread loop (the parent
check's rate)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from test_wire import FakeClock

from gunicorn_smartspawn.worker import ThreadedWorker
from gunicorn_smartspawn.worker.heartbeat import Heartbeat


@pytest.fixture
def looking(monkeypatch: Any) -> tuple[ThreadedWorker, FakeClock, list[int]]:
    """A worker whose parent check counts its getppid() calls, on a clock the test moves."""
    clock, calls = FakeClock(), []
    parent = [os.getppid()]
    worker = object.__new__(ThreadedWorker)
    worker.ppid = parent[0]

    def getppid() -> int:
        calls.append(1)
        return parent[0]

    monkeypatch.setattr("gunicorn_smartspawn.worker.classes.time.monotonic", clock)
    monkeypatch.setattr("gunicorn.workers.gthread.os.getppid", getppid)
    worker.log = type("Log", (), {"info": lambda *a: None})()
    worker.smart_heartbeat = Heartbeat(0.1)
    worker.parent = parent  # type: ignore[attr-defined]
    return worker, clock, calls


def test_the_parent_check_looks_once_per_heartbeat_window(looking: Any) -> None:
    worker, clock, calls = looking
    assert all(worker.is_parent_alive() for _ in range(50))
    assert len(calls) == 1
    clock.now += 0.0999
    assert worker.is_parent_alive() and len(calls) == 1
    clock.now += 0.0002
    assert worker.is_parent_alive() and len(calls) == 2


def test_a_new_parent_is_seen_at_the_first_look_after_the_window(looking: Any) -> None:
    worker, clock, _ = looking
    assert worker.is_parent_alive()
    worker.parent[0] = 1  # the master died: the worker was reparented
    assert worker.is_parent_alive()  # within the window the last look covers
    clock.now += 0.1
    assert not worker.is_parent_alive()
    assert not worker.is_parent_alive()  # and it stays seen


def test_without_a_timeout_the_parent_check_looks_every_time(looking: Any) -> None:
    worker, _, calls = looking
    worker.smart_heartbeat = Heartbeat(0.0)
    for _ in range(5):
        assert worker.is_parent_alive()
    assert len(calls) == 5
