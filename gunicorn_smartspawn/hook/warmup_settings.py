"""The preloader's warm-up settings: requests run through the app before the first fork.

Registered with gunicorn like the other settings (imported by :mod:`.settings`).
See docs/configuration.md (``preloader_warmup``) and docs/benchmarks.md (Memory).
"""

from __future__ import annotations

from gunicorn.config import Setting

from gunicorn_smartspawn.config import validators
from gunicorn_smartspawn.hook.state import Explicit

SECTION = "Smart Spawning"  # (hook/settings.py's; not imported from there: it imports this module)
_validator = validators.for_setting


class PreloaderWarmup(Explicit, Setting):  # type: ignore[misc]
    name = "preloader_warmup"
    section = SECTION
    cli = ["--preloader-warmup"]
    meta = "REQUESTS"
    validator = validators.deferred(_validator("preloader_warmup"))
    default = None
    desc = """\
        Requests the preloader sends through the app, in-process, before it forks a worker.

        A list such as ``["/", "/health", "POST /api/ping",
        "http://shop.example.com/"]`` (on the command line: comma-separated).
        Once the app is imported, the preloader calls it with each request
        (no socket; a path alone means GET; a URL's host becomes the Host
        header; ``environ["smartspawn.warmup"]`` / ``scope["smartspawn.warmup"]``
        is True), then collects and freezes the garbage collector's objects,
        so that what the app builds lazily on its first requests (URL
        resolvers, template and ORM caches) is built once and shared by every
        worker copy-on-write instead of once per worker. A status other than
        2xx/3xx or an exception is logged as a warning and the warm-up goes
        on; the app still starts. WSGI and ASGI apps; Django's database
        connections are closed before the first fork, other inherited
        connections are handled by fork_safety. A spare (spare_workers)
        runs the same requests once more before it parks, uncounted, so that
        its first request once released is a warm one. Passenger has no
        counterpart (an app warms itself up in its own startup code).
        """


class PreloaderWarmupTimeout(Explicit, Setting):  # type: ignore[misc]
    name = "preloader_warmup_timeout"
    section = SECTION
    cli = ["--preloader-warmup-timeout"]
    meta = "SECONDS"
    type = int
    validator = validators.deferred(_validator("preloader_warmup_timeout"))
    default = 30
    desc = """\
        Stop the preloader's warm-up after this many seconds.

        A warm-up request still running then is interrupted, the rest are
        skipped, a warning is logged and the preloader goes on to fork its
        workers. Counts towards preloader_start_timeout. ``0``: no limit.
        """
