"""Per-app pool state: which processes an app has and what it needs next.

Pure bookkeeping, no system calls: the master feeds it what happened
(``preloader_started``, ``worker_spawned``, ``worker_exited``, ...) with the
current monotonic time, and asks :meth:`AppPool.tick` for the next actions,
which it then carries out. Unit tests drive it with messages alone.

Generations: every reload (HUP) starts a new generation. A smart app keeps
serving from generation N while the preloader of N+1 imports the new code;
only when that preloader is ready does N+1 become current. Workers of an
older generation are retired one for one as workers of the current
generation become ready (their first heartbeat), so capacity never drops and
a reload whose code fails to load retires nobody.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from gunicorn_smartspawn.errors import APP_LOAD_ERROR, WORKER_BOOT_ERROR, describe_status, exit_code
from gunicorn_smartspawn.master import actions as act

SpawnMethod = Literal["smart", "direct"]

BACKOFF_FIRST: Final = 1.0
BACKOFF_MAX: Final = 60.0


def backoff_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failures in a row: 1, 2, 4, ... capped at 60."""
    if failures <= 0:
        return 0.0
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1)))


# -- state ------------------------------------------------------------------------------


@dataclass
class PreloaderState:
    pid: int
    generation: int
    started_at: float
    last_used: float
    ready_at: float | None = None
    load_seconds: float | None = None
    stop_reason: str | None = None  # set once the master was told to stop it
    failed: bool = False

    @property
    def ready(self) -> bool:
        return self.ready_at is not None and not self.failed


@dataclass
class WorkerState:
    pid: int
    age: int
    generation: int
    forked: bool
    started_at: float
    ready: bool = False
    retiring: bool = False


@dataclass
class PendingSpawn:
    age: int
    generation: int
    preloader_pid: int
    requested_at: float


