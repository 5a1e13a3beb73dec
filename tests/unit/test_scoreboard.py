"""scoreboard.py: slots assigned and released by the master, written by a worker around each request."""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from gunicorn_smartspawn.scoreboard import (
    CLOCK_SKEW,
    DEFAULT_SLOTS,
    MAX_REQUEST_RATE,
    MAX_REQUESTS,
    SLOT,
    LockedSlotWriter,
    Scoreboard,
    Scoreboards,
    SlotReading,
    SlotView,
    SlotWriter,
    capacity_of,
    check_slot,
)


def test_a_slot_is_32_bytes() -> None:
    assert SLOT.size == 32  # the layout the module's docstring draws


def test_the_default_size() -> None:
    board = Scoreboard()
    assert board.slots == DEFAULT_SLOTS
    assert [board.assign() for _ in range(DEFAULT_SLOTS)] == list(range(DEFAULT_SLOTS))
    assert board.assign() is None


# -- the master: assign, release, read ----------------------------------------------------------------


def test_assign_hands_out_the_lowest_free_slot_and_none_when_full() -> None:
    board = Scoreboard(slots=3)
    assert [board.assign(), board.assign(), board.assign()] == [0, 1, 2]
    assert board.assign() is None
    board.release(1)
    assert board.assign() == 1
    assert board.assign() is None


def test_a_fresh_slot_reads_as_zero() -> None:
    board = Scoreboard(slots=2)
    assert board.read(0) == SlotView(pid=0, busy=0, requests=0, last_request=0.0, started=0.0)


def test_assign_and_release_zero_the_slot() -> None:
    board = Scoreboard(slots=1)
    index = board.assign()
    assert index == 0
    writer = board.slot(index, threaded=False)
    assert writer is not None
    writer.begin()
    assert board.read(0).pid == os.getpid()
    board.release(0)
    assert board.read(0) == SlotView(0, 0, 0, 0.0, 0.0)
    writer.begin()  # a stale writer still writes; the next assign zeroes the slot for its new owner
    assert board.assign() == 0
    assert board.read(0) == SlotView(0, 0, 0, 0.0, 0.0)


@pytest.mark.parametrize("index", [None, -1, 2, 100])
def test_release_ignores_what_is_not_a_slot(index: int | None) -> None:
    board = Scoreboard(slots=2)
    board.release(index)
    assert [board.assign(), board.assign(), board.assign()] == [0, 1, None]


def test_releasing_twice_frees_the_slot_once() -> None:
    board = Scoreboard(slots=2)
    assert [board.assign(), board.assign()] == [0, 1]
    board.release(0)
    board.release(0)
    assert [board.assign(), board.assign()] == [0, None]


def test_releasing_a_free_slot_does_nothing() -> None:
    board = Scoreboard(slots=2)
    board.release(1)  # never assigned
    assert [board.assign(), board.assign(), board.assign()] == [0, 1, None]


def test_slots_are_separate() -> None:
    board = Scoreboard(slots=3)
    a, b = board.slot(0, threaded=False), board.slot(2, threaded=False)
    assert a is not None and b is not None
    a.begin()
    a.end()
    a.begin()
    b.begin()
    assert (board.read(0).requests, board.read(0).busy) == (2, 1)
    assert board.read(1) == SlotView(0, 0, 0, 0.0, 0.0)
    assert (board.read(2).requests, board.read(2).busy) == (1, 1)


# -- a worker: SlotWriter ------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [None, -1, 4, 1000])
def test_no_writer_without_a_slot(index: int | None) -> None:
    assert Scoreboard(slots=4).slot(index, threaded=False) is None


def test_a_new_writer_stamps_its_pid_and_start() -> None:
    board = Scoreboard(slots=1)
    before = time.time()
    writer = board.slot(0, threaded=False)
    assert isinstance(writer, SlotWriter)
    view = board.read(0)
    assert view.pid == os.getpid()
    assert (view.busy, view.requests, view.last_request) == (0, 0, 0.0)
    assert before <= view.started <= time.time()


def test_begin_and_end_count() -> None:
    board = Scoreboard(slots=1)
    writer = board.slot(0, threaded=False)
    assert writer is not None
    before = time.time()
    writer.begin()
    view = board.read(0)
    assert (view.busy, view.requests) == (1, 1)
    assert before <= view.last_request <= time.time()
    writer.end()
    assert (board.read(0).busy, board.read(0).requests) == (0, 1)
    for _ in range(5):
        writer.begin()
        writer.end()
    assert (board.read(0).busy, board.read(0).requests) == (0, 6)
    assert board.read(0).last_request >= view.last_request


