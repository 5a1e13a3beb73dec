"""``--reload`` for smart apps: the master watches each app's code and starts a new generation.

gunicorn's own reloader runs in each worker and restarts it when a file
changes; a smart worker is forked from its preloader, which still holds the
old code, so that would only churn workers. Forked workers therefore run no
reloader (worker/classes.py), and the master watches instead, from its
select loop, with no thread (it forks):

* what: the files of the modules each ready preloader's import brought in
  (``WatchFiles``, bounded in wire/messages.py: a preloader's list can only
  ever reload that same app), each with the mtime the preloader saw; a
  failed import's list (what it read, what its traceback names) is added, so
  fixing a new module that broke the import reloads too; plus
  the app's ``reload_extra_files`` (globs re-expanded every second on
  gunicorn 27, as its reloader does);
* how (``reload_engine``): ``poll`` stats every file once a second;
  ``auto`` and ``inotify`` watch the files' directories with one inotify
  descriptor in the master's select (the kernel's, through ctypes: no
  ``inotify`` package needed) and stat a file when its directory reports
  it; symlinked files and directories past the watch bound are polled;
* when: a change waits ``SETTLE`` seconds of quiet (an editor's burst of
  writes, a checkout), at most ``LONGEST`` in all, and two reloads of one
  app are at least ``SPACING`` apart. Then that app alone reloads, as a
  HUP reloads it: a new preloader imports the code, its workers roll in
  once they serve, and a broken import leaves the old generation serving.

Direct apps are not watched here: each direct worker imports the app and
runs gunicorn's reloader itself, as stock gunicorn does.
"""

from __future__ import annotations

import glob
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Final

from gunicorn_smartspawn import _compat, _linux
from gunicorn_smartspawn.wire import MAX_WATCH_FILES, cut_text

SETTLE: Final = 0.3  # seconds of quiet after the last change before the reload
LONGEST: Final = 3.0  # a stream of changes still reloads this long after the first
SPACING: Final = 1.0  # seconds at least between two reloads of one app
POLL: Final = 1.0  # seconds between two polls (and glob expansions)
MAX_INOTIFY_DIRS: Final = 2048  # directories the master watches; past it, files are polled
MAX_REPORTED: Final = 10  # changed paths one reload remembers for its log line


@dataclass
class Debounce:
    """A burst of changes to one app becomes one reload. Pure: times come from the caller."""

    settle: float = SETTLE
    longest: float = LONGEST
    spacing: float = SPACING
    first: float | None = None  # the first change not reloaded yet
    last: float = 0.0
    fired: float = -math.inf
    paths: list[str] = field(default_factory=list)
    more: int = 0  # changes past MAX_REPORTED paths

    def change(self, now: float, path: str) -> None:
        if self.first is None:
            self.first = now
        self.last = now
        if path in self.paths:
            return
        if len(self.paths) < MAX_REPORTED:
            self.paths.append(path)
        else:
            self.more += 1

    def due_at(self) -> float | None:
        """When the pending changes reload the app; None when nothing is pending."""
        if self.first is None:
            return None
        return max(min(self.last + self.settle, self.first + self.longest), self.fired + self.spacing)

    def take(self, now: float) -> tuple[list[str], int] | None:
        """(paths, how many more) when a reload is due now, which counts as done; else None."""
        due = self.due_at()
        if due is None or now < due:
            return None
        taken = (self.paths, self.more)
        self.first, self.paths, self.more, self.fired = None, [], 0, now
        return taken


@dataclass
class Watched:
    """One smart app's watched files: path -> the mtime (ns) last seen, None while missing."""

    root: str  # relative reload_extra_files entries are below it
    engine: str  # "poll" or "inotify"
    extra: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    files: dict[str, int | None] = field(default_factory=dict)
    polled: set[str] = field(default_factory=set)  # polled although the engine is inotify
    reporter: int = 0  # the preloader whose list ``files`` holds
    debounce: Debounce = field(default_factory=Debounce)


