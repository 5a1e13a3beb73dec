"""control/handlers.py against a small master holding real AppPools; control/server.py's handle_request."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import gunicorn
import pytest

from gunicorn_smartspawn._version import __version__
from gunicorn_smartspawn.control.handlers import MAX_SCALE, CommandHandlers
from gunicorn_smartspawn.control.protocol import PROTOCOL
from gunicorn_smartspawn.control.server import CommandError, Handler, handle_request
from gunicorn_smartspawn.master.dynamic import DynamicPools, Limits
from gunicorn_smartspawn.master.pool import AppPool
from gunicorn_smartspawn.scoreboard import Scoreboard


@dataclass
class FakeLog:
    lines: list[tuple[str, str]] = field(default_factory=list)

    def _log(self, level: str, msg: str, *args: Any) -> None:
        self.lines.append((level, msg % args if args else msg))

    def info(self, msg: str, *args: Any) -> None:
        self._log("info", msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self._log("warning", msg, *args)

    def exception(self, msg: str, *args: Any) -> None:
        self._log("exception", msg, *args)

    def text(self, level: str) -> str:
        return "\n".join(line for lvl, line in self.lines if lvl == level)


@dataclass
class Apps:
    pools: dict[str, AppPool]

    @property
    def specs(self) -> dict[str, Any]:
        """What the readiness check reads of a spec: whether the app was removed."""
        return {name: type("Spec", (), {"removed": False})() for name in self.pools}


@dataclass
class FakeWorker:
    scoreboard_index: int | None = None


class OneBoard:
    """The master's boards by app name, every app sharing the test's one board (``Scoreboards.get``)."""

    def __init__(self, master: FakeMaster) -> None:
        self.master = master

    def get(self, name: str) -> Scoreboard | None:
        return self.master.scoreboard


class FakeMaster:
    """What CommandHandlers reaches through ``master``: pools, WORKERS, scoreboard(s), log, and the counts."""

    def __init__(self, pools: list[AppPool], multi: bool = True) -> None:
        self.apps = Apps({p.name: p for p in pools})
        self.WORKERS: dict[int, Any] = {}
        self.scoreboard: Scoreboard | None = Scoreboard(slots=4)
        self.scoreboards = OneBoard(self)  # the per-app form of the same board
        self.pid = 4242
        self.started_at = time.time() - 12.0
        self.log = FakeLog()
        self.multi = multi
        self.num_workers = pools[0].target
        self.managed = 0
        self.dynamic = DynamicPools(self)  # type: ignore[arg-type]  (no app is dynamic unless a test says so)

    def manage_workers(self) -> None:
        self.managed += 1
        if not self.multi:  # as SmartArbiter._manage_pool: the one-app pool follows gunicorn's count
            next(iter(self.apps.pools.values())).target = self.num_workers


def test_scale_of_a_dynamic_app_moves_its_min_workers() -> None:
    master = FakeMaster([smart_pool("shop", 1)])
    master.dynamic.limits["shop"] = Limits(min_workers=1, max_workers=4, idle_timeout=300.0)
    CommandHandlers(master).scale({"command": "scale", "app": "shop", "workers": 6})
    assert master.dynamic.limits["shop"] == Limits(min_workers=6, max_workers=6, idle_timeout=300.0)


def smart_pool(name: str = "shop", target: int = 2) -> AppPool:
    return AppPool(name=name, spawn_method="smart", target=target)


@pytest.fixture
def master() -> FakeMaster:
    return FakeMaster([smart_pool("shop", 2), AppPool(name="blog", spawn_method="direct", target=3)])


@pytest.fixture
def handlers(master: FakeMaster) -> CommandHandlers:
    return CommandHandlers(master)


def ask(handlers: CommandHandlers, request: Any) -> dict[str, Any]:
    """The reply to ``request`` as the control socket sends it, decoded."""
    line = request if isinstance(request, bytes) else json.dumps(request).encode()
    reply = handle_request(handlers.table(), handlers.master.log, line)
    assert reply.endswith(b"\n") and reply.count(b"\n") == 1
    answer: dict[str, Any] = json.loads(reply)
    assert (answer["protocol"], answer["version"]) == (PROTOCOL, __version__)
    return answer


def error(handlers: CommandHandlers, request: Any) -> str:
    answer = ask(handlers, request)
    assert answer["ok"] is False and "result" not in answer, answer
    return str(answer["error"])


def test_the_table_names_every_command(handlers: CommandHandlers) -> None:
    table = handlers.table()
    assert sorted(table) == ["memory", "ready", "restart", "scale", "status"]
    assert table["status"] == handlers.status and table["scale"] == handlers.scale


# -- status ----------------------------------------------------------------------------------------------


def test_status_of_pools_with_a_preloader_and_workers(master: FakeMaster, handlers: CommandHandlers) -> None:
    now = time.monotonic()
    shop = master.apps.pools["shop"]
    shop.preloader_started(500, 1, now - 3.0)
    shop.preloader_ready(500, 1.25, now - 2.0)
    me = os.getpid()  # the scoreboard writer stamps its slot with the writing process's pid
    shop.spawn_requested(1, 500, now - 1.5)
    shop.worker_spawned(1, me, now - 1.0)
    shop.worker_ready(me)
    shop.spawn_requested(2, 500, now - 0.5)
    shop.worker_spawned(2, 601, now - 0.5)
    board = master.scoreboard
    assert board is not None
    slot = board.assign()
    writer = board.slot(slot, threaded=False)
    assert writer is not None
    writer.begin()
    writer.end()
    writer.begin()  # one request in flight
    master.WORKERS[me] = FakeWorker(slot)
    master.WORKERS[601] = FakeWorker(board.assign())  # never wrote its slot

    result = ask(handlers, {"command": "status"})
    assert result["ok"] is True
    status = result["result"]
    assert status["master"]["pid"] == 4242
    assert status["master"]["gunicorn"] == gunicorn.__version__ and status["master"]["smartspawn"] == __version__
    assert 11.0 <= status["master"]["uptime"] < 60
    assert [a["name"] for a in status["apps"]] == ["shop", "blog"]
    app = status["apps"][0]
    assert (app["spawn_method"], app["state"], app["target"], app["generation"]) == ("smart", "running", 2, 1)
    assert app["last_error"] is None and app["retry_in"] is None
    assert app["preloader"]["pid"] == 500 and app["preloader"]["loaded_in"] == 1.25
    assert app["preloader"]["idle_timeout"] == 300.0 and app["preloader"]["idle_for"] >= 0.5
    first, second = app["workers"]
    assert (first["pid"], first["age"], first["ready"], first["forked"], first["retiring"]) == (me, 1, True, True, False)
    assert (first["requests"], first["busy"]) == (2, True)
    assert 0 <= first["last_request_ago"] < 5
    assert (second["pid"], second["ready"], second["requests"], second["busy"], second["last_request_ago"]) == (
        601, False, None, None, None
    )
    blog = status["apps"][1]
    assert (blog["spawn_method"], blog["state"], blog["preloader"], blog["workers"]) == ("direct", "starting", None, [])


def test_status_of_an_app_backing_off(master: FakeMaster, handlers: CommandHandlers) -> None:
    shop = master.apps.pools["shop"]
    now = time.monotonic()
    shop.preloader_started(500, 1, now)
    shop.preloader_failed(500, "ImportError: no shop", now)
    app = ask(handlers, {"command": "status"})["result"]["apps"][0]
    assert app["state"] in ("backing off", "failed")
    assert "ImportError: no shop" in app["last_error"]
    assert 0 < app["retry_in"] <= 1.0


def test_status_without_a_scoreboard(master: FakeMaster, handlers: CommandHandlers) -> None:
    master.scoreboard = None
    shop = master.apps.pools["shop"]
    shop.worker_started(700, 1, time.monotonic())
    master.WORKERS[700] = FakeWorker(0)
    [row] = ask(handlers, {"command": "status"})["result"]["apps"][0]["workers"]
    assert (row["pid"], row["forked"], row["requests"]) == (700, False, None)


# -- memory ----------------------------------------------------------------------------------------------


def test_memory_reports_the_master_s_tree(master: FakeMaster, handlers: CommandHandlers) -> None:
    master.pid = os.getpid()
    result = ask(handlers, {"command": "memory"})["result"]
    assert result["protocol"] == PROTOCOL
    assert result["processes"][0]["pid"] == os.getpid() and result["processes"][0]["role"] == "master"
    assert result["totals"]["rss"] > 0


# -- restart ----------------------------------------------------------------------------------------------


def test_restart_of_a_smart_app_asks_for_a_new_preloader(master: FakeMaster, handlers: CommandHandlers) -> None:
    assert ask(handlers, {"command": "restart", "app": "shop"}) ["result"] == {"app": "shop", "restarting": True}
    shop = master.apps.pools["shop"]
    assert shop.reload_requested is True and shop.generation == 1
    assert master.managed == 1
    assert "app=shop restart requested over the control socket" in master.log.text("info")
    assert not master.apps.pools["blog"].reload_requested


def test_restart_of_a_direct_app_starts_a_new_generation(master: FakeMaster, handlers: CommandHandlers) -> None:
    ask(handlers, {"command": "restart", "app": "blog"})
    assert master.apps.pools["blog"].generation == 2
    assert master.apps.pools["shop"].generation == 1


def test_restart_clears_the_backoff(master: FakeMaster, handlers: CommandHandlers) -> None:
    shop = master.apps.pools["shop"]
    now = time.monotonic()
    shop.preloader_started(500, 1, now)
    shop.preloader_failed(500, "boom", now)
    assert shop.failures == 1 and shop.retry_at > now
    ask(handlers, {"command": "restart", "app": "shop"})
    assert (shop.failures, shop.retry_at) == (0, 0.0)


@pytest.mark.parametrize(("app", "shown"), [("nope", "'nope'"), (None, "None"), (1, "1"), (["shop"], "['shop']")])
def test_restart_of_an_unknown_app(master: FakeMaster, handlers: CommandHandlers, app: Any, shown: str) -> None:
    request: dict[str, Any] = {"command": "restart"}
    if app is not None:
        request["app"] = app
    assert error(handlers, request) == f"unknown app {shown}: this master runs blog, shop"
    assert master.managed == 0


# -- scale ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [({"workers": 5}, 5), ({"workers": 1}, 1), ({"workers": MAX_SCALE}, MAX_SCALE), ({"delta": 1}, 3),
     ({"delta": -1}, 1), ({"delta": 0}, 2)],
)
def test_scale_of_one_app_of_many(master: FakeMaster, handlers: CommandHandlers, request_fields: dict[str, int],
                                  expected: int) -> None:
    answer = ask(handlers, {"command": "scale", "app": "shop", **request_fields})
    assert answer["result"] == {"app": "shop", "previous": 2, "workers": expected}
    assert master.apps.pools["shop"].target == expected
    assert master.apps.pools["blog"].target == 3
    assert master.num_workers == 2  # gunicorn's own count is not the apps'
    assert master.managed == 1
    assert f"app=shop workers 2 -> {expected} (control socket)" in master.log.text("info")


def test_scale_of_the_one_app_goes_through_gunicorns_count() -> None:
    master = FakeMaster([smart_pool("example", 2)], multi=False)
    answer = ask(CommandHandlers(master), {"command": "scale", "app": "example", "delta": 2})
    assert answer["result"] == {"app": "example", "previous": 2, "workers": 4}
    assert master.num_workers == 4
    assert master.apps.pools["example"].target == 4  # set by manage_workers, from num_workers


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        ({"workers": 0}, f"app 'shop' cannot have 0 workers: expected 1 to {MAX_SCALE}"),
        ({"workers": -3}, f"app 'shop' cannot have -3 workers: expected 1 to {MAX_SCALE}"),
        ({"workers": MAX_SCALE + 1}, f"app 'shop' cannot have {MAX_SCALE + 1} workers: expected 1 to {MAX_SCALE}"),
        ({"delta": -2}, f"app 'shop' cannot have 0 workers: expected 1 to {MAX_SCALE}"),
        ({"delta": MAX_SCALE}, f"app 'shop' cannot have {MAX_SCALE + 2} workers: expected 1 to {MAX_SCALE}"),
        ({}, 'scale needs "workers": N or "delta": +N/-N (whole numbers)'),
        ({"workers": 2, "delta": 1}, 'scale needs "workers": N or "delta": +N/-N (whole numbers)'),
        ({"workers": "3"}, 'scale needs "workers": N or "delta": +N/-N (whole numbers)'),
        ({"workers": 2.0}, 'scale needs "workers": N or "delta": +N/-N (whole numbers)'),
        ({"workers": True}, 'scale needs "workers": N or "delta": +N/-N (whole numbers)'),
        ({"delta": False}, 'scale needs "workers": N or "delta": +N/-N (whole numbers)'),
        ({"delta": None}, 'scale needs "workers": N or "delta": +N/-N (whole numbers)'),
    ],
)
def test_scale_refuses(master: FakeMaster, handlers: CommandHandlers, request_fields: dict[str, Any], expected: str) -> None:
    assert error(handlers, {"command": "scale", "app": "shop", **request_fields}) == expected
    assert master.apps.pools["shop"].target == 2 and master.managed == 0


def test_scale_of_an_unknown_app(master: FakeMaster, handlers: CommandHandlers) -> None:
    assert error(handlers, {"command": "scale", "app": "Shop", "workers": 2}) == (
        "unknown app 'Shop': this master runs blog, shop"
    )


# -- handle_request: one request line in, one reply line out -------------------------------------------------


def test_a_reply_line() -> None:
    reply = handle_request({"ping": lambda request: {"pong": request.get("n")}}, FakeLog(), b'{"command":"ping","n":3}')
    assert json.loads(reply) == {"ok": True, "protocol": PROTOCOL, "version": __version__, "result": {"pong": 3}}


@pytest.mark.parametrize(
    "line",
    [b"", b"not json", b"{", b'{"command": "status"', b"\xff\xfe", b"[" * 100000 + b"]" * 100000],
    ids=["empty", "text", "open-brace", "unterminated", "not-utf8", "deep"],
)
def test_bad_json(handlers: CommandHandlers, line: bytes) -> None:
    assert error(handlers, line) == "request is not a JSON object on one line"


@pytest.mark.parametrize(
    "request_value", [[], "status", 1, None, b"NaN", {}, {"command": 1}, {"command": None}, {"cmd": "status"}]
)
def test_no_command_string(handlers: CommandHandlers, request_value: Any) -> None:
    assert error(handlers, request_value) == 'request needs a "command" string'


def test_unknown_command(handlers: CommandHandlers) -> None:
    assert error(handlers, {"command": "reboot"}) == (
        "unknown command 'reboot': expected one of memory, ready, restart, scale, status"
    )


def test_a_command_error_goes_back_as_is() -> None:
    def refuse(request: dict[str, Any]) -> Any:
        raise CommandError("not now")

    log = FakeLog()
    assert json.loads(handle_request({"x": refuse}, log, b'{"command":"x"}'))["error"] == "not now"
    assert log.lines == []  # a refusal is not a failure of the master


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (RuntimeError("boom"), "command failed in the master: RuntimeError: boom"),
        (KeyError("pools"), "command failed in the master: KeyError: 'pools'"),
    ],
)
def test_a_handler_exception_is_an_error_reply_and_logged(result: Exception, expected: str) -> None:
    def broken(request: dict[str, Any]) -> Any:
        raise result

    log = FakeLog()
    reply = json.loads(handle_request({"x": broken}, log, b'{"command":"x"}'))
    assert (reply["ok"], reply["error"]) == (False, expected)
    assert log.text("exception") == "control command 'x' failed"


@pytest.mark.parametrize("result", [{1, 2}, float("nan"), object()], ids=["set", "nan", "object"])
def test_a_result_that_is_not_json_is_an_error_reply(result: Any) -> None:
    handlers: dict[str, Handler] = {"x": lambda request: result}
    reply = json.loads(handle_request(handlers, FakeLog(), b'{"command":"x"}'))
    assert reply["ok"] is False and reply["error"].startswith("command failed in the master: ")


def test_ready_says_whether_every_app_serves(handlers: CommandHandlers) -> None:
    pool = handlers.master.apps.pools["shop"]
    pool.workers.clear()
    answer = handlers.ready({"command": "ready"})
    assert answer["ready"] is False and answer["apps"]["shop"] == "starting"
    pool.target = 2
    pool.worker_started(901, 1, 0.0)
    pool.worker_ready(901)
    assert handlers.ready({"command": "ready"})["apps"]["shop"] == "starting"  # one of two: not yet
    pool.worker_started(902, 2, 0.0)
    pool.worker_ready(902)
    answer = handlers.ready({"command": "ready"})
    assert answer["apps"]["shop"] == "2 workers serving"
    assert answer["ready"] is all(words.endswith("serving") for words in answer["apps"].values())