def test_busy_holds_thousands_of_requests_in_flight() -> None:
    # a gevent or ASGI worker has up to worker_connections (1000 by default) requests at once
    board = Scoreboard(slots=1)
    writer = board.slot(0, threaded=False)
    assert writer is not None
    for _ in range(1300):
        writer.begin()
    assert (board.read(0).busy, board.read(0).requests) == (1300, 1300)
    assert board.check(0, pid=os.getpid(), threads=1000, wall=time.time() + 1) is None  # beyond its capacity
    assert board.check(0, pid=os.getpid(), threads=2000, wall=time.time() + 1) is not None
    for _ in range(1000):
        writer.end()
    assert board.read(0).busy == 300
    for _ in range(300):
        writer.end()
    assert board.read(0).busy == 0


def test_threaded_writers_lose_no_count() -> None:
    board = Scoreboard(slots=1)
    writer = board.slot(0, threaded=True)
    assert writer is not None
    threads, rounds = 8, 2000
    start = threading.Barrier(threads)

    def serve() -> None:
        start.wait()
        for _ in range(rounds):
            writer.begin()
            writer.end()

    workers = [threading.Thread(target=serve) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(30)
    assert not any(t.is_alive() for t in workers)
    assert (board.read(0).requests, board.read(0).busy) == (threads * rounds, 0)


def test_a_threaded_writer_takes_its_lock_around_each_update() -> None:
    board = Scoreboard(slots=1)
    writer = board.slot(0, threaded=True)
    assert writer is not None
    lock = writer._lock
    assert lock is not None
    done = threading.Event()

    def request() -> None:
        writer.begin()
        done.set()

    with lock:  # another thread of the worker is in the middle of an update
        thread = threading.Thread(target=request)
        thread.start()
        assert not done.wait(0.2), "begin() wrote the slot without the lock"
        assert board.read(0).requests == 0
    assert done.wait(10)
    thread.join(10)
    assert board.read(0).requests == 1


def test_a_threaded_writer_releases_its_lock_when_an_update_fails() -> None:
    board = Scoreboard(slots=1)
    writer = board.slot(0, threaded=True)
    assert writer is not None and writer._lock is not None
    board.close()  # the mapping is gone: every write raises
    for update in (writer.begin, writer.end):
        with pytest.raises((TypeError, ValueError)):  # what struct says of a closed mmap varies
            update()
        assert not writer._lock.locked()


def test_a_sync_writer_has_no_lock() -> None:
    writer = Scoreboard(slots=1).slot(0, threaded=False)
    assert writer is not None and writer._lock is None


def test_a_threaded_slot_gets_the_locked_writer() -> None:
    board = Scoreboard(slots=2)
    assert type(board.slot(0, threaded=False)) is SlotWriter
    assert type(board.slot(1, threaded=True)) is LockedSlotWriter


@pytest.mark.parametrize("threaded", [False, True])
def test_begin_and_end_touch_only_busy_requests_and_last(threaded: bool) -> None:
    # the pid and the start are written once, by the constructor; a request rewrites the rest only
    board = Scoreboard(slots=3)
    board.slot(0, threaded=False)
    board.slot(2, threaded=False)
    neighbours = (board.read(0), board.read(2))
    writer = board.slot(1, threaded=threaded)
    assert writer is not None
    stamped = board.read(1)
    writer.begin()
    writer.begin()
    begun = board.read(1)
    assert (begun.pid, begun.started) == (stamped.pid, stamped.started) == (os.getpid(), stamped.started)
    assert (begun.busy, begun.requests) == (2, 2) and stamped.started <= begun.last_request <= time.time()
    writer.end()
    ended = board.read(1)
    assert (ended.pid, ended.busy, ended.requests, ended.last_request, ended.started) == (
        os.getpid(), 1, 2, begun.last_request, stamped.started)
    assert (board.read(0), board.read(2)) == neighbours


@pytest.mark.parametrize("threaded", [False, True])
def test_a_request_makes_no_getpid_call(threaded: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # getpid is a real system call (glibc caches it no more): the writer asks once, at its start
    board = Scoreboard(slots=1)
    writer = board.slot(0, threaded=threaded)
    assert writer is not None

    def no_getpid() -> int:
        raise AssertionError("os.getpid() called on the request path")

    monkeypatch.setattr(os, "getpid", no_getpid)
    writer.begin()
    writer.end()
    monkeypatch.undo()
    assert (board.read(0).pid, board.read(0).requests, board.read(0).busy) == (os.getpid(), 1, 0)


def test_an_end_without_its_begin_stays_at_zero() -> None:
    board = Scoreboard(slots=1)
    writer = board.slot(0, threaded=False)
    assert writer is not None
    writer.end()
    assert board.read(0).busy == 0
    writer.begin()
    assert board.read(0).busy == 1


# -- what the master believes of a slot: check_slot ------------------------------------------------------

WALL = 1_800_000_000.0


def view(**fields: float) -> SlotView:
    """A slot a worker with pid 4242 wrote at WALL - 10 and last used at WALL - 1, 7 requests."""
    values: dict[str, float] = {"pid": 4242, "busy": 0, "requests": 7, "last_request": WALL - 1.0, "started": WALL - 10.0}
    values.update(fields)
    return SlotView(int(values["pid"]), int(values["busy"]), int(values["requests"]), values["last_request"], values["started"])


def check(slot: SlotView, threads: int = 1, uptime: float | None = 10.0) -> SlotReading | None:
    return check_slot(slot, pid=4242, threads=threads, wall=WALL, uptime=uptime)


def test_a_plausible_slot_is_believed() -> None:
    assert check(view()) == SlotReading(requests=7, busy=0, last_request=WALL - 1.0)
    assert check(view(busy=1)) == SlotReading(requests=7, busy=1, last_request=WALL - 1.0)


def test_a_slot_without_a_request_has_no_last_request() -> None:
    assert check(view(requests=0, last_request=0.0)) == SlotReading(requests=0, busy=0, last_request=None)


@pytest.mark.parametrize("pid", [0, 4243, -4242, 1])
def test_a_slot_another_process_wrote_is_unknown(pid: int) -> None:
    assert check(view(pid=pid)) is None


def test_the_worker_pid_itself_must_be_a_pid() -> None:
    assert check_slot(view(pid=0), pid=0, threads=1, wall=WALL) is None


def test_busy_is_bounded_by_the_workers_threads() -> None:
    assert check(view(busy=2)) is None
    assert check(view(busy=2), threads=2) == SlotReading(requests=7, busy=2, last_request=WALL - 1.0)
    assert check(view(busy=255), threads=4) is None
    assert check(view(busy=-1)) is None
    assert check(view(busy=1), threads=0) is not None  # a worker has at least one thread


def test_requests_are_bounded_by_the_uptime_and_absolutely() -> None:
    limit = int(MAX_REQUEST_RATE * (10.0 + CLOCK_SKEW))
    assert check(view(requests=limit)) is not None
    assert check(view(requests=limit + 1)) is None
    assert check(view(requests=999_999_999), uptime=1.0) is None  # the forged count of the issue
    assert check(view(requests=999_999_999), uptime=3600.0) is not None
    assert check(view(requests=MAX_REQUESTS), uptime=None) is not None
    assert check(view(requests=MAX_REQUESTS + 1), uptime=None) is None
    assert check(view(requests=-1)) is None
    assert check(view(requests=5), uptime=-3.0) is not None  # a negative uptime counts as zero
    assert check(view(requests=5), uptime=math.nan) is not None  # an unknown one as no bound but the absolute


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1.0, WALL + CLOCK_SKEW + 1.0])
def test_a_last_request_that_is_not_a_time_of_the_past_is_unknown(bad: float) -> None:
    assert check(view(last_request=bad)) is None


