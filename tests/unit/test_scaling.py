"""The dynamic pool's policy (master/scaling.py), with plain values."""

from __future__ import annotations

from gunicorn_smartspawn.master.scaling import AppLoad, Decision, WorkerLoad, decide, share


def worker(pid: int, busy: int = 0, idle_since: float = 0.0, ready: bool = True, threads: int = 1) -> WorkerLoad:
    return WorkerLoad(pid, ready, busy, threads, idle_since)


def app(name: str = "shop", workers: tuple[WorkerLoad, ...] = (), low: int = 1, high: int = 8, idle: float = 300.0,
        pending: int = 0, waiting: int = 0) -> AppLoad:
    return AppLoad(name, low, high, idle, workers, pending=pending, waiting=waiting)


def test_grows_only_when_every_worker_is_busy_and_connections_wait() -> None:
    busy = (worker(1, busy=1), worker(2, busy=1))
    assert decide(app(workers=busy, waiting=0), 10.0).target == 2  # busy, nobody waits: no growth
    assert decide(app(workers=(worker(1, busy=1), worker(2)), waiting=3), 10.0).target == 2  # one is free
    grown = decide(app(workers=busy, waiting=3), 10.0)
    assert grown.target == 5 and "2 of 2 busy, 3 connection(s) waiting" in grown.reason


def test_growth_stops_at_max_workers_and_counts_spawns_on_their_way() -> None:
    busy = tuple(worker(i, busy=1) for i in range(1, 4))
    assert decide(app(workers=busy, waiting=50, high=4), 0.0).target == 4
    assert decide(app(workers=busy, waiting=2, pending=2, high=8), 0.0).target == 5  # 3 + 2 on their way
    assert decide(app(workers=busy, waiting=1, pending=1), 0.0).reason == ""  # already asked for


def test_a_gthread_worker_is_busy_only_when_all_its_threads_are() -> None:
    half = (worker(1, busy=2, threads=4),)
    assert decide(app(workers=half, waiting=5), 0.0).target == 1
    full = (worker(1, busy=4, threads=4),)
    assert decide(app(workers=full, waiting=5), 0.0).target == 6


def test_shrinks_one_at_a_time_the_longest_idle_first_after_the_idle_timeout() -> None:
    workers = (worker(1, idle_since=50.0), worker(2, idle_since=10.0), worker(3, busy=1))
    assert decide(app(workers=workers, idle=300.0), 300.0).target == 3  # nobody idle 300 s yet
    down = decide(app(workers=workers, idle=300.0), 320.0)
    assert down.target == 2 and down.retire == (2,) and "idle for 310s" in down.reason


def test_never_below_min_workers_and_idle_timeout_zero_never_shrinks() -> None:
    idle = (worker(1), worker(2))
    assert decide(app(workers=idle, low=2), 10_000.0).retire == ()
    assert decide(app(workers=idle, low=0, idle=0), 10_000.0).retire == ()
    assert decide(app(workers=(), low=2), 0.0) == Decision("shop", 2, reason="below min_workers=2")


def test_scale_to_zero_and_wake_on_the_first_connection() -> None:
    last = decide(app(workers=(worker(1, idle_since=0.0),), low=0), 400.0)
    assert last.target == 0 and last.retire == (1,)
    assert decide(app(workers=(), low=0), 500.0).target == 0  # nobody waits: stays at zero
    woken = decide(app(workers=(), low=0, waiting=1), 501.0)
    assert woken.target == 1 and "waiting at zero workers" in woken.reason


def test_no_flapping_a_load_that_comes_and_goes_keeps_its_workers() -> None:
    workers = tuple(worker(i, idle_since=100.0 + i) for i in range(1, 5))
    for now in (110.0, 200.0, 350.0):  # quiet for less than the idle timeout: nothing stops
        assert decide(app(workers=workers, idle=300.0), now).retire == ()


def test_the_pool_size_evicts_the_longest_idle_worker_of_another_app() -> None:
    loads = {
        "shop": app("shop", workers=(worker(1, busy=1),), waiting=1, low=1),
        "admin": app("admin", workers=(worker(10, idle_since=5.0), worker(11, idle_since=1.0)), low=1),
    }
    decisions = [decide(load, 100.0) for load in loads.values()]
    shared = share(decisions, loads, max_pool_size=3, now=100.0)
    shop = next(d for d in shared if d.app == "shop")
    assert shop.target == 2 and shop.evict == (("admin", 11),)


def test_the_pool_size_never_takes_an_app_below_its_minimum_and_the_app_waits() -> None:
    loads = {
        "shop": app("shop", workers=(worker(1, busy=1),), waiting=4, low=1),
        "admin": app("admin", workers=(worker(10, idle_since=1.0),), low=1),
    }
    shared = share([decide(load, 10.0) for load in loads.values()], loads, max_pool_size=2, now=10.0)
    shop = next(d for d in shared if d.app == "shop")
    assert shop.target == 1 and shop.evict == () and "pool full at max_pool_size=2" in shop.reason


def test_an_app_with_waiting_connections_keeps_one_worker_even_at_min_zero() -> None:
    loads = {
        "shop": app("shop", workers=(worker(1, busy=1),), waiting=2),
        "admin": app("admin", workers=(worker(10, idle_since=1.0),), low=0, waiting=1),
    }
    shared = share([decide(load, 10.0) for load in loads.values()], loads, max_pool_size=2, now=10.0)
    assert next(d for d in shared if d.app == "shop").evict == ()


def test_without_a_pool_size_decisions_pass_unchanged() -> None:
    loads = {"shop": app("shop", workers=(worker(1, busy=1),), waiting=9)}
    decisions = [decide(loads["shop"], 0.0)]
    assert share(decisions, loads, None, 0.0) == decisions


def test_an_app_that_gives_up_a_worker_lowers_its_own_target_too() -> None:
    loads = {
        "admin": app("admin", workers=(worker(10, idle_since=5.0), worker(11, idle_since=1.0)), low=0),
        "shop": app("shop", workers=(worker(1, busy=1),), waiting=1, low=1),
    }
    shared = share([decide(load, 100.0) for load in loads.values()], loads, max_pool_size=2, now=100.0)
    admin = next(d for d in shared if d.app == "admin")
    shop = next(d for d in shared if d.app == "shop")
    assert shop.target == 2 and shop.evict == (("admin", 11),)
    assert admin.target == 1  # decided 2 alone; one given up for shop


def test_workers_still_booting_take_a_waiting_connection_each() -> None:
    booting = (worker(1, busy=1), worker(2, ready=False))
    assert decide(app(workers=booting, waiting=3), 0.0).target == 4  # 3 waiting, one for the booting worker
    # a direct worker still importing at boot, one connection waiting: no growth
    assert decide(app(workers=(worker(1, ready=False),), waiting=1), 0.0).target == 1
