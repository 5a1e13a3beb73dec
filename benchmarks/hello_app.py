"""Minimal WSGI "hello world" used as the lightweight counterpart of heavy_app.

    gunicorn -b 127.0.0.1:8000 benchmarks.hello_app:application

Every response carries the answering process's pid (header ``X-Worker-Pid``
and the body) so that benchmarks can tell workers apart.
"""

import os


def application(environ, start_response):
    pid = os.getpid()
    body = ("Hello, world! pid=%d\n" % pid).encode("ascii")
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("X-Worker-Pid", str(pid)),
        ],
    )
    return [body]


app = application
