"""The preloader process: imports one app once, then forks its workers.

Life of a preloader (one per smart app and generation)::

    master --fork--> preloader: import app (gc disabled), gc.collect(), send PreloaderReady
                     loop: SpawnWorker(age) + heartbeat fd
                       gc.freeze(); fork -> intermediate: fork -> worker; write worker pid; _exit(0)
                       read pid, reap intermediate, send WorkerSpawned(age, pid, fork_ms)
                     EOF on the channel (master closed it, or is gone) -> _exit(0)

The intermediate exits at once, so the worker is re-parented to the nearest
child subreaper, the master, which reaps it like any worker. The preloader
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
import struct
import time
import traceback
from typing import Any, NoReturn

from gunicorn import sock as gsock
from gunicorn import util
from gunicorn.errors import AppImportError

from gunicorn_smartspawn import events, forksafety, linux
from gunicorn_smartspawn import worker as worker_module
from gunicorn_smartspawn.apps import AppSpec
from gunicorn_smartspawn.errors import (
    INTERMEDIATE_FORK_ERROR,
    PRELOADER_CRASHED,
    PRELOADER_EXIT_OK,
    PRELOADER_LOAD_ERROR,
    PRELOADER_PROTOCOL_ERROR,
    WORKER_REPARENT_TIMEOUT,
    ProtocolError,
)
from gunicorn_smartspawn.protocol import (
    COMMANDS,
    _cut,
    FrameDecoder,
    PreloaderFailed,
    PreloaderReady,
    SpawnFailed,
    SpawnWorker,
    WorkerSpawned,
    encode,
)

#: How long a new worker waits for the master to become its parent.
REPARENT_DEADLINE = 5.0
_PID = struct.Struct("!q")
#: Signals the preloader ignores: the master owns them and speaks over the channel.
_IGNORED = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR2", "SIGTTIN", "SIGTTOU", "SIGWINCH")


class Preloader:
    """State of the preloader process; :meth:`run` never returns."""

    def __init__(self, *, arbiter: Any, spec: AppSpec, generation: int, sock: socket.socket, master_pid: int) -> None:
        self.arbiter = arbiter
        self.spec = spec
        self.app = spec.app
        self.app_name = spec.name
        self.generation = generation
        self.listeners = list(spec.listeners)
        self.sock = sock
        self.master_pid = master_pid
        self.cfg = spec.cfg
        self.gc_freeze = bool(spec.cfg.gc_freeze)
        self.log = arbiter.log
        self.decoder = FrameDecoder(COMMANDS)
        self.fork_findings = forksafety.Findings()
        self.clone = linux.CloneParent() if self.cfg.smart_fork == "auto" else None

    # -- process life -------------------------------------------------------------------

    def run(self) -> NoReturn:
        try:
            self._become_preloader()
            if not self._load():
                worker_module.leave(PRELOADER_LOAD_ERROR)
            self._serve()
            worker_module.leave(PRELOADER_EXIT_OK)
        except SystemExit as exc:  # a worker leaving through sys.exit never gets here
            worker_module.leave(exc.code if isinstance(exc.code, int) else PRELOADER_CRASHED)
        except BaseException:
            self.log.exception("app=%s preloader gen=%d pid=%d crashed", self.app_name, self.generation, os.getpid())
            worker_module.leave(PRELOADER_CRASHED)

    def _become_preloader(self) -> None:
        linux.set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != self.master_pid:  # the master died before the line above
            worker_module.leave(PRELOADER_EXIT_OK)
        for name in _IGNORED:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        # SIGTERM (systemd stopping the whole unit, an operator): leave quietly;
        # the master starts another preloader when it next needs one
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        # USR1 (log rotation): the master passes it on, so that workers forked
        # later inherit the new files, not the rotated ones
        signal.signal(signal.SIGUSR1, lambda sig, frame: self.log.reopen_files())
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.sock.settimeout(None)
        util._setproctitle(f"preloader [{self.app_name}]")
        self.spec.enter()  # chdir, paths and env of a multi-app entry
        if self.spec.config is not None and os.geteuid() == 0:
            # its own user (multi-app 'user'/'group'): before any app code runs
            util.set_owner_process(self.cfg.uid, self.cfg.gid, initgroups=self.cfg.initgroups)

    def _load(self) -> bool:
        if self.gc_freeze:
            gc.disable()
        started = time.perf_counter()
        try:
            self.app.wsgi()
            events.fire(events.PRELOADER_LOADED)
        except BaseException as exc:  # SystemExit from an app's import is a failure too
            tb = traceback.format_exc()
            error = str(exc) if isinstance(exc, AppImportError) else f"{type(exc).__name__}: {exc}"
            self.log.error(
                "app=%s preloader gen=%d pid=%d failed to load the app: %s\n%s",
                self.app_name, self.generation, os.getpid(), error, tb,
            )
            first_line = error.splitlines()[0] if error else type(exc).__name__
            self._send(PreloaderFailed(error=_cut(first_line), traceback=_cut(tb)))
            return False
        load_seconds = time.perf_counter() - started
        self.fork_findings = forksafety.inspect_preloader(
            self.log,
            self.app_name,
            self.generation,
            self.cfg,
            exclude_fds=[self.sock.fileno(), *(lnr.fileno() for lnr in self.listeners)],
        )
        if self.gc_freeze:
            gc.collect()
            gc.freeze()
        how = self._choose_fork()
        self.log.info(
            "app=%s preloader gen=%d pid=%d loaded in %.2fs, workers by %s",
            self.app_name, self.generation, os.getpid(), load_seconds, how,
        )
        self._send(PreloaderReady(pid=os.getpid(), load_seconds=round(load_seconds, 6)))
        return True

    def _choose_fork(self) -> str:
        """Settle how workers are created; says which, for the log."""
        if self.clone is None:
            return "double fork (smart_fork=double-fork)"
        if linux.os_thread_count() > 1:
            # Native pools (OpenBLAS, for one) stop their threads in a
            # pthread_atfork handler: one throwaway fork runs those handlers,
            # and the pools start again only when next used, which a
            # preloader never does.
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        if self.clone.usable():
            return "clone(CLONE_PARENT)"
        return f"double fork ({linux.os_thread_count()} OS threads in the preloader)"

    def _serve(self) -> None:
        while True:
            try:
                select.select([self.sock], [], [])
            except InterruptedError:
                continue
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 65536, 16)
            if not data:
                for fd in fds:
                    os.close(fd)
                return  # EOF: the master closed the channel or is gone
            self.decoder.feed(data, fds)
            try:
                for message, message_fds in self.decoder:
                    if isinstance(message, SpawnWorker):
                        self._spawn(message.age, message_fds[0], message.slot)
            except ProtocolError as exc:
                # only the master holds the other end: a bad frame means a bug or a
                # compromised peer; spawn nothing more and leave, the master restarts one
                self.log.error("app=%s preloader pid=%d refuses a frame from the master: %s; exiting",
                               self.app_name, os.getpid(), exc)
                for fd in self.decoder.leftover_fds():
                    os.close(fd)
                worker_module.leave(PRELOADER_PROTOCOL_ERROR)

    def _send(self, message: Any) -> None:
        try:
            self.sock.sendall(encode(message))
        except OSError:
            worker_module.leave(PRELOADER_EXIT_OK)  # the master is gone

    # -- spawning -----------------------------------------------------------------------

    def _spawn(self, age: int, heartbeat_fd: int, slot: int = -1) -> None:
        if self.gc_freeze:
            gc.freeze()  # objects created since the last fork join the shared image
        started = time.perf_counter()
        if self.clone is not None and self.clone.usable():
            try:
                pid = self.clone()
            except OSError as exc:
                os.close(heartbeat_fd)
                self._send(SpawnFailed(age=age, error=str(exc)))
                return
            if pid == 0:
                self._worker(age, heartbeat_fd, slot)
            os.close(heartbeat_fd)
            fork_ms = (time.perf_counter() - started) * 1000.0
            self._send(WorkerSpawned(age=age, pid=pid, fork_ms=round(fork_ms, 3)))
            return
        read_end, write_end = os.pipe()
        try:
            intermediate = os.fork()
        except OSError as exc:
            os.close(read_end)
            os.close(write_end)
            os.close(heartbeat_fd)
            self._send(SpawnFailed(age=age, error=f"fork failed: {exc}"))
            return
        if intermediate == 0:
            os.close(read_end)
            self._intermediate(age, heartbeat_fd, write_end, slot)
        os.close(write_end)
        os.close(heartbeat_fd)
        data = _read_all(read_end, _PID.size)
        os.close(read_end)
        fork_ms = (time.perf_counter() - started) * 1000.0
        os.waitpid(intermediate, 0)
        if len(data) != _PID.size:
            self._send(SpawnFailed(age=age, error="the intermediate process could not fork the worker"))
            return
        (pid,) = _PID.unpack(data)
        self._send(WorkerSpawned(age=age, pid=pid, fork_ms=round(fork_ms, 3)))

    def _intermediate(self, age: int, heartbeat_fd: int, write_end: int, slot: int) -> NoReturn:
        try:
            pid = os.fork()
        except OSError:
            os._exit(INTERMEDIATE_FORK_ERROR)
        if pid == 0:
            os.close(write_end)
            self._worker(age, heartbeat_fd, slot)
        try:
            os.write(write_end, _PID.pack(pid))
        finally:
            os._exit(0)

    def _worker(self, age: int, heartbeat_fd: int, slot: int) -> NoReturn:
        """The new worker: leave the preloader's world, then run gunicorn's worker."""
        self.sock.close()  # a worker never holds a channel to its preloader
        for name in (*_IGNORED, "SIGTERM", "SIGUSR1"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)  # gunicorn's worker sets its own next
        deadline = time.monotonic() + REPARENT_DEADLINE
        while os.getppid() != self.master_pid:  # double fork: until the intermediate is gone
            if time.monotonic() > deadline or os.getppid() == 1:
                os._exit(WORKER_REPARENT_TIMEOUT)
            time.sleep(0.0002)
        if self.gc_freeze:
            gc.enable()
        forksafety.prepare_worker(self.fork_findings, self.cfg, self.log)
        worker_module.spawn_context = worker_module.SpawnContext(
            app_name=self.app_name,
            forked=True,
            scoreboard=getattr(self.arbiter, "scoreboard", None),
            slot=slot if slot >= 0 else None,
        )
        sockets = list(self.listeners)
        if not sockets and getattr(self.cfg, "reuse_port", False):
            sockets = gsock.create_sockets(self.cfg, self.log)  # gunicorn >= 27 --reuse-port: per worker
        worker = self.arbiter.worker_class(
            age, self.master_pid, sockets, self.app, self.cfg.timeout / 2.0, self.cfg, self.log
        )
        worker.tmp.close()
        worker.tmp = worker_module.InheritedTmp(heartbeat_fd)
        worker.pid = os.getpid()
        worker_module.leave(worker_module.run_worker_process(self.arbiter, worker))


def _exit_on_sigterm(sig: int, frame: Any) -> None:
    os._exit(PRELOADER_EXIT_OK)


def _read_all(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        try:
            chunk = os.read(fd, size - len(data))
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    return data


