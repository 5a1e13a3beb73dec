"""Test app for ``preloader_warmup`` under the ASGI request model: a bare ASGI callable.

A warm-up request (``scope["smartspawn.warmup"]``) appends a JSON line (pid,
method, path, whether its body arrived) to WARMUP_LOG and its path to
``WARMED``; GET / answers the pid and ``WARMED``. /missing answers 404.
"""

import json
import os

WARMED = []


async def application(scope, receive, send):
    if scope["type"] != "http":
        return  # lifespan: nothing to do
    message = await receive()
    path = scope["path"]
    status = 200
    if scope.get("smartspawn.warmup"):
        WARMED.append(path)
        with open(os.environ["WARMUP_LOG"], "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "method": scope["method"], "path": path,
                                "body": message["type"] == "http.request"}) + "\n")
        status = 404 if path == "/missing" else 200
    body = json.dumps({"pid": os.getpid(), "warmed": WARMED}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
