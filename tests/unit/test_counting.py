"""worker/counting.py: the scoreboard's count around the application, for WSGI, ASGI and tornado applications."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import io
import os
import socket
from typing import Any

import pytest
from gunicorn.http.wsgi import FileWrapper

from gunicorn_smartspawn.scoreboard import Scoreboard
from gunicorn_smartspawn.worker import counting


class Score:
    """A slot writer that remembers what it was told."""

    def __init__(self) -> None:
        self.busy = 0
        self.requests = 0
        self.peak = 0

    def begin(self) -> None:
        self.busy += 1
        self.requests += 1
        self.peak = max(self.peak, self.busy)

    def end(self) -> None:
        self.busy -= 1


ENVIRON: dict[str, Any] = {"wsgi.file_wrapper": FileWrapper}


def start_response(status: str, headers: list[Any]) -> None: ...


def test_a_list_body_stays_a_list_and_ends_when_closed() -> None:
    score = Score()
    app = counting.CountedWSGI(lambda environ, start: [b"a", b"b"], score)
    body = app(ENVIRON, start_response)
    assert isinstance(body, list) and body == [b"a", b"b"] and len(body) == 2
    assert (score.busy, score.requests) == (1, 1)
    body.close()
    body.close()  # a second close ends nothing more
    assert (score.busy, score.requests) == (0, 1)


def test_a_streamed_body_counts_until_its_close() -> None:
    score = Score()
    closed: list[bool] = []

    def stream() -> Any:
        try:
            yield b"one"
            yield b"two"
        finally:
            closed.append(True)

    body = counting.CountedWSGI(lambda environ, start: stream(), score)(ENVIRON, start_response)
    assert list(body) == [b"one", b"two"]
    assert score.busy == 1  # iterated, not closed: the server may still be writing
    body.close()
    assert score.busy == 0 and closed == [True]


def test_a_file_wrapper_stays_the_servers_for_sendfile() -> None:
    score = Score()
    handle = io.BytesIO(b"file")
    app = counting.CountedWSGI(lambda environ, start: environ["wsgi.file_wrapper"](handle), score)
    body = app(ENVIRON, start_response)
    assert type(body) is FileWrapper  # gunicorn's isinstance check still sends the file
    body.close()
    assert score.busy == 0 and handle.closed


def test_an_app_that_raises_ends_its_request() -> None:
    score = Score()

    def broken(environ: Any, start: Any) -> Any:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        counting.CountedWSGI(broken, score)(ENVIRON, start_response)
    assert (score.busy, score.requests) == (0, 1)


def test_a_streamed_body_nobody_closed_ends_when_dropped() -> None:
    score = Score()
    body = counting.CountedWSGI(lambda environ, start: iter([b"x"]), score)(ENVIRON, start_response)
    assert score.busy == 1
    del body
    gc.collect()
    assert score.busy == 0


def test_the_wrapper_passes_attributes_through() -> None:
    class App:
        config = {"DEBUG": False}

        def __call__(self, environ: Any, start: Any) -> Any:
            return []

    assert counting.CountedWSGI(App(), Score()).config == {"DEBUG": False}


def test_asgi_counts_http_requests_only_and_many_at_once() -> None:
    score = Score()
    scopes: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope["type"])
        await asyncio.sleep(0.05)

    counted = counting.CountedASGI(app, score)

    async def main() -> None:
        await counted({"type": "lifespan"}, None, None)
        await asyncio.gather(*(counted({"type": "http"}, None, None) for _ in range(50)))
        await counted({"type": "websocket"}, None, None)

    asyncio.run(main())
    assert (score.requests, score.busy, score.peak) == (50, 0, 50)  # 50 in flight in one thread, none lost
    assert scopes.count("http") == 50


def test_asgi_ends_a_request_that_raises() -> None:
    score = Score()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("no")

    with pytest.raises(ValueError):
        asyncio.run(counting.CountedASGI(app, score)({"type": "http"}, None, None))
    assert (score.requests, score.busy) == (1, 0)


def test_counted_picks_the_wrapper_by_interface() -> None:
    tally = Score()

    async def asgi(scope: Any, receive: Any, send: Any) -> None: ...

    def wsgi(environ: Any, start: Any) -> Any: ...

    assert isinstance(counting.counted(asgi, "asgi", tally), counting.CountedASGI)
    assert isinstance(counting.counted(wsgi, "wsgi", tally), counting.CountedWSGI)
    assert counting.counted(wsgi, "wsgi", None) is wsgi
    other = object()
    assert counting.counted(other, None, tally) is other


def test_a_tally_heartbeats_once_at_the_first_request() -> None:
    beats: list[bool] = []
    score = Score()
    tally = counting.Tally(score, lambda: beats.append(True))
    for _ in range(3):
        tally.begin()
        tally.end()
    assert beats == [True] and (score.requests, score.busy) == (3, 0)
    counting.Tally(None, lambda: beats.append(True)).begin()  # no slot: the heartbeat still comes
    assert beats == [True, True]


def test_after_the_first_request_a_tally_calls_the_slot_itself() -> None:
    # no frame of the tally's own on the request path once the heartbeat is sent
    score = Score()
    beats: list[bool] = []
    tally = counting.Tally(score, lambda: beats.append(True))
    assert tally.end == score.end
    tally.begin()
    assert tally.begin == score.begin and beats == [True]
    empty = counting.Tally(None, lambda: beats.append(True))
    empty.begin()
    empty.end()
    assert beats == [True, True] and empty.begin is empty.end


def test_a_failing_first_heartbeat_still_counts_the_request() -> None:
    score = Score()

    def broken() -> None:
        raise OSError("heartbeat file gone")

    tally = counting.Tally(score, broken)
    tally.begin()
    tally.end()
    tally.begin()
    assert (score.requests, score.busy) == (2, 1)


def test_gevent_requests_in_one_thread_lose_no_count() -> None:
    if importlib.util.find_spec("gevent") is None:
        if os.environ.get("CI"):
            pytest.fail("gevent is not installed")
        pytest.skip("gevent is not installed")
    import gevent

    board = Scoreboard(slots=1)
    writer = board.slot(0, threaded=False)  # a gevent worker's slot: no lock, one OS thread
    app = counting.CountedWSGI(lambda environ, start: [gevent.sleep(0.01) or b"x"], writer)
    peak = []

    def request() -> None:
        body = app(ENVIRON, start_response)
        peak.append(board.read(0).busy)
        gevent.sleep(0.01)
        body.close()

    gevent.joinall([gevent.spawn(request) for _ in range(40)], timeout=10)
    assert (board.read(0).requests, board.read(0).busy) == (40, 0)
    assert max(peak) > 1


def test_a_tornado_application_counts_each_request_once() -> None:
    if importlib.util.find_spec("tornado") is None:
        if os.environ.get("CI"):
            pytest.fail("tornado is not installed")
        pytest.skip("tornado is not installed")
    import tornado.httpclient
    import tornado.httpserver
    import tornado.web

    class Hello(tornado.web.RequestHandler):
        async def get(self) -> None:
            await asyncio.sleep(0.01)
            self.write("hi")

    score = Score()
    application = counting.counted(tornado.web.Application([(r"/", Hello)]), None, score)
    assert isinstance(application, tornado.web.Application)  # tornado's worker checks the type

    async def main() -> list[int]:
        server = tornado.httpserver.HTTPServer(application)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        server.add_socket(sock)
        client = tornado.httpclient.AsyncHTTPClient()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        codes = [r.code for r in await asyncio.gather(*(client.fetch(url) for _ in range(5)))]
        codes += [(await client.fetch(url)).code for _ in range(3)]  # keep-alive: the next delegate waits early
        await asyncio.sleep(0.05)
        server.stop()
        client.close()
        return codes

    assert asyncio.run(main()) == [200] * 8
    assert (score.requests, score.busy) == (8, 0)
    assert score.peak >= 2
