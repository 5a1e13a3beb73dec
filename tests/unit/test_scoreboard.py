"""scoreboard.py: slots assigned and released by the master, written by a worker around each request."""

from __future__ import annotations

import os
import threading
import time

import pytest

from gunicorn_smartspawn.scoreboard import DEFAULT_SLOTS, SLOT, Scoreboard, SlotView, SlotWriter


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


def test_busy_saturates_at_what_a_byte_holds() -> None:
    board = Scoreboard(slots=1)
    writer = board.slot(0, threaded=True)
    assert writer is not None
    for _ in range(300):
        writer.begin()
    assert (board.read(0).busy, board.read(0).requests) == (255, 300)
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


def test_a_sync_writer_has_no_lock() -> None:
    writer = Scoreboard(slots=1).slot(0, threaded=False)
    assert writer is not None and writer._lock is None
