"""The worker: gunicorn's own worker classes under smart or direct spawning.

:mod:`.classes` holds the classes users name (``-k smartspawn.Worker``);
:mod:`.runtime` the process around them (context, run, exit). A worker
imports nothing from the master or the preloader: it holds no channel and
no private descriptor of theirs.
"""

from gunicorn_smartspawn.worker.classes import SyncWorker, ThreadedWorker, Worker

__all__ = ["SyncWorker", "ThreadedWorker", "Worker"]
