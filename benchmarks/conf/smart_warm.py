"""gunicorn.conf.py: warm the app in the preloader before the first fork.

The plugin's ``preloader_warmup`` setting: once heavy_app is imported, the
preloader sends a few requests of every kind the memory benchmark's clients
send through the WSGI app in-process (no socket), so that what Django and
the app build lazily on first use (URL resolver and template caches, ORM
query compilation, pandas indexes) is built once and shared copy-on-write
instead of being built again in every worker; then it closes Django's
database connections, collects, freezes and forks. Variant ``smart-warm``.
"""

from benchmarks.warmup import WARM_PATHS

preloader_warmup = list(WARM_PATHS)
