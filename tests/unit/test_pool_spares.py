"""AppPool with ``spare_workers``: spares parked after the workers, released before any fork,
re-parked behind, discarded with their generation; a spare that dies is a failure (backoff).

Driven like tests/unit/test_pool.py, with its ``Master`` (no process).
"""

from __future__ import annotations

import signal

from test_pool import Master, booted_smart, killed, smart_pool

from gunicorn_smartspawn.master import spares
from gunicorn_smartspawn.master.actions import DiscardSpare, ReleaseSpare, SpawnFromPreloader, StartPreloader
from gunicorn_smartspawn.master.readiness import app_state


def parked_spares(m: Master, preloader: int, count: int = 1) -> list[int]:
    """The preloader forks the requested spares and each parks."""
    pids = m.fork_requested(preloader)
    assert len(pids) == count and all(pid in m.pool.spares for pid in pids)
    for pid in pids:
        spares.parked(m.pool, pid)
    return pids


def with_spares(target: int = 2, spare: int = 1, **kwargs: object) -> tuple[Master, int, list[int], list[int]]:
    m, preloader, workers = booted_smart(target, spare_target=0, **kwargs)
    m.pool.spare_target = spare
    assert m.tick() == [SpawnFromPreloader(preloader, spare, spare=True)]
    return m, preloader, workers, parked_spares(m, preloader, spare)


def test_no_spare_by_default() -> None:
    m, _, _ = booted_smart(2)
    assert m.pool.spare_target == 0
    assert m.tick(50.0) == [] and m.pool.spares == {}


def test_spares_are_asked_for_only_once_every_worker_serves() -> None:
    m = Master(smart_pool(target=2, spare_target=1))
    m.tick(0.0)
    preloader = m.preloader_pid()
    m.now = 1.0
    m.preloader_ready(preloader)
    workers = m.fork_requested()
    assert m.tick() == []  # workers forked, not serving yet: no spare competes with their boot
    m.ready(workers[0])
    assert m.tick() == []
    m.ready(workers[1])
    assert m.tick() == [SpawnFromPreloader(preloader, 1, spare=True)]
    assert m.tick() == []  # asked for once
    (spare,) = m.fork_requested(preloader)
    assert spare in m.pool.spares and spare not in m.pool.workers
    assert not m.pool.spares[spare].parked
    assert app_state(m.pool) == (True, "2 workers serving")  # a spare is not a serving worker


def test_one_more_worker_releases_a_parked_spare_and_parks_another() -> None:
    m, preloader, _, (spare,) = with_spares(target=2)
    m.pool.target = 3
    assert m.tick() == [ReleaseSpare(spare)]
    assert m.pool.workers[spare].ready and spare not in m.pool.spares  # serving at once, no fork
    # the next spare once the released worker had the CPUs for its first requests
    assert m.tick(m.now + spares.REPARK_DELAY / 2) == []
    assert m.tick(m.now + spares.REPARK_DELAY) == [SpawnFromPreloader(preloader, 1, spare=True)]
    (new,) = parked_spares(m, preloader)
    assert new != spare and m.tick() == []
    assert len(m.pool.workers) == 3 and list(m.pool.spares) == [new]


def test_a_spare_not_parked_yet_is_not_released_the_worker_is_forked() -> None:
    m, preloader, _ = booted_smart(2)
    m.pool.spare_target = 1
    m.tick()
    (spare,) = m.fork_requested(preloader)  # forked, still initialising
    m.pool.target = 3
    assert m.tick() == [SpawnFromPreloader(preloader, 1)]
    assert spare in m.pool.spares


def test_released_spares_fill_first_then_forks_for_the_rest() -> None:
    m, preloader, _, pids = with_spares(target=1, spare=2)
    m.pool.target = 4
    actions = m.tick()
    assert actions[:3] == [ReleaseSpare(pids[0]), ReleaseSpare(pids[1]), SpawnFromPreloader(preloader, 1)]
    assert len(actions) == 3  # spares come back only once the new worker serves


def test_a_worker_that_dies_is_replaced_by_a_spare() -> None:
    m, preloader, workers, (spare,) = with_spares(target=2)
    m.worker_exit(workers[0], killed(signal.SIGKILL))
    assert m.tick() == [ReleaseSpare(spare)]
    assert m.tick(m.now + spares.REPARK_DELAY) == [SpawnFromPreloader(preloader, 1, spare=True)]


def test_a_reload_discards_the_old_generations_spares() -> None:
    m, _, _, (spare,) = with_spares(target=1)
    m.pool.request_reload(m.now)
    m.tick()
    candidate = m.pool.candidate
    assert candidate is not None
    m.preloader_ready(candidate.pid)
    actions = m.tick()
    assert DiscardSpare(spare, "generation 1 replaced") in actions
    assert m.pool.spares[spare].stopping
    assert not any(isinstance(a, SpawnFromPreloader) and a.spare for a in actions)  # not before gen 2 serves
    (new_worker,) = m.fork_requested(candidate.pid)
    m.ready(new_worker)
    actions = m.tick()
    assert SpawnFromPreloader(candidate.pid, 1, spare=True) in actions
    m.pool.worker_exited(spare, killed(signal.SIGTERM), m.now)
    assert m.pool.failures == 0  # discarded: not a failure


def test_a_spare_that_dies_is_a_failure_with_backoff() -> None:
    m, preloader, _, (spare,) = with_spares(target=1)
    m.now = 10.0
    m.pool.worker_exited(spare, killed(signal.SIGKILL), m.now)
    assert m.pool.failures == 1 and m.pool.retry_at == 11.0
    assert "spare worker died parked" in (m.pool.last_error or "")
    assert m.tick(10.5) == []  # backing off: no hot respawn
    assert m.tick(11.0) == [SpawnFromPreloader(preloader, 1, spare=True)]


def test_a_spare_that_never_parks_is_killed_after_the_spawn_timeout() -> None:
    m, preloader, _ = booted_smart(1, spawn_timeout=30.0)
    m.pool.spare_target = 1
    m.tick()
    (spare,) = m.fork_requested(preloader)
    assert m.tick(30.0) == []
    actions = m.tick(31.5)
    assert actions == [DiscardSpare(spare, "not parked within 30s (spawn_timeout)", kill=True)]
    assert m.pool.failures == 1


def test_surplus_spares_are_discarded_oldest_kept() -> None:
    m, _, _, pids = with_spares(target=1, spare=2)
    m.pool.spare_target = 1  # a reload lowered the setting
    assert m.tick() == [DiscardSpare(pids[1], "above spare_workers")]


def test_an_idle_preloader_leaves_its_spares_but_none_is_parked_without_one() -> None:
    m, preloader, _, (spare,) = with_spares(target=1, idle_timeout=60.0)
    m.tick(200.0)
    assert m.pool.preloader is None  # idled out; the spare is of the current generation and stays
    m.preloader_exit(preloader)
    m.pool.target = 2
    assert m.tick() == [ReleaseSpare(spare)]  # released; no preloader is started for a spare alone
    m.pool.target = 3
    assert kinds_of(m.tick()) == [StartPreloader, SpawnFromPreloader]


def test_stopping_every_preloader_discards_the_spares() -> None:
    m, _, _, (spare,) = with_spares(target=1)
    m.pool.stop_all_preloaders("app removed")
    assert DiscardSpare(spare, "above spare_workers") in m.tick()


def kinds_of(actions: list[object]) -> list[type]:
    return [type(a) for a in actions]
