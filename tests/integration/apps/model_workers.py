"""Hand-made worker classes that mix gunicorn-smartspawn's worker into a request model, as a user would.

``-k model_workers.SmartUvicorn`` and ``-k model_workers.SmartGevent``: the
plugin must treat them as the classes it composes itself (gevent patched in
the preloader before the import, requests counted in the scoreboard). Each
is defined only when its package is installed.
"""

import gunicorn_smartspawn

try:
    from uvicorn_worker import UvicornWorker
except ImportError:  # the tests that need it fail under CI=1, skip elsewhere
    UvicornWorker = None

try:
    from gunicorn.workers.ggevent import GeventWorker
except (ImportError, RuntimeError):  # gunicorn's module raises RuntimeError without gevent
    GeventWorker = None

if UvicornWorker is not None:

    class SmartUvicorn(gunicorn_smartspawn.Worker, UvicornWorker):
        pass


if GeventWorker is not None:

    class SmartGevent(gunicorn_smartspawn.Worker, GeventWorker):
        pass
