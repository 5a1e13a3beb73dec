"""Run requests through a WSGI app in-process (no server, no socket).

Used by ``conf/smart_warm.py`` to warm heavy_app in the preloader before
the first fork.
"""

import io
import sys

# One of every kind of page the memory benchmark's clients ask for.
WARM_PATHS = (
    "/", "/", "/api/stats/", "/health",
    *("/products/SKU-%05d/" % i for i in range(0, 240, 24)),
    *("/api/customers/C%07d/" % i for i in range(0, 150_000, 15_000)),
)


def _environ(path):
    return {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "",
        "SCRIPT_NAME": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "127.0.0.1",
        "REMOTE_ADDR": "127.0.0.1", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }


def warm_wsgi_app(application, paths=WARM_PATHS):
    """Send GET ``paths`` through ``application``; returns the statuses.

    Closes Django's database connections afterwards (if Django is loaded):
    a connection must never be inherited by forked workers."""
    statuses = []
    for path in paths:
        status = []

        def start_response(s, headers, exc_info=None):
            status.append(s)
            return lambda data: None

        result = application(_environ(path), start_response)
        try:
            for _ in result:
                pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        statuses.append(status[0] if status else None)
    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()
    return statuses
