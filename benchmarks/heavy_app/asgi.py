"""ASGI entry point of heavy_app: ``benchmarks.heavy_app.asgi:application``.

The same import-heavy Django service as ``wsgi.py`` (Django + numpy/pandas,
module-level data, SQLite database, URLconf and templates loaded), served
through Django's ASGI handler, e.g. from the repository root::

    gunicorn -k uvicorn_worker.UvicornWorker -b 127.0.0.1:8000 \\
        benchmarks.heavy_app.asgi:application
    gunicorn -k smartspawn.Worker --smart-worker-class uvicorn_worker.UvicornWorker \\
        -b 127.0.0.1:8000 benchmarks.heavy_app.asgi:application

Django runs the (synchronous) views in a thread of the worker, so one worker
serves many requests at once: ``/_bench/hold`` keeps a request open but does
not make the worker refuse others (``asgi_models.py`` probes accordingly).
``IMPORT_SECONDS`` records how long the import took.
"""

import os
import time

_t0 = time.perf_counter()


def _log_import(event):
    # as in wsgi.py: HEAVY_APP_IMPORT_LOG makes each import log start and end
    path = os.environ.get("HEAVY_APP_IMPORT_LOG")
    if path:
        with open(path, "a") as f:
            f.write("%d %s %.6f\n" % (os.getpid(), event, time.monotonic()))


_log_import("start")

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.heavy_app.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

from .bootstrap import ensure_database, warm_up  # noqa: E402

application = get_asgi_application()
ensure_database()
warm_up()

IMPORT_SECONDS = time.perf_counter() - _t0
_log_import("end")
