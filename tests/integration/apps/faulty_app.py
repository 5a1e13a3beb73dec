"""Test app that misbehaves on purpose, steered by files (so a test can change it while it runs).

FAULTY_DIR names a directory; in it:
  exit-at-start   a worker calls os._exit(1) in starting_worker_process
  segv-at-start   a worker kills itself with SIGSEGV there
  block-at-start  a worker waits there while the file exists
  block-gen-N     the same, only for workers of code generation N
  hang-at-fork    the preloader hangs in an os.register_at_fork hook before each fork
  generation      read once at import: the code generation each response names
FAULTY_IGNORE_SIGCHLD=1 sets SIGCHLD to SIG_IGN at import (as some apps do).
Every worker start is appended to $FAULTY_DIR/starts (one line per start).
"""

import json
import os
import signal
import time

from gunicorn_smartspawn import on_event

DIR = os.environ["FAULTY_DIR"]
try:  # which code this is: the file's contents when the app was imported
    with open(os.path.join(DIR, "generation")) as _f:
        GENERATION = _f.read().strip()
except OSError:
    GENERATION = "1"

def _hang_at_fork():
    while _flag("hang-at-fork"):
        time.sleep(0.05)


os.register_at_fork(before=_hang_at_fork)  # runs in the preloader before every fork

if os.environ.get("FAULTY_IGNORE_SIGCHLD"):
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)


def _flag(name):
    return os.path.exists(os.path.join(DIR, name))


@on_event("starting_worker_process")
def _starting(forked):
    with open(os.path.join(DIR, "starts"), "a") as f:
        f.write(f"{os.getpid()}\n")
    if _flag("exit-at-start"):
        os._exit(1)
    if _flag("segv-at-start"):
        os.kill(os.getpid(), signal.SIGSEGV)
    while _flag("block-at-start") or _flag(f"block-gen-{GENERATION}"):
        time.sleep(0.05)


def _shut_listeners():
    """What a careless app can do: shutdown() ends listening for every process sharing the socket."""
    import socket

    for name in os.listdir("/proc/self/fd"):
        try:
            s = socket.fromfd(int(name), socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            continue
        try:
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            s.close()


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/shutdown-listener":
        _shut_listeners()
    body = json.dumps({"pid": os.getpid(), "generation": GENERATION}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
