"""How the master creates and stops processes: preloaders, spawn requests, direct workers.

A mixin of :class:`gunicorn_smartspawn.arbiter.SmartArbiter`, kept apart so
that each file reads at once: the arbiter decides (through the pools), this
module forks. Whatever a child must not keep is closed right after the fork:
the master's wakeup pipes, every preloader channel, other workers' heartbeat
files, and the listeners of every other app.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gunicorn_smartspawn import pool as poolmod
from gunicorn_smartspawn import worker as worker_module
from gunicorn_smartspawn.apps import AppSpec
from gunicorn_smartspawn.errors import PRELOADER_CRASHED, WORKER_BOOT_ERROR
from gunicorn_smartspawn.preloader import Preloader
from gunicorn_smartspawn.protocol import Channel, SpawnWorker


@dataclass
class PreloaderHandle:
    """The master's side of one running preloader."""

    pid: int
    app_name: str
    generation: int
    channel: Channel | None
    stopping: bool = False


def child_pids(parent: int) -> list[int]:
    """Pids whose parent is ``parent``, read from /proc."""
    pids: list[int] = []
    if not os.path.isdir("/proc"):
        return pids  # not Linux: nothing to sweep (only direct spawning runs there)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields_after_name = stat[stat.rfind(b")") + 2 :].split()
        if len(fields_after_name) > 1 and int(fields_after_name[1]) == parent:
            pids.append(int(entry))
    return pids


