# gunicorn.conf.py: a hook that asks for one more worker with server.spawn_worker(),
# once, and records what the call returned (docs/hooks.md: None, the pool grows by one).
import json
import os

_done = []


def when_ready(server):
    if _done:
        return
    _done.append(True)
    returned = server.spawn_worker()
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(json.dumps({"hook": "spawn_worker", "returned": returned}) + "\n")
