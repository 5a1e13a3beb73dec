"""gunicorn.conf.py: the gc.freeze() recipe for stock ``gunicorn --preload``.

What a careful user writes today to keep a preloaded app's pages shared,
following the gc module's documentation ("call gc.disable() early in the
parent process, gc.freeze() right before fork(), and gc.enable() early in
child processes"; see also gunicorn issue #1640 and Instagram's write-up):

- the collector is off while the master imports the app (gunicorn reads
  this file before ``--preload`` imports it), so no collection punches
  holes into pages that the workers will share;
- everything the master holds moves to the permanent generation right
  before each fork (``pre_fork`` runs before every fork, so workers that
  replace dead ones get the same treatment);
- each worker turns the collector back on for its own new objects.

The master keeps the collector off for its lifetime: it only runs
gunicorn's arbiter loop. Variant ``stock-preload-freeze``.
"""

import gc

gc.disable()


def pre_fork(server, worker):
    gc.freeze()


def post_fork(server, worker):
    gc.enable()