def test_a_last_request_a_little_ahead_of_the_masters_clock_is_believed() -> None:
    assert check(view(last_request=WALL + CLOCK_SKEW / 2)) == SlotReading(7, 0, WALL + CLOCK_SKEW / 2)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1.0])
def test_a_start_that_is_not_a_time_is_unknown(bad: float) -> None:
    assert check(view(started=bad)) is None


def test_the_master_reads_a_forged_slot_as_unknown() -> None:
    board = Scoreboard(slots=2)
    index = board.assign()
    assert index == 0
    SLOT.pack_into(board._map, 0, 4242, 200, 999_999_999, math.nan, math.inf)  # what a hostile worker writes
    assert board.check(0, pid=4242, threads=1, wall=WALL, uptime=10.0) is None
    SLOT.pack_into(board._map, 0, 4242, 1, 3, WALL - 2.0, WALL - 5.0)
    assert board.check(0, pid=4242, threads=1, wall=WALL, uptime=10.0) == SlotReading(3, 1, WALL - 2.0)


@pytest.mark.parametrize("index", [None, -1, 2, 1 << 40])
def test_checking_what_is_not_a_slot_is_unknown(index: int | None) -> None:
    assert Scoreboard(slots=2).check(index, pid=4242, threads=1, wall=WALL) is None


