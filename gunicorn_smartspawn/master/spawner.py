"""How the master creates and stops processes: preloaders, spawn requests, direct workers.

The arbiter decides (through the pools) and this object forks. Whatever a
child must not keep is closed right after the fork: the master's private
descriptors (wake-up pipe, control sockets, every preloader channel), other
workers' heartbeat files, and the listeners of every other app.
"""

from __future__ import annotations

import errno
import gc
import os
import signal
from typing import TYPE_CHECKING, Any, Final

from gunicorn_smartspawn import _compat, _linux
from gunicorn_smartspawn.config.apps import AppSpec
from gunicorn_smartspawn.errors import PRELOADER_CRASHED, WORKER_BOOT_ERROR
from gunicorn_smartspawn.master import spares
from gunicorn_smartspawn.master.children import Child
from gunicorn_smartspawn.master.isolation import leave_master
from gunicorn_smartspawn.master.pool import AppPool
from gunicorn_smartspawn.preloader.code import merge_memory
from gunicorn_smartspawn.preloader.process import Launch, Preloader
from gunicorn_smartspawn.wire import Channel, SpawnWorker
from gunicorn_smartspawn.worker.runtime import SpawnContext, leave, run_worker_process

if TYPE_CHECKING:
    from gunicorn_smartspawn.master.arbiter import SmartArbiter


#: A fork this soon after the last full collection (another app's preloader at boot, the direct
#: workers of one spawn burst) freezes without one, so that the children share the same pages.
FULL_COLLECT_EVERY: Final = 60.0


class HeapSharing:
    """Before a fork: collect the master's garbage, then freeze the rest (``gc.freeze()``).

    A full collection writes to the header of every object it examines, and each write copies a
    page the master shares with its children. Frozen, the master's objects are examined neither
    by its own later collections nor by the child's: the master's PSS with 8 smart workers went
    from 20.5 to 14.7 MiB (docs/memory.md). Unfreezing first lets garbage frozen at an earlier
    fork be collected; within FULL_COLLECT_EVERY of the last full collection only the young
    generations are collected, since a full one would unshare the previous child's pages.
    """

    def __init__(self) -> None:
        self.full_at: float | None = None

    def before_fork(self, now: float) -> None:
        if self.full_at is not None and now - self.full_at < FULL_COLLECT_EVERY:
            gc.collect(1)
        else:
            gc.unfreeze()
            gc.collect()
            self.full_at = now
        gc.freeze()


