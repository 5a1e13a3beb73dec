"""_compat.py: each gunicorn-version difference, on both sides where a fake arbiter can stand for the other version."""

from __future__ import annotations

import queue
import signal
import socket
from types import SimpleNamespace
from typing import Any

import gunicorn
import pytest
from gunicorn.arbiter import Arbiter
from gunicorn.config import Config

from gunicorn_smartspawn import _compat

WAKE = "wake-up"


def queue_arbiter(*items: Any) -> Any:
    """gunicorn >= 25: a SimpleQueue of signals, with a wake-up sentinel."""
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for item in items:
        q.put(item)
    return SimpleNamespace(SIG_QUEUE=q, WAKEUP_REQUEST=WAKE, PIPE=[7, 8])


def list_arbiter(*items: int) -> Any:
    """gunicorn 23: a list of signals and a self-pipe."""
    return SimpleNamespace(SIG_QUEUE=list(items), PIPE=[7, 8])


def test_the_loop_kind_follows_the_installed_gunicorn() -> None:
    assert _compat.QUEUE_LOOP is hasattr(Arbiter, "wait_for_signals")
    assert _compat.QUEUE_LOOP is (gunicorn.version_info >= (25,))


# -- the signal queue ----------------------------------------------------------------------------------------


def test_drain_a_queue_drops_the_wake_up_sentinel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compat, "QUEUE_LOOP", True)
    arbiter = queue_arbiter(signal.SIGHUP, WAKE, signal.SIGTTIN, WAKE)
    assert _compat.drain_signal_queue(arbiter) == [signal.SIGHUP, signal.SIGTTIN]
    assert arbiter.SIG_QUEUE.empty()
    assert _compat.drain_signal_queue(arbiter) == []


def test_drain_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compat, "QUEUE_LOOP", False)
    arbiter = list_arbiter(signal.SIGHUP, signal.SIGTERM)
    queued = arbiter.SIG_QUEUE
    assert _compat.drain_signal_queue(arbiter) == [signal.SIGHUP, signal.SIGTERM]
    assert arbiter.SIG_QUEUE is queued and queued == []  # emptied in place: gunicorn's handlers hold the list


def test_peek_leaves_a_list_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compat, "QUEUE_LOOP", False)
    arbiter = list_arbiter(signal.SIGUSR1)
    assert _compat.peek_signals(arbiter) == [signal.SIGUSR1]
    assert arbiter.SIG_QUEUE == [signal.SIGUSR1]


def test_peek_at_a_queue_drains_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # documented: a SimpleQueue cannot be peeked at
    monkeypatch.setattr(_compat, "QUEUE_LOOP", True)
    arbiter = queue_arbiter(signal.SIGUSR1, WAKE)
    assert _compat.peek_signals(arbiter) == [signal.SIGUSR1]
    assert arbiter.SIG_QUEUE.empty()


def test_the_installed_arbiter_s_own_queue() -> None:
    arbiter = object.__new__(Arbiter)  # no __init__: only its class attributes and a fresh queue
    if _compat.QUEUE_LOOP:
        arbiter.SIG_QUEUE = queue.SimpleQueue()
        arbiter.SIG_QUEUE.put(signal.SIGHUP)
        arbiter.SIG_QUEUE.put(Arbiter.WAKEUP_REQUEST)
    else:
        arbiter.SIG_QUEUE = [signal.SIGHUP]
    assert _compat.drain_signal_queue(arbiter) == [signal.SIGHUP]


# -- the self-pipe, the dirty arbiter, counters, gunicornc -----------------------------------------------------


def test_self_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compat, "QUEUE_LOOP", False)
    assert _compat.self_pipe(SimpleNamespace(PIPE=[7, 8])) == [7, 8]
    assert _compat.self_pipe(SimpleNamespace(PIPE=[-1, 8])) == [8]
    monkeypatch.setattr(_compat, "QUEUE_LOOP", True)
    assert _compat.self_pipe(SimpleNamespace(PIPE=[7, 8])) == []


@pytest.mark.parametrize(("attrs", "expected"), [({}, 0), ({"dirty_arbiter_pid": None}, 0),
                                                   ({"dirty_arbiter_pid": 0}, 0), ({"dirty_arbiter_pid": 321}, 321)])
def test_dirty_pid(attrs: dict[str, Any], expected: int) -> None:
    assert _compat.dirty_pid(SimpleNamespace(**attrs)) == expected


def test_count_bumps_only_counters_gunicorn_keeps() -> None:
    arbiter = SimpleNamespace(_stats={"workers_spawned": 2})
    _compat.count(arbiter, "workers_spawned")
    _compat.count(arbiter, "reloads")  # not kept by this gunicorn: nothing to bump, no error
    assert arbiter._stats == {"workers_spawned": 3}
    _compat.count(SimpleNamespace(), "workers_spawned")  # gunicorn 23 keeps none
    _compat.count(SimpleNamespace(_stats=None), "workers_spawned")


def test_gunicornc_server() -> None:
    server = object()
    assert _compat.gunicornc_server(SimpleNamespace(_control_server=server)) is server
    assert _compat.gunicornc_server(SimpleNamespace()) is None


# -- --reuse-port listeners -----------------------------------------------------------------------------------


class NullLog:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def test_listeners_the_arbiter_bound_are_kept() -> None:
    cfg = Config()
    cfg.set("reuse_port", True)
    bound = [object()]
    assert _compat.per_worker_listeners(cfg, bound, NullLog()) is bound


def test_without_reuse_port_nothing_is_bound() -> None:
    assert _compat.per_worker_listeners(Config(), [], NullLog()) == []


def test_with_reuse_port_and_no_listeners_a_worker_binds_its_own() -> None:
    cfg = Config()
    cfg.set("reuse_port", True)
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg.set("bind", [f"127.0.0.1:{port}"])
    first = _compat.per_worker_listeners(cfg, [], NullLog())
    second = _compat.per_worker_listeners(cfg, [], NullLog())  # a second worker: SO_REUSEPORT lets it bind too
    try:
        assert len(first) == len(second) == 1
        for listener in (first[0], second[0]):
            assert listener.getsockname() == ("127.0.0.1", port)
            assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        assert first[0].fileno() != second[0].fileno()
    finally:
        for listener in (*first, *second):
            listener.close()