def test_a_closed_board_reads_unknown_and_refuses_writers() -> None:
    board = Scoreboard(slots=2)
    index = board.assign()
    board.close()
    assert board.closed
    assert board.check(index, pid=os.getpid(), threads=1, wall=time.time()) is None
    assert board.slot(index, threaded=False) is None
    assert board.assign() is None
    board.release(index)  # nothing to release into, and no error


# -- reading a worker's slot as the master knows the worker: Scoreboard(s).reading ---------------------------------


@dataclass
class Cfg:
    threads: Any = 1


@dataclass
class Record:
    """The master's record of a worker: its slot index and, for the plugin's worker class, its capacity."""

    scoreboard_index: Any
    capacity: Any = None
    cfg: Cfg = field(default_factory=Cfg)


NOW = 5000.0  # the master's monotonic clock


def written(board: Scoreboard, index: int, *values: Any) -> Scoreboard:
    SLOT.pack_into(board._map, index * SLOT.size, *values)
    return board


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (Record(0, capacity=8), 8),  # the request model's capacity
        (Record(0, cfg=Cfg(threads=4)), 4),  # none: the configured threads
        (Record(0), 1),
        (Record(0, capacity=0), 1),  # a capacity that is not a positive int: 1, not the threads
        (Record(0, capacity=True, cfg=Cfg(threads=4)), 1),
        (Record(0, capacity=2.5), 1),
        (Record(0, cfg=Cfg(threads="4")), 1),
        (object(), 1),
    ],
)
def test_a_workers_capacity_comes_from_the_masters_record(record: Any, expected: int) -> None:
    assert capacity_of(record) == expected


def test_a_reading_is_the_checked_slot_of_the_records_index() -> None:
    board = written(Scoreboard(slots=4), 2, 4242, 3, 40, WALL - 0.5, WALL - 50.0)
    read = board.reading(Record(2, capacity=4), pid=4242, started_at=NOW - 60.0, now=NOW, wall=WALL)
    assert read == SlotReading(requests=40, busy=3, last_request=WALL - 0.5)
    assert board.reading(Record(2, cfg=Cfg(threads=4)), pid=4242, started_at=NOW - 60.0, now=NOW, wall=WALL) == read
    assert board.reading(Record(1, capacity=4), pid=4242, started_at=NOW - 60.0, now=NOW, wall=WALL) is None  # not its slot
    assert board.reading(Record(2, capacity=4), pid=4243, started_at=NOW - 60.0, now=NOW, wall=WALL) is None  # not its pid


def test_a_reading_is_bounded_by_the_capacity_and_the_uptime_the_master_knows() -> None:
    board = written(Scoreboard(slots=1), 0, 4242, 3, 3 * MAX_REQUEST_RATE, WALL - 0.5, WALL - 50.0)
    worker = Record(0, capacity=4)
    assert board.reading(worker, pid=4242, started_at=NOW - 1.0, now=NOW, wall=WALL) is not None  # 3 s with the skew
    assert board.reading(worker, pid=4242, started_at=NOW - 0.5, now=NOW, wall=WALL) is None  # too many for 2.5 s
    assert board.reading(Record(0, capacity=2), pid=4242, started_at=NOW - 1.0, now=NOW, wall=WALL) is None  # 3 busy


@pytest.mark.parametrize("index", [None, -1, 4, True, 1.0, "0", 1 << 40])
def test_a_record_without_a_slot_index_reads_unknown(index: Any) -> None:
    board = written(Scoreboard(slots=4), 0, 4242, 0, 1, WALL - 1.0, WALL - 5.0)
    written(board, 1, 4242, 0, 1, WALL - 1.0, WALL - 5.0)
    assert board.reading(Record(index), pid=4242, started_at=NOW - 10.0, now=NOW, wall=WALL) is None
    assert board.reading(object(), pid=4242, started_at=NOW - 10.0, now=NOW, wall=WALL) is None


