"""The few Linux calls Python does not wrap (prctl, clone(CLONE_PARENT)) and the one /proc parser.

The calls go through ctypes on the running process's own C library; each
answers False/None where it cannot act, and the caller picks the portable
path. :func:`proc_stat` is the only reader of ``/proc/PID/stat`` in the
package: the master's "is this pid my child?" checks, the shutdown sweep and
the memory tool all go through it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import struct
from dataclasses import dataclass
from typing import Final

PR_SET_PDEATHSIG: Final = 1
PR_SET_CHILD_SUBREAPER: Final = 36
PR_SET_MEMORY_MERGE: Final = 67  # Linux >= 6.4
PR_GET_MEMORY_MERGE: Final = 68
KSM_RUN: Final = "/sys/kernel/mm/ksm/run"
CLONE_PARENT: Final = 0x00008000
#: clone's syscall number where its first argument is the flags and the rest may be 0.
_SYS_CLONE: Final = {"x86_64": 56, "aarch64": 220}


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def prctl(option: int, value: int) -> bool:
    libc = _libc()
    if libc is None or not hasattr(libc, "prctl"):
        return False
    return bool(libc.prctl(option, value, 0, 0, 0) == 0)


def become_subreaper() -> bool:
    """Make orphaned descendants children of this process (Linux >= 3.4)."""
    return prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(sig: int) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies."""
    return prctl(PR_SET_PDEATHSIG, sig)


def enable_memory_merge() -> str | None:
    """``prctl(PR_SET_MEMORY_MERGE, 1)``: KSM may merge every anonymous page of this process, now and
    later, with identical pages of other processes that did the same; children inherit it.
    None when done, else why not."""
    libc = _libc()
    if libc is None or not hasattr(libc, "prctl"):
        return "no C library with prctl()"
    if libc.prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) == 0:
        return None
    err = ctypes.get_errno()
    if err == errno.EINVAL:
        return f"this kernel ({os.uname().release}) has no PR_SET_MEMORY_MERGE: Linux 6.4 or later is needed"
    return f"prctl(PR_SET_MEMORY_MERGE): {os.strerror(err)}"


def memory_merge_supported() -> str | None:
    """Whether this kernel has ``PR_SET_MEMORY_MERGE``, asked without changing anything:
    None if it has, else why not."""
    libc = _libc()
    if libc is None or not hasattr(libc, "prctl"):
        return "no C library with prctl()"
    if libc.prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0) >= 0:
        return None
    return f"this kernel ({os.uname().release}) has no PR_SET_MEMORY_MERGE: Linux 6.4 or later is needed"


def ksm_running(path: str = KSM_RUN) -> bool | None:
    """Whether the kernel's KSM daemon runs (``/sys/kernel/mm/ksm/run`` is 1); None without KSM."""
    try:
        with open(path, "rb") as f:
            return f.read(16).strip() == b"1"
    except OSError:
        return None


def malloc_trim() -> bool:
    """glibc's ``malloc_trim(0)``: hand the free pages of the C heap back to the kernel.

    False where the C library has none (musl) or nothing was released."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))


def resident_bytes() -> int:
    """This process's resident set, from ``/proc/self/statm`` (0 if unreadable)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def os_thread_count() -> int:
    """Threads of this process as the kernel sees them (native ones included)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` the package reads."""

    pid: int
    state: str  # R, S, D, Z, ...
    ppid: int
    starttime: int  # clock ticks after boot: with the pid, names one process for ever


def parse_proc_stat(pid: int, text: bytes) -> ProcStat | None:
    """Parse one ``/proc/PID/stat`` line; the command name may hold spaces and parentheses."""
    rest = text[text.rfind(b")") + 2 :].split()
    if len(rest) < 20:
        return None
    try:
        return ProcStat(pid=pid, state=rest[0].decode("ascii", "replace"), ppid=int(rest[1]), starttime=int(rest[19]))
    except ValueError:
        return None


def proc_stat(pid: int) -> ProcStat | None:
    """``/proc/PID/stat`` of a live or zombie process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return parse_proc_stat(pid, f.read())
    except OSError:
        return None


def all_stats() -> list[ProcStat]:
    """Every process's stat, in one pass over /proc (empty where there is no /proc)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    stats = (proc_stat(int(e)) for e in entries if e.isdigit())
    return [s for s in stats if s is not None]


