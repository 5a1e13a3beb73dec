"""The plugin's settings, as gunicorn ``Setting`` subclasses.

Importing this module registers them with gunicorn (gunicorn's setting
metaclass appends every subclass to its list of known settings), so it must be
imported after ``gunicorn.config`` and before gunicorn builds its ``Config``:
the startup hook (``_gunicorn_smartspawn_hook``) does exactly that. From then
on they behave like gunicorn's own: command-line flags listed in
``gunicorn --help``, keys in ``gunicorn.conf.py``, ``GUNICORN_CMD_ARGS``.
"""

from __future__ import annotations

import argparse
from typing import Any, Final

from gunicorn.config import Setting

from gunicorn_smartspawn.config import validators
from gunicorn_smartspawn.hook.state import Explicit

SECTION: Final = "Smart Spawning"
SPAWN_METHODS: Final = validators.SPAWN_METHODS
SMART_FORKS: Final = validators.SMART_FORKS
FORK_SAFETY_MODES: Final = validators.FORK_SAFETY_MODES


_validator = validators.for_setting


validate_spawn_method = _validator("spawn_method")
validate_idle_timeout = _validator("preloader_idle_timeout")
validate_start_timeout = _validator("preloader_start_timeout")
validate_spawn_timeout = _validator("spawn_timeout")
validate_gc_freeze = _validator("gc_freeze")
validate_ksm = _validator("ksm")
validate_smart_fork = _validator("smart_fork")
validate_fork_safety = _validator("fork_safety")
validate_fork_safety_libraries = _validator("fork_safety_libraries")
validate_smart_worker_class = _validator("smart_worker_class")


def validate_socket_path(value: Any) -> str | None:
    result: str | None = validators.check("smartspawn_socket", validators.socket_path, value)
    return result


class _ChoiceOption:
    """Mixin: a setting whose command-line flag only takes one of ``choices``."""

    choices: tuple[str, ...] = ()
    cli: list[str]
    name: str
    meta: str
    short: str
    default: object

    def add_option(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            *self.cli,
            dest=self.name,
            type=lambda value: value.strip().lower(),
            choices=self.choices,
            default=None,
            metavar=self.meta,
            help=f"{self.short} [{self.default}]".replace("%", "%%"),
        )


class _FlagPairOption:
    """Mixin: a boolean with ``--name`` and ``--no-name`` flags."""

    cli: list[str]
    name: str
    short: str
    default: object

    def add_option(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            *self.cli,
            dest=self.name,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"{self.short} [{self.default}]".replace("%", "%%"),
        )


class SpawnMethod(Explicit, _ChoiceOption, Setting):  # type: ignore[misc]
    name = "spawn_method"
    section = SECTION
    cli = ["--spawn-method"]
    meta = "{smart,direct}"
    choices = SPAWN_METHODS
    validator = validators.deferred(validate_spawn_method)
    default = "smart"
    desc = """\
        How workers get the application: 'smart' forks them from a preloader.

        ``smart`` (the default) starts one preloader process per app that
        imports the application once and then forks workers from itself when
        the master asks: a new worker starts in milliseconds and shares the
        application's memory copy-on-write. ``direct`` makes each worker
        import the application itself, as gunicorn does without ``--preload``.
        Takes effect only with ``-k smartspawn.Worker``. Smart spawning needs
        Linux; see docs/architecture.md.
        """


class PreloaderIdleTimeout(Explicit, Setting):  # type: ignore[misc]
    name = "preloader_idle_timeout"
    section = SECTION
    cli = ["--preloader-idle-timeout"]
    meta = "SECONDS"
    type = int
    validator = validators.deferred(validate_idle_timeout)
    default = None
    desc = """\
        Stop a preloader after this many seconds without a spawn request.

        As Passenger's ``max_preloader_idle_time``: an idle preloader exits to
        give its memory back, and a new one is started (the app is imported
        again) the next time a worker must be spawned; if it finds other code
        on disk, the workers are rolled onto it as a new generation. Workers
        keep running either way. ``0`` keeps the preloader for the life of
        the master. Unset: ``0`` for a fixed pool (its workers are respawned
        from the preloader, at once and from the same code), ``300`` for a
        dynamic pool (Passenger's default; with ``min_workers = 0`` an idle
        app then costs nothing but its socket). See docs/pool.md.
        """


class GcFreeze(Explicit, _FlagPairOption, Setting):  # type: ignore[misc]
    name = "gc_freeze"
    section = SECTION
    cli = ["--gc-freeze"]
    validator = validators.deferred(validate_gc_freeze)
    default = True
    desc = """\
        Call gc.freeze() in the preloader so workers keep sharing its memory.

        The preloader imports the application with the garbage collector
        disabled, collects once, then moves every object into the permanent
        generation before each fork; workers re-enable the collector. Without
        this, the first full collection in each worker writes to every
        object's header and copies most of the shared pages. ``--no-gc-freeze``
        turns it off.
        """


