"""The master: gunicorn's Arbiter, extended to run app pools and preloaders.

Who forks and who reaps whom::

    master (child subreaper) --fork--> preloader [app]      reaped by the master
                             --fork--> direct worker [app]  reaped by the master
    preloader --fork--> intermediate --fork--> worker [app]
              reaps the intermediate   (worker re-parented to the master, reaped there)

The master never imports application code. Signal handlers only queue (and
wake the loop through ``signal.set_wakeup_fd``); SIGCHLD is handled in the
loop on every gunicorn version, so reaping, pool bookkeeping and hooks never
run inside a signal handler. Messages from preloaders wake the same
``select``. The pure per-app state lives in :mod:`gunicorn_smartspawn.pool`;
this module only carries out its actions.
"""

from __future__ import annotations

import os
import queue
import select
import signal
import sys
import threading
import time
from typing import Any

from gunicorn import sock, util
from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer
from gunicorn.pidfile import Pidfile

from gunicorn_smartspawn import events, linux, listeners as listenersmod, pool as poolmod
from gunicorn_smartspawn.apps import AppLoader, AppSpec, derive_config
from gunicorn_smartspawn.errors import ProtocolError, describe_status, exit_code
from gunicorn_smartspawn.commands import Commands
from gunicorn_smartspawn.control import ControlServer
from gunicorn_smartspawn.scoreboard import Scoreboard
from gunicorn_smartspawn.spawning import PreloaderHandle, Spawning
from gunicorn_smartspawn.protocol import PreloaderFailed, PreloaderReady, SpawnFailed, WorkerSpawned

#: gunicorn 23 waits with select() on a self-pipe; 25+ with a queue.
_QUEUE_LOOP = hasattr(Arbiter, "wait_for_signals")
#: The module name gunicorn gives a configuration file it executes.
CONFIG_MODULE = "__config__"


