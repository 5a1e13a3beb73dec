"""The gthread worker's connections under the plugin (gunicorn's loop, with the plugin's heartbeat and
parent check): kept-alive connections, bodies read and unread, slow clients, errors, the keepalive
timeout, max_requests and a graceful stop behave as gunicorn's gthread worker makes them."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest
from harness import DIRECT, SMART, read_stat, wait_for

MODES = pytest.mark.parametrize("mode", [SMART, DIRECT], ids=["smart", "direct"])
GTHREAD = ("-w", "1", "--threads", "4")
APP = "conn_app:app"


def call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=body)
    resp = conn.getresponse()
    return resp.status, resp.read()


def read_response(sock: socket.socket) -> bytes:
    """One response whose headers end the read, for a hello-sized answer (Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


@MODES
def test_one_connection_serves_reads_unread_bodies_and_errors(server_factory, mode):
    server = server_factory(*mode, *GTHREAD, APP)
    server.wait_serving()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        assert call(conn, "GET", "/")[0] == 200
        first = conn.sock
        status, body = call(conn, "POST", "/read", b"x" * 100_000)
        assert (status, json.loads(body)["read"]) == (200, 100_000)
        assert call(conn, "POST", "/", b"y" * 3000)[0] == 200  # unread: gunicorn drains it
        assert call(conn, "GET", "/")[0] == 200
        assert conn.sock is first  # all on the connection kept alive
        assert call(conn, "GET", "/raise")[0] == 500
        assert call(conn, "GET", "/")[0] == 200
        conn.request("GET", "/partial")
        with pytest.raises(http.client.HTTPException):
            conn.getresponse().read()  # cut off after its first chunk, as gunicorn does
        conn.close()
        assert call(conn, "GET", "/")[0] == 200
    finally:
        conn.close()
    assert "conn_app raises on purpose" in server.log()


def test_a_slow_client_is_answered_once_its_request_arrives(server_factory):
    server = server_factory(*SMART, *GTHREAD, APP)
    server.wait_serving()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for part in (b"GET / HTTP/1.1\r\nHo", b"st: x\r\n\r\n"):
            sock.settimeout(0.3)
            with pytest.raises((socket.timeout, TimeoutError)):
                sock.recv(1)  # nothing is answered before the request is whole
            sock.sendall(part)
        sock.settimeout(10)
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200")


def test_an_idle_kept_alive_connection_is_closed_after_keepalive(server_factory):
    server = server_factory(*SMART, *GTHREAD, "--keep-alive", "1", APP)
    server.wait_serving()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        answered = time.monotonic()
        assert sock.recv(1) == b""  # the server closed it
        assert 0.9 <= time.monotonic() - answered < 5


def test_max_requests_closes_the_kept_alive_connection_and_recycles(server_factory):
    server = server_factory(*SMART, *GTHREAD, "--max-requests", "3", APP)
    [worker] = server.wait_workers(1)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for _ in range(2):
            assert call(conn, "GET", "/")[0] == 200
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        assert (resp.status, resp.getheader("Connection")) == (200, "close")
    finally:
        conn.close()
    [new] = server.wait_workers(1, exclude=[worker])
    assert wait_for(lambda: server.get_json("/", timeout=2)["pid"] == new, 15, what="the new worker to answer")


def test_term_stops_with_a_kept_alive_connection_open(server_factory):
    server = server_factory(*SMART, *GTHREAD, "--graceful-timeout", "10", APP)
    server.wait_serving()
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        server.signal(signal.SIGTERM)
        assert sock.recv(1) == b""  # closed by the stopping worker...
        assert server.wait_exit(15) == 0  # ...which leaves cleanly


def test_a_unix_socket_serves_kept_alive_requests(server_factory):
    server = server_factory(*SMART, *GTHREAD, APP, unix=True)
    pid = wait_for(lambda: server.get_json("/", timeout=2)["pid"], 20, what="the server to answer")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(server.unix_path)
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = read_response(sock)
            assert answer.startswith(b"HTTP/1.1 200") and str(pid).encode() in answer


def _running(pid: int) -> bool:
    stat = read_stat(pid)
    return stat is not None and stat[0] != "Z"


@MODES
def test_a_busy_worker_sees_soon_that_its_master_was_killed(server_factory, mode):
    """The parent check runs at most once per heartbeat window: a worker kept turning by requests
    still sees its master gone within about that window, then leaves."""
    server = server_factory(*mode, *GTHREAD, APP)
    [worker] = server.wait_workers(1)
    server.wait_serving()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        assert call(conn, "GET", "/")[0] == 200
        os.kill(server.pid, signal.SIGKILL)
        killed = time.monotonic()
        with contextlib.suppress(OSError, http.client.HTTPException):
            while "Parent changed" not in server.log() and time.monotonic() - killed < 10:
                call(conn, "GET", "/")  # keeps its loop turning
        seen = time.monotonic() - killed
    finally:
        conn.close()  # a kept-alive connection in use would hold its graceful stop open
    assert "Parent changed, shutting down" in server.log() and seen < 3, seen
    wait_for(lambda: not _running(worker), 15, what="the worker to leave")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_an_ssl_connection_serves_kept_alive_requests_and_bodies(server_factory, tmp_path):
    """SSL wraps the plugin's client socket in Python's own SSLSocket, from a socket already blocking."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=60)
    server = server_factory(*SMART, *GTHREAD, "--certfile", str(cert), "--keyfile", str(key), APP)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False

    def answer() -> int:
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=2)
        try:
            return call(conn, "GET", "/")[0]
        finally:
            conn.close()

    wait_for(answer, 20, what="the server to answer over SSL")
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10)
    try:
        assert call(conn, "GET", "/")[0] == 200
        first = conn.sock
        status, body = call(conn, "POST", "/read", b"x" * 50_000)
        assert (status, json.loads(body)["read"]) == (200, 50_000)
        assert call(conn, "POST", "/", b"y" * 3000)[0] == 200
        assert call(conn, "GET", "/")[0] == 200
        assert conn.sock is first
    finally:
        conn.close()
