"""worker/warmup.py in-process: the environ and scope it builds, failures logged, the time bound."""

from __future__ import annotations

import time
from typing import Any

from gunicorn_smartspawn.worker import warmup


class Log:
    """Records what the warm-up logs, by level."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _add(self, level: str, msg: str, *args: Any) -> None:
        self.lines.append((level, msg % args))

    def info(self, msg: str, *args: Any) -> None:
        self._add("info", msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self._add("warning", msg, *args)

    def text(self, level: str) -> str:
        return "\n".join(line for lvl, line in self.lines if lvl == level)


def test_the_environ_is_what_gunicorn_would_build_for_the_request() -> None:
    env = warmup.environ_for("POST https://shop.example:8443/cart/add?sku=7")
    assert (env["REQUEST_METHOD"], env["PATH_INFO"], env["QUERY_STRING"], env["RAW_URI"]) == (
        "POST", "/cart/add", "sku=7", "/cart/add?sku=7")
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"], env["wsgi.url_scheme"]) == (
        "shop.example:8443", "shop.example", "8443", "https")
    assert env[warmup.MARK] is True and env["wsgi.input"].read() == b""
    plain = warmup.environ_for("GET /")
    assert (plain["HTTP_HOST"], plain["SERVER_NAME"], plain["SERVER_PORT"]) == ("localhost", "localhost", "80")


def test_the_asgi_scope_is_an_http_scope() -> None:
    scope = warmup.scope_for("GET http://[::1]:8080/a%20b?x=1")
    assert (scope["type"], scope["method"], scope["path"], scope["query_string"]) == ("http", "GET", "/a%20b", b"x=1")
    assert scope["headers"] == [(b"host", b"[::1]:8080")] and scope["server"] == ("[::1]", 8080)
    assert scope[warmup.MARK] is True


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise ValueError("boom")
    if path == "/slow":
        time.sleep(30)
    status = {"/missing": "404 Not Found", "/moved": "301 Moved Permanently"}.get(path, "200 OK")
    start_response(status, [])
    return [b"ok"]


def test_failures_are_logged_and_the_warm_up_goes_on() -> None:
    log = Log()
    summary = warmup.run(wsgi_app, "wsgi", ["GET /", "GET /missing", "GET /boom", "GET /moved"], 10, log, "app=t")
    assert summary.done == 4 and summary.failed == ["GET /missing", "GET /boom"] and not summary.timed_out
    warnings = log.text("warning")
    assert "warm-up request='GET /missing' answered status=404 (expected 2xx or 3xx)" in warnings
    assert "warm-up request='GET /boom' raised ValueError: boom" in warnings and "Traceback" in warnings
    assert "GET /moved" not in warnings  # a redirect is a success
    assert "app=t warm-up: 4 requests in " in log.text("info")


def test_a_request_that_hangs_is_interrupted_and_the_rest_skipped() -> None:
    log = Log()
    started = time.monotonic()
    summary = warmup.run(wsgi_app, "wsgi", ["GET /", "GET /slow", "GET /never"], 1, log, "app=t")
    assert time.monotonic() - started < 10
    assert summary.timed_out and summary.done == 1
    assert "stopped after preloader_warmup_timeout=1s: 1 of 3 requests done" in log.text("warning")


def test_an_app_that_catches_exception_does_not_swallow_the_timeout() -> None:
    def catching(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        try:
            time.sleep(30)
        except Exception:  # what Django does around a view
            pass
        start_response("500 Internal Server Error", [])
        return [b""]

    summary = warmup.run(catching, "wsgi", ["GET /"], 1, Log(), "app=t")
    assert summary.timed_out


def test_an_asgi_app_gets_its_request_then_a_disconnect() -> None:
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append((await receive())["type"])
        await send({"type": "http.response.start", "status": 404 if scope["path"] == "/missing" else 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})
        seen.append((await receive())["type"])  # the client leaves once the response is complete

    log = Log()
    summary = warmup.run(app, "asgi", ["GET /", "GET /missing"], 5, log, "app=t")
    assert summary.failed == ["GET /missing"] and seen == ["http.request", "http.disconnect"] * 2


def test_other_interfaces_are_skipped_with_a_warning() -> None:
    log = Log()
    summary = warmup.run(object(), "tornado", ["GET /"], 5, log, "app=t")
    assert summary.done == 0 and "preloader_warmup skipped" in log.text("warning")


def test_nothing_is_logged_without_requests() -> None:
    log = Log()
    warmup.run(wsgi_app, "wsgi", [], 5, log, "app=t")
    assert log.lines == []


def test_the_alarm_handler_is_restored() -> None:
    import signal

    def mine(sig: int, frame: Any) -> None:
        pass

    previous = signal.signal(signal.SIGALRM, mine)
    try:
        warmup.run(wsgi_app, "wsgi", ["GET /"], 5, Log(), "app=t")
        assert signal.getsignal(signal.SIGALRM) is mine and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.signal(signal.SIGALRM, previous)


class _Cfg:
    def __init__(self, requests: list[str] | None) -> None:
        self.preloader_warmup = requests
        self.preloader_warmup_timeout = 5


class _Spare:
    """What parking.warm_up reads of a worker: its settings, model, log, name and plain app."""

    def __init__(self, requests: list[str] | None, app: Any) -> None:
        self.cfg, self.model, self.log, self.app_name, self.plain_app = _Cfg(requests), None, Log(), "shop", app


def test_a_spare_warms_its_plain_app_with_the_preloaders_list() -> None:
    from gunicorn_smartspawn.worker import parking

    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b""]

    spare = _Spare(["GET /a", "POST /b"], app)  # as validated: "METHOD target"
    summary = parking.warm_up(spare)
    assert summary is not None and (summary.done, summary.failed) == (2, [])
    assert seen == ["/a", "/b"]
    assert "app=shop spare pid=" in spare.log.text("info") and "warm-up: 2 requests" in spare.log.text("info")
    assert parking.warm_up(_Spare(None, app)) is None and parking.warm_up(_Spare(["GET /a"], None)) is None
    assert seen == ["/a", "/b"]  # nothing to run, or no app loaded: nothing ran


def test_a_spare_runs_one_request_through_gunicorns_own_path_without_the_app() -> None:
    from gunicorn.config import Config

    from gunicorn_smartspawn.worker import models, parking

    called: list[Any] = []
    spare = _Spare(None, lambda *a: called.append(a))
    spare.cfg = Config()
    assert parking.warm_request_path(spare) is True  # parsed, environ built, response written and read
    assert called == []  # the app is not called, no hook runs
    spare.model = models.Model("asgi", object, "asgi", "async")
    assert parking.warm_request_path(spare) is False  # an ASGI model parses with its own server
    spare.model, spare.cfg = None, object()  # not a gunicorn Config: skipped with a debug line, never raised
    spare.log.debug = lambda msg, *args: spare.log.lines.append(("debug", msg % args))  # type: ignore[method-assign]
    assert parking.warm_request_path(spare) is False
    assert "request path warm-up skipped" in spare.log.text("debug")
