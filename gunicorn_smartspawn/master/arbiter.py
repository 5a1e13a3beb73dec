"""The master: gunicorn's Arbiter, with per-app pools, preloaders and direct workers.

Who forks and who reaps whom::

    master (child subreaper) --fork--> preloader [app]      reaped by the master
                             --fork--> direct worker [app]  reaped by the master
    preloader --clone(CLONE_PARENT) or double fork--> worker [app]
              (born a child of the master, or re-parented to it; reaped there)

The master never imports application code. This class holds only gunicorn's
overrides, each delegating to one composed object::

    children  Children   every worker and preloader, one record per pid
    apps      AppTable   per-app spec and pool (pure state, pool.py)
    spawner   Spawner    forks preloaders and direct workers, asks preloaders for workers
    reaper    Reaper     waitpid, and what preloaders say on their channels
    loop      Loop       the select over signals, channels and services
    metrics   Metrics    statsd gauges
    codewatch CodeWatch  --reload for smart apps: changed code starts a new generation
    services  [Service]  the control socket (attached by the hook, from control/)
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

from gunicorn import util
from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer
from gunicorn.pidfile import Pidfile

from gunicorn_smartspawn import _compat, _linux, events
from gunicorn_smartspawn.master import actions as act
from gunicorn_smartspawn.master import listeners as listenersmod
from gunicorn_smartspawn.master import pool as poolmod
from gunicorn_smartspawn.master import shutdown, unavailable
from gunicorn_smartspawn.master.apps import AppTable
from gunicorn_smartspawn.master.children import Children
from gunicorn_smartspawn.master.codewatch import CodeWatch
from gunicorn_smartspawn.master.dynamic import DynamicPools
from gunicorn_smartspawn.master.loop import Loop, Service
from gunicorn_smartspawn.master.metrics import Metrics
from gunicorn_smartspawn.master.readiness import Readiness, quiet_notify
from gunicorn_smartspawn.master.reaper import Reaper
from gunicorn_smartspawn.master.refork import Reforker
from gunicorn_smartspawn.master.setup import setup_notes
from gunicorn_smartspawn.master.spawner import Spawner
from gunicorn_smartspawn.scoreboard import Scoreboards

#: The module name gunicorn gives a configuration file it executes.
CONFIG_MODULE = "__config__"

ServiceFactory = Callable[["SmartArbiter"], Service]


class SmartArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's arbiter with per-app pools, smart (preloader) or direct spawning."""

    LISTENERS: list[Any]
    reexec_pid: int
    num_workers: int  # (an annotation only: gunicorn's property stays in charge)
    pidfile: Any
    _last_logged_active_worker_count: int | None

    def __init__(self, app: Any, services: Sequence[ServiceFactory] = ()) -> None:
        self.children = Children()
        self.loop = Loop(self)
        self.scoreboards = Scoreboards()  # one mapping per app; a child keeps only its own app's
        self.started_at = time.time()
        self._service_factories = list(services)
        self.services: list[Service] = []
        #: start() is done: a hook (when_ready) that asks for a worker before then only raises the count
        self.started = False
        self._reported_failure: dict[str, tuple[int, str | None]] = {}
        self._added: set[str] = set()  # apps new in the last (re)load
        self.apps: AppTable
        super().__init__(app)  # gunicorn calls setup(), which builds the rest

    @property
    def WORKERS(self) -> Any:  # noqa: N802  (gunicorn's name)
        """gunicorn's pid -> worker table, a view of the registry."""
        return self.children.workers

    @property
    def multi(self) -> bool:
        return self.apps.multi

    # -- configuration -------------------------------------------------------------------

    def setup(self, app: Any) -> None:
        first = getattr(self, "log", None) is None
        notes = setup_notes(app, reloading=not first)
        super().setup(app)
        if first:
            self.apps = AppTable(self.log)
            self.metrics = Metrics(self.log)
            self.spawner = Spawner(self)
            self.reaper = Reaper(self)
            self.dynamic = DynamicPools(self)
            self.readiness = Readiness(self)
            self.reforker = Reforker(self)
            self.codewatch = CodeWatch(self.apps, self.log)
        self.apps.multi = bool(app.cfg.apps)
        for note in notes:
            self.log.warning(note)
        self._added = self.apps.configure(self.cfg, self.app, self.num_workers)
        self.codewatch.configure(util.getcwd())  # --reload: the master watches smart apps' code
        try:
            self.dynamic.configure(self.num_workers)
        except ValueError as exc:
            if first:
                raise RuntimeError(str(exc)) from None
            self.log.error("%s; the pool keeps its previous bounds", exc)

    # -- start, signals, the wait ------------------------------------------------------------

    def start(self) -> None:
        if not _linux.become_subreaper() and any(p.spawn_method == "smart" for p in self.apps.pools.values()):
            raise RuntimeError("spawn_method='smart': prctl(PR_SET_CHILD_SUBREAPER) failed; use --spawn-method=direct")
        if self.multi:
            # bind every app's addresses before anything is imported; gunicorn's
            # start() then finds LISTENERS set and binds nothing of its own
            fds, self.systemd = listenersmod.inherited_fds()
            listenersmod.bind_apps(self.apps.specs.values(), self.cfg, self.log, fds)
            self.LISTENERS = self.apps.all_listeners()
            for spec in self.apps.specs.values():
                self.log.info("app=%s listening at %s", spec.name, ",".join(str(lnr) for lnr in spec.listeners))
        with quiet_notify():  # gunicorn says READY=1 here; the master says it once the apps serve
            super().start()
        if not self.multi:
            for spec in self.apps.specs.values():
                spec.listeners = list(self.LISTENERS)
        self.services = [self.codewatch, *(f(self) for f in self._service_factories), self.reforker]
        self.started = True

    def init_signals(self) -> None:
        super().init_signals()
        self.loop.init_signals()

    def private_fds(self) -> list[int]:
        """Descriptors of the master itself that no child may keep (channels are added by the spawner)."""
        return [*self.loop.private_fds(), *(fd for s in self.services for fd in s.fds())]

    def wakeup(self) -> None:
        super().wakeup()
        self.loop.wake()

    def sleep(self) -> None:  # gunicorn 23's wait
        self._wait(1.0)

    def wait_for_signals(self, timeout: float = 1.0) -> list[int]:  # gunicorn >= 25's wait
        signals = _compat.drain_signal_queue(self)
        self._wait(0.0 if signals else timeout)
        return signals + _compat.drain_signal_queue(self)

    def _wait(self, timeout: float) -> None:
        channels = {c.channel.fileno(): c for c in self.children.of_role("preloader") if c.channel is not None}
        # a dynamic app that may grow: look at its queue often; a changed file's reload is due
        timeout = min(timeout, self.dynamic.poll, self.codewatch.timeout(time.monotonic()))
        watch = self.dynamic.watch_fds()  # apps at zero workers: a connection wakes the master
        watch += [lnr.fileno() for spec in unavailable.apps(self) for lnr in spec.listeners]
        self.loop.wait(timeout, channels, self.services, self.reaper.reap, self.reaper.read, watch)

    def run_from_thread(self, work: Callable[[], Any], timeout: float = 5.0) -> tuple[bool, Any]:
        """For other threads (gunicornc): run ``work`` in the main loop and wait for it."""
        return self.loop.run_from_thread(work, timeout)

    def _start_control_server(self) -> None:  # gunicorn >= 25.1: gunicornc learns our commands
        super()._start_control_server()
        server = _compat.gunicornc_server(self)
        if server is not None:
            for service in self.services:
                extend = getattr(service, "extend_gunicornc", None)
                if extend is not None:
                    extend(server)

    # -- reaping ------------------------------------------------------------------------------

    def handle_chld(self, *args: Any) -> None:
        self.reaper.reap()

    handle_cld = handle_chld

    def reap_workers(self) -> None:
        self.reaper.reap()

    # -- carrying out the pools' actions ---------------------------------------------------

    def manage_workers(self) -> None:
        now = time.monotonic()
        self.reaper.sweep_if_due(now)
        if self.apps.check_restart_files(now):
            listenersmod.revive(self, now)
        self.dynamic.step(now)
        unavailable.answer(self, now)
        for name, pool in list(self.apps.pools.items()):
            self._manage_pool(name, pool, now)
        if self.apps.retired_listeners and not self.apps.old_generation_alive():
            listenersmod.close(self.apps.retired_listeners, unlink=False)
            self.apps.retired_listeners = []
        self.readiness.tick()
        self.metrics.pools(self.apps.pools)
        count = len(self.WORKERS)
        if self._last_logged_active_worker_count != count:
            self._last_logged_active_worker_count = count
            self.log.debug(
                f"{count} workers",
                extra={"metric": "gunicorn.workers", "value": count, "mtype": "gauge"},
            )

    def _manage_pool(self, name: str, pool: poolmod.AppPool, now: float) -> None:
        if not self.multi and not self.dynamic.is_dynamic(name):
            pool.target = self.num_workers
        for child in self.children.of_role("worker", name):
            state = pool.workers.get(child.pid)
            if state is not None and not state.ready and child.worker.has_heartbeat():
                pool.worker_ready(child.pid)
        self.spawner.check_spares(pool)
        actions = pool.tick(now)
        if pool.failures and (pool.failures, pool.last_error) != self._reported_failure.get(name):
            self._reported_failure[name] = (pool.failures, pool.last_error)
            self.log.error("app=%s %s (failure %d in a row; %s)", name, pool.last_error, pool.failures, _next(pool, now))
        for action in actions:
            self._perform(pool, action, now)
        if self.apps.specs[name].removed:
            self._drop_removed_app(name)

    def _perform(self, pool: poolmod.AppPool, action: act.Action, now: float) -> None:
        try:
            self._carry_out(pool, action, now)
        except OSError as exc:  # EMFILE, ENOMEM, EAGAIN, ENOSPC: a failed spawn that backs off
            what = type(action).__name__
            pool.start_failed(f"carry out {what}", exc.strerror or str(exc), now)
            self.log.error("app=%s %s failed: %s; backing off", pool.name, what, exc.strerror or exc)

    def _carry_out(self, pool: poolmod.AppPool, action: act.Action, now: float) -> None:
        if isinstance(action, act.SpawnFromPreloader):
            for _ in range(action.count):
                preloader = self.children.preloader(action.preloader_pid)
                if preloader is None or preloader.channel is None:
                    break
                self.spawner.request_spawn(pool, preloader, now, action.spare)
        elif isinstance(action, act.SpawnDirect):
            for _ in range(action.count):
                self.spawner.spawn_direct(pool, now)
        elif isinstance(action, act.StartPreloader):
            started = self.spawner.start_preloader(pool, action.generation, now)
            if action.generation == pool.generation and started is not None:
                # requests queue in the channel while the app loads: workers follow at once
                for follow in pool.tick(now):
                    self._perform(pool, follow, now)
        elif isinstance(action, act.StopPreloader):
            self.spawner.stop_preloader(action.pid, action.reason, kill=action.kill)
        elif isinstance(action, act.KillWorker):
            self.log.error("app=%s killing worker pid=%d: %s", pool.name, action.pid, action.reason)
            self.kill_worker(action.pid, signal.SIGKILL)
        elif isinstance(action, act.RetireWorker):
            self.log.info("app=%s retiring worker pid=%d: %s", pool.name, action.pid, action.reason)
            self.kill_worker(action.pid, signal.SIGTERM)
        elif isinstance(action, act.ReleaseSpare):
            self.spawner.release_spare(pool, action.pid)
        elif isinstance(action, act.DiscardSpare):
            self.spawner.discard_spare(pool, action.pid, action.reason, action.kill)
        elif isinstance(action, act.Halt):
            raise HaltServer(action.reason, action.exit_status)

    def _drop_removed_app(self, name: str) -> None:
        pool = self.apps.pools[name]
        for stop in pool.stop_all_preloaders("app removed"):
            self.spawner.stop_preloader(stop.pid, stop.reason)
        if pool.workers or pool.pending or pool.spares or pool.preloader_pids():
            return
        spec = self.apps.forget(name)
        self.scoreboards.drop(name)
        listenersmod.close(spec.listeners, unlink=True)
        self.LISTENERS = self.apps.all_listeners()
        self.log.info("app=%s stopped and removed", name)

    def spawn_worker(self) -> Any:
        """gunicorn's entry point for one more worker: one more for the first app."""
        pool = next(iter(self.apps.pools.values()))
        if self.multi:
            pool.target += 1
        else:
            self.num_workers += 1  # the one-app pool follows gunicorn's count
        if self.started:  # from when_ready the listeners are not handed to the app yet
            self.manage_workers()

    def kill_worker(self, pid: int, sig: int) -> None:
        child = self.children.get(pid)
        if child is None or child.role != "worker":
            return  # never signal a pid that is not our worker
        super().kill_worker(pid, sig)
        if pid not in self.children:  # it was already gone (ESRCH): gunicorn dropped it
            self.spawner.discard(child.worker)
            pool = self.apps.pools.get(child.app)
            if pool is not None:
                pool.worker_exited(pid, 0, time.monotonic())

    def murder_workers(self) -> None:
        """gunicorn's heartbeat check, with each app's own timeout."""
        for pid, worker in list(self.WORKERS.items()):
            timeout = worker.cfg.timeout
            if not timeout:
                continue
            try:
                if time.monotonic() - worker.tmp.last_update() <= timeout:
                    continue
            except (OSError, ValueError):
                continue
            if not worker.aborted:
                self.log.critical("WORKER TIMEOUT (pid:%s)", pid)
                worker.aborted = True
                self.kill_worker(pid, signal.SIGABRT)
            else:
                self.kill_worker(pid, signal.SIGKILL)

    # -- signals ------------------------------------------------------------------------------

    def handle_usr1(self) -> None:
        super().handle_usr1()
        for child in [*self.children.of_role("preloader"), *self.children.of_role("spare")]:
            self.spawner.kill(child.pid, signal.SIGUSR1)

    def handle_ttin(self) -> None:
        self._ttin_ttou(+1)

    def handle_ttou(self) -> None:
        self._ttin_ttou(-1)

    def _ttin_ttou(self, delta: int) -> None:
        """One more (fewer) worker for every app: a fixed pool's count, a dynamic pool's ``min_workers``."""
        for name, pool in self.apps.pools.items():
            if self.dynamic.is_dynamic(name):
                self.dynamic.move_min(name, delta)
            elif not self.multi:
                self.num_workers = max(1, self.num_workers + delta)  # gunicorn's own count (nworkers_changed)
            else:
                pool.target = max(1, pool.target + delta)
        self.manage_workers()

    # -- reload and stop ------------------------------------------------------------------------

    def reload(self) -> None:
        """HUP: re-read the configuration, then start a new generation of every app.

        A smart app keeps its current preloader and workers until the new
        generation's preloader has imported the new code; if that fails, the
        error is logged and the old generation keeps serving.
        """
        self.readiness.reloading()
        old_address = self.cfg.address
        for k in self.cfg.env:
            if k in self.cfg.env_orig:
                os.environ[k] = self.cfg.env_orig[k]
            else:
                os.environ.pop(k, None)
        events.clear(module=CONFIG_MODULE)  # gunicorn.conf.py registers its callbacks again
        self.app.reload()
        self.setup(self.app)
        self.log.reopen_files()
        listenersmod.rebind_after_reload(self, old_address)
        self.cfg.on_reload(self)
        if self.pidfile is not None:
            self.pidfile.unlink()
        if self.cfg.pidfile is not None:
            self.pidfile = Pidfile(self.cfg.pidfile)
            self.pidfile.create(self.pid)
        _compat.count(self, "reloads")
        util._setproctitle(f"master [{self.proc_name}]")
        now = time.monotonic()
        for name, pool in self.apps.pools.items():
            if name in self._added or self.apps.specs[name].removed:
                continue  # a new app starts at generation 1; a removed one only drains
            pool.request_reload(now)
            self.log.info("app=%s reloading: generation %d", pool.name, pool.generation + (pool.spawn_method == "smart"))
        self.manage_workers()

    def stop(self, graceful: bool = True) -> None:
        shutdown.stop(self, graceful)


def _next(pool: poolmod.AppPool, now: float) -> str:
    """What happens after a failure, truthfully: a halt, nothing (a failed reload), or a retry and when."""
    if pool.halt is not None:
        return "giving up: the app never served"
    serving = sum(1 for w in pool.workers.values() if w.ready and not w.retiring and w.generation == pool.generation)
    if serving >= pool.target and not pool.reload_requested and pool.candidate is None:
        return f"generation {pool.generation} keeps serving; fix the code and reload (HUP, restart.txt) to try again"
    return f"next try in {max(0.0, pool.retry_at - now):.0f}s"