class SmartArbiter(Commands, Spawning, Arbiter):  # type: ignore[misc]
    """gunicorn's arbiter with per-app pools, smart (preloader) or direct spawning."""

    # attributes of gunicorn's Arbiter that this class reads and writes
    LISTENERS: list[Any]
    WORKERS: dict[int, Any]
    reexec_pid: int
    pidfile: Any
    _last_logged_active_worker_count: int | None

    def __init__(self, app: Any) -> None:
        self.pools: dict[str, poolmod.AppPool] = {}
        self.specs: dict[str, AppSpec] = {}
        self.preloaders: dict[int, PreloaderHandle] = {}
        self._pending_workers: dict[int, Any] = {}
        self._worker_app: dict[int, str] = {}
        self._wake_r = self._wake_w = -1
        self._chld = False
        self._sweep_at: float | None = None
        self._setup_notes: list[str] = []
        self._retired_listeners: list[Any] = []
        self.multi = False
        self.scoreboard = Scoreboard()  # mapped before anything forks: every child shares it
        self._gauges: dict[str, int] = {}
        self._reported_failure: dict[str, tuple[int, str | None]] = {}
        self._restart_check_at = 0.0
        self.control: ControlServer | None = None
        self._control_candidate: ControlServer | None = None
        self._control_retry_at = 0.0
        self._thread_requests: queue.SimpleQueue[tuple[dict[str, Any], threading.Event, list[Any]]] = queue.SimpleQueue()
        self.started_at = time.time()
        super().__init__(app)

    # -- configuration -------------------------------------------------------------------

    def setup(self, app: Any) -> None:
        cfg = app.cfg
        apps = cfg.apps or {}
        self.multi = bool(apps)
        if self.multi and getattr(app, "app_uri", None):
            raise RuntimeError(
                f"both APP_MODULE ({app.app_uri}) and apps = {{...}} are given: name the app in one place "
                "(an entry of apps, or APP_MODULE with --bind for a single app)"
            )
        methods = {e.overrides.get("spawn_method", cfg.spawn_method) for e in apps.values()} or {cfg.spawn_method}
        if "smart" in methods and not sys.platform.startswith("linux"):
            raise RuntimeError(
                f"spawn_method='smart' needs Linux (child subreaper, fork); this is {sys.platform}. "
                "Use --spawn-method=direct"
            )
        if cfg.preload_app:
            if "direct" in methods and self.log is not None:  # a reload: keep serving, say why
                cfg.set("preload_app", False)
                self._setup_notes.append(
                    "preload_app=True is ignored: it conflicts with spawn_method='direct' (it would import "
                    "the app in the master); the master refused it at start and ignores it on reload"
                )
            elif "direct" in methods:
                raise RuntimeError(
                    "preload_app=True (--preload) conflicts with spawn_method='direct': it would import "
                    "the app in the master. Use --spawn-method=smart to preload it in a preloader"
                )
            cfg.set("preload_app", False)
            self._setup_notes.append(
                "preload_app=True is ignored with spawn_method='smart': the app is preloaded in its "
                "preloader process, not in the master"
            )
        if cfg.reload and "smart" in methods:
            self._setup_notes.append(
                "reload=True (--reload) restarts workers from the preloader, which keeps the code it "
                "imported: to load changed code, send HUP or touch tmp/restart.txt, or use "
                "--spawn-method=direct with --reload"
            )
        super().setup(app)
        for note in self._setup_notes:
            self.log.warning(note)
        self._setup_notes.clear()
        self._configure_pools()

    def _configure_pools(self) -> None:
        """(Re)build the app specs and pools from the configuration just read."""
        if self.multi:
            wanted = {
                name: AppSpec(name=name, app=None, cfg=derive_config(self.cfg, entry), config=entry)
                for name, entry in self.cfg.apps.items()
            }
            for spec in wanted.values():
                spec.app = AppLoader(spec.config, spec.cfg)  # type: ignore[arg-type]
        else:
            name = default_app_name(self.app)
            wanted = {name: AppSpec(name=name, app=self.app, cfg=self.cfg)}
        for name, gone in self.specs.items():
            if name not in wanted:
                gone.removed = True
                self.pools[name].target = 0
                self.log.info("app=%s removed from the configuration: stopping it", name)
        cwd = util.getcwd()
        for name, spec in wanted.items():
            old: AppSpec | None = self.specs.get(name)
            if old is not None and not old.removed:
                if old.config is not None and spec.config is not None and old.config.binds != spec.config.binds:
                    self.log.warning("app=%s bind changed from %s to %s: rebinding", name, old.config.binds, spec.config.binds)
                    self._retired_listeners.extend(old.listeners)
                else:
                    spec.listeners = old.listeners
                spec.restart_mtime = old.restart_mtime
            spec.restart_path = spec.config.restart_path(cwd) if spec.config else os.path.join(cwd, "tmp", "restart.txt")
            if old is None:
                spec.restart_mtime = _mtime(spec.restart_path)
            self.specs[name] = spec
            pool = self.pools.get(name)
            method = spec.cfg.spawn_method
            target = self.num_workers if not self.multi else spec.cfg.workers
            if pool is None or (old is not None and old.removed):
                self.pools[name] = poolmod.AppPool(
                    name=name,
                    spawn_method=method,
                    target=target,
                    idle_timeout=float(spec.cfg.preloader_idle_timeout),
                    start_timeout=float(spec.cfg.preloader_start_timeout),
                    halt_on_boot_failure=not self.multi,
                )
                continue
            if pool.spawn_method != method:
                self.log.warning(
                    "app=%s spawn_method change from %r to %r needs a restart; keeping %r",
                    name, pool.spawn_method, method, pool.spawn_method,
                )
            pool.target = target
            pool.idle_timeout = float(spec.cfg.preloader_idle_timeout)
            pool.start_timeout = float(spec.cfg.preloader_start_timeout)

    # -- start, signals, the wait ------------------------------------------------------------

    def start(self) -> None:
        if not linux.become_subreaper() and any(p.spawn_method == "smart" for p in self.pools.values()):
            raise RuntimeError("spawn_method='smart': prctl(PR_SET_CHILD_SUBREAPER) failed; use --spawn-method=direct")
        if self.multi:
            # bind every app's addresses before anything is imported; gunicorn's
            # start() then finds LISTENERS set and binds nothing of its own
            fds, self.systemd = listenersmod.inherited_fds()
            listenersmod.bind_apps(self.specs.values(), self.cfg, self.log, fds)
            self.LISTENERS = self._all_listeners()
            for spec in self.specs.values():
                self.log.info("app=%s listening at %s", spec.name, ",".join(str(lnr) for lnr in spec.listeners))
        super().start()
        if not self.multi:
            for spec in self.specs.values():
                spec.listeners = list(self.LISTENERS)
        self._open_control()

    def _all_listeners(self) -> list[Any]:
        return [lnr for spec in self.specs.values() for lnr in spec.listeners]

    def init_signals(self) -> None:
        super().init_signals()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            util.set_non_blocking(fd)
            util.close_on_exec(fd)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, self._on_sigchld)

    def _master_private_fds(self) -> list[int]:
        fds = [self._wake_r, self._wake_w, *(self.control.fds() if self.control else [])]
        if not _QUEUE_LOOP:
            fds.extend(self.PIPE)
        return fds

    def _on_sigchld(self, sig: int, frame: Any) -> None:
        self._chld = True  # the C-level handler already wrote to the wakeup fd

    def wakeup(self) -> None:
        super().wakeup()
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass

    def sleep(self) -> None:  # gunicorn 23's wait
        self._wait(1.0)

    def wait_for_signals(self, timeout: float = 1.0) -> list[int]:  # gunicorn >= 25's wait
        signals = self._drain_signal_queue()
        self._wait(0.0 if signals else timeout)
        return signals + self._drain_signal_queue()

    def _drain_signal_queue(self) -> list[int]:
        import queue

        signals: list[int] = []
        while True:
            try:
                sig = self.SIG_QUEUE.get_nowait()
            except queue.Empty:
                return signals
            if sig != getattr(self, "WAKEUP_REQUEST", None):
                signals.append(sig)

    def _wait(self, timeout: float) -> None:
        """Sleep until a signal, a preloader message or ``timeout``; then handle children and messages."""
        channels = {h.channel.fileno(): h for h in self.preloaders.values() if h.channel is not None}
        control_fds = set(self.control.fds()) if self.control else set()
        fds = [self._wake_r, *channels, *control_fds]
        if not _QUEUE_LOOP and self.PIPE:
            fds.append(self.PIPE[0])
        if not self._chld:
            try:
                readable, _, _ = select.select(fds, [], [], timeout)
            except InterruptedError:
                readable = []
        else:
            readable = []
        for fd in (self._wake_r, *(self.PIPE[:1] if not _QUEUE_LOOP else [])):
            try:
                while os.read(fd, 4096):
                    pass
            except OSError:
                pass
        if self._chld:
            self._chld = False
            self.reap_workers()
        for fd in readable:
            handle = channels.get(fd)
            if handle is not None:
                self._read_channel(handle)
            elif fd in control_fds and self.control is not None:
                self.control.ready(fd)
        if self.control is not None:
            self.control.expire(time.monotonic())
        self._serve_thread_requests()

    # -- reaping --------------------------------------------------------------------------------

    def handle_chld(self, *args: Any) -> None:
        self.reap_workers()

    handle_cld = handle_chld

    def reap_workers(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if not pid:
                return
            if pid == self.reexec_pid:
                self.reexec_pid = 0
            elif pid == self._dirty_pid():
                self.handle_dirty_arbiter_exit(pid, status)
            elif pid in self.preloaders:
                self._preloader_exited(pid, status)
            elif pid in self.WORKERS:
                self._worker_exited(pid, status)
            else:
                for pool in self.pools.values():
                    pool.early_exit(pid, status)
                self.log.debug("Reaped child pid=%s (%s), not a worker yet", pid, describe_status(status))

    def _worker_exited(self, pid: int, status: int) -> None:
        worker = self.WORKERS.pop(pid)
        app_name = self._worker_app.pop(pid, worker.app_name)
        self._log_worker_exit(app_name, pid, status)
        pool = self.pools.get(app_name)
        if pool is not None:
            pool.worker_exited(pid, status, time.monotonic())
        try:
            self._discard(worker)
        except OSError:
            pass
        self.cfg.child_exit(self, worker)

    def _discard(self, worker: Any) -> None:
        """Forget a worker object: its heartbeat file and its scoreboard slot."""
        try:
            worker.tmp.close()
        except OSError:
            pass
        self.scoreboard.release(getattr(worker, "scoreboard_index", None))

    def _log_worker_exit(self, app_name: str, pid: int, status: int) -> None:
        code = exit_code(status)
        if code is None:
            sig = os.WTERMSIG(status)
            what = describe_status(status)
            if sig == signal.SIGKILL:
                self.log.error("app=%s worker pid=%s was sent %s! Perhaps out of memory?", app_name, pid, what[7:])
            elif sig in (signal.SIGTERM, signal.SIGQUIT):
                self.log.info("app=%s worker pid=%s ended by %s", app_name, pid, what)
            else:
                self.log.warning("app=%s worker pid=%s was sent %s!", app_name, pid, what[7:])
        elif code != 0:
            self.log.error("app=%s worker pid=%s exited with code %s", app_name, pid, code)

    def _preloader_exited(self, pid: int, status: int) -> None:
        handle = self.preloaders.pop(pid)
        self._read_channel(handle)  # what it said before it went (PreloaderFailed, WorkerSpawned)
        self._close_channel(handle)
        pool = self.pools.get(handle.app_name)
        lost = pool.preloader_exited(pid, status, time.monotonic()) if pool else None
        code = exit_code(status)
        expected = code == 0 or (handle.stopping and status == signal.SIGTERM)
        log = self.log.info if expected else self.log.error
        log("app=%s preloader gen=%d pid=%d exited (%s)", handle.app_name, handle.generation, pid, describe_status(status))
        for age in lost or ():
            worker = self._pending_workers.pop(age, None)
            if worker is not None:
                self._discard(worker)
        if lost:
            # a worker forked just before the preloader died may be a child of ours
            # that nobody reported: look for it once it had time to be re-parented
            self._sweep_at = time.monotonic() + 1.0

    # -- the channel ----------------------------------------------------------------------------

    def _read_channel(self, handle: PreloaderHandle) -> None:
        if handle.channel is None:
            return
        try:
            messages = handle.channel.receive()
        except EOFError:
            self._close_channel(handle)
            return
        except ProtocolError as exc:
            self.log.error("app=%s preloader pid=%d sent a bad frame (%s); stopping it", handle.app_name, handle.pid, exc)
            self._close_channel(handle)
            self._kill(handle.pid, signal.SIGKILL)
            return
        now = time.monotonic()
        pool = self.pools[handle.app_name]
        for message, fds in messages:
            for fd in fds:
                os.close(fd)
            if isinstance(message, PreloaderReady):
                pool.preloader_ready(handle.pid, message.load_seconds, now)
                self._histogram(f"smartspawn.{handle.app_name}.preloader_load_ms", round(message.load_seconds * 1000, 3))
                self.log.info(
                    "app=%s preloader gen=%d pid=%d ready, loaded in %.2fs",
                    handle.app_name, handle.generation, handle.pid, message.load_seconds,
                )
            elif isinstance(message, PreloaderFailed):
                self.log.error(
                    "app=%s preloader gen=%d pid=%d failed to load the app: %s",
                    handle.app_name, handle.generation, handle.pid, message.error,
                )
                for age in pool.preloader_failed(handle.pid, message.error, now):
                    worker = self._pending_workers.pop(age, None)
                    if worker is not None:
                        self._discard(worker)
            elif isinstance(message, WorkerSpawned):
                self._worker_spawned(pool, handle, message, now)
            elif isinstance(message, SpawnFailed):
                worker = self._pending_workers.pop(message.age, None)
                if worker is not None:
                    self._discard(worker)
                self.log.error("app=%s spawn of worker age=%d failed: %s", handle.app_name, message.age, message.error)
                pool.spawn_failed(message.age, message.error, now)
        if handle.stopping and handle.channel is not None:
            self._finish_stop(handle)

    def _worker_spawned(self, pool: poolmod.AppPool, handle: PreloaderHandle, message: WorkerSpawned, now: float) -> None:
        worker = self._pending_workers.pop(message.age, None)
        if worker is None:
            self.log.warning("app=%s preloader reported unknown worker age=%d pid=%d; stopping it", pool.name, message.age, message.pid)
            self._kill(message.pid, signal.SIGTERM)
            return
        worker.pid = message.pid
        self.WORKERS[message.pid] = worker
        self._worker_app[message.pid] = pool.name
        if hasattr(self, "_stats"):
            self._stats["workers_spawned"] += 1
        self.log.info(
            "app=%s worker pid=%d age=%d gen=%d forked in %.1fms by preloader pid=%d",
            pool.name, message.pid, message.age, handle.generation, message.fork_ms, handle.pid,
        )
        self._histogram(f"smartspawn.{pool.name}.spawn_ms", message.fork_ms)
        status = pool.worker_spawned(message.age, message.pid, now)
        if status is not None:  # it exited before its WorkerSpawned arrived
            self.WORKERS.pop(message.pid, None)
            self._worker_app.pop(message.pid, None)
            self._log_worker_exit(pool.name, message.pid, status)
            self._discard(worker)
            self.cfg.child_exit(self, worker)

    # -- carrying out the pools' actions ---------------------------------------------------

    def manage_workers(self) -> None:
        now = time.monotonic()
        if self.control is None and self._control_candidate is not None:
            self._open_control()
        if self._sweep_at is not None and now >= self._sweep_at:
            self._sweep_at = None
            self._sweep_orphans()
        self._check_restart_files(now)
        for name, pool in list(self.pools.items()):
            if not self.multi:
                pool.target = self.num_workers
            for pid, state in list(pool.workers.items()):
                if not state.ready:
                    worker = self.WORKERS.get(pid)
                    if worker is not None and worker.has_heartbeat():
                        pool.worker_ready(pid)
            actions = pool.tick(now)
            if (pool.failures, pool.last_error) != self._reported_failure.get(name) and pool.failures:
                self._reported_failure[name] = (pool.failures, pool.last_error)
                self.log.error(
                    "app=%s %s (failure %d in a row; next try in %.0fs)",
                    name, pool.last_error, pool.failures, max(0.0, pool.retry_at - now),
                )
            for action in actions:
                self._perform(pool, action, now)
            if self.specs[name].removed:
                self._drop_removed_app(name)
        if self._retired_listeners and not self._old_generation_alive():
            listenersmod.close(self._retired_listeners, unlink=False)
            self._retired_listeners = []
        for name, pool in self.pools.items():
            self._gauge(f"smartspawn.{name}.workers", len(pool.workers))
            self._gauge(f"smartspawn.{name}.preloader_up", int(pool.preloader is not None and pool.preloader.ready))
        count = len(self.WORKERS)
        if self._last_logged_active_worker_count != count:
            self._last_logged_active_worker_count = count
            self.log.debug(
                "{0} workers".format(count),
                extra={"metric": "gunicorn.workers", "value": count, "mtype": "gauge"},
            )

    def _gauge(self, metric: str, value: int) -> None:
        """A statsd gauge through gunicorn's logger, sent when the value changes."""
        if self._gauges.get(metric) == value:
            return
        self._gauges[metric] = value
        if value == 0 and hasattr(self.log, "gauge"):
            self.log.gauge(metric, 0)  # gunicorn's metric extras skip a value of 0
        else:
            self.log.debug("", extra={"metric": metric, "value": value, "mtype": "gauge"})

    def _histogram(self, metric: str, value: float) -> None:
        self.log.debug("", extra={"metric": metric, "value": value, "mtype": "histogram"})

    def _check_restart_files(self, now: float) -> None:
        """Passenger's restart.txt: a new mtime restarts that app alone (checked once a second)."""
        if now < self._restart_check_at:
            return
        self._restart_check_at = now + 1.0
        for spec in self.specs.values():
            if spec.restart_path is None or spec.removed:
                continue
            mtime = _mtime(spec.restart_path)
            if mtime is not None and mtime != spec.restart_mtime:
                self.log.info("app=%s %s touched: restarting the app", spec.name, spec.restart_path)
                self.pools[spec.name].request_reload(now)
            spec.restart_mtime = mtime

    def _drop_removed_app(self, name: str) -> None:
        pool = self.pools[name]
        for pid in pool.preloader_pids():
            if pid in self.preloaders and not self.preloaders[pid].stopping:
                self._stop_preloader(pid, "app removed")
        if pool.workers or pool.pending or pool.preloader_pids():
            return
        spec = self.specs.pop(name)
        del self.pools[name]
        listenersmod.close(spec.listeners, unlink=True)
        self.LISTENERS = self._all_listeners() if self.multi else self.LISTENERS
        self.log.info("app=%s stopped and removed", name)

    def _old_generation_alive(self) -> bool:
        return any(w.generation < p.generation for p in self.pools.values() for w in p.workers.values())

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

    def handle_usr1(self) -> None:
        super().handle_usr1()
        for pid in list(self.preloaders):
            self._kill(pid, signal.SIGUSR1)

    def handle_ttin(self) -> None:
        if not self.multi:
            super().handle_ttin()
            return
        for pool in self.pools.values():  # one more worker for every app
            pool.target += 1
        self.manage_workers()

    def handle_ttou(self) -> None:
        if not self.multi:
            super().handle_ttou()
            return
        for pool in self.pools.values():  # one fewer for every app, never below one
            pool.target = max(1, pool.target - 1)
        self.manage_workers()

    def _perform(self, pool: poolmod.AppPool, action: poolmod.Action, now: float) -> None:
        if isinstance(action, poolmod.SpawnFromPreloader):
            handle = self.preloaders.get(action.preloader_pid)
            for _ in range(action.count):
                if handle is None or handle.channel is None:
                    break
                self._request_spawn(pool, handle, now)
        elif isinstance(action, poolmod.SpawnDirect):
            for _ in range(action.count):
                self._spawn_direct(pool, now)
        elif isinstance(action, poolmod.StartPreloader):
            handle = self._start_preloader(pool, action.generation, now)
            if action.generation == pool.generation and handle is not None:
                # requests queue in the channel while the app loads: workers follow at once
                for action2 in pool.tick(now):
                    self._perform(pool, action2, now)
        elif isinstance(action, poolmod.StopPreloader):
            self._stop_preloader(action.pid, action.reason)
        elif isinstance(action, poolmod.RetireWorker):
            self.log.info("app=%s retiring worker pid=%d: %s", pool.name, action.pid, action.reason)
            self.kill_worker(action.pid, signal.SIGTERM)
        elif isinstance(action, poolmod.Halt):
            raise HaltServer(action.reason, action.exit_status)

    # -- reload and stop ------------------------------------------------------------------------

    def reload(self) -> None:
        """HUP: re-read the configuration, then start a new generation of every app.

        A smart app keeps its current preloader and workers until the new
        generation's preloader has imported the new code; if that fails, the
        error is logged and the old generation keeps serving.
        """
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
        if self.multi:
            listenersmod.bind_apps(self.specs.values(), self.cfg, self.log)
            self.LISTENERS = self._all_listeners()
        else:
            if old_address != self.cfg.address:
                for lnr in self.LISTENERS:
                    lnr.close()
                self.LISTENERS = sock.create_sockets(self.cfg, self.log)
                self.log.info("Listening at: %s", ",".join(str(lnr) for lnr in self.LISTENERS))
            for spec in self.specs.values():
                spec.listeners = list(self.LISTENERS)
        self.cfg.on_reload(self)
        if self.pidfile is not None:
            self.pidfile.unlink()
        if self.cfg.pidfile is not None:
            self.pidfile = Pidfile(self.cfg.pidfile)
            self.pidfile.create(self.pid)
        if hasattr(self, "_stats"):
            self._stats["reloads"] += 1
        util._setproctitle("master [%s]" % self.proc_name)
        now = time.monotonic()
        for pool in self.pools.values():
            pool.request_reload(now)
            self.log.info("app=%s reloading: generation %d", pool.name, pool.generation + (pool.spawn_method == "smart"))
        self.manage_workers()

    def stop(self, graceful: bool = True) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        unlink = self.reexec_pid == self.master_pid == 0 and not self.systemd and not self.cfg.reuse_port
        sock.close_sockets([*self.LISTENERS, *self._retired_listeners], unlink)
        self.LISTENERS = []
        self._retired_listeners = []
        for spec in self.specs.values():
            spec.listeners = []
        for handle in list(self.preloaders.values()):
            handle.stopping = True
            self._close_channel(handle)
            self._kill(handle.pid, signal.SIGTERM)
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        limit = time.time() + self.cfg.graceful_timeout
        self.kill_workers(sig)
        dirty = self._dirty_pid()
        if dirty:
            self.kill_dirty_arbiter(sig)
        quick = not graceful
        while (self.WORKERS or self.preloaders or self._dirty_pid()) and time.time() < limit:
            if not quick and self._quick_shutdown_requested():
                quick = True
                self.log.info("Quick shutdown requested")
                self.kill_workers(signal.SIGQUIT)
                limit = time.time() + 2.0
            self._chld = True
            self._wait(0.1)
        self.kill_workers(signal.SIGKILL)
        for pid in list(self.preloaders):
            self._kill(pid, signal.SIGKILL)
        if self._dirty_pid():
            self.kill_dirty_arbiter(signal.SIGKILL)
        self._sweep_orphans(signal.SIGKILL)
        deadline = time.time() + 1.0
        while (self.WORKERS or self.preloaders) and time.time() < deadline:
            self._chld = True
            self._wait(0.05)
        self._chld = True
        self._wait(0.0)

    def _dirty_pid(self) -> int:
        """The pid of gunicorn's dirty arbiter (25+), or 0."""
        return int(getattr(self, "dirty_arbiter_pid", 0) or 0)

    def _quick_shutdown_requested(self) -> bool:
        if _QUEUE_LOOP:
            return any(sig in (signal.SIGINT, signal.SIGQUIT) for sig in self._drain_signal_queue())
        found = any(sig in (signal.SIGINT, signal.SIGQUIT) for sig in self.SIG_QUEUE)
        return found


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def default_app_name(app: Any) -> str:
    """The one-app form's name: the module of ``APP_MODULE`` (``example_app.wsgi``)."""
    uri = getattr(app, "app_uri", None)
    if isinstance(uri, str) and uri:
        return uri.split(":", 1)[0]
    return "default"