def children_map(include_zombies: bool = False) -> dict[int, list[int]]:
    """ppid -> pids, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for stat in all_stats():
        if include_zombies or stat.state != "Z":
            children.setdefault(stat.ppid, []).append(stat.pid)
    return children


def child_pids(parent: int) -> list[int]:
    """Pids whose parent is ``parent`` (zombies included: they still need reaping)."""
    return children_map(include_zombies=True).get(parent, [])


def descendants(parent: int) -> list[int]:
    """Every process below ``parent``, at any depth, children first."""
    tree = children_map(include_zombies=True)
    found: list[int] = []
    todo = list(tree.get(parent, []))
    while todo:
        pid = todo.pop(0)
        found.append(pid)
        todo.extend(tree.get(pid, []))
    return found


class CloneParent:
    """``clone(CLONE_PARENT | SIGCHLD)`` wrapped like ``os.fork()``.

    The child is born a sibling of the caller: a child of the caller's
    parent, which receives its SIGCHLD and reaps it. CPython's own fork
    bookkeeping runs around it (``PyOS_BeforeFork`` and the
    ``PyOS_AfterFork_*`` pair, which also run ``os.register_at_fork``
    callbacks), and the GIL stays held across the call, as in ``os.fork``.

    What it skips is the C library's fork handling: ``pthread_atfork``
    handlers, and the child's cached thread id. Both only matter to a
    process with more than one thread, so :meth:`usable` demands exactly one
    OS thread, and callers check it before every use.
    """

    def __init__(self) -> None:
        self._syscall = None
        number = _SYS_CLONE.get(os.uname().machine)
        if number is None or not hasattr(ctypes, "pythonapi"):
            return
        try:
            api = ctypes.PyDLL(None, use_errno=True)  # keeps the GIL held during the call
            syscall = api.syscall
            ctypes.pythonapi.PyOS_BeforeFork  # noqa: B018  (present in CPython >= 3.7)
        except (OSError, AttributeError):
            return
        syscall.restype = ctypes.c_long
        syscall.argtypes = [ctypes.c_long, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulong]
        self._number = number
        self._syscall = syscall

    def usable(self) -> bool:
        return self._syscall is not None and os_thread_count() == 1

    def __call__(self) -> int:
        """0 in the child, the child's pid in the caller; OSError on failure."""
        assert self._syscall is not None
        api = ctypes.pythonapi
        api.PyOS_BeforeFork()
        pid = int(self._syscall(self._number, CLONE_PARENT | signal.SIGCHLD, None, None, None, 0))
        if pid == 0:
            api.PyOS_AfterFork_Child()
            return 0
        err = ctypes.get_errno()
        api.PyOS_AfterFork_Parent()
        if pid < 0:
            raise OSError(err, f"clone(CLONE_PARENT) failed: {os.strerror(err)}")
        return pid


#: inotify events that may mean a file in a watched directory has new content.
IN_CHANGED: Final = 0x2 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200  # MODIFY CLOSE_WRITE MOVED_FROM MOVED_TO CREATE DELETE
IN_Q_OVERFLOW: Final = 0x4000
_IN_ONLYDIR: Final = 0x01000000
_INOTIFY_EVENT: Final = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


class Inotify:
    """An inotify descriptor (non-blocking, close-on-exec) watching directories, read in the caller's select."""

    def __init__(self) -> None:
        libc = _libc()
        if libc is None or not hasattr(libc, "inotify_init1"):
            raise OSError(errno.ENOSYS, "inotify is not available")
        self._libc = libc
        self.fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if self.fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")

    def add_dir(self, path: str) -> int:
        """Watch directory ``path`` for changed entries; its watch descriptor (OSError on failure)."""
        wd = int(self._libc.inotify_add_watch(self.fd, os.fsencode(path), IN_CHANGED | _IN_ONLYDIR))
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        return wd

    def read(self) -> list[tuple[int, int, str]]:
        """(wd, mask, name) of each event waiting now; [] when none."""
        try:
            data = os.read(self.fd, 64 * 1024)
        except (BlockingIOError, InterruptedError):
            return []
        return parse_inotify(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def parse_inotify(data: bytes) -> list[tuple[int, int, str]]:
    """The events in one read of an inotify descriptor."""
    events, offset = [], 0
    while offset + _INOTIFY_EVENT.size <= len(data):
        wd, mask, _cookie, length = _INOTIFY_EVENT.unpack_from(data, offset)
        offset += _INOTIFY_EVENT.size
        name = data[offset : offset + length].split(b"\0", 1)[0]
        offset += length
        events.append((wd, mask, os.fsdecode(name)))
    return events
