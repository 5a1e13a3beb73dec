"""``preloader_warmup``: a few requests through the loaded app, in-process, before the first fork.

The preloader runs them before its first fork; a spare runs them again before it
parks (:mod:`.parking`), so that its first request once released is not a cold one.

What an app builds lazily on its first requests (Django's URL resolver and
template caches, ORM query compilation, an index built on first use) is built
once here and shared by every worker copy-on-write, instead of once per worker
in private memory. :func:`run` never raises for the app's sake: a request
that fails (status other than 2xx/3xx, or an exception) is logged as a
warning and the warm-up goes on; ``preloader_warmup_timeout`` bounds the whole
(``SIGALRM`` interrupts a request that hangs). The caller runs
``forksafety.inspect_preloader`` after it, so whatever connection the warm-up
left open is found and handled like one the import opened.
"""

from __future__ import annotations

import io
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from gunicorn_smartspawn.config.validators import split_request
from gunicorn_smartspawn.worker import models

#: Bound when the master imported this module: the app (gevent) may patch these before the warm-up.
_signal, _setitimer = signal.signal, signal.setitimer
#: The environ / scope key that tells an app a request is the preloader's warm-up.
MARK = "smartspawn.warmup"
_MAX_TRACEBACK = 4000


class WarmupTimeout(BaseException):
    """Raised by SIGALRM in the request that was running when the time ran out.

    A BaseException, so that an app's ``except Exception`` (Django turns those
    into a 500 response) does not swallow it."""


@dataclass
class Summary:
    """What the warm-up did, for the preloader's log and the tests."""

    done: int = 0
    failed: list[str] = field(default_factory=list)
    timed_out: bool = False
    seconds: float = 0.0


def run_configured(app: Any, cfg: Any, model: Any, log: Any, where: str) -> Summary | None:
    """The settings' ``preloader_warmup`` through ``app``, bounded by ``preloader_warmup_timeout``: for
    the preloader before its first fork and for a spare before it parks. The interface is the request
    model's, else told from the app. None when the list is empty."""
    requests = list(getattr(cfg, "preloader_warmup", None) or [])
    if not requests:
        return None
    kind = model.interface if model is not None else None
    if kind not in ("wsgi", "asgi"):
        kind = models.interface_of(app)
    timeout = int(getattr(cfg, "preloader_warmup_timeout", 30) or 0)
    return run(app, kind, requests, timeout, log, where)


def run(app: Any, kind: str | None, requests: list[str], timeout: int, log: Any, where: str) -> Summary:
    """Send ``requests`` (``"METHOD target"``, as validated) through ``app`` of interface ``kind``."""
    summary = Summary()
    if not requests:
        return summary
    if kind not in ("wsgi", "asgi"):
        log.warning("%s preloader_warmup skipped: it runs WSGI and ASGI apps, and this one is %s", where, kind or "neither")
        return summary
    started = time.perf_counter()
    call = _wsgi_caller(app) if kind == "wsgi" else _asgi_caller(app)
    old_handler = _signal(signal.SIGALRM, _on_alarm)
    try:
        if timeout > 0:
            _setitimer(signal.ITIMER_REAL, float(timeout))
        for text in requests:
            _one(call, text, summary, log, where)
    except WarmupTimeout:
        summary.timed_out = True
        log.warning(
            "%s preloader_warmup stopped after preloader_warmup_timeout=%ds: %d of %d requests done; "
            "raise the timeout or shorten the list", where, timeout, summary.done, len(requests),
        )
    finally:
        _setitimer(signal.ITIMER_REAL, 0.0)
        _signal(signal.SIGALRM, old_handler)
    _close_django_connections(log, where)
    summary.seconds = time.perf_counter() - started
    log.info(
        "%s warm-up: %d requests in %.2fs, %d failed%s", where, summary.done, summary.seconds,
        len(summary.failed), ", timed out" if summary.timed_out else "",
    )
    return summary


def _on_alarm(sig: int, frame: FrameType | None) -> None:
    raise WarmupTimeout


