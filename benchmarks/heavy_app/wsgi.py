"""WSGI entry point of heavy_app: ``benchmarks.heavy_app.wsgi:application``.

Run from the repository root, e.g.::

    gunicorn -b 127.0.0.1:8000 benchmarks.heavy_app.wsgi:application

Importing this module configures Django (which, through the catalog app's
``ready()``, imports numpy/pandas and builds the analytics data), makes sure
the SQLite database exists, and pre-loads the URLconf and templates.
``IMPORT_SECONDS`` records how long all of that took.
"""

import os
import time

_t0 = time.perf_counter()


def _log_import(event):
    # Benchmarks (boot_time.py) set HEAVY_APP_IMPORT_LOG to learn when each
    # process started and finished importing the app (CLOCK_MONOTONIC is
    # system-wide, so the harness can compare it with its own clock).
    path = os.environ.get("HEAVY_APP_IMPORT_LOG")
    if path:
        with open(path, "a") as f:
            f.write("%d %s %.6f\n" % (os.getpid(), event, time.monotonic()))


_log_import("start")

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.heavy_app.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

from .bootstrap import ensure_database, warm_up  # noqa: E402

application = get_wsgi_application()
ensure_database()
warm_up()

IMPORT_SECONDS = time.perf_counter() - _t0
_log_import("end")
