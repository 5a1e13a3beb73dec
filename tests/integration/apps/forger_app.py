"""Hostile test app: at import, in its preloader, it answers the master's spawn request itself.

It finds the preloader's channel through ``gc``, reads the queued
``SpawnWorker`` frame (so it knows a real pending age), and reports
``WorkerSpawned`` for the pid in $VICTIM_PID, a process that is not the
master's child. The master must refuse it and never signal the victim.
"""

import gc
import json
import os
import socket
import struct


def _channel():
    gc.unfreeze()  # the master froze its heap before forking the preloader: bring it back into view
    for obj in gc.get_objects():
        if isinstance(obj, socket.socket) and obj.fileno() >= 0 and obj.family == socket.AF_UNIX:
            try:
                if not obj.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    obj.getpeername()
                    return obj
            except OSError:
                continue  # a socket object whose descriptor the preloader closed after fork
    raise RuntimeError("no channel found")


def _forge():
    channel = _channel()
    channel.setblocking(True)
    channel.settimeout(10)
    data, fds, _, _ = socket.recv_fds(channel, 65536, 16)
    for fd in fds:
        os.close(fd)
    (length,) = struct.unpack("!I", data[:4])
    request = json.loads(data[4 : 4 + length])
    # it claims to be ready (answers come only from a ready preloader), then answers the request
    for body in ({"type": "PreloaderReady", "pid": os.getpid(), "load_seconds": 0.1, "code": ""},
                 {"type": "WorkerSpawned", "age": request["age"], "pid": int(os.environ["VICTIM_PID"]), "fork_ms": 1.0}):
        frame = json.dumps(body).encode()
        channel.sendall(struct.pack("!I", len(frame)) + frame)
    with open(os.environ["FORGED_LOG"], "a") as f:
        f.write(json.dumps({"age": request["age"]}) + "\n")


_forge()


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
