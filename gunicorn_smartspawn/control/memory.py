"""How much memory a server's processes use, and how much sharing saves.

The figures come from ``/proc/PID/smaps_rollup`` (Linux >= 4.14), or from the
sum over the mappings of ``/proc/PID/smaps`` where the rollup is missing:

- **RSS**: resident pages mapped by the process, shared or not. Summed over
  processes it counts every shared page once per process that maps it.
- **PSS** (proportional set size): each resident page divided by the number
  of processes that map it. Summed over processes it is what they really use.
- **private** (clean + dirty): pages only this process maps; what its exit
  would free. **shared** (clean + dirty): pages mapped by others too.

So ``sum(RSS) - sum(PSS)`` is the memory that copy-on-write sharing saves:
what the processes would need if nothing were shared, minus what they use.

The function API (used by the master's ``memory`` command, the
``smartspawn`` tool and the benchmarks)::

    report = memory_report(process_tree(master_pid))
    report["saved_by_sharing"]          # bytes

Pure parsing (:func:`parse_smaps_rollup`, :func:`parse_smaps`,
:func:`parse_title`) is kept apart from reading ``/proc``. All sizes are
bytes.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any, Final, Literal

from gunicorn_smartspawn import _linux
from gunicorn_smartspawn.control.protocol import PROTOCOL
from gunicorn_smartspawn.errors import SmartSpawnError

Role = Literal["master", "preloader", "worker", "spare", "other"]

#: smaps field -> MemoryInfo attribute. Fields a kernel lacks count as 0.
_FIELDS: Final = {
    "Rss": "rss",
    "Pss": "pss",
    "Private_Clean": "private_clean",
    "Private_Dirty": "private_dirty",
    "Shared_Clean": "shared_clean",
    "Shared_Dirty": "shared_dirty",
    "Swap": "swap",
}
_LINE: Final = re.compile(r"^([A-Za-z_]+):\s+(\d+)\s+kB\s*$")
_TITLE: Final = re.compile(r"^gunicorn: (master|preloader|worker|spare) \[(.*)\]$")

#: The keys of one process and of every total in :func:`memory_report`, in order.
MEMORY_KEYS: Final = (
    "rss", "pss", "private_clean", "private_dirty", "shared_clean", "shared_dirty", "private", "shared", "swap",
)


class MemoryReadError(SmartSpawnError):
    """``/proc`` would not tell a process's memory. The message says why, in one line."""


class ProcessGone(MemoryReadError, LookupError):
    """The process does not exist (any more), or it has exited and is a zombie."""


class AccessDenied(MemoryReadError):
    """The process belongs to another user (or is not dumpable)."""


class NotAMaster(MemoryReadError):
    """The pid is not a gunicorn master."""


class SmapsParseError(SmartSpawnError, ValueError):
    """The text is not what ``/proc/PID/smaps`` or ``smaps_rollup`` contains."""


