"""Test app that holds ~40 MB of data made at import, so copy-on-write sharing shows in PSS.

BALLAST_MB (default 40) sets the size. The data is one bytes object per MB:
reading it never writes to its pages, so forked workers keep sharing them.
"""

import json
import os

BALLAST = [os.urandom(1024) * 1024 for _ in range(int(os.environ.get("BALLAST_MB", "40")))]


def app(environ, start_response):
    body = json.dumps({"pid": os.getpid(), "ballast_mb": len(BALLAST)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