class CodeWatch:
    """The master's reloader: one service of its loop (fds, ready, tick)."""

    def __init__(self, apps: Any, log: Any) -> None:
        self.apps = apps  # the AppTable: its pools take the reloads
        self.log = log
        self.watched: dict[str, Watched] = {}
        self.inotify: _linux.Inotify | None = None
        self._inotify_broken = False
        self._dirs: dict[str, int] = {}  # watched directory -> wd
        self._by_wd: dict[int, str] = {}
        self._poll_at = 0.0

    # -- configuration -----------------------------------------------------------------------

    def configure(self, cwd: str) -> None:
        """After every (re)load of the configuration: watch each smart app with ``reload`` on."""
        wanted = {
            name: spec for name, spec in self.apps.specs.items()
            if spec.cfg.reload and not spec.removed and self.apps.pools[name].spawn_method == "smart"
        }
        for name in set(self.watched) - set(wanted):
            del self.watched[name]
        for name, spec in wanted.items():
            root = spec.config.chdir if spec.config is not None and spec.config.chdir else cwd
            engine = "poll" if spec.cfg.reload_engine == "poll" else "inotify"
            old = self.watched.get(name)
            new = Watched(root=root, engine=engine)
            if old is not None:
                new.files, new.reporter, new.debounce = old.files, old.reporter, old.debounce
            for entry in spec.cfg.reload_extra_files or ():
                (new.patterns if _compat.is_reload_pattern(entry) else new.extra).append(os.path.join(root, entry))
            for path in new.extra:
                new.files.setdefault(path, _mtime(path))
            self.watched[name] = new
            if old is None:
                self.log.info(
                    "app=%s reload: the master watches its code by %s (reload_engine=%s); for development only",
                    name, engine, spec.cfg.reload_engine,
                )
            self._watch_dirs(new, list(new.files))
            self._expand(new)
        wants_inotify = any(w.engine == "inotify" for w in self.watched.values())
        if wants_inotify and self.inotify is None and not self._inotify_broken:
            self._open_inotify()

    def files_reported(self, name: str, pid: int, entries: list[tuple[str, int]], now: float, current: bool = True) -> None:
        """Preloader ``pid`` of app ``name`` read these files (path, mtime_ns): watch them. The serving
        preloader's list replaces the last one's, another's (a failed import) is added; a file that
        changed since the preloader saw it reloads. Nothing here can touch another app."""
        watched = self.watched.get(name)
        if watched is None:
            return
        if current and watched.reporter != pid:
            watched.reporter = pid
            watched.files = {p: m for p, m in watched.files.items() if p in watched.extra}
            watched.polled = set()
        room = MAX_WATCH_FILES - len(watched.files)
        if room < len(entries):
            self.log.warning("app=%s reload watches the first %d files only", name, MAX_WATCH_FILES)
        added = [(path, mtime) for path, mtime in entries[: max(0, room)] if path not in watched.files]
        for path, mtime in added:
            watched.files[path] = mtime
            self._check(name, watched, path, now)
        self._watch_dirs(watched, [path for path, _ in added])

    # -- the loop's service ------------------------------------------------------------------

    def fds(self) -> list[int]:
        return [self.inotify.fd] if self.inotify is not None else []

    def ready(self, fd: int) -> None:
        if self.inotify is None:
            return
        now = time.monotonic()
        for wd, mask, entry in self.inotify.read():
            if mask & _linux.IN_Q_OVERFLOW:
                self._poll_at = 0.0  # events were lost: look at every file on this tick
                continue
            directory = self._by_wd.get(wd)
            if directory is None or not entry:
                continue
            path = os.path.join(directory, entry)
            for name, watched in self.watched.items():
                if path in watched.files:
                    self._check(name, watched, path, now)

    def tick(self, now: float) -> None:
        if self.watched and now >= self._poll_at:
            self._poll_at = now + POLL
            for name, watched in self.watched.items():
                self._expand(watched)
                polled = watched.files if watched.engine == "poll" or self.inotify is None else watched.polled
                for path in list(polled):
                    self._check(name, watched, path, now)
        for name, watched in self.watched.items():
            taken = watched.debounce.take(now)
            if taken is not None:
                self._reload(name, *taken, now=now)

    def timeout(self, now: float) -> float:
        """Seconds until this service must tick again (the loop waits no longer)."""
        if not self.watched:
            return math.inf
        due = [w.debounce.due_at() for w in self.watched.values()]
        return max(0.0, min([self._poll_at, *(d for d in due if d is not None)]) - now)

    def close(self) -> None:
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None

    # -- the work ------------------------------------------------------------------------------

    def _check(self, name: str, watched: Watched, path: str, now: float) -> None:
        """Stat ``path``: a new mtime is a change (a file that appears is only noted, as in gunicorn)."""
        seen, mtime = watched.files.get(path), _mtime(path)
        if mtime is None:
            return  # gone for now (an editor's rename): its next mtime decides
        watched.files[path] = mtime
        if seen is not None and mtime != seen:
            watched.debounce.change(now, path)

    def _reload(self, name: str, paths: list[str], more: int, now: float) -> None:
        pool, spec = self.apps.pools.get(name), self.apps.specs.get(name)
        if pool is None or spec is None or spec.removed:
            return
        what = ", ".join(cut_text(p, 200) for p in paths) + (f" and {more} more" if more else "")
        pool.request_reload(now)
        self.log.info("app=%s reloading: %s modified, generation %d", name, what, pool.generation + 1)

    def _expand(self, watched: Watched) -> None:
        """Files newly matched by a ``reload_extra_files`` glob: noted now, watched from here on."""
        if not watched.patterns:
            return
        found = [p for pattern in watched.patterns for p in glob.glob(pattern, recursive=True)]
        new = [p for p in found if p not in watched.files][: max(0, MAX_WATCH_FILES - len(watched.files))]
        for path in new:
            watched.files[path] = _mtime(path)
        self._watch_dirs(watched, new)

    def _open_inotify(self) -> None:
        try:
            self.inotify = _linux.Inotify()
        except OSError as exc:
            self._inotify_broken = True
            self.log.warning("reload: inotify is not available (%s); polling every %gs instead", exc, POLL)
            return
        for watched in self.watched.values():
            self._watch_dirs(watched, list(watched.files))

    def _watch_dirs(self, watched: Watched, paths: list[str]) -> None:
        """Watch the directories of ``paths``; poll what inotify cannot see (symlinks, past the bound)."""
        if watched.engine != "inotify" or self.inotify is None:
            return
        for path in paths:
            directory = os.path.dirname(path)
            if os.path.islink(path) or not self._watch_dir(directory):
                watched.polled.add(path)

    def _watch_dir(self, directory: str) -> bool:
        if directory in self._dirs:
            return True
        if self.inotify is None or len(self._dirs) >= MAX_INOTIFY_DIRS:
            return False
        try:
            wd = self.inotify.add_dir(directory)
        except OSError:
            return False  # gone, not a directory, or the user's inotify watches are used up
        self._dirs[directory] = wd
        self._by_wd[wd] = directory
        return True


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
