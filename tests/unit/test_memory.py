"""memory.py: the smaps parsers, titles, /proc reading, the report, and the memory/status tables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gunicorn_smartspawn import _linux
from gunicorn_smartspawn.control import cli, memory
from gunicorn_smartspawn.control.memory import MemoryInfo, ProcessInfo

KB = 1024

#: Linux 6.x: every field, including those older kernels lack.
ROLLUP_6X = """\
5560d4c65000-7ffdab33a000 ---p 00000000 00:00 0                          [rollup]
Rss:               61820 kB
Pss:               16512 kB
Pss_Dirty:          2904 kB
Pss_Anon:           2100 kB
Pss_File:          14412 kB
Pss_Shmem:             0 kB
Shared_Clean:      18004 kB
Shared_Dirty:      40600 kB
Private_Clean:       312 kB
Private_Dirty:      2904 kB
Referenced:        61820 kB
Anonymous:         43504 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                128 kB
SwapPss:              64 kB
Locked:                0 kB
"""

#: Linux 4.14, the first with smaps_rollup: no Pss_* breakdown, no KSM, no FilePmdMapped.
ROLLUP_4_14 = """\
00400000-7fff9b5ff000 ---p 00000000 00:00 0                              [rollup]
Rss:                2048 kB
Pss:                1024 kB
Shared_Clean:        512 kB
Shared_Dirty:        256 kB
Private_Clean:       256 kB
Private_Dirty:      1024 kB
Referenced:         2048 kB
Anonymous:          1024 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
"""

#: Per-mapping smaps of an old kernel (3.10: no Swap line at all, no VmFlags), plus
#: a 6.x mapping with THPeligible/ProtectionKey/VmFlags and a path holding ':' and 'kB'.
SMAPS = """\
00400000-0040b000 r-xp 00000000 08:01 1046531                            /usr/bin/python3
Size:                 44 kB
Rss:                  40 kB
Pss:                  20 kB
Shared_Clean:         40 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Referenced:           40 kB
Anonymous:             0 kB
AnonHugePages:         0 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Locked:                0 kB
01c4e000-0216e000 rw-p 00000000 00:00 0                                  [heap]
Size:               5248 kB
Rss:                5000 kB
Pss:                3000 kB
Shared_Clean:          0 kB
Shared_Dirty:       3000 kB
Private_Clean:         0 kB
Private_Dirty:      2000 kB
Referenced:         5000 kB
Anonymous:          5000 kB
AnonHugePages:         0 kB
Swap:                 12 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Locked:                0 kB
7f3a1c000000-7f3a1c021000 r--p 00000000 fe:00 42                         /srv/odd: Rss: 99 kB
Size:                132 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                 100 kB
Pss:                  50 kB
Pss_Dirty:             0 kB
Shared_Clean:        100 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Swap:                  0 kB
SwapPss:               0 kB
THPeligible:           0
ProtectionKey:         0
VmFlags: rd mr mw me sd
"""


# -- parsers -----------------------------------------------------------------------------------


def test_rollup_of_a_current_kernel() -> None:
    info = memory.parse_smaps_rollup(ROLLUP_6X)
    assert info == MemoryInfo(
        rss=61820 * KB, pss=16512 * KB, private_clean=312 * KB, private_dirty=2904 * KB,
        shared_clean=18004 * KB, shared_dirty=40600 * KB, swap=128 * KB,
    )
    assert info.private == (312 + 2904) * KB
    assert info.shared == (18004 + 40600) * KB


def test_rollup_of_the_first_kernel_that_had_it() -> None:
    info = memory.parse_smaps_rollup(ROLLUP_4_14)
    assert (info.rss, info.pss, info.private, info.shared, info.swap) == (2048 * KB, 1024 * KB, 1280 * KB, 768 * KB, 0)


def test_fields_a_kernel_lacks_count_as_zero() -> None:
    info = memory.parse_smaps_rollup("Rss:  100 kB\nPss:   60 kB\n")
    assert info == MemoryInfo(rss=100 * KB, pss=60 * KB)


def test_smaps_sums_its_mappings_and_ignores_headers_and_flags() -> None:
    info = memory.parse_smaps(SMAPS)
    assert info == MemoryInfo(
        rss=(40 + 5000 + 100) * KB, pss=(20 + 3000 + 50) * KB, private_clean=0, private_dirty=2000 * KB,
        shared_clean=(40 + 100) * KB, shared_dirty=3000 * KB, swap=12 * KB,
    )


def test_pss_is_not_confused_with_its_breakdown() -> None:
    text = "Pss:  10 kB\nPss_Anon:  7 kB\nPss_File:  3 kB\nPss_Dirty:  4 kB\nSwapPss:  9 kB\n"
    assert memory.parse_smaps_rollup(text) == MemoryInfo(pss=10 * KB)


def test_empty_text_is_a_process_without_memory() -> None:
    assert memory.parse_smaps("") == MemoryInfo()
    assert memory.parse_smaps_rollup("\n") == MemoryInfo()


@pytest.mark.parametrize("text", ["hello", "Name:\tpython3\nState:\tS (sleeping)\n", "Rss: lots\n"])
def test_other_text_is_refused_with_what_it_starts_with(text: str) -> None:
    with pytest.raises(memory.SmapsParseError) as info:
        memory.parse_smaps_rollup(text)
    assert "smaps_rollup" in str(info.value) and repr(text.splitlines()[0][:60]) in str(info.value)


def test_memory_info_adds_up() -> None:
    a, b = MemoryInfo(1, 2, 3, 4, 5, 6, 7), MemoryInfo(10, 20, 30, 40, 50, 60, 70)
    assert a + b == MemoryInfo(11, 22, 33, 44, 55, 66, 77)
    assert list((a + b).as_dict()) == list(memory.MEMORY_KEYS)


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("gunicorn: worker [shop]", ("worker", "shop")),
        ("gunicorn: preloader [my-app.v2]", ("preloader", "my-app.v2")),
        ("gunicorn: spare [shop]", ("spare", "shop")),
        ("gunicorn: master [gunicorn]", ("master", None)),
        ("gunicorn: master [multi.conf.py]  ", ("master", None)),
        ("gunicorn: dirty-arbiter", ("other", None)),
        ("python -m gunicorn -c conf.py", ("other", None)),
        ("", ("other", None)),
    ],
)
def test_titles(title: str, expected: tuple[str, str | None]) -> None:
    assert memory.parse_title(title) == expected


# -- /proc -------------------------------------------------------------------------------------


def test_read_memory_of_this_process() -> None:
    ballast = bytearray(8 * 2**20)  # written: private dirty
    info = memory.read_memory(os.getpid())
    assert info.rss >= len(ballast) and info.private_dirty >= len(ballast)
    assert 0 < info.pss <= info.rss
    assert info.private + info.shared == info.rss


def test_falls_back_to_smaps_where_the_rollup_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    real_read = memory._read
    asked: list[str] = []

    def read(pid: int, name: str) -> str:
        asked.append(name)
        if name == "smaps_rollup":
            raise FileNotFoundError(2, "No such file or directory")
        return real_read(pid, name)

    monkeypatch.setattr(memory, "_read", read)
    info = memory.read_memory(os.getpid())
    assert asked == ["smaps_rollup", "smaps"]
    rollup = memory.parse_smaps_rollup(real_read(os.getpid(), "smaps_rollup"))
    assert info.rss == pytest.approx(rollup.rss, rel=0.05)


def _gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_vanished_pid_is_named() -> None:
    pid = _gone_pid()
    with pytest.raises(memory.ProcessGone, match=f"^no process with pid {pid}$"):
        memory.read_memory(pid)
    with pytest.raises(memory.ProcessGone):
        memory.process_tree(pid)


def test_a_zombie_has_exited() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while getattr(_linux.proc_stat(proc.pid), "state", None) != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(memory.ProcessGone, match=f"process {proc.pid} has exited"):
            memory.read_memory(proc.pid)
    finally:
        proc.wait()


def _as_nobody(call: str, pid: int) -> str:
    """Run ``memory.<call>(pid)`` in a child that became 'nobody'; its error message."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(r)
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                getattr(memory, call)(pid)
                result = "no error"
            except memory.MemoryReadError as exc:
                result = f"{type(exc).__name__}: {exc}"
            os.write(w, result.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(child, 0)
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_permission_denied_is_explained() -> None:
    out = _as_nobody("read_memory", os.getpid())
    assert out.startswith("AccessDenied: cannot read /proc/") and "permission denied" in out, out
    assert "\n" not in out


@pytest.mark.skipif(os.geteuid() == 0 or os.stat("/proc/1").st_uid == os.geteuid(),
                    reason="root may read every process, and anyone their own")
def test_permission_denied_is_explained_without_root() -> None:
    with pytest.raises(memory.AccessDenied, match="permission denied"):
        memory.read_memory(1)


TREE = textwrap.dedent(
    """
    import json, os, sys, setproctitle
    ballast = [os.urandom(1024) * 1024 for _ in range(16)]   # shared with every child below
    setproctitle.setproctitle("gunicorn: master [unit]")
    r, w = os.pipe()

    def child(title, then=None):
        pid = os.fork()
        if pid == 0:
            setproctitle.setproctitle(title)
            if then:
                child(then)
            os.write(w, b"%d %s\\n" % (os.getpid(), title.encode()))
            os.read(0, 1)   # until the test closes stdin
            os._exit(0)
        return pid

    child("gunicorn: preloader [shop]")
    child("gunicorn: worker [shop]")
    child("gunicorn: worker [blog]", then="sh -c app-subprocess")
    seen = {}
    while len(seen) < 4:
        line = os.read(r, 4096).decode()
        for entry in line.splitlines():
            pid, title = entry.split(" ", 1)
            seen[title] = int(pid)
    print(json.dumps(seen), flush=True)
    os.read(0, 1)
    """
)


@pytest.fixture
def fake_tree() -> Iterator[tuple[int, dict[str, int]]]:
    """A master titled like gunicorn's, with a preloader, two workers and a worker's subprocess."""
    proc = subprocess.Popen([sys.executable, "-c", TREE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        pids = json.loads(proc.stdout.readline())
        yield proc.pid, pids
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdin.close()  # type: ignore[union-attr]
        proc.stdout.close()  # type: ignore[union-attr]


def test_process_tree_lists_every_descendant_with_role_and_app(fake_tree: tuple[int, dict[str, int]]) -> None:
    master, pids = fake_tree
    tree = memory.process_tree(master)
    got = [(p.pid, p.role, p.app) for p in tree]
    assert got == [
        (master, "master", None),
        (pids["gunicorn: worker [blog]"], "worker", "blog"),
        (pids["gunicorn: preloader [shop]"], "preloader", "shop"),
        (pids["gunicorn: worker [shop]"], "worker", "shop"),
        (pids["sh -c app-subprocess"], "other", None),
    ]
    by_pid = {p.pid: p for p in tree}
    assert by_pid[pids["sh -c app-subprocess"]].ppid == pids["gunicorn: worker [blog]"]
    assert by_pid[master].title == "gunicorn: master [unit]"
    worker = by_pid[pids["gunicorn: worker [shop]"]].memory
    assert worker.shared > 16 * 2**20 and worker.pss < worker.rss / 2  # the master's 16 MB, shared with 5


def test_check_master(fake_tree: tuple[int, dict[str, int]]) -> None:
    master, pids = fake_tree
    assert memory.check_master(master) == "gunicorn: master [unit]"
    worker = pids["gunicorn: worker [shop]"]
    with pytest.raises(memory.NotAMaster, match=f"pid {worker} is a gunicorn worker of app 'shop', not the master; "
                                                f"its master is probably pid {master}"):
        memory.check_master(worker)
    with pytest.raises(memory.NotAMaster, match=f"pid {os.getpid()} is not a gunicorn master: its title is"):
        memory.check_master(os.getpid())
    with pytest.raises(memory.ProcessGone):
        memory.check_master(_gone_pid())


# -- the report ----------------------------------------------------------------------------------


def _process(pid: int, role: Any, app: str | None, rss_mb: int, pss_mb: int) -> ProcessInfo:
    mb = 2**20
    mem = MemoryInfo(rss=rss_mb * mb, pss=pss_mb * mb, private_dirty=pss_mb * mb // 2,
                     shared_clean=rss_mb * mb - pss_mb * mb // 2)
    return ProcessInfo(pid=pid, ppid=1, role=role, app=app, title="", memory=mem)


SAMPLE = [
    _process(100, "master", None, 20, 15),
    _process(101, "preloader", "shop", 60, 16),
    _process(102, "worker", "shop", 60, 16),
    _process(103, "worker", "shop", 60, 16),
    _process(104, "worker", "blog", 50, 45),
]


def test_report_schema() -> None:
    report = memory.memory_report(SAMPLE)
    assert list(report) == ["protocol", "processes", "totals", "by_app", "saved_by_sharing"]
    assert report["protocol"] == 1
    keys = ["pid", "role", "app", *memory.MEMORY_KEYS]
    assert all(list(p) == keys for p in report["processes"])
    assert [p["pid"] for p in report["processes"]] == [100, 101, 102, 103, 104]
    mb = 2**20
    assert report["totals"]["rss"] == 250 * mb and report["totals"]["pss"] == 108 * mb
    assert report["saved_by_sharing"] == 142 * mb
    assert list(report["by_app"]) == ["blog", "shop"]
    assert report["by_app"]["shop"]["rss"] == 180 * mb and report["by_app"]["blog"]["pss"] == 45 * mb
    for figures in [report["totals"], *report["by_app"].values(), *report["processes"]]:
        assert figures["private"] == figures["private_clean"] + figures["private_dirty"]
        assert figures["shared"] == figures["shared_clean"] + figures["shared_dirty"]
        assert all(type(figures[k]) is int for k in memory.MEMORY_KEYS)
    assert json.loads(json.dumps(report)) == report


def test_report_of_nothing() -> None:
    report = memory.memory_report([])
    assert report["processes"] == [] and report["by_app"] == {} and report["saved_by_sharing"] == 0


# -- the tables ------------------------------------------------------------------------------------


def _fits(text: str) -> None:
    too_wide = [line for line in text.splitlines() if len(line) > cli.WIDTH]
    assert not too_wide, too_wide


def test_memory_table() -> None:
    text = cli.format_memory(memory.memory_report(SAMPLE))
    _fits(text)
    lines = text.splitlines()
    assert lines[-1] == "Sharing saves 142.0 MB: the processes map 250.0 MB (sum of RSS) but use 108.0 MB (sum of PSS)."
    row = next(line for line in lines if line.strip().startswith("102"))
    assert row.split() == ["102", "worker", "shop", "60.0", "16.0", "8.0", "52.0", "0.0"]
    assert any(line.split()[:3] == ["total", "5", "processes"] for line in lines)
    assert any(line.split()[:3] == ["app", "shop", "(3)"] for line in lines)


def test_memory_table_fits_with_long_names_and_huge_figures() -> None:
    tb = 2**40 // 2**20
    long_name = "a" * 64
    processes = [_process(4194304, "preloader", long_name, 9 * tb, 8 * tb)] + [
        _process(4194305 + i, "worker", long_name, 9 * tb, 8 * tb) for i in range(50)
    ]
    text = cli.format_memory(memory.memory_report(processes))
    _fits(text)
    assert "Sharing saves" in text


def _status(**app_changes: Any) -> dict[str, Any]:
    app = {
        "name": "shop", "spawn_method": "smart", "state": "running", "last_error": None, "retry_in": None,
        "target": 2, "generation": 3,
        "preloader": {"pid": 4712, "generation": 3, "loaded_in": 0.84, "idle_for": 12.5, "idle_timeout": 300.0},
        "workers": [
            {"pid": 4713, "age": 7, "generation": 3, "forked": True, "ready": True, "uptime": 3725.0, "requests": 1200,
             "busy": False, "last_request_ago": 3.2},
            {"pid": 4714, "age": 8, "generation": 3, "forked": True, "ready": False, "uptime": 0.4, "requests": None,
             "busy": None, "last_request_ago": None},
        ],
    }
    app.update(app_changes)
    return {"master": {"pid": 4711, "gunicorn": "27.0.1", "smartspawn": "0.1.0", "uptime": 90061.0}, "apps": [app]}


def test_status_table() -> None:
    text = cli.format_status(_status(), read_proc=False)
    _fits(text)
    lines = text.splitlines()
    assert lines[0] == "gunicorn-smartspawn 0.1.0 on gunicorn 27.0.1: master 4711, up 1d 01h, 1 app"
    assert lines[2] == "shop  smart  running  2 workers (target 2)  gen 3"
    assert lines[3] == "  preloader 4712  gen 3  loaded in 0.84s  idle 12s (stops after 5m 00s)"
    assert lines[5].split() == ["4713", "3", "7", "1h", "02m", "1200", "idle", "3.2s", "ago", "-", "-"]
    assert lines[6].split() == ["4714", "3", "8", "0.40s", "-", "booting", "-", "-", "-"]


def test_status_table_of_a_failing_app_fits() -> None:
    error = "Traceback (most recent call last):\n  File ...\nModuleNotFoundError: No module named '" + "x" * 300 + "'"
    status = _status(name="n" * 64, state="backing off", last_error=error, retry_in=4.0, preloader=None, workers=[])
    text = cli.format_status(status, read_proc=False)
    _fits(text)
    lines = text.splitlines()
    assert len(lines[2]) == cli.WIDTH
    assert lines[2] == "n" * 32 + "...  smart  backing off (retry in 4.0s)  0 workers (target 2)  gen 3"
    assert lines[3].startswith("  error: ModuleNotFoundError: No module named 'xxx")
    assert lines[4].startswith("         xxx") and lines[5].endswith(" ...") and len(lines) == 6


def test_status_table_of_a_smart_app_whose_preloader_stopped_when_idle() -> None:
    text = cli.format_status(_status(preloader=None), read_proc=False)
    assert text.splitlines()[3] == "  preloader: none running (one starts when a worker is needed)"


def test_status_table_of_a_direct_app_without_scoreboard() -> None:
    status = _status(spawn_method="direct", preloader=None)
    text = cli.format_status(status, read_proc=False)
    assert "preloader" not in text


def test_status_table_never_stopping_preloader() -> None:
    status = _status()
    status["apps"][0]["preloader"]["idle_timeout"] = 0
    assert "(never stops)" in cli.format_status(status, read_proc=False)


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (0.004, "0.00s"), (0.84, "0.84s"), (9.94, "9.9s"),
                                               (12.7, "12s"), (302, "5m 02s"), (3725, "1h 02m"), (90061, "1d 01h")])
def test_durations(seconds: float | None, text: str) -> None:
    assert cli.duration(seconds) == text


def test_status_table_lists_the_spares() -> None:
    spares = [{"pid": 4720, "age": 9, "generation": 3, "parked": True, "uptime": 5.0},
              {"pid": 4721, "age": 10, "generation": 3, "parked": False, "uptime": 0.1}]
    text = cli.format_status(_status(spare_workers=2, spares=spares), read_proc=False)
    _fits(text)
    assert text.splitlines()[4] == "  spares 2 of 2: 4720, 4721 (starting)"
    assert "spares" not in cli.format_status(_status(), read_proc=False)  # none configured: no line
