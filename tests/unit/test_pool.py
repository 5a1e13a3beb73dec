"""AppPool driven by its event methods and ``tick(now)``, as the master drives it.

``Master`` below plays the arbiter's part without any process: it carries out
every action ``tick`` returns exactly as ``SmartArbiter._perform`` does (a new
pid for each preloader or direct worker, one ``spawn_requested`` per worker of
a ``SpawnFromPreloader``, a second ``tick`` right after starting a preloader of
the current generation) and reports back. Everything else that happens to the
processes (a preloader imports the app, a worker gets its first heartbeat, a
process dies) is reported by the test itself through the helper methods.
"""

from __future__ import annotations

import signal

import pytest

from gunicorn_smartspawn.errors import APP_LOAD_ERROR, PRELOADER_LOAD_ERROR, WORKER_BOOT_ERROR
from gunicorn_smartspawn.master.actions import (
    KillWorker,
    Halt,
    RetireWorker,
    SpawnDirect,
    SpawnFromPreloader,
    StartPreloader,
    StopPreloader,
)
from gunicorn_smartspawn.master.pool import AppPool
from gunicorn_smartspawn.master.states import BACKOFF_MAX, backoff_delay


def exited(code: int) -> int:
    """A ``waitpid`` status for a process that exited with ``code``."""
    return code << 8


def killed(sig: int) -> int:
    """A ``waitpid`` status for a process ended by signal ``sig``."""
    return sig


class Master:
    """The arbiter's side of the conversation, without processes."""

    def __init__(self, pool: AppPool, now: float = 0.0) -> None:
        self.pool = pool
        self.now = now
        self._next_pid = 1000
        self.age = 0
        self.preloader_generation: dict[int, int] = {}
        self.requested: dict[int, int] = {}  # age -> preloader pid, not yet reported spawned
        self.performed: list[object] = []

    # -- the master's loop ---------------------------------------------------------------

    def tick(self, now: float | None = None) -> list[object]:
        """One ``manage_workers`` pass: every action carried out, flattened in order."""
        if now is not None:
            self.now = now
        done: list[object] = []
        for action in self.pool.tick(self.now):
            self._perform(action, done)
        return done

    def _perform(self, action: object, done: list[object]) -> None:
        done.append(action)
        self.performed.append(action)
        pool = self.pool
        if isinstance(action, StartPreloader):
            pid = self._pid()
            self.preloader_generation[pid] = action.generation
            pool.preloader_started(pid, action.generation, self.now)
            if action.generation == pool.generation:
                # SmartArbiter._perform ticks again: requests queue while the app loads
                for again in pool.tick(self.now):
                    self._perform(again, done)
        elif isinstance(action, SpawnFromPreloader):
            for _ in range(action.count):
                self.age += 1
                self.requested[self.age] = action.preloader_pid
                pool.spawn_requested(self.age, action.preloader_pid, self.now, action.spare)
        elif isinstance(action, SpawnDirect):
            for _ in range(action.count):
                self.age += 1
                pool.worker_started(self._pid(), self.age, self.now)
        # StopPreloader, RetireWorker, Halt: signals or a HaltServer; the
        # consequences (exits) are reported by the test when it wants them

    def _pid(self) -> int:
        self._next_pid += 1
        return self._next_pid

    # -- what happens to the processes ------------------------------------------------------

    def preloader_ready(self, pid: int, load_seconds: float = 0.5) -> None:
        self.pool.preloader_ready(pid, load_seconds, self.now)

    def fork_requested(self, preloader_pid: int | None = None, count: int | None = None) -> list[int]:
        """The preloader forks the requested workers (oldest request first): their pids."""
        ages = sorted(a for a, p in self.requested.items() if preloader_pid in (None, p))
        pids = []
        for age in ages[:count]:
            del self.requested[age]
            pid = self._pid()
            assert self.pool.worker_spawned(age, pid, self.now) is None
            pids.append(pid)
        return pids

    def preloader_failed(self, pid: int, error: str = "ImportError: boom") -> None:
        self.pool.preloader_failed(pid, error, self.now)
        # a preloader that failed to load forks nothing
        for age in [a for a, p in self.requested.items() if p == pid]:
            del self.requested[age]

    def ready(self, *pids: int) -> None:
        for pid in pids:
            self.pool.worker_ready(pid)

    def worker_exit(self, pid: int, status: int = 0) -> None:
        assert self.pool.worker_exited(pid, status, self.now) is not None

    def preloader_exit(self, pid: int, status: int = 0) -> list[int] | None:
        lost = self.pool.preloader_exited(pid, status, self.now)
        for age in lost or ():
            self.requested.pop(age, None)
        return lost

    # -- shortcuts ------------------------------------------------------------------------------

    def preloader_pid(self) -> int:
        assert self.pool.preloader is not None
        return self.pool.preloader.pid

    def worker_pids(self, generation: int | None = None) -> list[int]:
        """Pids of the pool's workers, oldest (lowest age) first."""
        workers = sorted(self.pool.workers.values(), key=lambda w: w.age)
        return [w.pid for w in workers if generation in (None, w.generation)]


def smart_pool(target: int = 2, **kwargs: object) -> AppPool:
    return AppPool(name="shop", spawn_method="smart", target=target, **kwargs)  # type: ignore[arg-type]


def direct_pool(target: int = 2, **kwargs: object) -> AppPool:
    return AppPool(name="blog", spawn_method="direct", target=target, **kwargs)  # type: ignore[arg-type]


def booted_smart(target: int = 2, **kwargs: object) -> tuple[Master, int, list[int]]:
    """A smart pool at t=0..1 whose preloader is ready and whose workers all serve."""
    m = Master(smart_pool(target, **kwargs))
    m.tick(0.0)
    preloader = m.preloader_pid()
    m.now = 1.0
    m.preloader_ready(preloader)
    workers = m.fork_requested()
    m.ready(*workers)
    assert m.tick() == []
    return m, preloader, workers


