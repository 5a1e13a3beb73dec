"""worker/clientsocket.py: the gthread worker's client sockets answer and fail as CPython's do, with
only the blocking-mode system calls that change something."""

from __future__ import annotations

import math
import os
import selectors
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gunicorn_smartspawn.worker import clientsocket
from gunicorn_smartspawn.worker.clientsocket import ClientSocket, DeferredClientSocket, ThreadListener


def _ours_and_peer() -> tuple[ClientSocket, socket.socket]:
    a, b = socket.socketpair()
    ours = ClientSocket(a.family, a.type, a.proto, fileno=a.detach())
    return ours, b


@pytest.fixture
def pair() -> Iterator[tuple[ClientSocket, socket.socket]]:
    ours, peer = _ours_and_peer()
    yield ours, peer
    ours.close()
    peer.close()


@pytest.fixture
def plain() -> Iterator[socket.socket]:
    """CPython's own socket, to compare with."""
    a, b = socket.socketpair()
    yield a
    a.close()
    b.close()


def kernel_blocking(sock: socket.socket) -> bool:
    return os.get_blocking(sock.fileno())


def test_a_request_to_stop_blocking_is_reported_but_not_made_until_the_socket_is_used(pair: Any) -> None:
    ours, _ = pair
    ours.setblocking(False)
    assert type(ours) is DeferredClientSocket
    assert (ours.gettimeout(), ours.getblocking(), ours.timeout) == (0.0, False, 0.0)
    assert kernel_blocking(ours)  # no system call yet
    with pytest.raises(BlockingIOError):  # the first use makes it, then behaves as CPython's
        ours.recv(10)
    assert type(ours) is ClientSocket
    assert not kernel_blocking(ours)
    assert ours.gettimeout() == 0.0


def test_blocking_again_before_any_use_cancels_the_request(pair: Any) -> None:
    ours, peer = pair
    ours.setblocking(False)
    ours.setblocking(True)
    assert type(ours) is ClientSocket
    assert kernel_blocking(ours) and ours.gettimeout() is None
    ours.settimeout(4.5)
    ours.settimeout(None)
    assert type(ours) is ClientSocket and kernel_blocking(ours)
    peer.sendall(b"hello")
    assert ours.recv(10) == b"hello"  # blocking, as asked


def test_a_poller_does_not_make_the_deferred_call(pair: Any) -> None:
    ours, peer = pair
    ours.setblocking(False)
    with selectors.DefaultSelector() as poller:
        poller.register(ours, selectors.EVENT_READ)
        peer.sendall(b"x")
        assert [key.fileobj for key, _ in poller.select(5)] == [ours]
        poller.unregister(ours)
    assert type(ours) is DeferredClientSocket and kernel_blocking(ours)


def test_a_deferred_timeout_applies_at_the_first_read(pair: Any) -> None:
    ours, _ = pair
    ours.settimeout(0.05)
    assert type(ours) is DeferredClientSocket and ours.gettimeout() == 0.05
    started = time.monotonic()
    with pytest.raises((socket.timeout, TimeoutError)):
        ours.recv(10)
    assert time.monotonic() - started < 3
    assert not kernel_blocking(ours) and ours.gettimeout() == 0.05


def test_a_call_for_the_mode_the_socket_has_changes_nothing(pair: Any) -> None:
    ours, _ = pair
    ours.setblocking(True)
    ours.settimeout(None)
    assert type(ours) is ClientSocket and kernel_blocking(ours)
    ours.setblocking(False)
    ours.getsockname()  # a use: the mode is made
    ours.setblocking(False)
    ours.settimeout(0)
    assert type(ours) is ClientSocket and not kernel_blocking(ours) and ours.gettimeout() == 0.0
    ours.setblocking(True)  # a real change: made at once
    assert kernel_blocking(ours) and ours.gettimeout() is None


@pytest.mark.parametrize("value", [0, 0.0, 1, 0.1, 1e-10, 4.9999999999, 3.000000000001, 12345.678, 1e9])
def test_timeouts_read_back_as_cpython_rounds_them(pair: Any, plain: socket.socket, value: float) -> None:
    ours, _ = pair
    ours.settimeout(value)
    plain.settimeout(value)
    assert ours.gettimeout() == plain.gettimeout()
    assert ours.getblocking() == plain.getblocking()
    ours.fileno()
    ours.getsockname()  # made real: still the same
    assert ours.gettimeout() == plain.gettimeout()


