"""Hostile test app: from a thread started at import, its preloader forges frames to the master.

Every 0.2 s it writes a ``WorkerSpawned`` for a random pid on its own
channel (found among its descriptors). The master must stop that preloader each
time, back off, and never signal a pid it has not verified; the app's
workers and every other app keep serving.
"""

import json
import os
import random
import socket
import struct
import threading
import time


def _channel():
    """The preloader's end of its channel: the one connected unix stream socket among its fds."""
    for name in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            if sock.family == socket.AF_UNIX and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                sock.getpeername()
                return sock
        except OSError:
            pass
        sock.close()
    return None


def _forge():
    time.sleep(0.5)
    channel = _channel()
    while channel is not None:
        body = json.dumps({"type": "WorkerSpawned", "age": random.randint(1, 10**6),
                           "pid": random.randint(2, 2**22), "fork_ms": 1.0}).encode()
        try:
            channel.send(struct.pack("!I", len(body)) + body)
        except OSError:
            return
        time.sleep(0.2)


if os.environ.get("HOSTILE_IN_PRELOADER", "1") == "1":
    threading.Thread(target=_forge, daemon=True).start()


def app(environ, start_response):
    body = json.dumps({"pid": os.getpid(), "app": "hostile"}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
