# gunicorn.conf.py for the hook test: every gunicorn hook and Passenger event
# writes one JSON line naming the hook and the process title it ran in.
import json
import os

from gunicorn_smartspawn import on_event


def _rec(hook, **extra):
    import setproctitle

    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(json.dumps({"hook": hook, "pid": os.getpid(), "title": setproctitle.getproctitle(), **extra}) + "\n")


@on_event("starting_worker_process")
def _starting(forked):
    _rec("starting_worker_process", forked=forked)


@on_event("stopping_worker_process")
def _stopping():
    _rec("stopping_worker_process")


@on_event("preloader_loaded")
def _loaded():
    _rec("preloader_loaded")


def on_starting(server): _rec("on_starting")
def when_ready(server): _rec("when_ready")
def pre_fork(server, worker): _rec("pre_fork")
def post_fork(server, worker): _rec("post_fork", forked=worker.forked)
def post_worker_init(worker): _rec("post_worker_init")
def worker_int(worker): _rec("worker_int")
def worker_abort(worker): _rec("worker_abort")
def worker_exit(server, worker): _rec("worker_exit")
def child_exit(server, worker): _rec("child_exit", worker_pid=worker.pid)
def nworkers_changed(server, new_value, old_value): _rec("nworkers_changed", new=new_value, old=old_value)
def on_reload(server): _rec("on_reload")
def on_exit(server): _rec("on_exit")