class Spawner:
    """Process creation and termination for one master."""

    def __init__(self, master: SmartArbiter) -> None:
        self.master = master
        self.log = master.log
        self.children = master.children
        self.apps = master.apps
        self.heap = HeapSharing()

    # -- what children must not keep ---------------------------------------------------

    def private_fds(self) -> list[int]:
        """The master's descriptors that no child keeps: its own, and every channel."""
        fds = self.master.private_fds()
        fds.extend(c.channel.fileno() for c in self.children.of_role("preloader") if c.channel is not None)
        return [fd for fd in fds if fd >= 0]

    def _leave_master(self, spec: AppSpec, extra_fds: list[int]) -> None:
        leave_master(self.master, spec, [*self.private_fds(), *extra_fds])

    # -- preloaders ------------------------------------------------------------------------

    def start_preloader(self, pool: AppPool, generation: int, now: float) -> Child | None:
        spec = self.apps.specs[pool.name]
        scoreboard = self.master.scoreboards.for_app(pool.name)  # mapped before the fork: the preloader inherits it
        try:
            channel, preloader_end = Channel.pair()
        except OSError as exc:
            pool.start_failed("start a preloader", f"socketpair: {exc.strerror or exc}", now, generation)
            return None
        self.heap.before_fork(now)
        try:
            pid = os.fork()
        except OSError as exc:
            channel.close()
            preloader_end.close()
            pool.start_failed("start a preloader", f"fork: {exc.strerror or exc}", now, generation)
            return None
        if pid == 0:
            try:
                self._leave_master(spec, [channel.fileno()])
                launch = Launch(
                    spec=spec,
                    generation=generation,
                    master_pid=self.master.pid,
                    worker_class=self.master.worker_class,
                    log=self.log,
                    server=self.master,
                    scoreboard=scoreboard,
                )
                Preloader(launch, preloader_end).run()
            finally:
                os._exit(PRELOADER_CRASHED)
        preloader_end.close()
        child = self.children.add(Child(pid, "preloader", pool.name, generation, now, channel=channel))
        pool.preloader_started(pid, generation, now)
        self.log.info("app=%s preloader gen=%d pid=%d started", pool.name, generation, pid)
        return child

    def stop_preloader(self, pid: int, reason: str, kill: bool = False) -> None:
        child = self.children.preloader(pid)
        if child is None:
            return
        self.log.info("app=%s preloader gen=%d pid=%d stopping: %s", child.app, child.generation, pid, reason)
        pool = self.apps.pools.get(child.app)
        state = pool.retiring_preloaders.get(pid) if pool else None
        if kill or (state is not None and not state.ready):
            # still importing, or hung: maybe stuck in C code where no Python
            # signal handler runs; nothing to lose, nothing to wait for
            self.close_channel(child)
            self.kill(pid, signal.SIGKILL)
        else:
            self.finish_stop(child)

    def finish_stop(self, child: Child) -> None:
        """Close a stopping preloader's channel once it has reported every spawn
        it was asked for; the EOF makes it exit between spawns."""
        pool = self.apps.pools.get(child.app)
        if pool is not None and any(p.preloader_pid == child.pid for p in pool.pending.values()):
            return
        self.close_channel(child)

    @staticmethod
    def close_channel(child: Child) -> None:
        if child.channel is not None:
            child.channel.close()
            child.channel = None

    # -- workers ------------------------------------------------------------------------------

    def new_worker(self, spec: AppSpec, forked: bool) -> Any:
        """A gunicorn worker object for ``spec``, with its context attached."""
        master = self.master
        master.worker_age += 1
        worker = master.worker_class(
            master.worker_age, master.pid, spec.listeners, spec.app, spec.cfg.timeout / 2.0, spec.cfg, self.log
        )
        worker.attach(
            SpawnContext(
                app_name=spec.name,
                forked=forked,
                # (none: a direct child closes the master's descriptors in leave_master, right after
                # the fork; closing them again later would close whatever reused their numbers,
                # such as a --reuse-port listener bound by the worker itself)
                private_fds=(),
                scoreboard=master.scoreboards.for_app(spec.name),
                slot=master.scoreboards.assign(spec.name),
            )
        )
        return worker

    def request_spawn(self, pool: AppPool, preloader: Child, now: float, spare: bool = False) -> None:
        assert preloader.channel is not None
        worker = self.new_worker(self.apps.specs[pool.name], forked=True)
        self.master.cfg.pre_fork(self.master, worker)
        try:
            slot = -1 if worker.scoreboard_index is None else worker.scoreboard_index
            preloader.channel.send(SpawnWorker(age=worker.age, slot=slot, spare=int(spare)), [worker.tmp.fileno()])
        except OSError as exc:
            self.discard(worker)
            self.log.error("app=%s preloader pid=%d unreachable (%s); stopping it", pool.name, preloader.pid, exc)
            self.close_channel(preloader)
            self.kill(preloader.pid, signal.SIGKILL)
            return
        self.children.expect(pool.name, worker.age, preloader.pid, worker, spare)
        pool.spawn_requested(worker.age, preloader.pid, now, spare)

    # -- spares -------------------------------------------------------------------------------

    def check_spares(self, pool: AppPool) -> None:
        """Spares that touched their heartbeat file once are parked: they may be released."""
        for child in self.children.of_role("spare", pool.name):
            state = pool.spares.get(child.pid)
            if state is not None and not state.parked and child.worker.has_heartbeat():
                spares.parked(pool, child.pid)
                self.log.info("app=%s spare pid=%d gen=%d parked", pool.name, child.pid, child.generation)

    def release_spare(self, pool: AppPool, pid: int) -> None:
        """Make parked spare ``pid`` a worker (in WORKERS, heartbeat fresh), then wake it."""
        child = self.children.get(pid)
        if child is None or child.role != "spare":
            return  # reaped meanwhile: the pool counts it as a worker that exited
        child.role = "worker"
        child.worker.tmp.notify()  # gunicorn's timeout counts from the release, not from the park
        self.log.info("app=%s spare pid=%d released: serving", pool.name, pid)
        self.kill(pid, signal.SIGCONT)

    def discard_spare(self, pool: AppPool, pid: int, reason: str, kill: bool) -> None:
        child = self.children.get(pid)
        if child is None or child.role != "spare":
            return
        self.log.info("app=%s spare pid=%d discarded: %s", pool.name, pid, reason)
        self.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)

    def spawn_direct(self, pool: AppPool, now: float) -> None:
        """Fork a worker from the master; it imports the app itself (gunicorn without --preload)."""
        spec = self.apps.specs[pool.name]
        worker = self.new_worker(spec, forked=False)
        self.master.cfg.pre_fork(self.master, worker)
        self.heap.before_fork(now)
        pid = os.fork()
        if pid != 0:
            worker.pid = pid
            self.children.add(Child(pid, "worker", pool.name, pool.generation, now, worker=worker))
            _compat.count(self.master, "workers_spawned")
            pool.worker_started(pid, worker.age, now)
            return
        code = WORKER_BOOT_ERROR
        try:
            self._leave_master(spec, [])
            if spec.cfg.ksm:
                merge_memory(self.log, spec.name, "worker")
            worker.pid = os.getpid()
            worker.sockets = _compat.per_worker_listeners(spec.cfg, list(worker.sockets), self.log)
            spec.enter()
            code = run_worker_process(self.master, worker)
        finally:
            leave(code)

    def discard(self, worker: Any) -> None:
        """Forget a worker object: its heartbeat file and its scoreboard slot."""
        try:
            worker.tmp.close()
        except OSError:
            pass
        self.master.scoreboards.release(getattr(worker, "app_name", None), getattr(worker, "scoreboard_index", None))

    # -- signals ------------------------------------------------------------------------------

    def kill(self, pid: int, sig: int) -> None:
        """Signal a registered child; a pid the registry does not hold is never signalled."""
        if pid not in self.children:
            self.log.warning("not sending signal %d to pid=%s: not a child of this master", sig, pid)
            return
        try:
            os.kill(pid, sig)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise

    def sweep_orphans(self, sig: int = signal.SIGTERM, reason: str = "a worker whose preloader died mid-spawn") -> None:
        """Signal children of the master that nobody registered."""
        known = self.children.pids() | {self.master.reexec_pid, _compat.dirty_pid(self.master)}
        for pid in _linux.child_pids(self.master.pid):
            if pid not in known:
                self.log.warning("Stopping unregistered child pid=%s (%s)", pid, reason)
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
