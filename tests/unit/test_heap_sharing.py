"""The master's heap before a fork (spawner.share_heap) and the ``ksm`` notes, without forking."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from gunicorn_smartspawn import _linux
from gunicorn_smartspawn.master.setup import ksm_notes
from gunicorn_smartspawn.master.spawner import FULL_COLLECT_EVERY, HeapSharing


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only a collection frees it


@pytest.fixture
def frozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_share_heap_freezes_what_lives_and_collects_what_does_not(frozen):
    dead, alive = Node(), Node()
    dead_ref = weakref.ref(dead)
    del dead
    HeapSharing().before_fork(0.0)
    assert dead_ref() is None  # collected before the freeze, not frozen forever
    assert gc.get_freeze_count() > 0
    assert gc.is_tracked(alive) and not any(o is alive for o in gc.get_objects())  # frozen: in no generation


def test_garbage_frozen_at_one_fork_is_collected_at_a_later_full_collection(frozen):
    heap = HeapSharing()
    node = Node()
    ref = weakref.ref(node)
    heap.before_fork(100.0)  # frozen while alive
    del node
    gc.collect()
    assert ref() is not None  # a frozen cycle is not examined...
    young = Node()
    young_ref = weakref.ref(young)
    del young
    heap.before_fork(100.0 + FULL_COLLECT_EVERY / 2)  # another fork soon after: young garbage only
    assert ref() is not None and young_ref() is None
    heap.before_fork(100.0 + FULL_COLLECT_EVERY)
    assert ref() is None  # ...until the next full one: it leaks for FULL_COLLECT_EVERY at most


def test_ksm_notes_say_what_to_do(tmp_path: Path):
    if _linux.memory_merge_supported() is not None:
        (note,) = ksm_notes(str(tmp_path / "run"))
        assert "Linux 6.4 or later" in note
        return
    run = tmp_path / "run"
    run.write_text("1\n")
    assert ksm_notes(str(run)) == []
    run.write_text("0\n")
    (note,) = ksm_notes(str(run))
    assert "KSM is stopped" in note and "echo 1 > /sys/kernel/mm/ksm/run" in note
    (note,) = ksm_notes(str(tmp_path / "missing"))
    assert "no KSM" in note


def test_ksm_running_reads_the_switch(tmp_path: Path):
    run = tmp_path / "run"
    run.write_text("2\n")  # 2: unmerge everything and stop
    assert _linux.ksm_running(str(run)) is False
    assert _linux.ksm_running(str(tmp_path / "nope")) is None
