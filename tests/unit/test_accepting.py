"""worker/accepting.py: the sync worker's accept, and the facts about accepted sockets it rests on."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from gunicorn_smartspawn.worker import SyncWorker, accepting

LINUX = sys.platform.startswith("linux")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback listener in the mode gunicorn's sync worker puts it (non-blocking)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def connect(listener: socket.socket) -> socket.socket:
    return socket.create_connection(listener.getsockname(), timeout=5)


@pytest.mark.skipif(not LINUX, reason="Linux's accept(2)")
def test_an_accepted_socket_is_already_blocking_and_close_on_exec(listener: socket.socket) -> None:
    """What gunicorn's ``setblocking(1)`` and ``close_on_exec`` would make it, it already is."""
    peer = connect(listener)
    client, _ = listener.accept()
    try:
        assert client.gettimeout() is None
        assert os.get_blocking(client.fileno())
        assert not os.get_inheritable(client.fileno())
        assert not accepting.make_blocking(client)
    finally:
        client.close()
        peer.close()


def test_a_default_timeout_is_undone_as_gunicorn_does(listener: socket.socket) -> None:
    socket.setdefaulttimeout(3.0)
    try:
        peer = connect(listener)
        client, _ = listener.accept()
    finally:
        socket.setdefaulttimeout(None)
    try:
        assert client.gettimeout() == 3.0
        assert accepting.make_blocking(client)
        assert client.gettimeout() is None and os.get_blocking(client.fileno())
    finally:
        client.close()
        peer.close()


def test_other_systems_always_get_setblocking(listener: socket.socket) -> None:
    peer = connect(listener)
    client, _ = listener.accept()
    try:
        assert accepting.make_blocking(client, accepted_blocking=False)
        assert client.gettimeout() is None
    finally:
        client.close()
        peer.close()


class Listener:
    """A listener that counts what it is asked."""

    def __init__(self) -> None:
        self.asked = 0
        self.family = socket.AF_INET

    def getsockname(self) -> tuple[str, int]:
        self.asked += 1
        return ("127.0.0.1", 8000)


def test_a_named_listener_reads_the_address_once_and_passes_the_rest_on() -> None:
    real = Listener()
    named = accepting.NamedListener(real)
    assert [named.getsockname() for _ in range(3)] == [("127.0.0.1", 8000)] * 3
    assert real.asked == 1
    assert named.family == socket.AF_INET and named.listener is real
    cache: dict[Any, accepting.NamedListener] = {}
    assert accepting.named(cache, real) is accepting.named(cache, real)


def test_the_sync_workers_accept_hands_gunicorns_handle_the_named_listener(listener: socket.socket) -> None:
    handled: list[tuple[Any, socket.socket, Any]] = []

    class Stub:
        _named_listeners = None

        def handle(self, named: Any, client: socket.socket, addr: Any) -> None:
            handled.append((named, client, addr))

    stub = Stub()
    peers = [connect(listener), connect(listener)]
    try:
        for _ in peers:
            SyncWorker.accept(stub, listener)
        (first, one, addr), (second, two, _) = handled
        assert first is second and first.listener is listener
        assert first.getsockname() == listener.getsockname() and addr == peers[0].getsockname()
        assert one.gettimeout() is None and os.get_blocking(one.fileno())
        one.close()
        two.close()
    finally:
        for peer in peers:
            peer.close()
