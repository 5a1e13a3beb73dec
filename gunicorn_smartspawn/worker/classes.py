"""The worker classes users name with ``-k smartspawn.Worker``.

:class:`Worker` is both the class users name and the mixin that adds smart
spawning to a gunicorn worker class: the context attached after
construction, the Passenger events at start and stop, closing the master's
private descriptors in a direct worker, the scoreboard's count of requests
(around the loaded application, :mod:`.counting`) and the check that the
application is of the kind the request model serves. Constructing
``Worker`` itself builds, and caches, a class that mixes it into the request
model the setting ``smart_worker_class`` names (:mod:`.models`)::

    type("SmartGeventWorker", (Worker, GeventWorker), {})

A subclass that already mixes a model in (``class Mine(Worker,
UvicornWorker)``) is used as it is. The request path is the model's own.
"""

from __future__ import annotations

# gunicorn's worker seeds random with a string, which imports hashlib; a worker
# that has switched to its app's own user may no longer be allowed to read it
import hashlib  # noqa: F401
import math
import os
import signal
import threading
import time
from typing import Any

from gunicorn.errors import AppImportError
from gunicorn.workers.base import Worker as _GunicornWorker
from gunicorn.workers.gthread import ThreadWorker as _GunicornThreadWorker
from gunicorn.workers.sync import SyncWorker as _GunicornSyncWorker

from gunicorn_smartspawn import _compat, events
from gunicorn_smartspawn.errors import HookNotInstalled
from gunicorn_smartspawn.hook import state as hook_state
from gunicorn_smartspawn.worker import accepting, counting, models, parking
from gunicorn_smartspawn.worker.heartbeat import Heartbeat, window_for
from gunicorn_smartspawn.worker.runtime import InheritedTmp, SpawnContext, drop_root

HOOK_HELP = (
    "-k smartspawn.Worker needs gunicorn-smartspawn's startup hook, which did not run "
    "(the file gunicorn_smartspawn.pth was not processed: a copy on PYTHONPATH instead of "
    "an install, or python -S). Install the package into the environment that runs "
    "gunicorn: pip install gunicorn-smartspawn (from a checkout: pip install .)"
)


