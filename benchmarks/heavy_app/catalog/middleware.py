"""Tag every response with the pid of the process that produced it.

The benchmarks count how many requests each worker served (memory: "every
worker served 2,000 requests") and tell a new worker from an old one (spawn,
boot, surge) by this header, whatever the page. ``X-GC-Full-Collections``
says how many full (generation 2) garbage collections that process has run
so far, which is what un-shares a preloaded app's pages unless they are
frozen.
"""

import gc
import os


class WorkerPidMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response["X-Worker-Pid"] = str(os.getpid())
        response["X-GC-Full-Collections"] = str(gc.get_stats()[2]["collections"])
        return response
