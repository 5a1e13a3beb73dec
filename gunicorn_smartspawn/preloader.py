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

import atexit
import gc
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from gunicorn import util
from gunicorn.errors import AppImportError

from gunicorn_smartspawn import events, forksafety, linux
from gunicorn_smartspawn import worker as worker_module
from gunicorn_smartspawn.errors import (
    APP_LOAD_ERROR,
    INTERMEDIATE_FORK_ERROR,
    PRELOADER_CRASHED,
    PRELOADER_EXIT_OK,
    PRELOADER_LOAD_ERROR,
    WORKER_BOOT_ERROR,
    WORKER_REPARENT_TIMEOUT,
)
from gunicorn_smartspawn.protocol import (
    COMMANDS,
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
_IGNORED = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTTIN", "SIGTTOU", "SIGWINCH")


class Preloader:
    """State of the preloader process; :meth:`run` never returns."""

    def __init__(
        self,
        *,
        arbiter: Any,
        app: Any,
        app_name: str,
        generation: int,
        listeners: Sequence[Any],
        sock: socket.socket,
        master_pid: int,
        gc_freeze: bool,
    ) -> None:
        self.arbiter = arbiter
        self.app = app
        self.app_name = app_name
        self.generation = generation
        self.listeners = list(listeners)
        self.sock = sock
        self.master_pid = master_pid
        self.gc_freeze = gc_freeze
        self.log = arbiter.log
        self.cfg = arbiter.cfg
        self.decoder = FrameDecoder(COMMANDS)
        self.fork_findings = forksafety.Findings()
        self.clone = linux.CloneParent() if self.cfg.smart_fork == "auto" else None

    # -- process life -------------------------------------------------------------------

    def run(self) -> NoReturn:
        try:
            self._become_preloader()
            if not self._load():
                _leave(PRELOADER_LOAD_ERROR)
            self._serve()
            _leave(PRELOADER_EXIT_OK)
        except SystemExit as exc:  # a worker leaving through sys.exit never gets here
            _leave(exc.code if isinstance(exc.code, int) else PRELOADER_CRASHED)
        except BaseException:
            self.log.exception("app=%s preloader gen=%d pid=%d crashed", self.app_name, self.generation, os.getpid())
            _leave(PRELOADER_CRASHED)

    def _become_preloader(self) -> None:
        linux.set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != self.master_pid:  # the master died before the line above
            _leave(PRELOADER_EXIT_OK)
        for name in _IGNORED:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.sock.settimeout(None)
        util._setproctitle(f"preloader [{self.app_name}]")

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
            self._send(PreloaderFailed(error=error.splitlines()[0] if error else type(exc).__name__, traceback=tb))
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
            for message, message_fds in self.decoder:
                if isinstance(message, SpawnWorker):
                    self._spawn(message.age, message_fds[0])

    def _send(self, message: Any) -> None:
        try:
            self.sock.sendall(encode(message))
        except OSError:
            _leave(PRELOADER_EXIT_OK)  # the master is gone

    # -- spawning -----------------------------------------------------------------------

    def _spawn(self, age: int, heartbeat_fd: int) -> None:
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
                self._worker(age, heartbeat_fd)
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
            self._intermediate(age, heartbeat_fd, write_end)
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

    def _intermediate(self, age: int, heartbeat_fd: int, write_end: int) -> NoReturn:
        try:
            pid = os.fork()
        except OSError:
            os._exit(INTERMEDIATE_FORK_ERROR)
        if pid == 0:
            os.close(write_end)
            self._worker(age, heartbeat_fd)
        try:
            os.write(write_end, _PID.pack(pid))
        finally:
            os._exit(0)

    def _worker(self, age: int, heartbeat_fd: int) -> NoReturn:
        """The new worker: leave the preloader's world, then run gunicorn's worker."""
        self.sock.close()  # a worker never holds a channel to its preloader
        deadline = time.monotonic() + REPARENT_DEADLINE
        while os.getppid() != self.master_pid:  # double fork: until the intermediate is gone
            if time.monotonic() > deadline or os.getppid() == 1:
                os._exit(WORKER_REPARENT_TIMEOUT)
            time.sleep(0.0002)
        if self.gc_freeze:
            gc.enable()
        forksafety.prepare_worker(self.fork_findings, self.cfg, self.log)
        code = run_forked_worker(self.arbiter, self.app, self.app_name, age, self.listeners, heartbeat_fd)
        _leave(code)


class InheritedTmp:
    """A worker's heartbeat file created by the master and passed over the channel.

    Same interface and clock as gunicorn's ``WorkerTmp``: the master reads the
    change of the file's mtime through its own descriptor of the same file.
    """

    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(fd, "w+b", 0)

    def notify(self) -> None:
        now = time.monotonic()
        os.utime(self._file.fileno(), (now, now))

    def last_update(self) -> float:
        return os.fstat(self._file.fileno()).st_mtime

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()


def run_forked_worker(
    arbiter: Any, app: Any, app_name: str, age: int, listeners: Sequence[Any], heartbeat_fd: int
) -> int:
    """Build and run gunicorn's worker object in a forked process; its exit code."""
    cfg, log = arbiter.cfg, arbiter.log
    worker_module.spawn_context = worker_module.SpawnContext(app_name=app_name, forked=True)
    sockets = list(listeners)
    if not sockets and getattr(cfg, "reuse_port", False):
        from gunicorn import sock as gsock

        sockets = gsock.create_sockets(cfg, log)  # gunicorn >= 27 with --reuse-port: one set per worker
    worker = arbiter.worker_class(age, arbiter.pid, sockets, app, arbiter.timeout / 2.0, cfg, log)
    worker.tmp.close()
    worker.tmp = InheritedTmp(heartbeat_fd)
    worker.pid = os.getpid()
    code = 0
    try:
        util._setproctitle(f"worker [{app_name}]")
        log.info("Booting worker with pid: %s", worker.pid)
        events.fire(events.STARTING_WORKER_PROCESS, True)
        cfg.post_fork(arbiter, worker)
        worker.init_process()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except AppImportError as exc:
        log.debug("Exception while loading the application", exc_info=True)
        print(str(exc), file=sys.stderr, flush=True)
        code = APP_LOAD_ERROR
    except BaseException as exc:
        log.exception("Exception in worker process")
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        code = 255 if worker.booted else WORKER_BOOT_ERROR
    finally:
        log.info("Worker exiting (pid: %s)", worker.pid)
        try:
            worker.tmp.close()
            cfg.worker_exit(arbiter, worker)
        except Exception:
            log.warning("Exception during worker exit:\n%s", traceback.format_exc())
    return code


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


def _leave(code: int) -> NoReturn:
    """Exit this forked process: run atexit callbacks, flush, ``_exit``."""
    try:
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(code & 0xFF)
