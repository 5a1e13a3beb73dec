"""What the master hears from its children: exits (``waitpid``) and preloader messages.

Every exit is matched against the registry first: a worker, a preloader,
gunicorn's own children (a re-exec'd master, the dirty arbiter), or a pid
nobody claimed yet, which may be a worker whose ``WorkerSpawned`` is still
in its preloader's channel. Messages are believed only for the app and the
preloader they came from: a report of a worker nobody asked that preloader
for is logged and ignored, never acted on.
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING

from gunicorn_smartspawn import _compat, _linux
from gunicorn_smartspawn.errors import ProtocolError, describe_status, exit_code
from gunicorn_smartspawn.master.children import Child, Role
from gunicorn_smartspawn.master.pool import AppPool
from gunicorn_smartspawn.wire import (
    PreloaderFailed,
    PreloaderReady,
    SpawnFailed,
    WatchFiles,
    WorkerSpawned,
    cut_text,
    watch_entries,
)

if TYPE_CHECKING:
    from gunicorn_smartspawn.master.arbiter import SmartArbiter

#: Longest error text from a preloader that reaches the master's log.
MAX_LOGGED_ERROR = 2000


class Reaper:
    """Reaps children and reads preloader channels for one master."""

    def __init__(self, master: SmartArbiter) -> None:
        self.master = master
        self.log = master.log
        self.children = master.children
        self.apps = master.apps
        self.spawner = master.spawner
        #: when to look for workers nobody reported (their preloader died mid-spawn)
        self.sweep_at: float | None = None
        #: the last load traceback of each app (bounded by the wire)
        self.tracebacks: dict[str, str] = {}

    # -- exits ------------------------------------------------------------------------------

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if not pid:
                return
            child = self.children.get(pid)
            if pid == self.master.reexec_pid:
                self.master.reexec_pid = 0
            elif pid == _compat.dirty_pid(self.master):
                self.master.handle_dirty_arbiter_exit(pid, status)
            elif child is not None and child.role == "preloader":
                self.preloader_exited(child, status)
            elif child is not None:
                self.worker_exited(child, status)
            else:
                for pool in self.apps.pools.values():
                    pool.early_exit(pid, status)
                self.log.debug("Reaped child pid=%s (%s), not a worker yet", pid, describe_status(status))

    def worker_exited(self, child: Child, status: int) -> None:
        self.children.remove(child.pid)
        self.log_worker_exit(child.app, child.pid, status)
        pool = self.apps.pools.get(child.app)
        if pool is not None:
            if child.worker.has_heartbeat():  # it served, maybe between two loop turns: not a boot failure
                pool.worker_ready(child.pid)
            pool.worker_exited(child.pid, status, time.monotonic())
        self.spawner.discard(child.worker)
        self.master.cfg.child_exit(self.master, child.worker)

    def log_worker_exit(self, app: str, pid: int, status: int) -> None:
        code = exit_code(status)
        if code is None:
            sig = os.WTERMSIG(status)
            what = describe_status(status)
            if sig == signal.SIGKILL:
                self.log.error("app=%s worker pid=%s was sent %s! Perhaps out of memory?", app, pid, what[7:])
            elif sig in (signal.SIGTERM, signal.SIGQUIT):
                self.log.info("app=%s worker pid=%s ended by %s", app, pid, what)
            else:
                self.log.warning("app=%s worker pid=%s was sent %s!", app, pid, what[7:])
        elif code != 0:
            self.log.error("app=%s worker pid=%s exited with code %s", app, pid, code)

    def preloader_exited(self, child: Child, status: int) -> None:
        self.children.remove(child.pid)  # reaped: its pid may be reused, never signal it again
        self.read(child)  # what it said before it went (PreloaderFailed, WorkerSpawned)
        self.spawner.close_channel(child)
        pool = self.apps.pools.get(child.app)
        stopping = pool is not None and pool.is_stopping(child.pid)
        lost = pool.preloader_exited(child.pid, status, time.monotonic()) if pool else None
        expected = exit_code(status) == 0 or stopping
        log = self.log.info if expected else self.log.error
        log("app=%s preloader gen=%d pid=%d exited (%s)", child.app, child.generation, child.pid, describe_status(status))
        for worker in self.children.drop_pending(child.app, lost or []):
            self.spawner.discard(worker)
        if lost:
            # a worker forked just before the preloader died may be a child of ours
            # that nobody reported: look for it once it had time to be re-parented
            self.sweep_at = time.monotonic() + 1.0

    def sweep_if_due(self, now: float) -> None:
        if self.sweep_at is not None and now >= self.sweep_at:
            self.sweep_at = None
            self.spawner.sweep_orphans()

    # -- messages -----------------------------------------------------------------------------

    def read(self, child: Child) -> None:
        """Act on what preloader ``child`` sent; a bad frame stops it."""
        if child.channel is None:
            return
        try:
            messages = child.channel.receive()
        except EOFError:
            self.spawner.close_channel(child)
            return
        except ProtocolError as exc:
            self.log.error(
                "app=%s preloader pid=%d sent a bad frame (%s); stopping it", child.app, child.pid, cut_text(str(exc), 200)
            )
            self._stop_hostile(child, "broke the channel protocol")
            return
        now = time.monotonic()
        pool = self.apps.pools[child.app]
        for message, fds in messages:
            for fd in fds:
                os.close(fd)
            if isinstance(message, PreloaderReady):
                self._ready(pool, child, message, now)
            elif isinstance(message, PreloaderFailed):
                # (the preloader logged the error with its traceback; the pool's failure line follows)
                error = cut_text(message.error, MAX_LOGGED_ERROR)
                self.tracebacks[child.app] = message.traceback  # for the 503 page, with friendly_errors
                for worker in self.children.drop_pending(child.app, pool.preloader_failed(child.pid, error, now)):
                    self.spawner.discard(worker)
            elif isinstance(message, WorkerSpawned):
                self._worker_spawned(pool, child, message, now)
            elif isinstance(message, SpawnFailed):
                for worker in self.children.drop_pending(child.app, [message.age]):
                    self.spawner.discard(worker)
                error = cut_text(message.error, MAX_LOGGED_ERROR)
                self.log.error("app=%s spawn of worker age=%d failed: %s", child.app, message.age, error)
                pool.spawn_failed(message.age, error, now)
            elif isinstance(message, WatchFiles):
                # --reload: the serving preloader's list replaces the last one; another's (a failed import) adds
                current = pool.preloader is not None and pool.preloader.pid == child.pid
                self.master.codewatch.files_reported(child.app, child.pid, watch_entries(message.files), now, current)
        if pool.is_stopping(child.pid) and child.channel is not None:
            self.spawner.finish_stop(child)

    def _ready(self, pool: AppPool, child: Child, message: PreloaderReady, now: float) -> None:
        if pool.preloader_ready(child.pid, message.load_seconds, now, message.code):
            child.generation = pool.generation
            self.log.warning(
                "app=%s preloader pid=%d was restarted and found other code on disk than its workers run: "
                "rolling them onto it as generation %d, once its workers serve", child.app, child.pid, pool.generation,
            )
        self.master.metrics.histogram(f"smartspawn.{child.app}.preloader_load_ms", round(message.load_seconds * 1000, 3))
        self.log.info(
            "app=%s preloader gen=%d pid=%d ready, loaded in %.2fs",
            child.app, child.generation, child.pid, message.load_seconds,
        )

    def _stop_hostile(self, child: Child, reason: str) -> None:
        """Stop a preloader that broke the protocol: a failure of its app, and never believed again."""
        pool = self.apps.pools.get(child.app)
        if pool is not None:
            pool.preloader_misbehaved(child.pid, reason, time.monotonic())
        self.spawner.close_channel(child)
        self.spawner.kill(child.pid, signal.SIGKILL)  # refused if it was already reaped

    def _unverifiable(self, pool: AppPool, pid: int) -> str | None:
        """Why ``pid`` cannot be the worker just forked for ``pool``; None when it can."""
        if pid in self.children or pid in (self.master.pid, self.master.reexec_pid, _compat.dirty_pid(self.master)):
            return "which is already another process of this master"
        if pid in pool.early_exits:
            return None  # a child of ours, reaped before its report arrived
        stat = _linux.proc_stat(pid)
        if stat is None or stat.ppid != self.master.pid:
            return "which is not a child of the master"
        spec = self.apps.specs.get(pool.name)
        uid = getattr(spec.cfg, "uid", None) if spec is not None else None
        if isinstance(uid, int) and uid != os.geteuid():
            try:
                owner = os.stat(f"/proc/{pid}").st_uid
            except OSError:
                return "which is gone"
            if owner != uid:  # another app's process (apps run as their own users)
                return f"which runs as uid {owner}, not as the app's uid {uid}"
        return None

    def _worker_spawned(self, pool: AppPool, preloader: Child, message: WorkerSpawned, now: float) -> None:
        pending = self.children.claim(pool.name, message.age, preloader.pid)
        if pending is None:
            self.log.warning(
                "app=%s preloader pid=%d reported worker age=%d pid=%d that it was not asked for; ignoring it",
                pool.name, preloader.pid, message.age, message.pid,
            )
            return
        worker = pending.worker
        problem = self._unverifiable(pool, message.pid)
        if problem is not None:
            self.log.error(
                "app=%s preloader pid=%d reported worker age=%d as pid=%d, %s: protocol violation; stopping the preloader",
                pool.name, preloader.pid, message.age, message.pid, problem,
            )
            self.spawner.discard(worker)
            pool.pending.pop(message.age, None)
            self._stop_hostile(preloader, f"reported pid={message.pid}, {problem}")
            return
        worker.pid = message.pid
        role: Role = "spare" if pending.spare else "worker"
        self.children.add(Child(message.pid, role, pool.name, preloader.generation, now, worker=worker))
        _compat.count(self.master, "workers_spawned")
        self.log.info(
            "app=%s %s pid=%d age=%d gen=%d forked in %.1fms by preloader pid=%d",
            pool.name, role, message.pid, message.age, preloader.generation, message.fork_ms, preloader.pid,
        )
        self.master.metrics.histogram(f"smartspawn.{pool.name}.spawn_ms", message.fork_ms)
        status = pool.worker_spawned(message.age, message.pid, now)
        if status is not None:  # it exited before its WorkerSpawned arrived
            self.children.remove(message.pid)
            self.log_worker_exit(pool.name, message.pid, status)
            self.spawner.discard(worker)
            self.master.cfg.child_exit(self.master, worker)
