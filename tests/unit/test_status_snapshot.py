"""control/status.py: the status snapshot believes no slot it has not checked, and never holds NaN."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from gunicorn_smartspawn.control import cli
from gunicorn_smartspawn.control.protocol import response
from gunicorn_smartspawn.control.status import snapshot
from gunicorn_smartspawn.master.pool import AppPool
from gunicorn_smartspawn.scoreboard import SLOT, Scoreboards


@dataclass
class Cfg:
    threads: int = 1


@dataclass
class FakeWorker:
    scoreboard_index: int | None
    cfg: Cfg = field(default_factory=Cfg)


@pytest.fixture
def boards() -> Iterator[Scoreboards]:
    found = Scoreboards(slots=8)
    yield found
    found.close()


def direct_pool(name: str, pids: list[int], now: float) -> AppPool:
    pool = AppPool(name=name, spawn_method="direct", target=len(pids))
    for age, pid in enumerate(pids, 1):
        pool.worker_started(pid, age, now - 60.0)
        pool.worker_ready(pid)
    return pool


def write(boards: Scoreboards, app: str, index: int, *values: Any) -> None:
    SLOT.pack_into(boards.for_app(app)._map, index * SLOT.size, *values)


def take(pools: dict[str, AppPool], workers: dict[int, Any], boards: Scoreboards | None, now: float, wall: float) -> Any:
    """The snapshot as the control socket sends it: encoded without NaN, decoded again."""
    result = snapshot(pools, workers, boards, master_pid=1, gunicorn_version="x", started_at=wall - 100.0, now=now, wall=wall)
    answer = json.loads(response(result))
    assert answer["ok"] is True
    return answer["result"]


def rows(status: Any, app: str) -> dict[int, Any]:
    [found] = [a for a in status["apps"] if a["name"] == app]
    return {row["pid"]: row for row in found["workers"]}


def test_bad_slot_values_show_as_unknown_and_good_ones_as_written(boards: Scoreboards) -> None:
    now, wall = time.monotonic(), time.time()
    pids = [101, 102, 103, 104, 105, 106, 107]
    pools = {"shop": direct_pool("shop", pids, now)}
    workers: dict[int, Any] = {pid: FakeWorker(boards.assign("shop")) for pid in pids}
    workers[107] = FakeWorker(workers[107].scoreboard_index, Cfg(threads=4))
    write(boards, "shop", 0, 101, 1, 12, wall - 3.0, wall - 50.0)  # good: busy, 12 requests
    write(boards, "shop", 1, 102, 0, 999_999_999, wall - 1.0, wall - 50.0)  # a billion requests in a minute
    write(boards, "shop", 2, 103, 1, 5, math.nan, wall - 50.0)  # NaN
    write(boards, "shop", 3, 104, 9, 5, wall - 1.0, wall - 50.0)  # nine in flight in a one-thread worker
    write(boards, "shop", 4, 999, 0, 5, wall - 1.0, wall - 50.0)  # another process's pid
    write(boards, "shop", 5, 106, 0, 5, wall + 3600.0, math.inf)  # the future, infinity
    write(boards, "shop", 6, 107, 3, 40, wall - 0.5, wall - 50.0)  # good: three of four threads busy
    found = rows(take(pools, workers, boards, now, wall), "shop")
    assert (found[101]["requests"], found[101]["busy"]) == (12, True)
    assert 2.9 <= found[101]["last_request_ago"] <= 4.0
    for pid in (102, 103, 104, 105, 106):
        assert (found[pid]["requests"], found[pid]["busy"], found[pid]["last_request_ago"]) == (None, None, None), pid
    assert (found[107]["requests"], found[107]["busy"]) == (40, True)


def test_each_app_is_read_from_its_own_board(boards: Scoreboards) -> None:
    now, wall = time.monotonic(), time.time()
    pools = {"shop": direct_pool("shop", [201], now), "blog": direct_pool("blog", [301], now)}
    workers = {201: FakeWorker(boards.assign("shop")), 301: FakeWorker(boards.assign("blog"))}
    assert workers[201].scoreboard_index == workers[301].scoreboard_index == 0
    write(boards, "shop", 0, 201, 0, 3, wall - 1.0, wall - 10.0)
    write(boards, "blog", 0, 301, 0, 8, wall - 2.0, wall - 10.0)
    status = take(pools, workers, boards, now, wall)
    assert rows(status, "shop")[201]["requests"] == 3 and rows(status, "blog")[301]["requests"] == 8


def test_an_app_without_a_board_and_a_master_without_boards_show_unknown(boards: Scoreboards) -> None:
    now, wall = time.monotonic(), time.time()
    pools = {"shop": direct_pool("shop", [401], now)}
    workers = {401: FakeWorker(0)}
    assert rows(take(pools, workers, boards, now, wall), "shop")[401]["requests"] is None  # shop has no board
    assert rows(take(pools, workers, None, now, wall), "shop")[401]["requests"] is None


def test_a_last_request_just_ahead_of_the_masters_clock_is_no_negative_time(boards: Scoreboards) -> None:
    now, wall = time.monotonic(), time.time()
    pools = {"shop": direct_pool("shop", [501], now)}
    workers = {501: FakeWorker(boards.assign("shop"))}
    write(boards, "shop", 0, 501, 0, 1, wall + 0.5, wall - 10.0)  # the worker read its clock after the master
    assert rows(take(pools, workers, boards, now, wall), "shop")[501]["last_request_ago"] == 0.0


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_no_float_from_a_preloader_can_break_the_answer(boards: Scoreboards, bad: float) -> None:
    now, wall = time.monotonic(), time.time()
    pool = AppPool(name="shop", spawn_method="smart", target=1)
    pool.preloader_started(600, 1, now - 5.0)
    pool.preloader_ready(600, bad, now - 4.0)  # load_seconds as a preloader reported it
    status = take({"shop": pool}, {}, boards, now, wall)
    assert status["apps"][0]["preloader"]["loaded_in"] is None


def test_the_status_table_shows_unknown_slots_as_dashes(boards: Scoreboards) -> None:
    now, wall = time.monotonic(), time.time()
    pools = {"shop": direct_pool("shop", [701, 702], now)}
    workers = {701: FakeWorker(boards.assign("shop")), 702: FakeWorker(boards.assign("shop"))}
    write(boards, "shop", 0, 701, 0, 4, wall - 1.0, wall - 10.0)
    write(boards, "shop", 1, 702, 1, 999_999_999, math.nan, -math.inf)
    text = cli.format_status(take(pools, workers, boards, now, wall), read_proc=False)
    [good] = [line for line in text.splitlines() if line.strip().startswith("701")]
    [bad] = [line for line in text.splitlines() if line.strip().startswith("702")]
    assert " 4 " in good and "idle" in good
    assert "999999999" not in bad and "nan" not in bad.lower() and " - " in bad