class Ksm(Explicit, _FlagPairOption, Setting):  # type: ignore[misc]
    name = "ksm"
    section = SECTION
    cli = ["--ksm"]
    validator = validators.deferred(validate_ksm)
    default = False
    desc = """\
        Let the kernel merge identical memory pages of the app's processes (KSM).

        Marks the preloader, and so every worker it forks, or each direct
        worker, with ``prctl(PR_SET_MEMORY_MERGE)`` (Linux 6.4 or later).
        A worker copies each shared page it writes to, and about half of
        these copies end up byte-identical to the preloader's (a reference
        count that went up and back down); the kernel's KSM daemon merges
        them back. KSM runs only when root has started it
        (``echo 1 > /sys/kernel/mm/ksm/run``); the master says so when it
        does not. It costs the daemon's CPU time, and merged pages let a
        process that shares them learn by timing whether another holds the
        same bytes: turn it on only for apps that trust each other. As
        uWSGI's ``ksm``. See docs/memory.md.
        """


class SmartFork(Explicit, _ChoiceOption, Setting):  # type: ignore[misc]
    name = "smart_fork"
    section = SECTION
    cli = ["--smart-fork"]
    meta = "{auto,double-fork}"
    choices = SMART_FORKS
    validator = validators.deferred(validate_smart_fork)
    default = "auto"
    desc = """\
        How a preloader creates a worker that the master owns.

        ``auto`` (the default) creates the worker with one
        ``clone(CLONE_PARENT)``, so it is born a child of the master and the
        preloader's page tables are copied once; it is used when the
        preloader runs a single OS thread on x86_64 or aarch64 Linux, and
        ``double-fork`` is used otherwise. ``double-fork`` forks an
        intermediate process that forks the worker and exits, so the
        worker is re-parented to the master (a child subreaper): the
        portable way, at the cost of a second copy of the page tables.
        """


class SmartWorkerClass(Explicit, Setting):  # type: ignore[misc]
    name = "smart_worker_class"
    section = SECTION
    cli = ["--smart-worker-class"]
    meta = "CLASS"
    validator = validators.deferred(validate_smart_worker_class)
    default = None
    desc = """\
        The request model under -k smartspawn.Worker: the gunicorn worker class that serves requests.

        Spelled as ``-k`` spells a worker class: ``sync``, ``gthread``,
        ``gevent``, ``gevent_pywsgi``, ``tornado``, ``asgi`` (gunicorn >=
        24), a dotted path such as ``uvicorn_worker.UvicornWorker``, or the
        class itself in gunicorn.conf.py. Unset: ``sync``, or ``gthread``
        when ``--threads`` is above 1, as gunicorn does; ``gthread`` named
        is gthread even with one thread. ``-k smartspawn.Worker`` stays the
        worker class: this names what runs under it, with smart or direct
        spawning. A gevent app is monkey-patched in its preloader before it
        is imported; an ASGI app gets its event loop and lifespan in each
        worker. Per app in the ``apps`` table. See docs/request-models.md.
        """


def _validate_apps(value: Any) -> Any:
    from gunicorn_smartspawn.config.apps import validate_apps

    return validate_apps(value)


class Apps(Explicit, Setting):  # type: ignore[misc]
    name = "apps"
    section = SECTION
    cli = None
    validator = validators.deferred(_validate_apps)
    default = None
    desc = """\
        Several applications in one master: a dict of app name to its settings.

        Config file only. Each entry needs ``app`` ('module:callable') and
        ``bind`` (an address or a list), and may set ``workers``,
        ``threads``, ``spawn_method``, ``smart_worker_class``, ``preloader_idle_timeout``,
        ``preloader_start_timeout``, ``spawn_timeout``, ``preloader_warmup``,
        ``preloader_warmup_timeout``, ``min_workers``,
        ``max_workers``, ``worker_idle_timeout``, ``spare_workers``, ``friendly_errors``, ``refork_after``,
        ``gc_freeze``, ``ksm``, ``smart_fork``, ``fork_safety``,
        ``fork_safety_libraries``, ``timeout``, ``graceful_timeout``,
        ``max_requests``, ``max_requests_jitter``, ``chdir``,
        ``pythonpath``, ``env``, ``user``, ``group`` and ``restart_file``;
        anything else comes from the global settings. Each app gets its own
        listeners, preloader and workers; one that fails to load backs off
        while the others serve. Replaces ``APP_MODULE``. See
        docs/multi-app.md.
        """


