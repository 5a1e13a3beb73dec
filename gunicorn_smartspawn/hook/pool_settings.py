"""The dynamic pool's settings (Passenger's pool): min/max workers per app, idle time, one pool size.

Registered with gunicorn like the other settings (imported by :mod:`.settings`).
``workers`` alone keeps a fixed pool; setting ``min_workers`` or
``max_workers`` makes the pool grow under load and shrink when idle. See
docs/pool.md.
"""

from __future__ import annotations

from gunicorn.config import Setting

from gunicorn_smartspawn.config import validators
from gunicorn_smartspawn.hook.state import Explicit

SECTION = "Smart Spawning"  # (hook/settings.py's; not imported from there: it imports this module)
_validator = validators.for_setting


class MinWorkers(Explicit, Setting):  # type: ignore[misc]
    name = "min_workers"
    section = SECTION
    cli = ["--min-workers"]
    meta = "INT"
    validator = validators.deferred(_validator("min_workers"))
    default = None
    desc = """\
        The fewest workers an app keeps; with max_workers, the pool grows and shrinks.

        As Passenger's ``min_instances``. Setting it (or ``max_workers``)
        makes the pool dynamic: workers are spawned while every worker is
        busy and connections wait, up to ``max_workers``, and stopped after
        ``worker_idle_timeout`` seconds without a request, down to this
        number. ``0`` lets an app scale to zero: its socket stays bound and
        the first connection starts a worker. Unset: the pool is fixed at
        ``workers``. See docs/pool.md.
        """


class MaxWorkers(Explicit, Setting):  # type: ignore[misc]
    name = "max_workers"
    section = SECTION
    cli = ["--max-workers"]
    meta = "INT"
    validator = validators.deferred(_validator("max_workers"))
    default = None
    desc = """\
        The most workers an app may have under load (dynamic pool).

        As Passenger's ``max_instances_per_app``. Unset with ``min_workers``
        set: ``workers``. See docs/pool.md.
        """


class WorkerIdleTimeout(Explicit, Setting):  # type: ignore[misc]
    name = "worker_idle_timeout"
    section = SECTION
    cli = ["--worker-idle-timeout"]
    meta = "SECONDS"
    validator = validators.deferred(_validator("worker_idle_timeout"))
    default = 300
    desc = """\
        Stop a worker that served nothing for this long, above min_workers.

        As Passenger's ``pool_idle_time``: only in a dynamic pool, the
        oldest idle worker first. ``0`` never shrinks the pool.
        """


class MaxPoolSize(Explicit, Setting):  # type: ignore[misc]
    name = "max_pool_size"
    section = SECTION
    cli = ["--max-pool-size"]
    meta = "INT"
    validator = validators.deferred(_validator("max_pool_size", validators.optional_count))
    default = None
    desc = """\
        The most workers of all apps together (several apps in one master).

        As Passenger's ``max_pool_size``. When an app needs a worker and the
        pool is full, the worker of another app that has been idle longest
        is stopped to make room; if none is idle, the app waits. Unset: no
        limit but each app's own.
        """


class FriendlyErrors(Setting):  # type: ignore[misc]
    name = "friendly_errors"
    section = SECTION
    cli = ["--friendly-errors"]
    action = "store_true"
    validator = validators.deferred(_validator("friendly_errors"))
    default = False
    desc = """\
        Show the error and traceback on the 503 page of an app that failed to start.

        While an app has no worker because it failed to start, the master
        answers its connections with ``503 Service Unavailable`` and a short
        plain body naming the app. With this on, the body also holds the
        error and its traceback, as Passenger's friendly error pages do:
        for development only, since anyone who connects reads it.
        """


class SpareWorkers(Explicit, Setting):  # type: ignore[misc]
    name = "spare_workers"
    section = SECTION
    cli = ["--spare-workers"]
    meta = "INT"
    validator = validators.deferred(_validator("spare_workers"))
    type = int
    default = 0
    desc = """\
        Workers an app keeps forked ahead and parked, ready to serve at once (smart spawning).

        A spare has run gunicorn's whole worker initialisation (``post_fork``,
        ``starting_worker_process``, ``post_worker_init``) and waits before
        its request loop. When the pool needs one more worker (TTIN, a
        dynamic pool growing, a worker that died or was recycled), the master
        wakes a spare with one signal instead of asking for a fork, then
        parks a new spare behind it. Spares are not serving workers: not
        counted in ``workers``, ``min_workers``/``max_workers`` or
        ``max_pool_size``; a reload discards them. Each costs about one
        worker's private memory. ``0`` (default): none. Passenger, unicorn
        and pitchfork have no exact counterpart. See docs/pool.md.
        """