class Worker(_GunicornWorker):  # type: ignore[misc]
    """gunicorn-smartspawn's worker: a gunicorn request model (sync by default), spawned smartly."""

    __smartspawn__ = True
    app_name: str
    forked: bool
    spare: bool
    private_fds: tuple[int, ...]
    first_heartbeat_mark: float
    tmp: Any  # gunicorn's WorkerTmp, or InheritedTmp in a forked worker
    #: None when smart_worker_class names nothing (a HUP changed it): the master keeps a plain
    #: record, and the preloader or the direct worker fails to load, which backs off
    model: models.Model | None
    #: the most requests this worker may have in flight (the scoreboard's bound)
    capacity: int
    #: set when the master asked this worker to become its app's next preloader (refork): copies
    #: of its listeners' descriptors, taken before the request model closes its own
    promote_fds: list[int] | None = None
    #: the loaded application before the scoreboard's count wraps it: a spare's warm-up runs
    #: through it (:mod:`.parking`), so that warm-up requests are never counted as served
    plain_app: Any = None
    alive: bool  # gunicorn's: the request loop runs while True
    #: gunicorn's notify(), at most once per short window (:mod:`.heartbeat`); not "heartbeat",
    #: which tornado's worker names a method
    smart_heartbeat: Heartbeat

    def __new__(cls, age: int, ppid: int, sockets: Any, app: Any, timeout: float, cfg: Any, log: Any) -> Any:
        if models.base_of(cls) is None:  # no request model mixed in: the setting's
            try:
                cls = compose(cls, models.for_worker(cls, cfg, models.where(models.table_name(app))).base)
            except models.ModelError:
                pass
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.model = models.for_worker(type(self), self.cfg)
        except models.ModelError:
            self.model = None
        self.capacity = self.model.capacity(self.cfg) if self.model else max(1, int(self.cfg.threads))
        self.attach(SpawnContext())

    def attach(self, context: SpawnContext) -> None:
        """Give the worker what the master (or its preloader) knows about it.

        Called right after construction: gunicorn fixes ``Worker.__init__``'s
        signature, so what smart spawning adds travels here instead.
        """
        self.app_name = context.app_name
        self.forked = context.forked
        self.private_fds = context.private_fds
        self.scoreboard_index = context.slot
        self.spare = context.spare
        self._scoreboard = context.scoreboard
        self._score: Any = None
        # WorkerTmp.notify() writes a monotonic clock reading over the file's
        # creation time: any change from this mark is the first heartbeat.
        self.first_heartbeat_mark = self.tmp.last_update()
        self.smart_heartbeat = Heartbeat(window_for(self.cfg.timeout))

    def use_heartbeat_fd(self, fd: int) -> None:
        """In a forked worker: heartbeat through the file the master made (passed over the channel)."""
        self.tmp.close()
        self.tmp = InheritedTmp(fd)
        self.smart_heartbeat.reset()

    def notify(self) -> None:
        """gunicorn's heartbeat, which its request loops call on every turn: a write of the
        heartbeat file when the last one's window has run out (:mod:`.heartbeat`)."""
        self.smart_heartbeat.beat(self.tmp.fileno())

    @classmethod
    def setup(cls) -> None:
        if not hook_state.installed():
            raise HookNotInstalled(HOOK_HELP)

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        base = models.for_worker(cls, cfg).base
        if hasattr(base, "check_config"):
            base.check_config(cfg, log)

    def has_heartbeat(self) -> bool:
        """Has the worker entered its request loop (master side)?"""
        try:
            return bool(self.tmp.last_update() != self.first_heartbeat_mark)
        except (OSError, ValueError):
            return False

    def init_process(self) -> None:
        for fd in self.private_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.private_fds = ()
        if self.model is None:  # this worker cannot run: say why, as a failed load (exit code 4)
            try:
                models.for_worker(type(self), self.cfg, models.where(models.table_name(self.app)))
            except models.ModelError as exc:
                raise AppImportError(str(exc)) from None
        if self._scoreboard is not None:
            self._score = self._scoreboard.slot(self.scoreboard_index, threaded=self.model is None or self.model.threaded)
        if not self.forked:
            drop_root(self.cfg)  # a forked worker's preloader did, before it imported the app
        elif self.cfg.reload:
            # --reload: the master watches the code and starts a new preloader generation; a
            # reloader here would only restart this worker from the preloader's old code
            self.cfg.set("reload", False)
        super().init_process()

    def init_signals(self) -> None:
        super().init_signals()
        # A model that leaves the stop signals at their default (uvicorn's worker: its server
        # shuts down, then raises the signal again) would end the process by the signal, past
        # stopping_worker_process and gunicorn's worker_exit: leave through SystemExit instead.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            if signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, _leave)
        if self.forked and can_refork(self.model) and self.cfg.refork_after:
            signal.signal(PROMOTE_SIGNAL, self._promote)

    def _promote(self, sig: int, frame: Any) -> None:
        """The master chose this worker to be the next preloader: finish the request in hand, leave the
        loop (the preloader's code, once the loop returns, takes over: preloader/mold.py)."""
        if self.promote_fds is None and self.alive:
            self.promote_fds = [os.dup(s.fileno()) for s in self.sockets]
            self.alive = False

    def load_wsgi(self) -> None:
        try:
            super().load_wsgi()
        except AppImportError:
            raise
        except Exception as exc:
            # gunicorn calls any other error a boot failure (exit 3); it is the
            # app that failed to load: exit 4 like a failed preloader
            self.log.exception("app=%s failed to load in worker pid=%s", self.app_name, os.getpid())
            raise AppImportError(f"{type(exc).__name__}: {exc}") from exc
        attr = "asgi" if "asgi" in vars(self) else "wsgi"  # gunicorn's own asgi worker keeps it apart
        app = getattr(self, attr, None)
        if self.model is not None and not self.forked:  # (a forked worker's preloader checked this very object)
            words = models.setting_words(models.table_name(self.app))
            models.check_pairing(self.model, app, models.app_uri(self.app), words)
        self.plain_app = app
        tally = counting.Tally(self._score, self.notify)
        setattr(self, attr, counting.counted(app, models.interface_of(app), tally))
        if not self.forked:
            # direct spawning: the app registered its callbacks while this worker imported it
            events.fire(events.STARTING_WORKER_PROCESS, False)

    def run(self) -> None:
        if self.spare:
            parking.warm_up(self)
            parking.warm_request_path(self)
            if not parking.park(self):
                return  # discarded while parked, or the master is gone
        try:
            super().run()
        finally:
            if self.promote_fds is None:  # a promoted worker is not stopping: it goes on as the preloader
                try:
                    events.fire(events.STOPPING_WORKER_PROCESS)
                except Exception:
                    self.log.exception("app=%s stopping_worker_process callback failed", self.app_name)


