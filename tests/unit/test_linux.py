"""_linux.py: the one /proc/PID/stat parser, and the process tree read from it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from gunicorn_smartspawn import _linux
from gunicorn_smartspawn._linux import ProcStat, parse_proc_stat


def stat_line(pid: int, comm: bytes, state: str = "S", ppid: int = 1, starttime: int = 123456) -> bytes:
    """A /proc/PID/stat line as the kernel writes it (52 fields), with ``comm`` verbatim between the parentheses."""
    before = [state, str(ppid), "4242", "4242", "0", "-1", "4194560", "1169", "0", "0", "0", "10", "3", "0", "0",
              "20", "0", "1", "0"]
    after = ["23764992", "3027"] + ["0"] * 28
    return f"{pid} (".encode() + comm + b") " + " ".join([*before, str(starttime), *after]).encode() + b"\n"


def test_the_helper_writes_what_the_kernel_writes() -> None:
    with open(f"/proc/{os.getpid()}/stat", "rb") as f:
        real = f.read()
    mine = stat_line(1, b"python3", starttime=424242)
    assert len(real.split()) == len(mine.split())  # with a one-word comm
    assert mine.split()[21] == b"424242"  # starttime is field 22 (proc(5))
    stat = parse_proc_stat(os.getpid(), real)
    assert stat is not None and stat.starttime == int(real.split()[21])


# -- parse_proc_stat ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "comm",
    [
        b"python3",
        b"gunicorn: worker",  # setproctitle's title also lands in comm, spaces and all
        b"a) b",
        b") S 1 2 3",  # a name that looks like the fields that follow
        b"))",
        b"((",
        b"(sd-pam)",
        b"x)",
        b"",
        b"caf\xc3\xa9 \xff",
        b"tab\there",
    ],
    ids=["plain", "spaces", "close-paren", "fake-fields", "two-close", "two-open", "parenthesised", "trailing-paren",
         "empty", "not-utf8", "tab"],
)
def test_any_command_name(comm: bytes) -> None:
    assert parse_proc_stat(77, stat_line(77, comm, "S", 4242, 987654)) == ProcStat(77, "S", 4242, 987654)


@pytest.mark.parametrize("state", ["R", "S", "D", "Z", "T", "t", "X", "I"])
def test_every_state(state: str) -> None:
    stat = parse_proc_stat(5, stat_line(5, b"x", state))
    assert stat is not None and stat.state == state


def test_the_pid_is_the_callers() -> None:
    # the pid the caller opened /proc/PID for, not the line's own first field
    stat = parse_proc_stat(9, stat_line(8, b"x"))
    assert stat is not None and stat.pid == 9


@pytest.mark.parametrize(
    "text",
    [b"", b"\n", b"12 (x) S 1", stat_line(1, b"x").rsplit(b" ", 40)[0], b"12 (x) S notanumber" + b" 0" * 30,
     stat_line(1, b"x").replace(b" 123456 ", b" soon ")],
    ids=["empty", "newline", "short", "cut", "bad-ppid", "bad-starttime"],
)
def test_what_is_not_a_stat_line(text: bytes) -> None:
    assert parse_proc_stat(12, text) is None


# -- proc_stat, all_stats, children --------------------------------------------------------------------------


def test_proc_stat_of_this_process() -> None:
    stat = _linux.proc_stat(os.getpid())
    assert stat is not None
    assert (stat.pid, stat.state, stat.ppid) == (os.getpid(), "R", os.getppid())
    assert stat.starttime > 0
    again = _linux.proc_stat(os.getpid())
    assert again is not None and again.starttime == stat.starttime  # pid + starttime name one process


def _pid_max() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read())


def test_proc_stat_of_no_process() -> None:
    assert _linux.proc_stat(_pid_max() + 1) is None  # no pid is ever above pid_max


def test_all_stats_sees_this_process_and_its_parent() -> None:
    pids = {s.pid: s for s in _linux.all_stats()}
    assert pids[os.getpid()].ppid == os.getppid()
    assert os.getppid() in pids


def test_os_thread_count_counts_native_threads() -> None:
    before = _linux.os_thread_count()
    assert before >= 1
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        assert _linux.os_thread_count() == before + 1
    finally:
        release.set()
        thread.join(10)


# -- the tree, from a snapshot of /proc -------------------------------------------------------------------------

#       1
#       +- 10 (master)
#       |   +- 11 (preloader)
#       |   |   +- 14 (zombie intermediate)
#       |   +- 12 (worker)
#       |   |   +- 15 (app subprocess)
#       |   +- 13 (zombie worker)
#       +- 20
TREE = [
    ProcStat(1, "S", 0, 1),
    ProcStat(10, "S", 1, 2),
    ProcStat(11, "S", 10, 3),
    ProcStat(12, "S", 10, 4),
    ProcStat(13, "Z", 10, 5),
    ProcStat(14, "Z", 11, 6),
    ProcStat(15, "R", 12, 7),
    ProcStat(20, "S", 1, 8),
]


@pytest.fixture
def snapshot(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_linux, "all_stats", lambda: list(TREE))
    yield


@pytest.mark.usefixtures("snapshot")
def test_children_map_leaves_zombies_out_unless_asked() -> None:
    assert _linux.children_map() == {0: [1], 1: [10, 20], 10: [11, 12], 12: [15]}
    assert _linux.children_map(include_zombies=True) == {0: [1], 1: [10, 20], 10: [11, 12, 13], 11: [14], 12: [15]}


@pytest.mark.usefixtures("snapshot")
def test_child_pids_include_zombies_that_still_need_reaping() -> None:
    assert _linux.child_pids(10) == [11, 12, 13]
    assert _linux.child_pids(15) == []


@pytest.mark.usefixtures("snapshot")
def test_descendants_children_first_at_any_depth() -> None:
    assert _linux.descendants(10) == [11, 12, 13, 14, 15]
    assert _linux.descendants(11) == [14]
    assert _linux.descendants(15) == []
    assert _linux.descendants(999) == []
    assert _linux.descendants(1) == [10, 20, 11, 12, 13, 14, 15]


def test_descendants_of_a_real_tree() -> None:
    # this process -> a python child -> its sleep grandchild, each waiting until we are done
    code = (
        "import subprocess, sys\n"
        "grandchild = subprocess.Popen(['sleep', '120'])\n"
        "print(grandchild.pid, flush=True)\n"
        "sys.stdin.read()\n"
        "grandchild.kill(); grandchild.wait()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    try:
        grandchild = int(child.stdout.readline())
        below = _linux.descendants(os.getpid())
        assert child.pid in below and grandchild in below
        assert below.index(child.pid) < below.index(grandchild)
        assert _linux.descendants(child.pid) == [grandchild]
        assert child.pid in _linux.child_pids(os.getpid()) and grandchild not in _linux.child_pids(os.getpid())
    finally:
        child.stdin.close()
        assert child.wait(30) == 0
        child.stdout.close()
    assert _linux.descendants(child.pid) == []


_TRIM_SCRIPT = """
import sys
from gunicorn_smartspawn import _linux
blocks = [bytes(8000) for _ in range(4000)]  # ~32 MB of malloc'd memory (below the mmap threshold)
keep = bytes(8000)  # allocated last: the heap's top stays in use, only its middle becomes free
del blocks
before = _linux.resident_bytes()
released = _linux.malloc_trim()
after = _linux.resident_bytes()
print(before, after, released)
"""


@pytest.mark.skipif(os.confstr("CS_GNU_LIBC_VERSION") is None if hasattr(os, "confstr") else True, reason="glibc only")
def test_malloc_trim_gives_the_free_middle_of_the_heap_back() -> None:
    # a fresh interpreter: this one's heap is whatever the other tests left
    out = subprocess.run([sys.executable, "-c", _TRIM_SCRIPT], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONMALLOC": "malloc"}).stdout.split()
    before, after, released = int(out[0]), int(out[1]), out[2]
    assert released == "True"
    assert before - after > 16 * 1024 * 1024, (before, after)  # most of the ~32 MB freed left the resident set


def test_resident_bytes_is_this_process_resident_set() -> None:
    with open("/proc/self/status") as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    assert abs(_linux.resident_bytes() - rss_kib * 1024) < 8 * 1024 * 1024
