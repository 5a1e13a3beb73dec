"""The preloader process: imports one app once, then forks its workers.

Life of a preloader (one per smart app and generation)::

    master --fork--> preloader: import app (gc disabled), preloader_warmup (warmup.py),
                       fork-safety inspection, gc.freeze() (gc.collect() first, unless
                       workers wait), malloc_trim(), send PreloaderReady
                     loop: SpawnWorker(age) + heartbeat fd
                       gc.freeze(); create the worker as the master's child (fork.py)
                       send WorkerSpawned(age, pid, fork_ms)
                     EOF on the channel (master closed it, or is gone) -> _exit(0)

When workers wait for it (boot, a restart), only what they act on is inspected
before the first fork (``forksafety.inspect_before_fork``); the fork-safety
report is left to a child, the inspector (inspector.py), and the batch's first
worker gets a head start (boot.py).

The worker is born a child of the master, or re-parented to it (the master
is a child subreaper), which reaps it like any worker. The preloader
stays single-threaded, never serves a request and never outlives the master
(``PR_SET_PDEATHSIG`` and the channel's EOF). Every process that leaves this
module's code does so through ``os._exit``.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from gunicorn import util
from gunicorn.errors import AppImportError

from gunicorn_smartspawn import _compat, _linux, events, forksafety
from gunicorn_smartspawn.config.apps import AppSpec
from gunicorn_smartspawn.errors import (
    PRELOADER_CRASHED,
    PRELOADER_EXIT_OK,
    PRELOADER_LOAD_ERROR,
    PRELOADER_PROTOCOL_ERROR,
    WORKER_REPARENT_TIMEOUT,
    ProtocolError,
)
from gunicorn_smartspawn.preloader.boot import head_start, heartbeat
from gunicorn_smartspawn.preloader.code import (
    code_fingerprint,
    failure_files,
    merge_memory,
    module_files,
    release_free_heap,
)
from gunicorn_smartspawn.preloader.fork import Forker, SpawnError
from gunicorn_smartspawn.preloader.inspector import Inspector
from gunicorn_smartspawn.preloader.nextworker import IDLE_BUILD, NextWorker, assign, assigned, forget
from gunicorn_smartspawn.wire import (
    COMMANDS,
    Channel,
    PreloaderFailed,
    PreloaderReady,
    SpawnFailed,
    SpawnWorker,
    WorkerSpawned,
    cut_text,
    watch_frames,
)
from gunicorn_smartspawn.worker import models as worker_models
from gunicorn_smartspawn.worker import servers as worker_servers
from gunicorn_smartspawn.worker import warmup
from gunicorn_smartspawn.worker.runtime import drop_root, leave, run_worker_process

#: The preloader's own system calls, bound when the master imported this module: a request
#: model that monkey-patches (gevent) replaces them before the app's import, and the preloader's
#: loop, forks, signals and sleeps must stay the kernel's, never run on the app's hub.
_select, _fork, _waitpid, _signal, _sleep = select.select, os.fork, os.waitpid, signal.signal, time.sleep
#: How long a new worker waits for the master to become its parent.
REPARENT_DEADLINE = 5.0
#: Signals the preloader ignores: the master owns them and speaks over the channel.
_IGNORED = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR2", "SIGTTIN", "SIGTTOU", "SIGWINCH")
_RESET = tuple(getattr(signal, name) for name in (*_IGNORED, "SIGTERM", "SIGUSR1"))  # at their defaults in a worker


@dataclass(frozen=True)
class Launch:
    """What the master hands a new preloader: its own app, and nothing of any other."""

    spec: AppSpec
    generation: int
    master_pid: int
    worker_class: Any
    log: Any
    #: passed to gunicorn's hooks as ``server``, as gunicorn does
    server: Any = None
    scoreboard: Any = None


class Preloader:
    """State of the preloader process; :meth:`run` never returns."""

    def __init__(self, launch: Launch, sock: socket.socket) -> None:
        spec = launch.spec
        self.launch = launch
        self.spec = spec
        self.app = spec.app
        self.app_name = spec.name
        self.generation = launch.generation
        self.listeners = list(spec.listeners)
        self.master_pid = launch.master_pid
        self.cfg = spec.cfg
        self.gc_freeze = bool(spec.cfg.gc_freeze)
        self.log = launch.log
        self.channel = Channel(sock, COMMANDS, blocking=True)
        self.fork_findings = forksafety.Findings()
        self.forker = Forker(use_clone=self.cfg.smart_fork == "auto")
        self.model: worker_models.Model | None = None
        self.inspector: Inspector | None = None
        self.boot_batch = False  # the spawn requests waiting at the end of the import (boot.py)
        self.next_worker = NextWorker(  # built while idle, as gunicorn's arbiter builds one before its fork
            lambda: launch.worker_class(0, self.master_pid, self.listeners, self.app, self.cfg.timeout / 2.0, self.cfg, self.log))

    # -- process life -------------------------------------------------------------------

    def run(self) -> NoReturn:
        try:
            self._become_preloader()
            if not self._load():
                leave(PRELOADER_LOAD_ERROR)
            self._serve()
            leave(PRELOADER_EXIT_OK)
        except SystemExit as exc:  # a worker leaving through sys.exit never gets here
            leave(exc.code if isinstance(exc.code, int) else PRELOADER_CRASHED)
        except BaseException:
            self.log.exception("app=%s preloader gen=%d pid=%d crashed", self.app_name, self.generation, os.getpid())
            leave(PRELOADER_CRASHED)

    def _become_preloader(self) -> None:
        # SIGKILL, not SIGTERM: an app may ignore SIGTERM during its import, and a
        # preloader must never outlive the master (and hold its ports)
        _linux.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != self.master_pid:  # the master died before the line above
            leave(PRELOADER_EXIT_OK)
        for name in _IGNORED:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        # SIGTERM (systemd stopping the whole unit, an operator): leave quietly;
        # the master starts another preloader when it next needs one
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        # USR1 (log rotation): the master passes it on, so that workers forked
        # later inherit the new files, not the rotated ones
        signal.signal(signal.SIGUSR1, lambda sig, frame: self.log.reopen_files())
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        util._setproctitle(f"preloader [{self.app_name}]")
        self.spec.enter()  # chdir, paths and env of a multi-app entry
        # --user/--group (one app) or the app's 'user'/'group' (multi-app): the
        # app's import runs as that user, as in gunicorn's own workers
        if drop_root(self.cfg):
            # changing credentials cleared the parent-death signal: set it again
            _linux.set_parent_death_signal(signal.SIGKILL)
            if os.getppid() != self.master_pid:
                leave(PRELOADER_EXIT_OK)

    def _load(self) -> bool:
        inherited = set(sys.modules)  # the master's: what the app's import adds is what counts
        if self.gc_freeze:
            gc.disable()
        started = time.perf_counter()
        prepared = self._import(inherited)
        if prepared is None:
            return False
        load_seconds = time.perf_counter() - started
        self._warm_up()
        # workers wait (boot, a restart): fork them first, and leave the report to the inspector;
        # none waits (a reload's preloader): all of it now
        waiting = bool(_select([self.channel], [], [], 0)[0])
        self.fork_findings, report = forksafety.inspect_before_fork(
            self.log, self.app_name, self.generation, self.cfg, defer=waiting,
            exclude_fds=[self.channel.fileno(), *(lnr.fileno() for lnr in self.listeners)],
        )
        # an app that ignores SIGCHLD would make the kernel reap what the preloader waits for
        _signal(signal.SIGCHLD, signal.SIG_DFL)
        if self.gc_freeze:
            if not waiting:
                gc.collect()  # no worker waits for this preloader (a reload's): collect first
            # else fork at once; the import's garbage stays frozen and shared, as with --preload.
            # Collecting after the first fork would touch every object's header here and unshare
            # the preloader's whole heap from its workers (+45 MiB measured).
            gc.freeze()
        trimmed = release_free_heap()  # (a few ms)
        if self.cfg.ksm:  # now, not before the import: KSM has only settled pages to scan
            merge_memory(self.log, self.app_name, "preloader")
        self.boot_batch = waiting
        if report is not None:  # the inspector, forked before the first worker, is also the throwaway fork (_choose_fork)
            self._start_inspector(report)
        how = self._choose_fork()
        self.log.info(
            "app=%s preloader gen=%d pid=%d loaded in %.2fs, workers by %s%s, %.1f MiB of free heap released",
            self.app_name, self.generation, os.getpid(), load_seconds, how, prepared, trimmed / 1048576,
        )
        self._send(PreloaderReady(pid=os.getpid(), load_seconds=round(load_seconds, 6), code=code_fingerprint(inherited)))
        self._send_watch(inherited)
        return True

    def _start_inspector(self, report: Callable[[], None]) -> None:
        self.inspector = Inspector.start(f"inspector [{self.app_name}]", report, self.channel.close)
        if self.inspector is None:
            self.log.warning(
                "app=%s preloader gen=%d pid=%d fork safety: could not fork the inspector; the report is not logged "
                "(workers still get fork_safety's handling)", self.app_name, self.generation, os.getpid(),
            )

    def _send_watch(self, inherited: set[str], failure: BaseException | None = None) -> None:
        """--reload: the files the import read, for the master to watch (after a failed import,
        with those its traceback names: a fix of the module that failed must reload too)."""
        if self.cfg.reload:
            files = module_files(inherited) + (failure_files(failure) if failure is not None else [])
            for frame in watch_frames(files):
                try:
                    self.channel.send(frame)
                except OSError:
                    return  # the master is gone (the serve loop sees EOF) or stopped this preloader

    def _import(self, inherited: set[str]) -> str | None:
        """The request model's preparation, then the app's import and its check against the model:
        what was prepared, for the log (``""`` if nothing); None when it failed (reported)."""
        try:
            where = worker_models.table_name(self.app)
            self.model = worker_models.for_worker(self.launch.worker_class, self.cfg, worker_models.where(where))
            done = self.model.before_import()  # gevent patches here, before any of the app runs
            loaded = self.app.wsgi()
            worker_models.check_pairing(self.model, loaded, worker_models.app_uri(self.app), worker_models.setting_words(where))
            events.fire(events.PRELOADER_LOADED)
            done = ", ".join(filter(None, [done, worker_servers.prepare(self.model.base, self.cfg)]))
        except BaseException as exc:  # SystemExit from an app's import is a failure too
            known = isinstance(exc, (worker_models.ModelError, worker_models.PairingError))  # one line says it all
            tb = "" if known else traceback.format_exc()
            error = str(exc) if known or isinstance(exc, AppImportError) else f"{type(exc).__name__}: {exc}"
            self.log.error(
                "app=%s preloader gen=%d pid=%d failed to load the app: %s%s",
                self.app_name, self.generation, os.getpid(), error, "\n" + tb if tb else "",
            )
            first_line = error.splitlines()[0] if error else type(exc).__name__
            self._send(PreloaderFailed(error=cut_text(first_line), traceback=cut_text(tb)))
            self._send_watch(inherited, exc)
            return None
        return f", {done}" if done else ""

    def _warm_up(self) -> None:
        """``preloader_warmup``: the requests run through the app before the fork (warmup.py); the
        fork-safety inspection that follows finds what connections they left open."""
        where = f"app={self.app_name} preloader gen={self.generation} pid={os.getpid()}"
        # gunicorn's application objects load once and keep the callable
        warmup.run_configured(self.app.wsgi(), self.cfg, self.model, self.log, where)

    def _choose_fork(self) -> str:
        """Settle how workers are created; says which, for the log."""
        if self.forker.clone is not None and _linux.os_thread_count() > 1:
            # Native pools (OpenBLAS, for one) stop their threads in a
            # pthread_atfork handler: one throwaway fork runs those handlers,
            # and the pools start again only when next used, which a
            # preloader never does. At boot, the inspector was that fork.
            pid = _fork()
            if pid == 0:
                os._exit(0)
            _waitpid(pid, 0)
        return self.forker.method()

    def _serve(self) -> None:
        while True:
            inspector = self.inspector
            timeout = max(0.0, inspector.deadline - time.monotonic()) if inspector is not None else None
            if not self.next_worker.ready:
                timeout = IDLE_BUILD if timeout is None else min(timeout, IDLE_BUILD)
            watched: list[Any] = [self.channel] if inspector is None else [self.channel, inspector]
            try:
                ready = _select(watched, [], [], timeout)[0]
            except InterruptedError:
                continue
            if not ready:
                self.next_worker.build()
            if inspector is not None and (inspector in ready or not ready) and inspector.poll():
                self.inspector = None
            if self.channel not in ready:
                continue
            try:
                messages = self.channel.receive()
            except EOFError:
                return  # the master closed the channel or is gone
            except ProtocolError as exc:
                # only the master holds the other end: a bad frame means a bug or a
                # compromised peer; spawn nothing more and leave, the master restarts one
                self.log.error("app=%s preloader pid=%d refuses a frame from the master: %s; exiting",
                               self.app_name, os.getpid(), exc)
                leave(PRELOADER_PROTOCOL_ERROR)
            first, self.boot_batch = self.boot_batch and len(messages) > 1, False  # the first gets a head start
            for message, fds in messages:
                if isinstance(message, SpawnWorker):
                    self._spawn(message, fds[0], ahead=first and not message.spare)
                    first = False

    def _send(self, message: Any) -> None:
        try:
            self.channel.send(message)
        except OSError:
            leave(PRELOADER_EXIT_OK)  # the master is gone

    # -- spawning -----------------------------------------------------------------------

    def _spawn(self, request: SpawnWorker, heartbeat_fd: int, ahead: bool = False) -> None:
        if self.gc_freeze:
            gc.freeze()  # objects created since the last fork join the shared image
        mark = heartbeat(heartbeat_fd) if ahead else None
        started = time.perf_counter()
        worker = assigned(self.next_worker.take(), request, heartbeat_fd, self.app_name, self.launch.scoreboard)
        try:
            try:
                pid = self.forker.spawn(lambda: self._worker(worker, request, heartbeat_fd))
            except SpawnError as exc:
                self._send(SpawnFailed(age=request.age, error=cut_text(str(exc), 500)))
                return
            finally:
                forget(worker)
            fork_ms = (time.perf_counter() - started) * 1000.0
            self._send(WorkerSpawned(age=request.age, pid=pid, fork_ms=round(fork_ms, 3)))
            head_start(heartbeat_fd, mark)  # (boot.py) after the report: the master knows it before it serves
        finally:
            os.close(heartbeat_fd)

    def _worker(self, worker: Any, request: SpawnWorker, heartbeat_fd: int) -> NoReturn:
        """The new worker: leave the preloader's world, then run gunicorn's worker."""
        self.channel.close()  # a worker never holds a channel to its preloader
        if self.inspector is not None:
            self.inspector.close()  # nor its inspector's pipe
        self.inspector, self.boot_batch = None, False
        for sig in _RESET:
            _signal(sig, signal.SIG_DFL)  # gunicorn's worker sets its own next
        deadline = time.monotonic() + REPARENT_DEADLINE
        while os.getppid() != self.master_pid:  # double fork: until the intermediate is gone
            if time.monotonic() > deadline or os.getppid() == 1:
                os._exit(WORKER_REPARENT_TIMEOUT)
            _sleep(0.0002)
        if self.gc_freeze:
            gc.enable()
        if self.model is not None:
            self.model.after_fork()  # gevent: a hub of the preloader's is started again here
        forksafety.prepare_worker(self.fork_findings, self.cfg, self.log)
        if worker is None:  # the preloader could not build it: here a failing constructor is a failed boot
            worker = self.next_worker.make()
            assign(worker, request, heartbeat_fd, self.app_name, self.launch.scoreboard)
        worker.pid, worker.sockets = os.getpid(), _compat.per_worker_listeners(self.cfg, list(self.listeners), self.log)
        code = run_worker_process(self.launch.server, worker)
        if code == 0 and getattr(worker, "promote_fds", None) is not None:  # refork_after: the master chose it
            from gunicorn_smartspawn.preloader.mold import become_preloader

            signals: dict[str, Any] = {name: signal.SIG_IGN for name in _IGNORED}
            signals.update(SIGTERM=_exit_on_sigterm, SIGUSR1=lambda sig, frame: self.log.reopen_files())
            try:
                become_preloader(self, worker, signals)
            except BaseException:
                self.log.exception("app=%s pid=%d could not become the next preloader", self.app_name, os.getpid())
                leave(PRELOADER_CRASHED)
        leave(code)


def _exit_on_sigterm(sig: int, frame: Any) -> None:
    os._exit(PRELOADER_EXIT_OK)