class SyncWorker(Worker, _GunicornSyncWorker):  # type: ignore[misc]
    """gunicorn's sync worker under smart spawning."""

    _named_listeners: dict[Any, accepting.NamedListener] | None = None

    def accept(self, listener: Any) -> None:
        """gunicorn's ``SyncWorker.accept`` without its calls that change nothing (:mod:`.accepting`)."""
        client, addr = listener.accept()
        accepting.make_blocking(client)
        if self._named_listeners is None:
            self._named_listeners = {}
        self.handle(accepting.named(self._named_listeners, listener), client, addr)


class ThreadedWorker(Worker, _GunicornThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker under smart spawning (``--threads`` > 1, or ``gthread`` named).

    Its loop is gunicorn's, with the parent check made at most once per heartbeat window.
    """

    #: until when (monotonic) the last look at the parent covers: see :meth:`is_parent_alive`
    _parent_seen_until: float = -math.inf

    def is_parent_alive(self) -> bool:
        """gunicorn's check (``getppid()``), which its loop makes on every turn (about twice per
        request under load), made at most once per heartbeat window (:mod:`.heartbeat`: a hundredth
        of ``timeout``, at most 0.1 s; every turn with no timeout). A worker whose master died
        stops at most that much later than gunicorn's; an idle loop turns once a second anyway."""
        now = time.monotonic()
        if now < self._parent_seen_until:
            return True
        alive = bool(super().is_parent_alive())
        if alive:  # a parent gone stays gone: looked at again on every call
            self._parent_seen_until = now + self.smart_heartbeat.window
        return alive


_composed: dict[tuple[type, type], type] = {
    (Worker, _GunicornSyncWorker): SyncWorker,
    (Worker, _GunicornThreadWorker): ThreadedWorker,
}
_composing = threading.Lock()


#: The signal by which the master asks a worker to become the next preloader (refork_after): unused by
#: gunicorn's workers, ignored by default, so a worker that does not expect it is not harmed.
PROMOTE_SIGNAL = signal.SIGURG


def can_refork(model: models.Model | None) -> bool:
    """Request models whose loop ends in the process, every accepted connection served, when ``alive``
    turns False: sync, and gthread where gunicorn's drains (27; not 23)."""
    if model is None:
        return False
    return model.concurrency == "sync" or (model.concurrency == "threads" and _compat.gthread_drains())


def _leave(sig: int, frame: Any) -> None:
    raise SystemExit(0)


def compose(mixin: type, base: type) -> type:
    """The class that mixes ``mixin`` (:class:`Worker` or a subclass) into the request model
    ``base``, made once per pair; ``base``'s own ``setup()`` runs then, as gunicorn runs it for ``-k``."""
    with _composing:
        cls = _composed.get((mixin, base))
        if cls is None:
            if hasattr(base, "setup"):
                base.setup()  # tornado's patches tornado.web
            name = f"Smart{base.__name__}" if mixin is Worker else mixin.__name__
            cls = _composed[(mixin, base)] = type(name, (mixin, base), {"__module__": __name__, "__qualname__": name})
        return cls