def _one(call: Callable[[str], int | None], text: str, summary: Summary, log: Any, where: str) -> None:
    try:
        status = call(text)
    except (Exception, SystemExit) as exc:
        summary.done += 1
        summary.failed.append(text)
        tb = traceback.format_exc()[-_MAX_TRACEBACK:]
        log.warning("%s warm-up request=%r raised %s: %s\n%s", where, text, type(exc).__name__, exc, tb)
        return
    summary.done += 1
    if status is None or not 200 <= status < 400:
        summary.failed.append(text)
        log.warning("%s warm-up request=%r answered status=%s (expected 2xx or 3xx)", where, text, status)


# -- WSGI -----------------------------------------------------------------------------------------------


def environ_for(text: str) -> dict[str, Any]:
    """A WSGI environ for ``"METHOD target"``, as gunicorn would build it for that request."""
    method, scheme, host, path, query = _parts(text)
    server_name, port = _host_port(host, scheme)
    return {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
        "RAW_URI": path + ("?" + query if query else ""),
        "SERVER_NAME": server_name, "SERVER_PORT": str(port), "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": host or "localhost", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "0",
        "CONTENT_LENGTH": "0", "wsgi.version": (1, 0), "wsgi.url_scheme": scheme,
        "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False, MARK: True,
    }


def _wsgi_caller(app: Any) -> Callable[[str], int | None]:
    def call(text: str) -> int | None:
        status: list[str] = []

        def start_response(line: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
            status[:] = [line]
            return lambda data: None

        result = app(environ_for(text), start_response)
        try:
            for _ in result:
                pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return _status_code(status[0]) if status else None

    return call


def _status_code(line: Any) -> int | None:
    try:
        return int(str(line).split(None, 1)[0])
    except (ValueError, IndexError):
        return None


# -- ASGI -----------------------------------------------------------------------------------------------


def scope_for(text: str) -> dict[str, Any]:
    """An ASGI ``http`` scope for ``"METHOD target"``."""
    method, scheme, host, path, query = _parts(text)
    server_name, port = _host_port(host, scheme)
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": method, "scheme": scheme, "path": path, "raw_path": path.encode("latin-1", "replace"),
        "query_string": query.encode("latin-1", "replace"), "root_path": "",
        "headers": [(b"host", (host or "localhost").encode("latin-1", "replace"))],
        "client": ("127.0.0.1", 0), "server": (server_name, port), "state": {}, MARK: True,
    }


def _asgi_caller(app: Any) -> Callable[[str], int | None]:
    import asyncio  # only for an ASGI app: the master never needs it

    def call(text: str) -> int | None:
        # a loop of its own per request, closed before the fork: a worker never inherits a loop
        return asyncio.run(_asgi_request(app, scope_for(text)))

    return call


async def _asgi_request(app: Any, scope: dict[str, Any]) -> int | None:
    import asyncio

    status: list[int] = []
    finished = asyncio.Event()
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await finished.wait()  # the client "leaves" once the response is complete
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message.get("type") == "http.response.start":
            status.append(int(message.get("status", 0)))
        elif message.get("type") == "http.response.body" and not message.get("more_body", False):
            finished.set()

    await app(scope, receive, send)
    return status[0] if status else None


# -- both -------------------------------------------------------------------------------------------------


def _parts(text: str) -> tuple[str, str, str, str, str]:
    parts = split_request(text)
    if parts is None:  # validated at start; a bug if it happens
        raise ValueError(f"not a warm-up request: {text!r}")
    return parts


def _host_port(host: str, scheme: str) -> tuple[str, int]:
    default = 443 if scheme == "https" else 80
    name, colon, port = host.rpartition(":") if host and not host.endswith("]") else ("", "", "")
    if colon and port.isdigit():
        return name, int(port)
    return host or "localhost", default


def _close_django_connections(log: Any, where: str) -> None:
    """Django's database connections the warm-up opened, closed before any fork (the preloader's own:
    nothing else uses them yet). Other libraries' connections are fork_safety's."""
    db = sys.modules.get("django.db")
    conf = sys.modules.get("django.conf")
    if db is None or conf is None or not getattr(conf.settings, "configured", False):
        return
    try:
        db.connections.close_all()
    except Exception as exc:
        log.warning("%s warm-up could not close Django's database connections: %s: %s", where, type(exc).__name__, exc)