class Spawning:
    """Process creation for the master; state lives on the arbiter."""

    # provided by SmartArbiter / gunicorn's Arbiter
    pid: int
    log: Any
    cfg: Any
    worker_class: Any
    worker_age: int
    WORKERS: dict[int, Any]
    specs: dict[str, AppSpec]
    pools: dict[str, poolmod.AppPool]
    preloaders: dict[int, PreloaderHandle]
    _pending_workers: dict[int, Any]
    _worker_app: dict[int, str]
    reexec_pid: int
    scoreboard: Any
    num_workers: int

    # (annotations only: a method here would shadow the arbiter's in the MRO)
    _master_private_fds: Callable[[], list[int]]
    _dirty_pid: Callable[[], int]
    manage_workers: Callable[[], None]

    # -- what children must not keep ---------------------------------------------------

    def _private_fds(self) -> list[int]:
        """The master's descriptors that no child keeps: wakeup pipes and every channel."""
        fds = self._master_private_fds()
        fds.extend(h.channel.fileno() for h in self.preloaders.values() if h.channel is not None)
        return [fd for fd in fds if fd >= 0]

    def _foreign_listener_fds(self, spec: AppSpec) -> list[int]:
        mine = {lnr.fileno() for lnr in spec.listeners}
        return [
            lnr.fileno()
            for other in self.specs.values()
            for lnr in other.listeners
            if other is not spec and lnr.fileno() not in mine
        ]

    def _leave_master(self, spec: AppSpec, extra_fds: list[int]) -> None:
        """In a fresh child of the master: drop what belongs to the master and other apps."""
        signal.set_wakeup_fd(-1)
        for fd in [*self._private_fds(), *self._foreign_listener_fds(spec), *extra_fds]:
            try:
                os.close(fd)
            except OSError:
                pass
        for worker in [*self.WORKERS.values(), *self._pending_workers.values()]:
            worker.tmp.close()

    # -- preloaders ------------------------------------------------------------------------

    def _start_preloader(self, pool: poolmod.AppPool, generation: int, now: float) -> PreloaderHandle | None:
        spec = self.specs[pool.name]
        channel, preloader_end = Channel.pair()
        try:
            pid = os.fork()
        except OSError as exc:
            channel.close()
            preloader_end.close()
            self.log.error("app=%s could not fork a preloader: %s", pool.name, exc)
            pool.preloader_started(-1, generation, now)
            pool.preloader_exited(-1, 1 << 8, now)
            return None
        if pid == 0:
            try:
                self._leave_master(spec, [channel.fileno()])
                Preloader(arbiter=self, spec=spec, generation=generation, sock=preloader_end, master_pid=self.pid).run()
            finally:
                os._exit(PRELOADER_CRASHED)
        preloader_end.close()
        handle = PreloaderHandle(pid=pid, app_name=pool.name, generation=generation, channel=channel)
        self.preloaders[pid] = handle
        pool.preloader_started(pid, generation, now)
        self.log.info("app=%s preloader gen=%d pid=%d started", pool.name, generation, pid)
        return handle

    def _stop_preloader(self, pid: int, reason: str) -> None:
        handle = self.preloaders.get(pid)
        if handle is None:
            return
        self.log.info("app=%s preloader gen=%d pid=%d stopping: %s", handle.app_name, handle.generation, pid, reason)
        handle.stopping = True
        pool = self.pools.get(handle.app_name)
        state = pool.retiring_preloaders.get(pid) if pool else None
        if state is not None and not state.ready:
            # still importing, maybe stuck in C code where no Python signal
            # handler runs: nothing to lose, nothing to wait for
            self._close_channel(handle)
            self._kill(pid, signal.SIGKILL)
        else:
            self._finish_stop(handle)

    def _finish_stop(self, handle: PreloaderHandle) -> None:
        """Close a stopping preloader's channel once it has reported every spawn
        it was asked for; the EOF makes it exit between spawns."""
        pool = self.pools.get(handle.app_name)
        if pool is not None and any(p.preloader_pid == handle.pid for p in pool.pending.values()):
            return
        self._close_channel(handle)

    def _close_channel(self, handle: PreloaderHandle) -> None:
        if handle.channel is not None:
            handle.channel.close()
            handle.channel = None

    # -- workers ------------------------------------------------------------------------------

    def _new_worker(self, spec: AppSpec, forked: bool) -> Any:
        self.worker_age += 1
        slot = self.scoreboard.assign()
        worker_module.spawn_context = worker_module.SpawnContext(
            app_name=spec.name,
            forked=forked,
            private_fds=() if forked else tuple(self._private_fds()),
            scoreboard=self.scoreboard,
            slot=slot,
        )
        worker = self.worker_class(
            self.worker_age, self.pid, spec.listeners, spec.app, spec.cfg.timeout / 2.0, spec.cfg, self.log
        )
        worker.created_at = time.time()
        return worker

    def _request_spawn(self, pool: poolmod.AppPool, handle: PreloaderHandle, now: float) -> None:
        assert handle.channel is not None
        worker = self._new_worker(self.specs[pool.name], forked=True)
        self.cfg.pre_fork(self, worker)
        try:
            slot = worker.scoreboard_index
            handle.channel.send(SpawnWorker(age=worker.age, slot=-1 if slot is None else slot), [worker.tmp.fileno()])
        except OSError as exc:
            self.scoreboard.release(worker.scoreboard_index)
            worker.tmp.close()
            self.log.error("app=%s preloader pid=%d unreachable (%s); stopping it", pool.name, handle.pid, exc)
            self._close_channel(handle)
            self._kill(handle.pid, signal.SIGKILL)
            return
        self._pending_workers[worker.age] = worker
        pool.spawn_requested(worker.age, handle.pid, now)

    def _spawn_direct(self, pool: poolmod.AppPool, now: float) -> None:
        """Fork a worker from the master; it imports the app itself (gunicorn without --preload)."""
        spec = self.specs[pool.name]
        worker = self._new_worker(spec, forked=False)
        self.cfg.pre_fork(self, worker)
        pid = os.fork()
        if pid != 0:
            worker.pid = pid
            self.WORKERS[pid] = worker
            self._worker_app[pid] = pool.name
            if hasattr(self, "_stats"):
                self._stats["workers_spawned"] += 1
            pool.worker_started(pid, worker.age, now)
            return
        code = WORKER_BOOT_ERROR
        try:
            self._leave_master(spec, [])
            worker.pid = os.getpid()
            if not worker.sockets and getattr(spec.cfg, "reuse_port", False):
                from gunicorn import sock as gsock

                worker.sockets = gsock.create_sockets(spec.cfg, self.log)  # gunicorn >= 27 --reuse-port
            spec.enter()
            code = worker_module.run_worker_process(self, worker)
        finally:
            worker_module.leave(code)

    def spawn_worker(self) -> Any:
        """gunicorn's entry point for one more worker: one more for the first app."""
        pool = next(iter(self.pools.values()))
        if getattr(self, "multi", False):
            pool.target += 1
        else:
            self.num_workers += 1  # the one-app pool follows gunicorn's count
        self.manage_workers()

    def kill_worker(self, pid: int, sig: int) -> None:
        worker = self.WORKERS.get(pid)
        super().kill_worker(pid, sig)  # type: ignore[misc]
        if worker is not None and pid not in self.WORKERS:  # it was already gone (ESRCH)
            self.scoreboard.release(getattr(worker, "scoreboard_index", None))
            app_name = self._worker_app.pop(pid, None)
            if app_name in self.pools:
                self.pools[app_name].worker_exited(pid, 0, time.monotonic())

    def _kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise

    def _sweep_orphans(self, sig: int = signal.SIGTERM) -> None:
        """Signal children nobody registered (a worker whose preloader died mid-spawn)."""
        known = set(self.WORKERS) | set(self.preloaders) | {self.reexec_pid, self._dirty_pid()}
        for pid in child_pids(self.pid):
            if pid not in known:
                self.log.warning("Stopping unregistered child pid=%s (its preloader died mid-spawn)", pid)
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