@dataclass(frozen=True)
class MemoryInfo:
    """One process's memory, in bytes."""

    rss: int = 0
    pss: int = 0
    private_clean: int = 0
    private_dirty: int = 0
    shared_clean: int = 0
    shared_dirty: int = 0
    swap: int = 0

    @property
    def private(self) -> int:
        return self.private_clean + self.private_dirty

    @property
    def shared(self) -> int:
        return self.shared_clean + self.shared_dirty

    def __add__(self, other: MemoryInfo) -> MemoryInfo:
        if not isinstance(other, MemoryInfo):
            return NotImplemented
        return MemoryInfo(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def as_dict(self) -> dict[str, int]:
        """The figures under the keys of :data:`MEMORY_KEYS`."""
        return {key: int(getattr(self, key)) for key in MEMORY_KEYS}


@dataclass(frozen=True)
class ProcessInfo:
    """One process of a server's tree."""

    pid: int
    ppid: int
    role: Role
    #: The app a preloader or worker runs; None for the master and other processes.
    app: str | None
    #: The process title (``/proc/PID/cmdline``, NULs as spaces).
    title: str
    memory: MemoryInfo


# -- parsing (pure) -----------------------------------------------------------------------


def _sum_fields(text: str, what: str) -> MemoryInfo:
    totals = dict.fromkeys(_FIELDS.values(), 0)
    recognised = False
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        recognised = True
        attr = _FIELDS.get(match.group(1))
        if attr is not None:
            totals[attr] += int(match.group(2)) * 1024
    if not recognised and text.strip():
        first = text.strip().splitlines()[0][:60]
        raise SmapsParseError(f"not the text of {what}: no 'Field: N kB' line (it starts with {first!r})")
    return MemoryInfo(**totals)


def parse_smaps_rollup(text: str) -> MemoryInfo:
    """The figures of ``/proc/PID/smaps_rollup``. Empty text (a process without
    memory) gives zeros; fields an older kernel lacks count as 0."""
    return _sum_fields(text, "/proc/PID/smaps_rollup")


def parse_smaps(text: str) -> MemoryInfo:
    """The figures of ``/proc/PID/smaps``, summed over its mappings.

    PSS summed this way can be a little lower than the rollup's, which adds
    the fractions before rounding to kB.
    """
    return _sum_fields(text, "/proc/PID/smaps")


def parse_title(title: str) -> tuple[Role, str | None]:
    """``gunicorn: worker [shop]`` -> ('worker', 'shop'); a master's bracket
    holds the server's name, not an app, so its app is None."""
    match = _TITLE.match(title.strip())
    if match is None:
        return "other", None
    role: Role = match.group(1)  # type: ignore[assignment]
    return role, (None if role == "master" else match.group(2))


# -- reading /proc -----------------------------------------------------------------------


def _read(pid: int, name: str) -> str:
    path = f"/proc/{pid}/{name}"
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        if not os.path.exists(f"/proc/{pid}"):
            raise ProcessGone(f"no process with pid {pid}") from None
        raise
    except ProcessLookupError:  # a zombie or a kernel thread: no address space
        raise ProcessGone(f"process {pid} has exited") from None
    except PermissionError:
        raise AccessDenied(
            f"cannot read {path}: permission denied (the process belongs to another user; "
            "run as the server's user or as root)"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            raise ProcessGone(f"process {pid} has exited") from None
        raise MemoryReadError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_memory(pid: int) -> MemoryInfo:
    """The memory of ``pid`` from ``smaps_rollup``, else summed from ``smaps``.

    Raises :class:`ProcessGone` or :class:`AccessDenied` (both
    :class:`MemoryReadError`) with a one-line message.
    """
    try:
        return parse_smaps_rollup(_read(pid, "smaps_rollup"))
    except FileNotFoundError:  # the process exists, the kernel is older than 4.14
        pass
    try:
        text = _read(pid, "smaps")
    except FileNotFoundError:
        raise MemoryReadError(f"/proc/{pid}/smaps is missing: the kernel has no CONFIG_PROC_PAGE_MONITOR") from None
    stat = _linux.proc_stat(pid)
    if not text and stat is not None and stat.state == "Z":
        raise ProcessGone(f"process {pid} has exited")
    return parse_smaps(text)


def read_title(pid: int) -> str:
    """The process title from ``/proc/PID/cmdline``, NULs as spaces ("" for a zombie)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ProcessGone(f"no process with pid {pid}") from None
    except OSError as exc:
        raise MemoryReadError(f"cannot read /proc/{pid}/cmdline: {exc.strerror or exc}") from None
    return raw.replace(b"\0", b" ").decode("utf-8", errors="replace").strip()


def check_master(pid: int) -> str:
    """The title of ``pid`` if it is a gunicorn master; else :class:`NotAMaster`
    (or :class:`ProcessGone`) with a message that says what it is instead."""
    if _linux.proc_stat(pid) is None:
        raise ProcessGone(f"no process with pid {pid}")
    title = read_title(pid)
    role, app = parse_title(title)
    if role == "master":
        return title
    if role in ("preloader", "worker", "spare"):
        stat = _linux.proc_stat(pid)
        parent = f"; its master is probably pid {stat.ppid}" if stat is not None else ""
        raise NotAMaster(f"pid {pid} is a gunicorn {role} of app {app!r}, not the master{parent}")
    shown = title[:60] or "(no title)"
    raise NotAMaster(f"pid {pid} is not a gunicorn master: its title is {shown!r}")


_ROLE_ORDER: Final = {"master": 0, "preloader": 1, "worker": 2, "spare": 3, "other": 4}


def process_tree(master_pid: int) -> list[ProcessInfo]:
    """The master and every process below it, with role, app and memory.

    All descendants are listed, not only the master's children: a worker is
    the grandchild of its preloader for the instant before it is re-parented,
    and gunicorn's dirty arbiter and an app's own subprocesses use memory too
    (their role is 'other'). A process that exits while it is read is left
    out; if the master itself is gone, :class:`ProcessGone` is raised. The
    master comes first, then each app's preloaders and workers (by app, then
    pid), then other processes.
    """
    stat = _linux.proc_stat(master_pid)
    if stat is None or stat.state == "Z":
        raise ProcessGone(f"no process with pid {master_pid}")
    children = _linux.children_map()
    found: list[tuple[int, int]] = [(master_pid, stat.ppid)]
    queue = [master_pid]
    while queue:
        parent = queue.pop()
        for child in children.get(parent, ()):
            found.append((child, parent))
            queue.append(child)
    processes: list[ProcessInfo] = []
    for pid, ppid in found:
        try:
            title = read_title(pid)
            memory = read_memory(pid)
        except ProcessGone:
            if pid == master_pid:
                raise
            continue
        role, app = parse_title(title)
        if pid == master_pid:
            role, app = "master", None
        processes.append(ProcessInfo(pid=pid, ppid=ppid, role=role, app=app, title=title, memory=memory))
    processes.sort(key=lambda p: (p.pid != master_pid, _ROLE_ORDER[p.role] == 4, p.app or "", _ROLE_ORDER[p.role], p.pid))
    return processes


# -- the report ------------------------------------------------------------------------------


def _total(memories: Iterable[MemoryInfo]) -> MemoryInfo:
    total = MemoryInfo()
    for memory in memories:
        total = total + memory
    return total


def memory_report(processes: Iterable[ProcessInfo]) -> dict[str, Any]:
    """The JSON-ready report (schema in docs/tools.md), all sizes in bytes::

        {"protocol": 1,
         "processes": [{"pid", "role", "app", "rss", "pss", "private_clean", "private_dirty",
                        "shared_clean", "shared_dirty", "private", "shared", "swap"}, ...],
         "totals": {"rss", ..., "swap"},
         "by_app": {app: {"rss", ..., "swap"}},
         "saved_by_sharing": totals["rss"] - totals["pss"]}
    """
    processes = list(processes)
    by_app: dict[str, list[MemoryInfo]] = {}
    for process in processes:
        if process.app is not None:
            by_app.setdefault(process.app, []).append(process.memory)
    totals = _total(p.memory for p in processes)
    return {
        "protocol": PROTOCOL,
        "processes": [
            {"pid": p.pid, "role": p.role, "app": p.app, **p.memory.as_dict()} for p in processes
        ],
        "totals": totals.as_dict(),
        "by_app": {app: _total(memories).as_dict() for app, memories in sorted(by_app.items())},
        "saved_by_sharing": totals.rss - totals.pss,
    }
