"""The worker: a gunicorn request model under smart or direct spawning.

:mod:`.classes` holds the classes users name (``-k smartspawn.Worker``) and
composes them with the request model (:mod:`.models`: which gunicorn worker
class, and what it needs around the fork); :mod:`.counting` the scoreboard's
count around the application; :mod:`.runtime` the process around them
(context, run, exit). A worker imports nothing from the master or the
preloader: it holds no channel and no private descriptor of theirs.
"""

from gunicorn_smartspawn.worker.classes import SyncWorker, ThreadedWorker, Worker, compose

__all__ = ["SyncWorker", "ThreadedWorker", "Worker", "compose"]
