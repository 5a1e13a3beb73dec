"""A synthetic WSGI app of a chosen size, for the cost-growth benchmark (growth.py).

    SIZED_APP_MB=300 gunicorn benchmarks.sized_app:application

At import it allocates ``$SIZED_APP_MB`` MiB (default 100) and keeps it for
its lifetime: half as Python objects (dicts of records holding strings,
ints, floats, lists and tuples: many small objects, every container tracked
by the garbage collector), half as raw buffers (filled ``bytearray`` chunks
and, where numpy imports, filled numpy arrays; a raw buffer is a few large
blocks that no collector ever looks into).  Every page is written, so it is
resident.  Both halves are measured, not estimated: objects are added until
the process's resident set has grown by the target (with the collector off
meanwhile, as a bulk load would; its previous state is restored after).

URLs (every response carries the answering pid in ``X-Worker-Pid``):

- ``/health``: JSON ``{"status", "pid", "ppid"}``, touching nothing big;
- ``/_bench/size``: JSON with what the import built (MiB of each half,
  object count, seconds);
- ``/_bench/hold?seconds=S`` (S <= 120, default 30): one line
  ``{"pid": N}`` at once, then keeps the (sync) worker busy for S seconds or
  until the client goes away, as heavy_app's hold does for spawn_time.py.
"""

from __future__ import annotations

import gc
import json
import os
import time

try:
    import numpy
except ImportError:  # raw buffers are then all bytearray
    numpy = None

MiB = 1024 * 1024
SIZE_MB = int(os.environ.get("SIZED_APP_MB", "100"))
CHUNK = 8 * MiB  # raw buffers are allocated in chunks of this size


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


TEXT = "".join(chr(97 + (i * 7) % 26) for i in range(4096))


def _record(i: int) -> dict:
    """One 'row' of Python objects: about 1.3 KiB in a dozen objects."""
    name = "customer-%08d-%s" % (i, "abcdefghij" * (i % 5 + 2))
    return {"id": i, "name": name, "score": i * 0.25, "text": TEXT[i % 512:i % 512 + 600],
            "tags": ["t%d" % (i % 97), "g%d" % (i % 13), name[-12:]],
            "point": (i % 1000, i // 1000, float(i % 7))}


def build_objects(target: int) -> tuple[list, int]:
    """Dicts of records until RSS grew by ``target`` bytes; (tables, count)."""
    tables: list = []
    start, n = _rss(), 0
    while _rss() - start < target:
        table = {}
        for _ in range(2000):
            table["k%08d" % n] = _record(n)
            n += 1
        tables.append(table)
    return tables, n


def build_raw(target: int) -> list:
    """Filled buffers of ``target`` bytes: half bytearray, half numpy (all
    bytearray without numpy)."""
    buffers: list = []
    done = 0
    while done < target:
        size = min(CHUNK, target - done)
        if numpy is not None and done >= target // 2:
            buffers.append(numpy.full(size // 8, float(len(buffers))))
        else:
            buffers.append(bytearray(b"\xa5") * size)
        done += size
    return buffers


def _build() -> tuple[list, list, dict]:
    t0 = time.perf_counter()
    before = _rss()
    raw = build_raw(SIZE_MB * MiB // 2)
    after_raw = _rss()
    collecting = gc.isenabled()
    gc.disable()  # a bulk load: no collection can free anything meanwhile
    try:
        objects, count = build_objects(SIZE_MB * MiB // 2)
    finally:
        if collecting:
            gc.enable()
    after = _rss()
    info = {"size_mb": SIZE_MB, "raw_mb": round((after_raw - before) / MiB, 1),
            "objects_mb": round((after - after_raw) / MiB, 1), "records": count,
            "rss_mb": round(after / MiB, 1), "seconds": round(time.perf_counter() - t0, 3)}
    return raw, objects, info


RAW, OBJECTS, INFO = _build()


def _hold_body(pid: int, seconds: float):
    yield b'{"pid": %d}\n' % pid
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)
        yield b" "  # a write to a closed connection ends the hold early


def application(environ, start_response):
    pid = os.getpid()
    path = environ.get("PATH_INFO", "")
    headers = [("Content-Type", "application/json"), ("X-Worker-Pid", str(pid))]
    if path == "/_bench/hold":
        seconds = 30.0
        for part in environ.get("QUERY_STRING", "").split("&"):
            if part.startswith("seconds="):
                try:
                    seconds = min(float(part[8:]), 120.0)
                except ValueError:
                    pass
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Worker-Pid", str(pid))])
        return _hold_body(pid, seconds)
    if path == "/_bench/size":
        body = json.dumps(dict(INFO, pid=pid)).encode()
    elif path == "/health":
        body = json.dumps({"status": "ok", "pid": pid, "ppid": os.getppid()}).encode()
    else:
        start_response("404 Not Found", headers)
        return [b'{"error": "not found"}']
    start_response("200 OK", headers + [("Content-Length", str(len(body)))])
    return [body]
