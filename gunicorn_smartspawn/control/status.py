"""What ``smartspawn status`` shows: a snapshot of the pools, as plain data.

Built in the master from the pool state, the worker objects and each
app's scoreboard; pure apart from reading the clock it is given. The schema
is documented in docs/tools.md and versioned by :data:`.protocol.PROTOCOL`.

What a worker wrote into its slot is checked first
(:meth:`.Scoreboard.reading`, bounded by the master's own record of the
worker): a slot that is not plausible for the worker it
was assigned to shows as unknown (null), and no float that is not finite
ever reaches the answer, which is JSON without NaN or Infinity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gunicorn_smartspawn._version import __version__
from gunicorn_smartspawn.master.pool import AppPool
from gunicorn_smartspawn.scoreboard import Scoreboard, Scoreboards


def _round(value: float | None, digits: int = 3) -> float | None:
    """``value`` rounded; None for None and for what is not a finite number (JSON has no NaN)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return round(float(value), digits)


def app_status(
    pool: AppPool, workers: Mapping[int, Any], scoreboard: Scoreboard | None, now: float, wall: float
) -> dict[str, Any]:
    """One app: its state, its preloader and its workers (``now`` monotonic, ``wall`` epoch)."""
    preloader = pool.preloader or pool.candidate
    rows = []
    for pid, state in sorted(pool.workers.items(), key=lambda item: item[1].age):
        requests = busy = last_ago = None
        worker = workers.get(pid)
        if scoreboard is not None and worker is not None:
            slot = scoreboard.reading(worker, pid=pid, started_at=state.started_at, now=now, wall=wall)
            if slot is not None:
                requests, busy = slot.requests, slot.busy > 0
                last_ago = None if slot.last_request is None else _round(max(0.0, wall - slot.last_request))
        rows.append(
            {
                "pid": pid,
                "age": state.age,
                "generation": state.generation,
                "forked": state.forked,
                "ready": state.ready,
                "retiring": state.retiring,
                "uptime": _round(now - state.started_at),
                "requests": requests,
                "busy": busy,
                "last_request_ago": last_ago,
            }
        )
    return {
        "name": pool.name,
        "spawn_method": pool.spawn_method,
        "state": pool.state,
        "last_error": pool.last_error,
        "retry_in": _round(pool.retry_at - now) if pool.retry_at > now else None,
        "target": pool.target,
        "generation": pool.generation,
        "preloader": None
        if preloader is None
        else {
            "pid": preloader.pid,
            "generation": preloader.generation,
            "loaded_in": _round(preloader.load_seconds),
            "idle_for": _round(now - preloader.last_used),
            "idle_timeout": pool.idle_timeout,
        },
        "workers": rows,
        "spare_workers": pool.spare_target,
        "spares": _spares(pool, now),
    }


def _spares(pool: AppPool, now: float) -> list[dict[str, Any]]:
    """The app's spares (``spare_workers``), oldest first; those being discarded are left out."""
    return [
        {"pid": s.pid, "age": s.age, "generation": s.generation, "parked": s.parked, "uptime": _round(now - s.started_at)}
        for s in sorted(pool.spares.values(), key=lambda s: s.age)
        if not s.stopping
    ]


def snapshot(
    pools: Mapping[str, AppPool],
    workers: Mapping[int, Any],
    scoreboards: Scoreboards | None,
    *,
    master_pid: int,
    gunicorn_version: str,
    started_at: float,
    now: float,
    wall: float,
    pool_bounds: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``pool_bounds``: per dynamic app, what :func:`pool_status` shows (the others have a fixed pool)."""
    apps = [
        app_status(pool, workers, scoreboards.get(name) if scoreboards is not None else None, now, wall)
        for name, pool in pools.items()
    ]
    for app in apps:
        app["pool"] = (pool_bounds or {}).get(app["name"])
    return {
        "master": {
            "pid": master_pid,
            "gunicorn": gunicorn_version,
            "smartspawn": __version__,
            "uptime": _round(wall - started_at),
        },
        "apps": apps,
    }


def pool_status(
    min_workers: int, max_workers: int, idle_timeout: float, waiting: int, busy: int, last: tuple[float, str] | None,
    now: float,
) -> dict[str, Any]:
    """A dynamic app's bounds, load and last scaling decision (None for a fixed pool)."""
    return {
        "min_workers": min_workers,
        "max_workers": max_workers,
        "worker_idle_timeout": idle_timeout,
        "busy": busy,
        "queue": waiting,
        "last_decision": None if last is None else {"ago": _round(now - last[0]), "what": last[1]},
    }
