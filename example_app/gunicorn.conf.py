# gunicorn.conf.py for the example app:
#   gunicorn -c example_app/gunicorn.conf.py example_app.wsgi:app
from gunicorn_smartspawn import on_event

worker_class = "smartspawn.Worker"
spawn_method = "smart"          # or "direct"
workers = 4
bind = "127.0.0.1:8000"
# preloader_idle_timeout = 300  # unset: 0 (kept) for this fixed pool; 300 for a dynamic one (min_workers/max_workers)
gc_freeze = True


@on_event("starting_worker_process")
def announce(forked):
    import os

    print(f"worker pid={os.getpid()} starting, forked={forked}", flush=True)


def post_fork(server, worker):
    server.log.info("post_fork: worker pid=%s app=%s", worker.pid, getattr(worker, "app_name", "?"))