@pytest.mark.parametrize("value", [-1, -0.5, math.nan, math.inf, 1e300, "1", object(), 2.5j])
def test_bad_timeouts_fail_as_cpython_fails(pair: Any, plain: socket.socket, value: Any) -> None:
    ours, _ = pair
    with pytest.raises(Exception) as theirs:
        plain.settimeout(value)
    with pytest.raises(type(theirs.value)) as mine:
        ours.settimeout(value)
    assert str(mine.value) == str(theirs.value)
    ours.setblocking(False)  # the same from the deferred state
    with pytest.raises(type(theirs.value)):
        ours.settimeout(value)


@pytest.mark.parametrize("flag", ["yes", None, 1.5])
def test_bad_flags_fail_as_cpython_fails(pair: Any, plain: socket.socket, flag: Any) -> None:
    ours, _ = pair
    with pytest.raises(Exception) as theirs:
        plain.setblocking(flag)
    with pytest.raises(type(theirs.value)):
        ours.setblocking(flag)


@pytest.mark.parametrize("deferred", [False, True])
def test_a_closed_socket_fails_as_cpython_fails(pair: Any, plain: socket.socket, deferred: bool) -> None:
    ours, _ = pair
    if deferred:
        ours.setblocking(False)
        plain.setblocking(False)
    ours.close()
    plain.close()
    assert ours.gettimeout() == plain.gettimeout()  # close() does not make the call
    for call in (lambda s: s.setblocking(True), lambda s: s.settimeout(None), lambda s: s.recv(1)):
        with pytest.raises(OSError) as theirs:
            call(plain)
        with pytest.raises(OSError) as mine:
            call(ours)
        assert mine.value.errno == theirs.value.errno


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock
    sock.close()


@pytest.mark.parametrize("listener_timeout", [0.0, None, 2.0])
@pytest.mark.parametrize("default_timeout", [None, 3.0])
def test_the_listener_accepts_as_socket_accept_does(listener: socket.socket, listener_timeout: Any,
                                                    default_timeout: Any) -> None:
    wrapped = ThreadListener(listener)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(default_timeout)
    peers = []
    try:
        listener.settimeout(listener_timeout)
        found = []
        for accept in (listener.accept, wrapped.accept):
            peers.append(socket.create_connection(listener.getsockname(), timeout=5))
            client, addr = accept()
            found.append((client.gettimeout(), kernel_blocking(client), client.family, client.type, addr[0],
                          client.getpeername() == peers[-1].getsockname()))
            if accept == wrapped.accept:
                assert type(client) is ClientSocket
            client.close()
        assert found[0] == found[1]
    finally:
        socket.setdefaulttimeout(previous)
        for peer in peers:
            peer.close()


def test_the_listener_reads_its_address_once_and_passes_the_rest_on(listener: socket.socket) -> None:
    wrapped = ThreadListener(listener)
    assert wrapped.getsockname() == listener.getsockname()
    assert wrapped.fileno() == listener.fileno()
    wrapped.setblocking(False)
    assert listener.gettimeout() == 0.0
    assert clientsocket.wrapped([wrapped, listener])[0] is wrapped


def test_a_listener_without_cpython_accept_is_asked_as_it_is() -> None:
    class Odd:
        def getsockname(self) -> tuple[str, int]:
            return ("odd", 0)

        def accept(self) -> tuple[str, str]:
            return ("client", "addr")

    assert ThreadListener(Odd()).accept() == ("client", "addr")


@pytest.mark.parametrize("use", [
    lambda s: s.send(b"x"), lambda s: s.sendall(b"x"), lambda s: s.getsockname(), lambda s: s.makefile("rb").close(),
    lambda s: s.shutdown(socket.SHUT_WR), lambda s: s.dup().close(), lambda s: repr(s), lambda s: s.detach(),
])
def test_every_other_use_makes_the_mode_real_first(pair: Any, use: Any) -> None:
    ours, _ = pair
    fd = ours.fileno()
    ours.setblocking(False)
    use(ours)
    assert type(ours) is ClientSocket
    assert not os.get_blocking(fd)
    if ours.fileno() == -1:  # detached: the descriptor is the test's to close
        os.close(fd)