def booted_direct(target: int = 2, **kwargs: object) -> tuple[Master, list[int]]:
    m = Master(direct_pool(target, **kwargs))
    m.tick(0.0)
    workers = m.worker_pids()
    m.now = 1.0
    m.ready(*workers)
    assert m.tick() == []
    return m, workers


def kinds(actions: list[object]) -> list[type]:
    return [type(a) for a in actions]


# -- backoff ------------------------------------------------------------------------------------


def test_backoff_delay_doubles_from_one_second_and_caps_at_sixty() -> None:
    assert [backoff_delay(n) for n in range(0, 10)] == [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff_delay(-3) == 0
    assert backoff_delay(1000) == BACKOFF_MAX == 60


# -- boot -----------------------------------------------------------------------------------------


def test_smart_boot_starts_one_preloader_and_queues_the_spawns_at_once() -> None:
    m = Master(smart_pool(target=3))
    actions = m.tick(0.0)
    preloader = m.preloader_pid()
    assert actions == [StartPreloader(1), SpawnFromPreloader(preloader, 3)]
    assert m.pool.generation == 1
    assert sorted(m.pool.pending) == [1, 2, 3]
    assert all(p.preloader_pid == preloader and p.generation == 1 for p in m.pool.pending.values())
    assert m.pool.state == "starting"
    # nothing is started or requested twice, however often the master looks
    assert m.tick(0.1) == []
    assert m.tick(5.0) == []
    assert m.pool.preloader_pids() == [preloader]


def test_smart_boot_completes_without_further_actions() -> None:
    m = Master(smart_pool(target=3))
    m.tick(0.0)
    preloader = m.preloader_pid()
    m.now = 2.0
    m.preloader_ready(preloader, load_seconds=2.0)
    assert m.pool.preloader is not None and m.pool.preloader.ready
    assert m.pool.preloader.load_seconds == 2.0
    assert m.tick() == []  # the three requests are still in flight
    workers = m.fork_requested(count=2)
    assert m.tick() == []
    workers += m.fork_requested()
    assert len(workers) == 3 and m.pool.pending == {}
    assert all(m.pool.workers[pid].forked for pid in workers)
    assert m.tick() == []
    m.ready(*workers)
    assert m.tick() == []
    assert m.pool.state == "running"


def test_smart_pool_without_the_masters_second_tick_spawns_on_the_next_one() -> None:
    pool = smart_pool(target=2)
    assert pool.tick(0.0) == [StartPreloader(1)]
    pool.preloader_started(77, 1, 0.0)
    assert pool.tick(0.0) == [SpawnFromPreloader(77, 2)]


def test_direct_boot_spawns_every_worker_from_the_master_without_a_preloader() -> None:
    m = Master(direct_pool(target=3))
    assert m.tick(0.0) == [SpawnDirect(3)]
    assert len(m.pool.workers) == 3
    assert all(not w.forked and w.generation == 1 for w in m.pool.workers.values())
    assert m.pool.preloader is None and m.pool.preloader_pids() == []
    assert m.tick(0.5) == []
    m.ready(*m.worker_pids())
    assert m.tick(1.0) == []
    assert m.pool.state == "running"
    assert not any(isinstance(a, (StartPreloader, StopPreloader)) for a in m.performed)


# -- TTIN / TTOU --------------------------------------------------------------------------------


def test_ttin_spawns_only_the_missing_workers() -> None:
    m, preloader, _ = booted_smart(target=2)
    m.pool.target = 4
    assert m.tick(5.0) == [SpawnFromPreloader(preloader, 2)]
    assert m.tick(5.1) == []
    m.fork_requested(count=1)
    assert m.tick(5.2) == []
    assert len(m.pool.workers) == 3 and len(m.pool.pending) == 1


def test_ttin_direct() -> None:
    m, _ = booted_direct(target=1)
    m.pool.target = 3
    assert m.tick(5.0) == [SpawnDirect(2)]
    assert len(m.pool.workers) == 3
    assert m.tick(5.1) == []


@pytest.mark.parametrize("method", ["smart", "direct"])
def test_ttou_retires_the_oldest_surplus_workers_once(method: str) -> None:
    if method == "smart":
        m, _, workers = booted_smart(target=4)
    else:
        m, workers = booted_direct(target=4)
    assert workers == m.worker_pids()  # oldest first
    m.pool.target = 2
    actions = m.tick(5.0)
    assert [a.pid for a in actions if isinstance(a, RetireWorker)] == workers[:2]
    assert kinds(actions) == [RetireWorker, RetireWorker]
    assert m.tick(5.1) == []  # not asked twice while they shut down
    m.worker_exit(workers[0], killed(signal.SIGTERM))
    m.worker_exit(workers[1], exited(0))
    assert m.tick(6.0) == []
    assert m.worker_pids() == workers[2:]
    assert m.pool.failures == 0


def test_ttou_then_ttin_before_the_retired_worker_exits_spawns_a_replacement() -> None:
    m, preloader, workers = booted_smart(target=3)
    m.pool.target = 2
    assert m.tick(5.0) == [RetireWorker(workers[0], "above the worker count")]
    m.pool.target = 3
    assert m.tick(5.1) == [SpawnFromPreloader(preloader, 1)]
    assert m.tick(5.2) == []


def test_ttou_while_spawns_are_in_flight_retires_once_they_arrive() -> None:
    m = Master(smart_pool(target=3))
    m.tick(0.0)
    preloader = m.preloader_pid()
    m.preloader_ready(preloader)
    m.pool.target = 1
    assert m.tick(1.0) == []  # nothing to retire yet, nothing spawned extra
    workers = m.fork_requested()
    actions = m.tick(2.0)
    assert actions == [RetireWorker(workers[0], "above the worker count"), RetireWorker(workers[1], "above the worker count")]
    assert m.tick(2.1) == []


# -- worker death ---------------------------------------------------------------------------------


def test_smart_worker_death_is_replaced_from_the_preloader() -> None:
    m, preloader, workers = booted_smart(target=2)
    m.now = 10.0
    m.worker_exit(workers[0], killed(signal.SIGKILL))
    assert workers[0] not in m.pool.workers
    assert m.tick() == [SpawnFromPreloader(preloader, 1)]
    assert m.tick() == []
    (new,) = m.fork_requested()
    assert m.pool.workers[new].generation == 1
    assert m.pool.failures == 0


def test_direct_worker_death_is_replaced_by_the_master() -> None:
    m, workers = booted_direct(target=2)
    m.now = 10.0
    m.worker_exit(workers[1], exited(1))
    assert m.tick() == [SpawnDirect(1)]
    assert m.tick() == []
    assert len(m.pool.workers) == 2


def test_unknown_worker_reports_are_ignored() -> None:
    m, _, workers = booted_smart(target=1)
    m.pool.worker_ready(424242)
    assert m.pool.worker_exited(424242, 0, 5.0) is None
    assert m.pool.preloader_exited(424242, 0, 5.0) is None
    assert m.worker_pids() == workers
    assert m.tick(5.0) == []


# -- preloader failure at boot -----------------------------------------------------------------


def test_preloader_failure_at_boot_halts_with_app_load_error() -> None:
    m = Master(smart_pool(target=2))
    m.tick(0.0)
    preloader = m.preloader_pid()
    m.now = 0.5
    m.pool.preloader_failed(preloader, "ImportError: No module named 'shop'", m.now)
    assert m.pool.pending == {}  # the requests died with it
    actions = m.tick()
    assert kinds(actions) == [Halt]
    (halt,) = actions
    assert isinstance(halt, Halt)
    assert halt.exit_status == APP_LOAD_ERROR == 4
    assert "shop" in halt.reason and "No module named 'shop'" in halt.reason
    assert m.tick(100.0) == [halt]  # and nothing else, ever
    assert m.pool.state == "failed"


def test_preloader_dying_while_loading_at_boot_halts_too() -> None:
    m = Master(smart_pool(target=2))
    m.tick(0.0)
    preloader = m.preloader_pid()
    assert m.preloader_exit(preloader, killed(signal.SIGSEGV)) == [1, 2]
    (halt,) = m.tick(0.2)
    assert isinstance(halt, Halt) and halt.exit_status == APP_LOAD_ERROR
    assert "SIGSEGV" in halt.reason


def test_preloader_failure_backs_off_exponentially_when_not_halting() -> None:
    m = Master(smart_pool(target=2, halt_on_boot_failure=False))
    now = 0.0
    m.tick(now)
    delays = []
    for attempt in range(1, 10):
        preloader = m.preloader_pid()
        m.now = now
        m.preloader_failed(preloader, f"SyntaxError number {attempt}")
        assert m.preloader_exit(preloader, exited(PRELOADER_LOAD_ERROR)) == []
        assert m.pool.failures == attempt  # the exit after the report is not a second failure
        assert m.pool.state == "backing off"
        retry_at = m.pool.retry_at
        delays.append(retry_at - now)
        # nothing is started or spawned before retry_at
        for t in (now, (now + retry_at) / 2, retry_at - 0.001):
            assert m.tick(t) == []
        now = retry_at
        actions = m.tick(now)
        assert kinds(actions) == [StartPreloader, SpawnFromPreloader]
        assert actions[0] == StartPreloader(1)
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert not any(isinstance(a, Halt) for a in m.performed)
    # success resets the count
    m.preloader_ready(m.preloader_pid())
    assert m.pool.failures == 0 and m.pool.last_error is None
    assert m.pool.state == "running"
    m.fork_requested()
    assert m.tick(now + 0.1) == []


def test_a_restart_during_backoff_starts_one_preloader_not_two() -> None:
    # `smartspawn restart APP` while the app backs off: the reload's preloader alone, no retry beside it
    m = Master(smart_pool(target=2, halt_on_boot_failure=False))
    m.tick(0.0)
    preloader = m.preloader_pid()
    m.now = 0.0
    m.preloader_failed(preloader, "SyntaxError")
    m.preloader_exit(preloader, exited(PRELOADER_LOAD_ERROR))
    assert m.pool.preloader is None and m.pool.retry_at > 0.5
    m.pool.request_reload(0.5)
    actions = m.tick(0.5)
    assert [a for a in actions if isinstance(a, StartPreloader)] == [StartPreloader(2)]
    assert not m.pool.reload_requested
    # a second restart while that one loads replaces it: still one preloader starting
    m.pool.request_reload(0.8)
    actions = m.tick(0.8)
    assert [a for a in actions if isinstance(a, StartPreloader)] == [StartPreloader(2)]
    assert [a for a in actions if isinstance(a, StopPreloader)] != []


def test_spawn_requests_at_a_preloader_that_failed_to_load_are_reported_lost() -> None:
    # e.g. a preloader restarted after an idle stop finds broken code on disk
    m, old, workers = booted_smart(target=2, idle_timeout=60.0)
    m.tick(100.0)
    m.preloader_exit(old, exited(0))
    m.now = 200.0
    for pid in workers:
        m.worker_exit(pid, killed(signal.SIGKILL))
    m.tick()
    preloader = m.preloader_pid()
    asked = sorted(m.pool.pending)
    assert len(asked) == 2
    reported = m.pool.preloader_failed(preloader, "SyntaxError: invalid syntax", m.now)
    lost = list(reported or []) + list(m.pool.preloader_exited(preloader, exited(PRELOADER_LOAD_ERROR), m.now) or [])
    assert sorted(lost) == asked


def test_backoff_also_applies_to_a_preloader_that_dies_while_loading() -> None:
    m = Master(smart_pool(target=1, halt_on_boot_failure=False))
    m.tick(0.0)
    assert m.preloader_exit(m.preloader_pid(), exited(1)) == [1]
    assert m.pool.failures == 1
    assert m.tick(0.5) == []
    assert kinds(m.tick(1.0)) == [StartPreloader, SpawnFromPreloader]


def test_spawn_failure_backs_off_without_halting() -> None:
    m, preloader, workers = booted_smart(target=2)
    m.worker_exit(workers[0], killed(signal.SIGKILL))
    m.tick(10.0)
    (age,) = m.requested
    del m.requested[age]
    m.pool.spawn_failed(age, "fork: Resource temporarily unavailable", 10.0)
    assert m.pool.pending == {}
    assert m.tick(10.5) == []
    assert m.tick(11.0) == [SpawnFromPreloader(preloader, 1)]


# -- idle timeout --------------------------------------------------------------------------------


def test_idle_preloader_is_stopped_after_idle_timeout() -> None:
    m, preloader, workers = booted_smart(target=2, idle_timeout=300.0)
    last_used = 1.0  # preloader_ready at t=1 is the last use
    assert m.tick(last_used + 299.9) == []
    actions = m.tick(last_used + 300.0)
    assert len(actions) == 1
    (stop,) = actions
    assert isinstance(stop, StopPreloader) and stop.pid == preloader
    assert "idle" in stop.reason
    assert m.pool.preloader is None
    assert m.tick(last_used + 301.0) == []  # asked once
    assert m.worker_pids() == workers  # workers keep serving
    assert not any(isinstance(a, RetireWorker) for a in m.performed)
    # its clean exit is expected, not a failure
    assert m.preloader_exit(preloader, exited(0)) == []
    assert m.pool.failures == 0 and m.pool.state == "running"
    assert m.pool.preloader_pids() == []


def test_spawn_requests_keep_the_preloader_alive() -> None:
    m, preloader, workers = booted_smart(target=2, idle_timeout=300.0)
    m.now = 200.0
    m.worker_exit(workers[0], killed(signal.SIGKILL))
    assert m.tick() == [SpawnFromPreloader(preloader, 1)]
    m.ready(*m.fork_requested())
    assert m.tick(499.0) == []
    assert [type(a) for a in m.tick(500.0)] == [StopPreloader]


def test_preloader_is_never_stopped_while_a_spawn_is_pending() -> None:
    m = Master(smart_pool(target=2, idle_timeout=300.0))
    m.pool.spawn_timeout = 0  # (the spawn timeout would kill it; tested on its own)
    m.tick(0.0)
    preloader = m.preloader_pid()
    m.now = 1.0
    m.preloader_ready(preloader)
    m.ready(*m.fork_requested(count=1))  # the second request is still queued
    for t in (301.0, 1000.0, 100000.0):
        assert m.tick(t) == []
    assert m.pool.preloader is not None and m.pool.preloader.pid == preloader


def test_idle_timeout_zero_keeps_the_preloader_forever() -> None:
    m, preloader, _ = booted_smart(target=1, idle_timeout=0)
    for t in (301.0, 1e6, 1e9):
        assert m.tick(t) == []
    assert m.pool.preloader is not None and m.pool.preloader.pid == preloader


def test_preloader_not_stopped_for_idleness_before_it_is_ready() -> None:
    pool = smart_pool(target=0, idle_timeout=10.0, start_timeout=0.0)
    pool.preloader_started(77, 1, 0.0)  # still importing, nothing asked of it
    assert pool.tick(1000.0) == []
    assert pool.preloader is not None and pool.preloader.pid == 77


def test_stopped_idle_preloader_is_restarted_on_the_next_need() -> None:
    m, old, workers = booted_smart(target=2, idle_timeout=60.0)
    assert kinds(m.tick(100.0)) == [StopPreloader]
    m.preloader_exit(old, exited(0))
    m.now = 500.0
    m.worker_exit(workers[0], killed(signal.SIGKILL))
    actions = m.tick()
    new = m.preloader_pid()
    assert new != old
    assert actions == [StartPreloader(1), SpawnFromPreloader(new, 1)]
    assert m.pool.generation == 1
    assert m.tick() == []
    assert workers[1] in m.pool.workers


def test_need_before_the_idle_preloader_exits_starts_a_new_one_the_late_exit_keeps_it() -> None:
    m, old, workers = booted_smart(target=2, idle_timeout=60.0)
    m.tick(100.0)  # StopPreloader(old)
    m.worker_exit(workers[0], killed(signal.SIGKILL))
    actions = m.tick(100.5)
    new = m.preloader_pid()
    assert actions == [StartPreloader(1), SpawnFromPreloader(new, 1)]
    assert m.preloader_exit(old, exited(0)) == []
    assert m.pool.preloader is not None and m.pool.preloader.pid == new
    assert len(m.pool.pending) == 1
    assert m.pool.failures == 0
    assert m.tick(101.0) == []


# -- preloader killed --------------------------------------------------------------------------


def test_killed_preloader_loses_its_pending_spawns_but_not_its_workers() -> None:
    m = Master(smart_pool(target=3))
    m.tick(0.0)
    preloader = m.preloader_pid()
    m.now = 1.0
    m.preloader_ready(preloader)
    workers = m.fork_requested(count=2)
    m.ready(*workers)
    m.now = 50.0
    assert m.preloader_exit(preloader, killed(signal.SIGKILL)) == [3]
    assert m.pool.pending == {}
    assert m.pool.preloader is None
    assert m.worker_pids() == workers  # re-parented to the master, still serving
    assert m.pool.failures == 1  # a crash of a serving preloader backs off (1 s)
    assert m.tick() == []
    actions = m.tick(51.0)
    new = m.preloader_pid()
    assert new != preloader
    assert actions == [StartPreloader(1), SpawnFromPreloader(new, 1)]
    assert not any(isinstance(a, RetireWorker) for a in m.performed)
    assert m.tick() == []


def test_killed_preloader_with_nothing_pending_is_replaced_only_on_need() -> None:
    m, preloader, workers = booted_smart(target=2)
    assert m.preloader_exit(preloader, killed(signal.SIGKILL)) == []
    assert m.tick(5.0) == []
    m.now = 6.0
    m.worker_exit(workers[0], exited(0))
    assert kinds(m.tick()) == [StartPreloader, SpawnFromPreloader]


# -- reload (HUP) of a smart pool -----------------------------------------------------------------


def test_smart_reload_replaces_workers_one_for_one_once_the_new_ones_serve() -> None:
    m, old_preloader, old_workers = booted_smart(target=2)
    m.now = 10.0
    m.pool.request_reload(m.now)
    assert m.tick() == [StartPreloader(2)]  # no spawn until the new code has loaded
    candidate = m.pool.candidate
    assert candidate is not None
    assert m.pool.generation == 1 and m.pool.preloader is not None and m.pool.preloader.pid == old_preloader
    assert m.tick(11.0) == []
    assert m.tick(20.0) == []  # however long the import takes, nobody is retired

    m.now = 30.0
    m.preloader_ready(candidate.pid)
    assert m.pool.generation == 2
    assert m.pool.preloader is not None and m.pool.preloader.pid == candidate.pid
    assert m.pool.candidate is None
    actions = m.tick()
    assert actions == [SpawnFromPreloader(candidate.pid, 2)]
    assert m.pool.previous is not None and m.pool.previous.pid == old_preloader  # kept until gen 2 serves
    assert m.tick() == []

    new_workers = m.fork_requested()
    assert all(m.pool.workers[pid].generation == 2 for pid in new_workers)
    assert m.tick(31.0) == []  # forked, but not serving yet
    m.ready(new_workers[0])
    assert m.tick(32.0) == [RetireWorker(old_workers[0], "generation 1 replaced")]
    assert m.tick(32.1) == []
    m.ready(new_workers[1])
    actions = m.tick(33.0)
    assert [a.pid for a in actions if isinstance(a, StopPreloader)] == [old_preloader]
    assert [a for a in actions if isinstance(a, RetireWorker)] == [RetireWorker(old_workers[1], "generation 1 replaced")]
    assert m.tick(33.1) == []

    # the old preloader and workers leave; nothing is respawned for them
    assert m.preloader_exit(old_preloader, exited(0)) == []
    for pid in old_workers:
        m.worker_exit(pid, killed(signal.SIGTERM))
    assert m.tick(40.0) == []
    assert m.worker_pids() == new_workers
    assert m.pool.failures == 0
    assert m.pool.preloader_pids() == [candidate.pid]


def test_old_workers_that_die_during_a_reload_are_replaced_from_the_old_preloader() -> None:
    m, old_preloader, old_workers = booted_smart(target=2)
    m.pool.request_reload(10.0)
    m.tick(10.0)
    m.now = 11.0
    m.worker_exit(old_workers[0], killed(signal.SIGKILL))
    assert m.tick() == [SpawnFromPreloader(old_preloader, 1)]
    (replacement,) = m.fork_requested(old_preloader)
    assert m.pool.workers[replacement].generation == 1


def test_old_generation_spawn_queued_at_the_switch_stays_old() -> None:
    m, old_preloader, old_workers = booted_smart(target=2)
    m.pool.request_reload(10.0)
    m.tick(10.0)
    candidate = m.pool.candidate
    assert candidate is not None
    m.now = 11.0
    m.worker_exit(old_workers[0], killed(signal.SIGKILL))
    m.tick()  # request queued at the old preloader
    m.now = 12.0
    m.preloader_ready(candidate.pid)
    m.tick()
    (late,) = m.fork_requested(old_preloader)
    assert m.pool.workers[late].generation == 1
    new_workers = m.fork_requested(candidate.pid)
    m.ready(late, *new_workers)
    retired = [a.pid for a in m.tick(13.0) if isinstance(a, RetireWorker)]
    assert sorted(retired) == sorted([old_workers[1], late])


def test_reload_whose_new_code_fails_keeps_the_old_generation_serving() -> None:
    m, old_preloader, old_workers = booted_smart(target=2)
    m.pool.request_reload(10.0)
    m.tick(10.0)
    candidate = m.pool.candidate
    assert candidate is not None
    m.now = 12.0
    m.pool.preloader_failed(candidate.pid, "SyntaxError: invalid syntax", m.now)
    assert m.pool.candidate is None
    assert m.pool.generation == 1
    assert m.pool.preloader is not None and m.pool.preloader.pid == old_preloader
    assert m.pool.halt is None
    assert m.pool.last_error is not None and "SyntaxError" in m.pool.last_error
    for t in (12.0, 13.0, 100.0):
        actions = m.tick(t)
        assert not any(isinstance(a, (Halt, RetireWorker, StopPreloader, StartPreloader)) for a in actions)
    assert m.preloader_exit(candidate.pid, exited(PRELOADER_LOAD_ERROR)) == []
    assert m.pool.failures == 1
    assert m.worker_pids() == old_workers
    assert not any(w.retiring for w in m.pool.workers.values())
    # still able to serve: a dead old worker comes back from the old preloader
    m.now = 200.0
    m.worker_exit(old_workers[0], killed(signal.SIGKILL))
    assert m.tick() == [SpawnFromPreloader(old_preloader, 1)]
    # and a later HUP tries the next generation again
    m.pool.request_reload(201.0)
    assert m.tick(201.0) == [StartPreloader(2)]


def test_reload_whose_preloader_dies_while_loading_keeps_the_old_generation() -> None:
    m, old_preloader, old_workers = booted_smart(target=2)
    m.pool.request_reload(10.0)
    m.tick(10.0)
    candidate = m.pool.candidate
    assert candidate is not None
    assert m.preloader_exit(candidate.pid, killed(signal.SIGKILL)) == []
    assert m.pool.halt is None and m.pool.generation == 1
    for t in (10.5, 20.0):
        assert not any(isinstance(a, (Halt, RetireWorker, StopPreloader)) for a in m.tick(t))
    assert m.worker_pids() == old_workers


def test_second_hup_during_a_reload_supersedes_the_candidate() -> None:
    m, old_preloader, _ = booted_smart(target=1)
    m.pool.request_reload(10.0)
    m.tick(10.0)
    first = m.pool.candidate
    assert first is not None
    m.pool.request_reload(11.0)
    actions = m.tick(11.0)
    second = m.pool.candidate
    assert second is not None and second.pid != first.pid
    assert StartPreloader(2) in actions
    assert [a.pid for a in actions if isinstance(a, StopPreloader)] == [first.pid]
    # a late report of the superseded preloader changes nothing
    m.preloader_ready(first.pid)
    assert m.pool.generation == 1
    assert m.pool.preloader is not None and m.pool.preloader.pid == old_preloader
    assert m.preloader_exit(first.pid, exited(0)) == []
    assert m.pool.failures == 0
    m.preloader_ready(second.pid)
    assert m.pool.generation == 2


# -- reload of a direct pool ------------------------------------------------------------------


def test_direct_reload_spawns_new_workers_and_retires_old_ones_as_new_ones_serve() -> None:
    m, old_workers = booted_direct(target=2)
    m.pool.request_reload(10.0)
    assert m.pool.generation == 2
    assert m.tick(10.0) == [SpawnDirect(2)]
    new_workers = m.worker_pids(generation=2)
    assert len(new_workers) == 2
    assert m.tick(11.0) == []
    m.ready(new_workers[0])
    assert m.tick(12.0) == [RetireWorker(old_workers[0], "generation 1 replaced")]
    m.ready(new_workers[1])
    assert m.tick(13.0) == [RetireWorker(old_workers[1], "generation 1 replaced")]
    assert m.tick(14.0) == []
    assert not any(isinstance(a, (StartPreloader, StopPreloader)) for a in m.performed)


def test_direct_reload_whose_new_workers_fail_keeps_the_old_ones_and_backs_off() -> None:
    m, old_workers = booted_direct(target=2)
    m.pool.request_reload(10.0)
    m.tick(10.0)
    m.now = 10.5
    for pid in m.worker_pids(generation=2):
        m.worker_exit(pid, exited(APP_LOAD_ERROR))
    assert m.pool.halt is None
    assert m.pool.failures == 2
    assert m.tick(10.6) == []
    assert m.worker_pids() == old_workers
    assert not any(w.retiring for w in m.pool.workers.values())
    assert m.tick(10.5 + backoff_delay(2)) == [SpawnDirect(2)]


# -- early exit --------------------------------------------------------------------------------


def test_worker_reaped_before_its_spawn_report_is_forgotten_and_replaced() -> None:
    m, preloader, workers = booted_smart(target=2)
    m.now = 10.0
    m.worker_exit(workers[0], killed(signal.SIGKILL))
    m.tick()
    (age,) = m.requested
    del m.requested[age]
    pid = 5555
    m.pool.early_exit(pid, killed(signal.SIGSEGV))
    assert m.pool.worker_spawned(age, pid, m.now) == killed(signal.SIGSEGV)
    assert pid not in m.pool.workers
    assert m.pool.pending == {} and m.pool.early_exits == {}
    assert m.pool.failures == 1  # it died before serving: a boot failure, with backoff
    assert m.tick(10.1) == []
    assert m.tick(11.0) == [SpawnFromPreloader(preloader, 1)]


def test_early_exit_of_a_child_is_ignored_when_no_spawn_is_pending() -> None:
    m, _, _ = booted_smart(target=1)
    m.pool.early_exit(5555, exited(0))
    assert m.pool.early_exits == {}


def test_worker_spawned_without_an_early_exit_returns_none() -> None:
    m = Master(smart_pool(target=1))
    m.tick(0.0)
    m.pool.early_exit(9999, exited(0))  # some other child
    (age,) = m.requested
    assert m.pool.worker_spawned(age, 1234, 0.5) is None
    assert 1234 in m.pool.workers


# -- worker boot failure -------------------------------------------------------------------------


@pytest.mark.parametrize("code", [WORKER_BOOT_ERROR, APP_LOAD_ERROR])
def test_direct_worker_boot_failure_before_any_worker_served_halts(code: int) -> None:
    m = Master(direct_pool(target=2))
    m.tick(0.0)
    first = m.worker_pids()[0]
    m.now = 0.5
    m.worker_exit(first, exited(code))
    actions = m.tick()
    assert kinds(actions) == [Halt]
    (halt,) = actions
    assert isinstance(halt, Halt) and halt.exit_status == code
    assert "blog" in halt.reason and f"exit code {code}" in halt.reason


@pytest.mark.parametrize("code", [WORKER_BOOT_ERROR, APP_LOAD_ERROR])
def test_direct_worker_boot_failure_after_the_app_served_backs_off(code: int) -> None:
    m, workers = booted_direct(target=2)
    m.now = 10.0
    m.worker_exit(workers[0], killed(signal.SIGKILL))
    assert m.tick() == [SpawnDirect(1)]
    (new,) = [pid for pid in m.worker_pids() if pid not in workers]
    m.worker_exit(new, exited(code))
    assert m.pool.halt is None and m.pool.failures == 1
    assert m.tick(10.5) == []
    assert m.tick(11.0) == [SpawnDirect(1)]
    (again,) = [pid for pid in m.worker_pids() if pid not in workers]
    m.now = 11.5
    m.worker_exit(again, exited(code))
    assert m.tick(13.0) == []  # second failure: 2 s
    assert m.tick(13.5) == [SpawnDirect(1)]
    (third,) = [pid for pid in m.worker_pids() if pid not in workers]
    m.ready(third)  # serving again: the count resets
    assert m.pool.failures == 0 and m.pool.retry_at == 0.0


@pytest.mark.parametrize("code", [WORKER_BOOT_ERROR, APP_LOAD_ERROR])
def test_direct_worker_boot_failure_without_halt_on_boot_failure_backs_off(code: int) -> None:
    m = Master(direct_pool(target=1, halt_on_boot_failure=False))
    m.tick(0.0)
    m.worker_exit(m.worker_pids()[0], exited(code))
    assert m.tick(0.5) == []
    assert m.pool.state == "backing off"
    assert m.tick(1.0) == [SpawnDirect(1)]


def test_any_death_before_the_first_heartbeat_is_a_boot_failure() -> None:
    for status in (killed(signal.SIGKILL), killed(signal.SIGSEGV), exited(1), exited(0)):
        m = Master(direct_pool(target=1))
        m.tick(0.0)
        m.worker_exit(m.worker_pids()[0], status)
        assert m.pool.failures == 1 and m.pool.halt is None, status  # no halt: not gunicorn's 3 or 4
        assert m.tick(0.1) == []  # backing off, never hot
        assert m.tick(1.0) == [SpawnDirect(1)]


def test_death_of_a_serving_worker_is_not_a_failure() -> None:
    m = Master(direct_pool(target=1))
    m.tick(0.0)
    m.ready(*m.worker_pids())
    m.worker_exit(m.worker_pids()[0], killed(signal.SIGKILL))
    assert m.pool.failures == 0
    assert m.tick(0.1) == [SpawnDirect(1)]


def test_retired_worker_exiting_with_a_boot_code_is_not_a_failure() -> None:
    m = Master(direct_pool(target=2))
    m.tick(0.0)
    workers = m.worker_pids()
    m.pool.target = 1
    assert m.tick(0.1) == [RetireWorker(workers[0], "above the worker count")]
    m.worker_exit(workers[0], exited(WORKER_BOOT_ERROR))  # never ready, but retiring
    assert m.pool.failures == 0 and m.pool.halt is None
    assert m.tick(0.2) == []


def test_a_preloader_that_never_loads_is_killed_after_the_start_timeout() -> None:

    pool = AppPool(name="shop", spawn_method="smart", target=2, start_timeout=90.0, halt_on_boot_failure=False)
    [start] = pool.tick(0.0)
    assert start == StartPreloader(1)
    pool.preloader_started(100, 1, 0.0)
    actions = pool.tick(0.0)
    assert actions == [SpawnFromPreloader(100, 2)]
    pool.spawn_requested(1, 100, 0.0)
    pool.spawn_requested(2, 100, 0.0)
    assert pool.tick(89.0) == []
    actions = pool.tick(91.0)
    assert [type(a) for a in actions] == [StopPreloader]
    assert actions[0].pid == 100 and actions[0].reason == "start timeout"
    assert "did not load the app within 90s (preloader_start_timeout)" in (pool.last_error or "")
    assert pool.tick(91.5) == []  # backing off; nothing twice
    assert sorted(pool.preloader_exited(100, 9, 91.6) or []) == [1, 2]  # the lost requests come back
    assert pool.tick(91.9) == []
    assert pool.tick(92.1) == [StartPreloader(1)]  # after the 1 s backoff
    single = AppPool(name="one", spawn_method="smart", target=1, start_timeout=5.0)
    single.tick(0.0)
    single.preloader_started(7, 1, 0.0)
    single.tick(0.0)
    actions = single.tick(6.0)
    assert isinstance(actions[-1], Halt) and actions[-1].exit_status == 4


# -- spawn timeout, the previous generation, crashes of a serving preloader -----------------------


def test_a_worker_that_never_serves_is_killed_after_the_spawn_timeout_and_backs_off() -> None:
    m = Master(smart_pool(target=1, spawn_timeout=90.0, halt_on_boot_failure=False))
    m.tick(0.0)
    preloader = m.preloader_pid()
    m.now = 1.0
    m.preloader_ready(preloader)
    (worker,) = m.fork_requested()
    assert m.tick(91.0) == []  # 90 s after it was forked, not yet
    (kill,) = m.tick(91.5)
    assert kill == KillWorker(worker, "no first heartbeat within 90s (spawn_timeout)")
    assert m.pool.failures == 1 and m.pool.workers[worker].retiring
    m.worker_exit(worker, killed(signal.SIGKILL))
    assert m.pool.failures == 1  # counted once, when it was killed
    assert m.tick(91.6) == []  # backing off
    assert m.tick(92.5) == [SpawnFromPreloader(preloader, 1)]


def test_a_preloader_that_does_not_answer_a_spawn_request_is_killed() -> None:
    m = Master(smart_pool(target=1, spawn_timeout=30.0, halt_on_boot_failure=False))
    m.tick(0.0)
    preloader = m.preloader_pid()
    m.now = 1.0
    m.preloader_ready(preloader)
    assert m.tick(30.0) == []
    actions = m.tick(30.5)
    assert actions == [StopPreloader(preloader, "spawn timeout", kill=True)]
    assert m.pool.failures == 1 and m.pool.preloader is None
    assert m.tick(30.6) == []  # asked once
    assert m.preloader_exit(preloader, killed(signal.SIGKILL)) == [1]
    assert m.tick(31.4) == []  # backing off: 1 s after the failure
    assert kinds(m.tick(32.0)) == [StartPreloader, SpawnFromPreloader]


def test_spawn_timeout_zero_waits_forever() -> None:
    m = Master(smart_pool(target=1, spawn_timeout=0, idle_timeout=0))
    m.tick(0.0)
    m.preloader_ready(m.preloader_pid())
    m.fork_requested()
    assert m.tick(100000.0) == []


def test_old_workers_leaving_during_a_hung_rollout_are_replaced_from_the_previous_preloader() -> None:
    m, old_preloader, old_workers = booted_smart(target=3, spawn_timeout=0)
    m.pool.request_reload(10.0)
    m.tick(10.0)
    candidate = m.pool.candidate
    assert candidate is not None
    m.now = 11.0
    m.preloader_ready(candidate.pid)
    assert m.tick() == [SpawnFromPreloader(candidate.pid, 3)]
    m.fork_requested(candidate.pid)  # forked, but they hang in their boot: none serves
    # two old workers are recycled by max_requests: replaced from the old preloader, in the old generation
    m.worker_exit(old_workers[0], exited(0))
    m.worker_exit(old_workers[1], exited(0))
    assert m.tick(12.0) == [SpawnFromPreloader(old_preloader, 2)]
    backfill = m.fork_requested(old_preloader)
    assert all(m.pool.workers[pid].generation == 1 for pid in backfill)
    m.ready(*backfill)
    assert m.tick(13.0) == []
    serving = [pid for pid, w in m.pool.workers.items() if w.ready]
    assert len(serving) == 3  # capacity never dropped below the target


def test_the_previous_preloader_leaves_once_the_new_generation_serves_in_full() -> None:
    m, old_preloader, old_workers = booted_smart(target=2)
    m.pool.request_reload(10.0)
    m.tick(10.0)
    candidate = m.pool.candidate
    assert candidate is not None
    m.preloader_ready(candidate.pid)
    m.tick(11.0)
    new = m.fork_requested(candidate.pid)
    m.ready(new[0])
    assert StopPreloader(old_preloader, "generation 2 serves in full") not in m.tick(12.0)
    m.ready(new[1])
    actions = m.tick(13.0)
    assert StopPreloader(old_preloader, "generation 2 serves in full") in actions
    assert m.pool.previous is None
    assert m.preloader_exit(old_preloader, exited(0)) == []
    assert m.pool.failures == 0


def test_a_serving_preloader_that_crashes_backs_off_and_a_clean_exit_does_not() -> None:
    m, preloader, _ = booted_smart(target=1)
    m.preloader_exit(preloader, killed(signal.SIGSEGV))
    assert m.pool.failures == 1 and "SIGSEGV" in (m.pool.last_error or "")
    m2, preloader2, _ = booted_smart(target=1)
    m2.preloader_exit(preloader2, exited(0))
    assert m2.pool.failures == 0


def test_a_hup_whose_preloader_could_not_be_forked_is_tried_again_after_the_backoff() -> None:
    m, old_preloader, _ = booted_smart(target=1)
    m.pool.request_reload(10.0)
    assert m.pool.tick(10.0) == [StartPreloader(2)]
    m.pool.start_failed("start a preloader", "fork: Resource temporarily unavailable", 10.0, generation=2)
    assert m.pool.failures == 1 and m.pool.reload_requested
    assert m.pool.tick(10.5) == []  # backing off
    assert m.pool.tick(11.0) == [StartPreloader(2)]  # the HUP is not lost
    assert m.pool.preloader is not None and m.pool.preloader.pid == old_preloader


def test_a_restarted_preloader_that_finds_other_code_rolls_the_workers_as_a_new_generation() -> None:
    m = Master(smart_pool(target=2, idle_timeout=10.0))
    m.tick(0.0)
    first = m.preloader_pid()
    assert m.pool.preloader_ready(first, 0.5, 1.0, code="aaaa") is False
    m.now = 1.0
    m.ready(*m.fork_requested())
    assert [type(a) for a in m.tick(20.0)] == [StopPreloader]  # idled out
    m.preloader_exit(first, exited(0))
    # a worker recycled by max_requests: a new preloader imports what is on disk now
    m.worker_exit(m.worker_pids()[0], exited(0))
    m.tick(21.0)
    second = m.preloader_pid()
    assert m.pool.preloader_ready(second, 0.5, 22.0, code="bbbb") is True
    assert m.pool.generation == 2 and m.pool.code == "bbbb"
    assert all(p.generation == 2 for p in m.pool.pending.values())  # asked of it before: new code too
    actions = m.tick(22.0)
    assert SpawnFromPreloader(second, 1) in actions  # one more; the survivor stays until they serve
    assert not any(isinstance(a, RetireWorker) for a in actions)


def test_a_restarted_preloader_with_the_same_code_keeps_the_generation() -> None:
    m = Master(smart_pool(target=1, idle_timeout=10.0))
    m.tick(0.0)
    first = m.preloader_pid()
    m.pool.preloader_ready(first, 0.5, 1.0, code="aaaa")
    m.now = 1.0
    m.ready(*m.fork_requested())
    m.tick(20.0)
    m.preloader_exit(first, exited(0))
    m.worker_exit(m.worker_pids()[0], exited(0))
    m.tick(21.0)
    assert m.pool.preloader_ready(m.preloader_pid(), 0.5, 22.0, code="aaaa") is False
    assert m.pool.generation == 1