@dataclass
class AppPool:
    """One application's preloader(s), workers and spawn requests."""

    name: str
    spawn_method: SpawnMethod
    target: int
    idle_timeout: float = 300.0
    start_timeout: float = 90.0
    #: A single-app server exits with gunicorn's code when its app never came up.
    halt_on_boot_failure: bool = True

    generation: int = 1
    preloader: PreloaderState | None = None
    candidate: PreloaderState | None = None
    retiring_preloaders: dict[int, PreloaderState] = field(default_factory=dict)
    workers: dict[int, WorkerState] = field(default_factory=dict)
    pending: dict[int, PendingSpawn] = field(default_factory=dict)
    early_exits: dict[int, int] = field(default_factory=dict)
    reload_requested: bool = False
    ever_ready: bool = False
    failures: int = 0
    retry_at: float = 0.0
    last_error: str | None = None
    halt: act.Halt | None = None

    # -- what the master reports ----------------------------------------------------

    def preloader_started(self, pid: int, generation: int, now: float) -> None:
        state = PreloaderState(pid=pid, generation=generation, started_at=now, last_used=now)
        if generation > self.generation:
            self.candidate = state
            self.reload_requested = False
        else:
            self.preloader = state

    def preloader_ready(self, pid: int, load_seconds: float, now: float) -> None:
        state = self._preloader(pid)
        if state is None or state.failed:
            return
        state.ready_at = now
        state.load_seconds = load_seconds
        state.last_used = now
        self.failures = 0
        self.retry_at = 0.0
        self.last_error = None
        # (not ever_ready: an app counts as up once a worker serves, so that a
        # single app whose workers cannot boot still halts as gunicorn does)
        if state is self.candidate:
            old = self.preloader
            if old is not None:
                self._retire_preloader(old, f"replaced by generation {state.generation}")
            self.preloader, self.candidate = state, None
            self.generation = state.generation
            # spawn requests still queued at the old preloader serve the old generation

    def preloader_failed(self, pid: int, error: str, now: float) -> list[int]:
        """The app failed to load in ``pid``. Returns the ages of the spawn
        requests that failed with it."""
        state = self._preloader(pid)
        if state is None:
            return []
        state.failed = True
        self._record_failure(f"could not load (preloader pid={pid}): {error}", now, APP_LOAD_ERROR)
        return self._drop_failed_preloader(state)

    def preloader_exited(self, pid: int, status: int, now: float) -> list[int] | None:
        """Forget a reaped preloader. Returns the ages of spawn requests lost with
        it (empty list), or None when ``pid`` is not a preloader of this app."""
        state = self._preloader(pid) or self.retiring_preloaders.get(pid)
        if state is None:
            return None
        self.retiring_preloaders.pop(pid, None)
        if state is self.preloader:
            self.preloader = None
        if state is self.candidate:
            self.candidate = None
        if not state.ready and not state.failed and state.stop_reason is None:
            self._record_failure(
                f"preloader pid={pid} ended by {describe_status(status)} while loading the app",
                now,
                APP_LOAD_ERROR,
            )
        lost = [age for age, p in self.pending.items() if p.preloader_pid == pid]
        for age in lost:
            del self.pending[age]
        self._forget_stale_exits()
        return lost

    def spawn_requested(self, age: int, preloader_pid: int, now: float) -> None:
        state = self._preloader(preloader_pid)
        generation = state.generation if state else self.generation
        self.pending[age] = PendingSpawn(age, generation, preloader_pid, now)
        if state is not None:
            state.last_used = now

    def worker_spawned(self, age: int, pid: int, now: float) -> int | None:
        """A preloader reports a worker. Returns its exit status if it was reaped first."""
        request = self.pending.pop(age, None)
        generation = request.generation if request else self.generation
        self.workers[pid] = WorkerState(pid, age, generation, forked=True, started_at=now)
        status = self.early_exits.pop(pid, None)
        if status is not None:
            self.worker_exited(pid, status, now)
        self._forget_stale_exits()
        return status

    def spawn_failed(self, age: int, error: str, now: float) -> None:
        self.pending.pop(age, None)
        self._forget_stale_exits()
        self._record_failure(f"spawn of worker age={age} failed: {error}", now)

    def worker_started(self, pid: int, age: int, now: float) -> None:
        """A direct worker, forked by the master."""
        self.workers[pid] = WorkerState(pid, age, self.generation, forked=False, started_at=now)

    def worker_ready(self, pid: int) -> None:
        worker = self.workers.get(pid)
        if worker is not None and not worker.ready:
            worker.ready = True
            self.ever_ready = True
            if worker.generation == self.generation:
                self.failures = 0
                self.retry_at = 0.0

    def worker_exited(self, pid: int, status: int, now: float) -> WorkerState | None:
        worker = self.workers.pop(pid, None)
        if worker is None:
            return None
        code = exit_code(status)
        if not worker.ready and not worker.retiring and code in (WORKER_BOOT_ERROR, APP_LOAD_ERROR):
            what = "could not load" if code == APP_LOAD_ERROR else "worker failed to boot"
            self._record_failure(f"{what} (worker pid={pid}, {describe_status(status)}; see its error above)", now, code)
        return worker

    def early_exit(self, pid: int, status: int) -> None:
        """A child nobody claimed was reaped: it may be a worker whose
        ``WorkerSpawned`` is still on its way."""
        if self.pending:
            self.early_exits[pid] = status

    def request_reload(self, now: float) -> None:
        self.failures = 0
        self.retry_at = 0.0
        if self.spawn_method == "direct":
            self.generation += 1
        else:
            if self.candidate is not None:
                self._retire_preloader(self.candidate, "superseded by a newer reload")
                self.candidate = None
            self.reload_requested = True

    # -- what the master should do next -------------------------------------------------

    def tick(self, now: float) -> list[act.Action]:
        """The actions due now; the state assumes the master carries them all out."""
        if self.halt is not None:
            return [self.halt]
        self._time_out_loading(now)
        if self.halt is not None:
            return [*self._stop_actions(), self.halt]
        may_start = now >= self.retry_at
        actions: list[act.Action] = []
        if self.reload_requested and self.candidate is None and may_start:
            self.reload_requested = False
            actions.append(act.StartPreloader(self.generation + 1))
        actions.extend(self._fill_or_trim(may_start))
        actions.extend(self._rotate_old_generations())
        self._idle_out_preloader(now)
        actions.extend(self._stop_actions())
        return actions

    def _time_out_loading(self, now: float) -> None:
        """Kill a preloader still loading after ``start_timeout`` (Passenger's start_timeout)."""
        for loading in (self.preloader, self.candidate):
            if (
                loading is None
                or loading.ready
                or loading.failed
                or self.start_timeout <= 0
                or now - loading.started_at <= self.start_timeout
            ):
                continue
            loading.failed = True
            self._record_failure(
                f"preloader pid={loading.pid} did not load the app within {self.start_timeout:g}s "
                "(preloader_start_timeout): killed",
                now,
                APP_LOAD_ERROR,
            )
            # detached now; its spawn requests stay pending until it is
            # reaped, so that preloader_exited hands them back to the master
            if loading is self.preloader:
                self.preloader = None
            else:
                self.candidate = None
            self._retire_preloader(loading, "start timeout")
            if self.halt is not None:
                return

    def _fill_or_trim(self, may_start: bool) -> list[act.Action]:
        """Spawn up to the target in the current generation, or retire the surplus."""
        current = [w for w in self.workers.values() if w.generation == self.generation and not w.retiring]
        in_flight = [p for p in self.pending.values() if p.generation == self.generation]
        need = self.target - len(current) - len(in_flight)
        if need > 0 and may_start:
            if self.spawn_method == "direct":
                return [act.SpawnDirect(need)]
            if self.preloader is None:
                return [act.StartPreloader(self.generation)]
            return [act.SpawnFromPreloader(self.preloader.pid, need)]
        actions: list[act.Action] = []
        if need < 0:
            for worker in sorted(current, key=lambda w: w.age)[: min(-need, len(current))]:
                worker.retiring = True
                actions.append(act.RetireWorker(worker.pid, "above the worker count"))
        return actions

    def _rotate_old_generations(self) -> list[act.Action]:
        """Retire old-generation workers one for one as current ones become ready."""
        ready_current = sum(1 for w in self.workers.values() if w.generation == self.generation and not w.retiring and w.ready)
        old = sorted(
            (w for w in self.workers.values() if w.generation < self.generation and not w.retiring),
            key=lambda w: w.age,
        )
        actions: list[act.Action] = []
        for worker in old[: max(0, len(old) - max(0, self.target - ready_current))]:
            worker.retiring = True
            actions.append(act.RetireWorker(worker.pid, f"generation {worker.generation} replaced"))
        return actions

    def _idle_out_preloader(self, now: float) -> None:
        preloader = self.preloader
        if (
            preloader is not None
            and preloader.ready
            and self.idle_timeout > 0
            and not any(p.preloader_pid == preloader.pid for p in self.pending.values())
            and now - preloader.last_used >= self.idle_timeout
        ):
            self._retire_preloader(preloader, f"idle for {now - preloader.last_used:.0f}s")
            self.preloader = None

    # -- queries ----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self.halt is not None:
            return "failed"
        if self.last_error is not None and self.failures:
            return "backing off"
        if self.ever_ready or (self.preloader is not None and self.preloader.ready):
            return "running"
        return "starting"

    def preloader_pids(self) -> list[int]:
        states = [self.preloader, self.candidate, *self.retiring_preloaders.values()]
        return [s.pid for s in states if s is not None]

    def is_stopping(self, pid: int) -> bool:
        """Was the master told to stop preloader ``pid``?"""
        state = self.retiring_preloaders.get(pid)
        return state is not None and state.stop_reason is not None

    def stop_all_preloaders(self, reason: str) -> list[act.StopPreloader]:
        """Retire every preloader at once (the app is removed, or the master stops)."""
        for state in (self.preloader, self.candidate):
            if state is not None:
                self._retire_preloader(state, reason)
        self.preloader = self.candidate = None
        self.reload_requested = False
        return [a for a in self._stop_actions() if isinstance(a, act.StopPreloader)]

    # -- internals ----------------------------------------------------------------------------

    def _preloader(self, pid: int) -> PreloaderState | None:
        for state in (self.preloader, self.candidate):
            if state is not None and state.pid == pid:
                return state
        return None

    def _retire_preloader(self, state: PreloaderState, reason: str) -> None:
        state.stop_reason = reason
        self._to_stop.append(state)
        self.retiring_preloaders[state.pid] = state

    def _drop_failed_preloader(self, state: PreloaderState) -> list[int]:
        # a failed preloader exits by itself; keep it known until it is reaped
        if state is self.preloader:
            self.preloader = None
        if state is self.candidate:
            self.candidate = None
        self.retiring_preloaders[state.pid] = state
        lost = [a for a, p in self.pending.items() if p.preloader_pid == state.pid]
        for age in lost:
            del self.pending[age]
        self._forget_stale_exits()
        return lost

    def _forget_stale_exits(self) -> None:
        # statuses kept for a WorkerSpawned that can no longer arrive: a later
        # process with a reused pid must not inherit them
        if not self.pending:
            self.early_exits.clear()

    def _record_failure(self, error: str, now: float, boot_code: int | None = None) -> None:
        """Count a failure and back off. ``boot_code``: the exit status a
        single-app server halts with if the app never came up."""
        self.failures += 1
        self.last_error = error
        self.retry_at = now + backoff_delay(self.failures)
        if boot_code is not None and self.halt_on_boot_failure and not self.ever_ready and self.halt is None:
            self.halt = act.Halt(f"app {self.name}: {error}", boot_code)

    def _stop_actions(self) -> list[act.Action]:
        actions: list[act.Action] = [act.StopPreloader(s.pid, s.stop_reason or "") for s in self._to_stop]
        self._to_stop.clear()
        return actions

    def __post_init__(self) -> None:
        self._to_stop: list[PreloaderState] = []
