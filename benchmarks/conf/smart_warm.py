"""gunicorn.conf.py: warm the app in the preloader before the first fork.

A ``preloader_loaded`` callback (it runs in the preloader once the app is
imported, before the plugin's ``gc.collect()``/``gc.freeze()`` and before
any worker is forked) sends a few requests of every kind through the WSGI
app in-process, so that what Django and the app build lazily on first use
(URL resolver and template caches, ORM query compilation, pandas indexes)
is built once and shared copy-on-write instead of being built again in
every worker. The database connections the warm-up opened are closed
before any fork. Variant ``smart-warm``.
"""

from gunicorn_smartspawn import on_event


@on_event("preloader_loaded")
def warm_up_app():
    from benchmarks.heavy_app.wsgi import application
    from benchmarks.warmup import warm_wsgi_app

    warm_wsgi_app(application)
