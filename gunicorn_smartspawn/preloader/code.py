"""What a preloader loaded: the files of its app's modules, and the heap its import left free.

Pure functions of the running process (``sys.modules``, ``/proc/self``), used
by :mod:`.process`: the code fingerprint a restarted preloader is compared
by, the file lists ``--reload`` watches, ``malloc_trim`` before forks, and the
``ksm`` opt-in.
"""

from __future__ import annotations

import hashlib
import os
import sys
import traceback
from typing import Any

from gunicorn_smartspawn import _linux


def release_free_heap() -> int:
    """``malloc_trim``: the C heap's free pages, left by the import's temporaries, go back to the
    kernel before the first fork instead of being inherited, resident, by every worker
    (docs/memory.md). The bytes released (0 without glibc)."""
    before = _linux.resident_bytes()
    if not _linux.malloc_trim():
        return 0
    return max(0, before - _linux.resident_bytes())


def merge_memory(log: Any, app: str, role: str) -> bool:
    """``ksm``: mark this process's memory, and so its children's, as mergeable by KSM. Why it
    cannot was said once by the master at start (master/setup.py); here only at debug level."""
    problem = _linux.enable_memory_merge()
    if problem is not None:
        log.debug("app=%s %s pid=%d ksm=off reason=%r", app, role, os.getpid(), problem)
    return problem is None


def code_fingerprint(inherited: set[str] | frozenset[str] = frozenset()) -> str:
    """A digest of the files of the modules the app's import brought in (path, size, mtime).

    Modules the preloader inherited from the master are left out (the master
    imports some of its own lazily, so they differ from one fork to the next).
    Two preloaders of one app with the same digest imported the same files; a
    different digest means the files on disk changed in between.
    """
    digest = hashlib.blake2b(digest_size=16)
    for name, module in sorted(sys.modules.items()):
        if name in inherited:
            continue
        path = getattr(module, "__file__", None)
        if not isinstance(path, str):
            continue
        try:
            stat = os.stat(path)
        except OSError:
            continue
        digest.update(f"{name}\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8", "replace"))
    return digest.hexdigest()


def module_files(inherited: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, int]]:
    """(source path, st_mtime_ns) of each module the app's import brought in, as gunicorn's
    reloader sees them (a ``.pyc`` stands for its ``.py``); the master watches these."""
    found: dict[str, int] = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name in inherited or not isinstance(path, str):
            continue
        path = os.path.abspath(path[:-1] if path.endswith((".pyc", ".pyo")) else path)
        try:
            found.setdefault(path, os.stat(path).st_mtime_ns)
        except OSError:
            continue
    return sorted(found.items())


def failure_files(exc: BaseException) -> list[tuple[str, int]]:
    """(path, st_mtime_ns) of the files a failed import's traceback names, with a SyntaxError's
    own file: a module whose import failed is not in ``sys.modules``."""
    paths: list[str] = []
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen and len(seen) < 10:
        seen.add(id(current))
        paths += [frame.filename for frame in traceback.extract_tb(current.__traceback__)]
        if isinstance(current, SyntaxError) and current.filename:
            paths.append(current.filename)
        current = current.__cause__ or current.__context__
    found: dict[str, int] = {}
    for path in paths:
        path = os.path.abspath(path)
        try:
            found.setdefault(path, os.stat(path).st_mtime_ns)
        except OSError:
            continue  # <frozen importlib._bootstrap>, <string>
    return sorted(found.items())
