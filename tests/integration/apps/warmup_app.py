"""Test app for ``preloader_warmup``: it records every warm-up request it serves.

A warm-up request (``environ["smartspawn.warmup"]``) appends one JSON line
(pid, method, path, query, host, server port, scheme) to WARMUP_LOG and its
path to ``WARMED``, which a forked worker inherits. GET / answers the pid and
``WARMED``: a worker that lists paths it never served got them from its
preloader's memory. Warm-up paths: /missing answers 404, /boom raises,
/hang sleeps (for the timeout). With WU_PG_PORT, /db asks PostgreSQL for
its backend pid through Django's connection (CONN_MAX_AGE=None: Django keeps
it open); with WU_MEMCACHED=host:port, /cache stores a key through a
pymemcache client made on first use. Both answer the local port of the
connection they used (a warm-up request writes it to WARMUP_LOG).
"""

import json
import os
import time

WARMED = []
PG_PORT = os.environ.get("WU_PG_PORT")
MEMCACHED = os.environ.get("WU_MEMCACHED")
CACHE = []

if PG_PORT:
    import django
    from django.conf import settings

    settings.configure(
        DATABASES={"default": {
            "ENGINE": "django.db.backends.postgresql", "NAME": "postgres", "USER": "postgres",
            "HOST": "127.0.0.1", "PORT": int(PG_PORT), "CONN_MAX_AGE": None,
        }},
        INSTALLED_APPS=[], USE_TZ=True,
    )
    django.setup()


def _db():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    return {"backend": backend, "port": _local_port(connection.connection.fileno())}


def _local_port(fd):
    import socket

    s = socket.socket(fileno=os.dup(fd))
    try:
        return s.getsockname()[1]
    finally:
        s.close()


def _cache():
    if not CACHE:
        from pymemcache.client.base import Client

        host, port = MEMCACHED.rsplit(":", 1)
        CACHE.append(Client((host, int(port)), connect_timeout=2, timeout=2))
    client = CACHE[0]
    client.set(f"wu-{os.getpid()}", b"x")
    ok = client.get(f"wu-{os.getpid()}") == b"x"
    return {"ok": ok, "port": client.sock.getsockname()[1]}


def _record(environ, **more):
    line = {
        "pid": os.getpid(), "method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"], "host": environ.get("HTTP_HOST"),
        "server_port": environ.get("SERVER_PORT"), "scheme": environ["wsgi.url_scheme"], **more,
    }
    with open(os.environ["WARMUP_LOG"], "a") as f:
        f.write(json.dumps(line) + "\n")


def application(environ, start_response):
    path = environ["PATH_INFO"]
    warm = bool(environ.get("smartspawn.warmup"))
    status, answer = "200 OK", {"pid": os.getpid(), "warmed": WARMED}
    if path == "/db" and PG_PORT:
        answer.update(_db())
    elif path == "/cache" and MEMCACHED:
        answer.update(_cache())
    if warm:
        WARMED.append(path)
        _record(environ, **{k: answer[k] for k in ("backend", "port", "ok") if k in answer})
        if path == "/boom":
            raise RuntimeError("the warm-up's /boom")
        if path == "/missing":
            status = "404 Not Found"
        if path == "/hang":
            time.sleep(300)
    body = json.dumps(answer).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
