"""Per-app pool state: which processes an app has and what it needs next.

Pure bookkeeping, no system calls: the master feeds it what happened with
the monotonic time, and carries out the actions :meth:`AppPool.tick` returns.

Generations, the previous preloader kept through a rollout, and failure
backoff are explained in docs/architecture.md ("Reload: generations").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gunicorn_smartspawn.errors import APP_LOAD_ERROR, WORKER_BOOT_ERROR, describe_status, exit_code
from gunicorn_smartspawn.master import actions as act
from gunicorn_smartspawn.master import spares, timeouts
from gunicorn_smartspawn.master import states as st


@dataclass
class AppPool:
    """One application's preloader(s), workers and spawn requests."""

    name: str
    spawn_method: st.SpawnMethod
    target: int
    idle_timeout: float = 300.0
    start_timeout: float = 90.0
    #: a spawn request unanswered, or a worker without its first heartbeat, after this long is killed
    spawn_timeout: float = 90.0
    #: A single-app server exits with gunicorn's code when its app never came up.
    halt_on_boot_failure: bool = True
    #: workers kept forked ahead and parked (``spare_workers``, smart only): see spares.py
    spare_target: int = 0
    repark_at: float = 0.0  # no new spare before (a spare was just released)

    generation: int = 1
    preloader: st.PreloaderState | None = None
    candidate: st.PreloaderState | None = None
    #: the preloader of the generation being replaced, kept until the new one serves in full
    previous: st.PreloaderState | None = None
    retiring_preloaders: dict[int, st.PreloaderState] = field(default_factory=dict)
    workers: dict[int, st.WorkerState] = field(default_factory=dict)
    pending: dict[int, st.PendingSpawn] = field(default_factory=dict)
    spares: dict[int, st.SpareState] = field(default_factory=dict)
    early_exits: dict[int, int] = field(default_factory=dict)
    reload_requested: bool = False
    ever_ready: bool = False
    failures: int = 0
    retry_at: float = 0.0
    last_error: str | None = None
    halt: act.Halt | None = None
    code: str = ""  # the last loaded code's fingerprint (module files' paths, sizes and mtimes)
    _to_stop: list[st.PreloaderState] = field(default_factory=list, repr=False)  # preloaders to stop, for tick

    # -- what the master reports ----------------------------------------------------

    def preloader_started(self, pid: int, generation: int, now: float) -> None:
        state = st.PreloaderState(pid=pid, generation=generation, started_at=now, last_used=now)
        if generation > self.generation:
            self.candidate = state
            self.reload_requested = False
        else:
            self.preloader = state

    def start_failed(self, what: str, error: str, now: float, generation: int | None = None) -> None:
        """The master could not fork, pair or open (EMFILE...): back off; a HUP is never lost."""
        self.record_failure(f"could not {what}: {error}", now)
        if generation is not None and generation > self.generation:
            self.reload_requested = True

    def preloader_ready(self, pid: int, load_seconds: float, now: float, code: str = "") -> bool:
        """``pid`` loaded the app; True when it is a restart (idle timeout, crash) that found other
        code on disk than the workers run: they are then rolled onto it as a new generation."""
        state = self._preloader(pid)
        if state is None or state.failed:
            return False
        rolled = state is self.preloader and bool(self.code and code and code != self.code and self.workers)
        if rolled:  # what it was asked for already is of the new code too
            self.generation = state.generation = self.generation + 1
            for request in (p for p in self.pending.values() if p.preloader_pid == pid):
                request.generation = self.generation
        self.code = code or self.code
        state.ready_at = now
        state.load_seconds = load_seconds
        state.last_used = now
        self.failures = 0
        self.retry_at = 0.0
        self.last_error = None
        # (not ever_ready: an app counts as up once a worker serves, so that a
        # single app whose workers cannot boot still halts as gunicorn does)
        if state is self.candidate:
            if self.previous is not None:
                self._retire_preloader(self.previous, f"replaced by generation {state.generation}")
            self.previous = self.preloader if self.preloader is not None and self.preloader.ready else None
            if self.preloader is not None and self.previous is None:
                self._retire_preloader(self.preloader, f"replaced by generation {state.generation}")
            self.preloader, self.candidate = state, None
            self.generation = state.generation
            # spawn requests still queued at the old preloader serve the old generation
        return rolled

    def preloader_misbehaved(self, pid: int, reason: str, now: float) -> None:
        """The master caught preloader ``pid`` breaking the protocol and kills it: a failure."""
        self.record_failure(f"preloader pid={pid} {reason}: killed", now)
        state = self._preloader(pid)
        if state is not None:
            self._detach(state)
            self._retire_preloader(state, reason, kill=True)

    def preloader_failed(self, pid: int, error: str, now: float) -> list[int]:
        """The app failed to load in ``pid``; the ages of the spawn requests that failed with it."""
        state = self._preloader(pid)
        if state is None:
            return []
        state.failed = True
        self.record_failure(f"could not load (preloader pid={pid}): {error}", now, APP_LOAD_ERROR)
        return self._drop_failed_preloader(state)

    def preloader_exited(self, pid: int, status: int, now: float) -> list[int] | None:
        """Forget a reaped preloader; the ages of spawn requests lost with it, or None if not ours."""
        state = self._preloader(pid) or self.retiring_preloaders.get(pid)
        if state is None:
            return None
        self.retiring_preloaders.pop(pid, None)
        self._detach(state)
        if not state.ready and not state.failed and state.stop_reason is None:
            self.record_failure(
                f"preloader pid={pid} ended by {describe_status(status)} while loading the app",
                now,
                APP_LOAD_ERROR,
            )
        elif state.ready and state.stop_reason is None and status != 0:
            # a crash of a serving preloader: its next start must not loop hot
            self.record_failure(f"preloader pid={pid} ended by {describe_status(status)}", now)
        lost = [age for age, p in self.pending.items() if p.preloader_pid == pid]
        for age in lost:
            del self.pending[age]
        self._forget_stale_exits()
        return lost

    def spawn_requested(self, age: int, preloader_pid: int, now: float, spare: bool = False) -> None:
        state = self._preloader(preloader_pid)
        generation = state.generation if state else self.generation
        self.pending[age] = st.PendingSpawn(age, generation, preloader_pid, now, spare)
        if state is not None:
            state.last_used = now

    def worker_spawned(self, age: int, pid: int, now: float) -> int | None:
        """A preloader reports a worker. Returns its exit status if it was reaped first."""
        request = self.pending.pop(age, None)
        generation = request.generation if request else self.generation
        if request is not None and request.spare:
            spares.spawned(self, request, pid, now)
        else:
            self.workers[pid] = st.WorkerState(pid, age, generation, forked=True, started_at=now)
        status = self.early_exits.pop(pid, None)
        if status is not None:
            self.worker_exited(pid, status, now)
        self._forget_stale_exits()
        return status

    def spawn_failed(self, age: int, error: str, now: float) -> None:
        self.pending.pop(age, None)
        self._forget_stale_exits()
        self.record_failure(f"spawn of worker age={age} failed: {error}", now)

    def worker_started(self, pid: int, age: int, now: float) -> None:
        """A direct worker, forked by the master."""
        self.workers[pid] = st.WorkerState(pid, age, self.generation, forked=False, started_at=now)

    def worker_ready(self, pid: int) -> None:
        worker = self.workers.get(pid)
        if worker is not None and not worker.ready:
            worker.ready = True
            self.ever_ready = True
            if worker.generation == self.generation:
                self.failures = 0
                self.retry_at = 0.0

    def worker_exited(self, pid: int, status: int, now: float) -> st.WorkerState | None:
        if pid in self.spares:
            spares.exited(self, pid, status, now)
            return None
        worker = self.workers.pop(pid, None)
        if worker is None:
            return None
        if worker.ready or worker.retiring:
            return worker
        # any death before the first heartbeat is a boot failure, whatever the status
        code = exit_code(status)
        what = "could not load the app" if code == APP_LOAD_ERROR else "worker died before serving"
        halt_code = code if code in (WORKER_BOOT_ERROR, APP_LOAD_ERROR) else None
        self.record_failure(f"{what} (worker pid={pid}, {describe_status(status)})", now, halt_code)
        return worker

    def early_exit(self, pid: int, status: int) -> None:
        """A child nobody claimed was reaped: maybe a worker whose ``WorkerSpawned`` is on its way."""
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
        timeouts.loading(self, now)
        if self.halt is not None:
            return [*self._stop_actions(), self.halt]
        actions: list[act.Action] = timeouts.spawns(self, now)
        if self.halt is not None:
            return [*actions, *self._stop_actions(), self.halt]
        may_start = now >= self.retry_at
        starting = self.reload_requested and self.candidate is None and may_start
        if starting:
            actions.append(act.StartPreloader(self.generation + 1))
        actions.extend(spares.upkeep(self, now))
        actions.extend(self._fill_or_trim(may_start, now))  # (while reload_requested, it starts no other preloader)
        self.reload_requested = self.reload_requested and not starting
        actions.extend(self._backfill_previous(may_start))
        actions.extend(spares.refill(self, now))
        actions.extend(self._rotate_old_generations())
        self._idle_out_preloader(now)
        actions.extend(self._stop_actions())
        return actions

    def _fill_or_trim(self, may_start: bool, now: float) -> list[act.Action]:
        """Spawn up to the target in the current generation (parked spares first), or retire the surplus."""
        current = [w for w in self.workers.values() if w.generation == self.generation and not w.retiring]
        in_flight = [p for p in self.pending.values() if p.generation == self.generation and not p.spare]
        need = min(self.target - len(current) - len(in_flight), st.SPAWN_BURST)
        actions: list[act.Action] = spares.release(self, need, now) if need > 0 else []
        need -= len(actions)
        if need > 0 and may_start:
            if self.spawn_method == "direct":
                return [act.SpawnDirect(need)]
            if self.preloader is None:  # none, or only the reload's candidate, which will serve
                waiting = self.candidate is not None or self.reload_requested
                return actions if waiting else [*actions, act.StartPreloader(self.generation)]
            return [*actions, act.SpawnFromPreloader(self.preloader.pid, need)]
        if need < 0:
            for worker in sorted(current, key=lambda w: w.age)[: min(-need, len(current))]:
                worker.retiring = True
                actions.append(act.RetireWorker(worker.pid, "above the worker count"))
        return actions

    def _rotate_old_generations(self) -> list[act.Action]:
        """Retire old-generation workers one for one as current ones become ready."""
        return [self.retire(w.pid, f"generation {w.generation} replaced") for w in st.old_to_retire(self)]

    def retire(self, pid: int, reason: str) -> act.RetireWorker:
        """Stop worker ``pid`` gracefully (the dynamic pool chose it): it no longer counts."""
        self.workers[pid].retiring = True
        return act.RetireWorker(pid, reason)

    def _backfill_previous(self, may_start: bool) -> list[act.Action]:
        """While the new generation is not serving in full, replace old workers from the old preloader."""
        previous = self.previous
        if previous is None or not previous.ready or previous.stop_reason is not None:
            return []
        ready_current = sum(1 for w in self.workers.values() if w.generation == self.generation and w.ready and not w.retiring)
        if ready_current >= self.target:
            self._retire_preloader(previous, f"generation {self.generation} serves in full")
            self.previous = None
            return []
        old = sum(1 for w in self.workers.values() if w.generation == previous.generation and not w.retiring)
        in_flight = sum(1 for p in self.pending.values() if p.preloader_pid == previous.pid)
        need = self.target - ready_current - old - in_flight
        if need > 0 and may_start:
            return [act.SpawnFromPreloader(previous.pid, need)]
        return []

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
        return [s.pid for s in (self.preloader, self.candidate, self.previous, *self.retiring_preloaders.values()) if s]

    def is_stopping(self, pid: int) -> bool:
        """Was the master told to stop preloader ``pid``?"""
        return getattr(self.retiring_preloaders.get(pid), "stop_reason", None) is not None

    def stop_all_preloaders(self, reason: str) -> list[act.StopPreloader]:
        """Retire every preloader at once (the app is removed, or the master stops)."""
        for state in (self.preloader, self.candidate, self.previous):
            if state is not None:
                self._retire_preloader(state, reason)
        self.preloader = self.candidate = self.previous = None
        self.reload_requested = False
        self.spare_target = 0  # the next tick discards the spares
        return [a for a in self._stop_actions() if isinstance(a, act.StopPreloader)]

    # -- internals ----------------------------------------------------------------------------

    def _preloader(self, pid: int) -> st.PreloaderState | None:
        return next((s for s in (self.preloader, self.candidate, self.previous) if s is not None and s.pid == pid), None)

    def _retire_preloader(self, state: st.PreloaderState, reason: str, kill: bool = False) -> None:
        state.stop_reason = reason
        state.kill = kill
        self._to_stop.append(state)
        self.retiring_preloaders[state.pid] = state

    def _drop_failed_preloader(self, state: st.PreloaderState) -> list[int]:
        # a failed preloader exits by itself; keep it known until it is reaped
        self._detach(state)
        self.retiring_preloaders[state.pid] = state
        lost = [a for a, p in self.pending.items() if p.preloader_pid == state.pid]
        for age in lost:
            del self.pending[age]
        self._forget_stale_exits()
        return lost

    def _detach(self, state: st.PreloaderState) -> None:
        """``state`` is no longer the current, candidate or previous preloader."""
        for attr in ("preloader", "candidate", "previous"):
            if getattr(self, attr) is state:
                setattr(self, attr, None)

    def _forget_stale_exits(self) -> None:
        # statuses kept for a WorkerSpawned that can no longer arrive: a later
        # process with a reused pid must not inherit them
        if not self.pending:
            self.early_exits.clear()

    def record_failure(self, error: str, now: float, boot_code: int | None = None) -> None:
        """Count a failure and back off; ``boot_code``: what a one-app server that never came up exits with."""
        self.failures += 1
        self.last_error = error
        self.retry_at = now + st.backoff_delay(self.failures)
        if boot_code is not None and self.halt_on_boot_failure and not self.ever_ready and self.halt is None:
            self.halt = act.Halt(f"app {self.name}: {error}", boot_code)

    def _stop_actions(self) -> list[act.Action]:
        actions: list[act.Action] = [act.StopPreloader(s.pid, s.stop_reason or "", s.kill) for s in self._to_stop]
        self._to_stop.clear()
        return actions