class SmartspawnSocket(Explicit, Setting):  # type: ignore[misc]
    name = "smartspawn_socket"
    section = SECTION
    cli = ["--smartspawn-socket"]
    meta = "PATH"
    validator = validators.deferred(validate_socket_path)
    default = None
    desc = """\
        Unix socket where the master answers the smartspawn status and memory tools.

        It also takes ``smartspawn restart APP`` and ``smartspawn scale APP N``.

        Owner-only (mode 0600). The default is
        ``$XDG_RUNTIME_DIR/gunicorn-smartspawn.sock``, or
        ``~/.gunicorn/smartspawn.sock`` without XDG_RUNTIME_DIR. ``off``
        serves none. See docs/tools.md.
        """


class PreloaderStartTimeout(Explicit, Setting):  # type: ignore[misc]
    name = "preloader_start_timeout"
    section = SECTION
    cli = ["--preloader-start-timeout"]
    meta = "SECONDS"
    type = int
    validator = validators.deferred(validate_start_timeout)
    default = 90
    desc = """\
        Kill a preloader that has not loaded its app after this many seconds.

        As Passenger's ``start_timeout``: an import that hangs (a database
        that never answers, a deadlock) is killed, logged as a failure, and
        the app backs off and tries again; a single app that never came up
        makes the master exit with code 4. ``0`` waits forever.
        """

class SpawnTimeout(Explicit, Setting):  # type: ignore[misc]
    name = "spawn_timeout"
    section = SECTION
    cli = ["--spawn-timeout"]
    meta = "SECONDS"
    type = int
    validator = validators.deferred(validate_spawn_timeout)
    default = 90
    desc = """\
        Kill a new worker that does not serve within this many seconds.

        Counted from the spawn request: a preloader that does not answer it
        (an ``os.register_at_fork`` hook that hangs) is killed, and so is a
        worker that has not reached its request loop (a
        ``starting_worker_process`` callback or ``post_fork`` hook waiting
        on a database that does not answer). Either counts as a failure and
        the app backs off before it spawns again. gunicorn's ``timeout``
        applies only once a worker serves. As Passenger's
        ``start_timeout`` (90 s). ``0`` waits forever.
        """


# -- fork safety -----------------------------------------------------------------------

class ForkSafety(Explicit, _ChoiceOption, Setting):  # type: ignore[misc]
    name = "fork_safety"
    section = SECTION
    cli = ["--fork-safety"]
    meta = "{warn,fence,off}"
    choices = FORK_SAFETY_MODES
    validator = validators.deferred(validate_fork_safety)
    default = "warn"
    desc = """\
        What to do about connections and threads a preloader passes to its workers.

        After a preloader imports the app it lists its connected sockets and
        its threads other than the main one: every worker forked from it
        inherits those sockets and loses those threads. ``warn`` (the
        default) logs each finding once per preloader generation; ``fence``
        also replaces each inherited connection in every forked worker with
        one whose peer is closed, so a client library gets an ordinary
        connection error and reconnects instead of interleaving bytes with
        its sibling workers; ``off`` does neither. See docs/fork-safety.md.
        """


class ForkSafetyLibraries(Explicit, _FlagPairOption, Setting):  # type: ignore[misc]
    name = "fork_safety_libraries"
    section = SECTION
    cli = ["--fork-safety-libraries"]
    validator = validators.deferred(validate_fork_safety_libraries)
    default = True
    desc = """\
        Reset known libraries' connections in each forked worker.

        As Passenger does for ActiveRecord: in a worker forked from a
        preloader, connections that Django, SQLAlchemy and the memcached and
        redis clients opened in the preloader are dropped without touching
        the preloader's copy, so each worker opens its own. Only libraries
        the app imported are touched. ``--no-fork-safety-libraries`` turns
        this off. See docs/fork-safety.md for exactly what is done.
        """


from gunicorn_smartspawn.hook import (  # noqa: E402, F401  (register their settings)
    pool_settings,
    refork_settings,
    warmup_settings,
)

PLUGIN_SETTINGS: Final = (
    "apps",
    "smartspawn_socket",
    "spawn_method",
    "smart_worker_class",
    "preloader_idle_timeout",
    "preloader_start_timeout",
    "spawn_timeout",
    "preloader_warmup",
    "preloader_warmup_timeout",
    "min_workers",
    "max_workers",
    "worker_idle_timeout",
    "spare_workers",
    "max_pool_size",
    "friendly_errors",
    "refork_after",
    "gc_freeze",
    "ksm",
    "smart_fork",
    "fork_safety",
    "fork_safety_libraries",
)
