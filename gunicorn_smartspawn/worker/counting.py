"""The scoreboard's count of requests, for every request model: around the application itself.

Each request model reaches the application its own way (the sync and
gthread workers through ``handle_request``, gevent's pywsgi server, tornado's
``WSGIContainer``, an asyncio protocol), but every one of them calls the
callable the worker loaded. So the worker wraps that callable once, after
``load_wsgi``, and a request is busy:

* WSGI: from the call until the server closes the response (PEP 3333 makes
  the server call ``close()``), so a streamed body counts until its last
  byte. A ``wsgi.file_wrapper`` answer (sendfile) is kept as it is, with its
  ``close`` extended; a list stays a list.
* ASGI: for the whole ``await`` of each ``http`` scope (``lifespan`` and
  ``websocket`` are not requests).
* a ``tornado.web.Application``: from ``start_request`` until the handler logs
  the request, or the connection closes first.

``begin``/``end`` never yield: in a gevent or asyncio worker, where many
requests share one OS thread, each runs whole between two switches. Only a
worker whose requests run in several OS threads (gthread) has a locked slot.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def _nothing() -> None:
    pass


class Tally:
    """What the wrappers call around each request: the worker's scoreboard slot (None: none), and
    its heartbeat once, at the first request.

    A request model whose first heartbeat comes late (tornado's, a second into its loop) may
    serve, reach ``max_requests`` and leave before it; the master would take that worker for
    one that never served. A worker that began a request has served.

    ``begin`` and ``end`` are attributes, not methods: after the first request they are the
    slot's own bound methods, so the request path calls the slot directly, with no frame of
    its own in between.
    """

    __slots__ = ("_heartbeat", "_score", "begin", "end")

    def __init__(self, score: Any, heartbeat: Callable[[], Any]) -> None:
        self._score = score
        self._heartbeat: Callable[[], Any] | None = heartbeat
        self.begin: Callable[[], None] = self._first_begin
        self.end: Callable[[], None] = score.end if score is not None else _nothing

    def _first_begin(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        self.begin = self._score.begin if self._score is not None else _nothing
        if heartbeat is not None:
            try:
                heartbeat()
            except (OSError, ValueError):
                pass
        self.begin()


class _End:
    """Ends one request, once, however many times it is called."""

    __slots__ = ("_score",)

    def __init__(self, score: Any) -> None:
        self._score: Any = score

    def __call__(self) -> None:
        score, self._score = self._score, None
        if score is not None:
            score.end()


class _Closing:
    """Ends its request once, at ``close()`` (or, if no server ever closed it, when dropped)."""

    _score: Any

    def _end(self) -> None:
        score, self._score = getattr(self, "_score", None), None  # a copy made without __init__ has none
        if score is not None:
            score.end()

    def __del__(self) -> None:
        self._end()


class _ClosingIterable(_Closing):
    """A response body whose ``close()`` also ends the request."""

    def __init__(self, body: Iterable[bytes], score: Any) -> None:
        self._body = body
        self._score = score

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._end()


class _ClosingList(list):  # type: ignore[type-arg]
    """A list body (servers compute its length) whose ``close()`` ends the request.

    Made for every request of most apps, so kept lean: slots, list's own
    ``__init__`` (see :func:`_closing_list`), no ``__del__`` (gunicorn's workers,
    gevent's pywsgi and tornado's WSGIContainer all close a body that has ``close``).
    """

    __slots__ = ("_score",)

    _score: Any

    def close(self) -> None:
        score, self._score = self._score, None
        if score is not None:
            score.end()


def _closing_list(body: Iterable[bytes], score: Any) -> _ClosingList:
    closing = _ClosingList(body)
    closing._score = score
    return closing


def _chained_close(close: Callable[[], Any] | None, end: Callable[[], None]) -> Callable[[], None]:
    def close_and_end() -> None:
        try:
            if close is not None:
                close()
        finally:
            end()

    return close_and_end


def _ending(body: Any, score: Any, environ: dict[str, Any]) -> Any:
    if type(body) in (list, tuple):
        return _closing_list(body, score)
    file_wrapper = environ.get("wsgi.file_wrapper")
    if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
        try:
            setattr(body, "close", _chained_close(getattr(body, "close", None), _End(score)))  # noqa: B010
            return body  # still the server's file wrapper: sendfile stays
        except AttributeError:
            pass
    return _ClosingIterable(body, score)


class CountedWSGI:
    """A WSGI application whose requests the scoreboard slot ``score`` counts."""

    def __init__(self, app: Any, score: Any) -> None:
        self.app = app
        self.score = score

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        score = self.score
        score.begin()
        try:
            body = self.app(environ, start_response)
        except BaseException:
            score.end()
            raise
        if type(body) is list:  # most answers: made here, without another call
            closing = _ClosingList(body)
            closing._score = score
            return closing
        return _ending(body, score, environ)

    def __getattr__(self, name: str) -> Any:  # what the server or the app asks of the app itself
        return getattr(self.app, name)


class CountedASGI:
    """An ASGI 3 application whose ``http`` requests the scoreboard slot ``score`` counts."""

    def __init__(self, app: Any, score: Any) -> None:
        self.app = app
        self.score = score

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope.get("type") != "http":
            return await self.app(scope, receive, send)
        self.score.begin()
        try:
            return await self.app(scope, receive, send)
        finally:
            self.score.end()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)


class _CountedDelegate:
    """tornado's ``HTTPMessageDelegate`` of one request, passed through: the request begins with its
    headers (tornado asks for a delegate before the next request on a connection arrives), and a
    connection closed before the handler logged it ends it."""

    def __init__(self, delegate: Any, begin: Callable[[], None], end: Callable[[], None]) -> None:
        self._delegate = delegate
        self._begin = begin
        self._end = end

    def headers_received(self, start_line: Any, headers: Any) -> Any:
        self._begin()
        return self._delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self._delegate.data_received(chunk)

    def finish(self) -> None:
        self._delegate.finish()

    def on_connection_close(self) -> None:
        try:
            self._delegate.on_connection_close()
        finally:
            self._end()


def count_tornado(application: Any, score: Any) -> Any:
    """Count the requests of a ``tornado.web.Application`` (kept as it is: tornado's worker checks
    its type): busy from its headers until the handler logs the request."""
    start_request, log_request = application.start_request, application.log_request
    in_flight: dict[int, _End] = {}

    def counted_start(server_conn: Any, request_conn: Any) -> Any:
        key = id(request_conn)

        def begin() -> None:
            score.begin()
            in_flight[key] = _End(score)

        def end() -> None:
            done = in_flight.pop(key, None)
            if done is not None:
                done()

        return _CountedDelegate(start_request(server_conn, request_conn), begin, end)

    def counted_log(handler: Any) -> None:
        try:
            log_request(handler)
        finally:
            end = in_flight.pop(id(getattr(getattr(handler, "request", None), "connection", None)), None)
            if end is not None:
                end()

    application.start_request = counted_start
    application.log_request = counted_log
    return application


def counted(app: Any, interface: str | None, score: Any) -> Any:
    """``app`` wrapped so that ``score`` counts its requests; ``app`` itself when it cannot be."""
    if score is None or app is None:
        return app
    if interface == "asgi":
        return CountedASGI(app, score)
    if interface == "wsgi":
        return CountedWSGI(app, score)
    tornado_web = _tornado_web()
    if tornado_web is not None and isinstance(app, tornado_web.Application):
        return count_tornado(app, score)
    wsgi_container = getattr(_tornado_wsgi(), "WSGIContainer", None)
    if wsgi_container is not None and isinstance(app, wsgi_container):
        app.wsgi_application = CountedWSGI(app.wsgi_application, score)
    return app


def _tornado_web() -> Any:
    return sys.modules.get("tornado.web")


def _tornado_wsgi() -> Any:
    return sys.modules.get("tornado.wsgi")