def test_a_forged_slot_reads_unknown_through_the_registry() -> None:
    boards = Scoreboards(slots=2)
    index = boards.assign("shop")
    written(boards.for_app("shop"), 0, 4242, 200, 999_999_999, math.nan, math.inf)
    assert boards.reading("shop", Record(index), pid=4242, started_at=NOW - 10.0, now=NOW, wall=WALL) is None
    boards.close()


def test_the_registry_reads_each_app_from_its_own_board_and_none_without_one() -> None:
    boards = Scoreboards(slots=2)
    shop, blog = boards.assign("shop"), boards.assign("blog")
    written(boards.for_app("shop"), 0, 4242, 1, 3, WALL - 2.0, WALL - 5.0)
    worker = Record(shop, capacity=1)
    assert shop == blog == 0
    assert boards.reading("shop", worker, pid=4242, started_at=NOW - 10.0, now=NOW, wall=WALL) == SlotReading(3, 1, WALL - 2.0)
    assert boards.reading("blog", worker, pid=4242, started_at=NOW - 10.0, now=NOW, wall=WALL) is None  # blog's slot 0
    assert boards.reading("admin", worker, pid=4242, started_at=NOW - 10.0, now=NOW, wall=WALL) is None  # no board
    boards.drop("shop")
    assert boards.reading("shop", worker, pid=4242, started_at=NOW - 10.0, now=NOW, wall=WALL) is None
    boards.close()


# -- one board per app: Scoreboards ------------------------------------------------------------------------------


def shared_mappings() -> set[int]:
    """Start addresses of this process's shared anonymous mappings."""
    with open("/proc/self/maps") as f:
        return {int(line.split("-", 1)[0], 16) for line in f if " rw-s " in line and "/dev/zero" in line}


def address(board: Scoreboard) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(board._map))


def test_each_app_gets_its_own_mapping_once() -> None:
    boards = Scoreboards(slots=4)
    shop = boards.for_app("shop")
    blog = boards.for_app("blog")
    assert boards.for_app("shop") is shop and boards.get("blog") is blog and boards.get("admin") is None
    assert boards.names() == ["shop", "blog"]
    assert address(shop) != address(blog)
    assert {address(shop), address(blog)} <= shared_mappings()
    boards.close()


def test_slots_are_assigned_and_released_per_app() -> None:
    boards = Scoreboards(slots=2)
    assert [boards.assign("shop"), boards.assign("shop"), boards.assign("shop")] == [0, 1, None]
    assert boards.assign("blog") == 0  # another app's board: its own slots
    boards.release("shop", 1)
    boards.release("admin", 0)  # an app without a board: nothing happens
    boards.release(None, 0)
    assert [boards.assign("shop"), boards.assign("blog")] == [1, 1]
    boards.close()


def test_a_worker_writes_only_its_own_apps_board() -> None:
    boards = Scoreboards(slots=2)
    shop, blog = boards.for_app("shop"), boards.for_app("blog")
    writer = shop.slot(boards.assign("shop"), threaded=False)
    assert writer is not None
    writer.begin()
    assert shop.read(0).requests == 1 and blog.read(0) == SlotView(0, 0, 0, 0.0, 0.0)
    boards.close()


def test_keep_only_unmaps_every_other_apps_board() -> None:
    boards = Scoreboards(slots=4)
    shop, blog, admin = boards.for_app("shop"), boards.for_app("blog"), boards.for_app("admin")
    gone = {address(blog), address(admin)}
    kept = address(shop)
    boards.keep_only("shop")
    assert boards.names() == ["shop"] and boards.get("blog") is None
    assert blog.closed and admin.closed and not shop.closed
    mapped = shared_mappings()
    assert kept in mapped and not gone & mapped, "an unmapped board is out of the process's reach"
    boards.close()
    assert shop.closed


def test_drop_forgets_an_apps_board() -> None:
    boards = Scoreboards(slots=1)
    board = boards.for_app("blog")
    boards.drop("blog")
    boards.drop("blog")  # twice: nothing more happens
    assert board.closed and boards.get("blog") is None
    assert boards.for_app("blog") is not board  # an app added again gets a fresh board
    boards.close()
