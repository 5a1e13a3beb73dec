"""gunicorn.conf.py: the gc.freeze() recipe plus one gc.collect() before it.

As ``stock_gc_freeze.py``, but the master collects the garbage of the
import once, right before the first fork (``when_ready`` runs after
``--preload`` imported the app and before any worker is forked), so that
import-time garbage is freed instead of frozen into every worker's shared
image. The gc documentation warns that a collection before fork "may free
pages for future allocation which can cause copy-on-write too"; this
variant measures which effect wins. gunicorn-smartspawn's preloader does
the same (``gc.collect()`` then ``gc.freeze()``). Variant
``stock-preload-freeze-collect``.
"""

import gc

gc.disable()


def when_ready(server):
    gc.collect()


def pre_fork(server, worker):
    gc.freeze()


def post_fork(server, worker):
    gc.enable()
