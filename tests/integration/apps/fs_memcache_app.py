"""Test app for fork safety: the seed's memcached example, with a raw client.

At import it connects to memcached (FS_MEMCACHED=host:port) with a tiny
text-protocol client that keeps one socket, as a library would, and with
FS_THREAD=1 starts a thread named ``fs-refresher``. With FS_RECONNECT=1 it
registers the docs' pattern: reconnect and restart the thread in
``on_event("starting_worker_process")``.

GET /kv?<key> sets ``key`` to a value derived from it, gets it back and
answers {"pid", "ok", "wrong", "error"}; on any error the client closes its
socket and reconnects on the next request (what pymemcache does).
GET /threads answers the names of the live threads; GET / the pid and the
local address of the connection opened at import.
"""

import json
import os
import socket
import threading

from gunicorn_smartspawn import on_event


class RawMemcache:
    """One connection, memcached's text protocol, strict parsing."""

    def __init__(self, address, timeout=1.0):
        self.address = address
        self.timeout = timeout
        self.sock = None
        self.buffer = b""
        self.connect()

    def connect(self):
        self.close()
        self.sock = socket.create_connection(self.address, timeout=self.timeout)
        self.buffer = b""

    def close(self):
        if self.sock is not None:
            self.sock.close()  # close, never shutdown: a parent may still hold it
            self.sock = None

    def _line(self):
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("memcached closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _exactly(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("memcached closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def set(self, key, value):
        if self.sock is None:
            self.connect()
        self.sock.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
        line = self._line()
        if line != b"STORED":
            raise ValueError(f"set {key!r}: unexpected reply {line[:80]!r}")

    def get(self, key):
        if self.sock is None:
            self.connect()
        self.sock.sendall(b"get %s\r\n" % key)
        line = self._line()
        if line == b"END":
            return None
        parts = line.split()
        if len(parts) != 4 or parts[0] != b"VALUE":
            raise ValueError(f"get {key!r}: unexpected reply {line[:80]!r}")
        data = self._exactly(int(parts[3]) + 2)[:-2]
        if self._line() != b"END":
            raise ValueError(f"get {key!r}: no END")
        return data  # whatever key the reply was for: a shared connection shows here


host, _, port = os.environ["FS_MEMCACHED"].rpartition(":")
CACHE = RawMemcache((host, int(port)))
CACHE.set(b"fs-import", b"1")
IMPORT_ADDRESS = "%s:%d" % CACHE.sock.getsockname()[:2]  # the preloader's connection, as memcached lists it

_stop = threading.Event()


def _refresh():
    while not _stop.wait(3600):
        pass


def start_refresher():
    thread = threading.Thread(target=_refresh, name="fs-refresher", daemon=True)
    thread.start()
    return thread


if os.environ.get("FS_THREAD"):
    start_refresher()

if os.environ.get("FS_RECONNECT"):

    @on_event("starting_worker_process")
    def _after_fork(forked):
        if forked:
            CACHE.connect()  # closes this worker's copy of the inherited socket, opens its own
            if os.environ.get("FS_THREAD"):
                start_refresher()


def value_for(key):
    return b"%s=%s" % (key, key[::-1] * 4)


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/threads":
        result = {"pid": os.getpid(), "threads": sorted(t.name for t in threading.enumerate())}
    elif path == "/kv":
        key = environ.get("QUERY_STRING", "").encode()
        result = {"pid": os.getpid(), "ok": False, "wrong": False, "error": None}
        try:
            CACHE.set(key, value_for(key))
            got = CACHE.get(key)
            result["ok"] = got == value_for(key)
            result["wrong"] = not result["ok"]
            if result["wrong"]:
                result["error"] = f"wrong value {got[:60]!r}" if got is not None else "missing value"
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
            CACHE.close()  # reconnect on the next request
    else:
        result = {"pid": os.getpid(), "import_address": IMPORT_ADDRESS}
    body = json.dumps(result).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
