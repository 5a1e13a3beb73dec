"""Test app for connection handling: ``/`` answers its pid, ``/read`` reads the request body and
answers its length, ``/raise`` raises (gunicorn answers 500), ``/partial`` fails after its first chunk."""

import json
import os


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/raise":
        raise RuntimeError("conn_app raises on purpose")
    if path == "/partial":
        return _partial(start_response)
    read = len(environ["wsgi.input"].read()) if path == "/read" else None
    body = json.dumps({"pid": os.getpid(), "read": read}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _partial(start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first chunk\n"
    raise RuntimeError("conn_app fails mid-response on purpose")
