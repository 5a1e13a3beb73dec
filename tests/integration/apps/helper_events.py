"""A module that a gunicorn.conf.py imports; it registers an event when first imported."""

import json
import os

from gunicorn_smartspawn import on_event


@on_event("starting_worker_process")
def _record(forked):
    with open(os.environ["EVENT_LOG"], "a") as f:
        f.write(json.dumps({"event": "helper_module_event", "pid": os.getpid(), "forked": forked}) + "\n")
