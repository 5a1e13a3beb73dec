"""The master's answers to control commands: status, memory, restart, scale.

Composed with the master (``CommandHandlers(master)``), never mixed in: the
handlers reach the master's state through one named reference. They always
run in the master's main thread, called from its own control socket (served
in its loop) or handed over by gunicorn's ``gunicornc`` thread, so the pool
state is never touched concurrently.
"""

from __future__ import annotations

import time
from typing import Any

from gunicorn_smartspawn.control import status as statusmod
from gunicorn_smartspawn.control.server import CommandError, Handler
from gunicorn_smartspawn.master.pool import AppPool

#: The most workers ``scale`` sets for one app.
MAX_SCALE = 1000


class CommandHandlers:
    """One handler per command, each taking the request dict and returning plain data."""

    def __init__(self, master: Any) -> None:
        self.master = master

    def table(self) -> dict[str, Handler]:
        return {
            "status": self.status, "memory": self.memory, "restart": self.restart, "scale": self.scale, "ready": self.ready,
        }

    def ready(self, request: dict[str, Any]) -> dict[str, Any]:
        """Every app serves in its current generation (or failed): what systemd's READY=1 says too."""
        from gunicorn_smartspawn.master import readiness

        settled, status, apps = readiness.summary(self.master)
        failed = [name for name, words in apps.items() if words.startswith("failed")]
        return {"ready": settled and not failed, "status": status, "apps": apps}

    def status(self, request: dict[str, Any]) -> dict[str, Any]:
        import gunicorn

        master = self.master
        return statusmod.snapshot(
            master.apps.pools,
            master.WORKERS,
            master.scoreboards,
            master_pid=master.pid,
            gunicorn_version=gunicorn.__version__,
            started_at=master.started_at,
            now=time.monotonic(),
            wall=time.time(),
            pool_bounds=self._pool_bounds(),
        )

    def _pool_bounds(self) -> dict[str, dict[str, Any]]:
        dynamic = self.master.dynamic
        now = time.monotonic()
        return {
            name: statusmod.pool_status(
                limits.min_workers, limits.max_workers, limits.idle_timeout, dynamic.waiting.get(name, 0),
                dynamic.busy.get(name, 0), dynamic.last.get(name), now,
            )
            for name, limits in dynamic.limits.items()
        }

    def memory(self, request: dict[str, Any]) -> dict[str, Any]:
        from gunicorn_smartspawn.control import memory

        report: dict[str, Any] = memory.memory_report(memory.process_tree(self.master.pid))
        return report

    def _pool_named(self, request: dict[str, Any]) -> AppPool:
        pools = self.master.apps.pools
        name = request.get("app")
        if not isinstance(name, str) or name not in pools:
            raise CommandError(f"unknown app {name!r}: this master runs {', '.join(sorted(pools))}")
        pool: AppPool = pools[name]
        return pool

    def restart(self, request: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool_named(request)
        self.master.log.info("app=%s restart requested over the control socket", pool.name)
        pool.request_reload(time.monotonic())
        self.master.manage_workers()
        return {"app": pool.name, "restarting": True}

    def scale(self, request: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool_named(request)
        workers, delta = request.get("workers"), request.get("delta")
        if isinstance(workers, int) and not isinstance(workers, bool) and delta is None:
            target = workers
        elif isinstance(delta, int) and not isinstance(delta, bool) and workers is None:
            target = pool.target + delta
        else:
            raise CommandError('scale needs "workers": N or "delta": +N/-N (whole numbers)')
        if not 1 <= target <= MAX_SCALE:
            raise CommandError(f"app {pool.name!r} cannot have {target} workers: expected 1 to {MAX_SCALE}")
        previous = pool.target
        dynamic = self.master.dynamic
        if dynamic.is_dynamic(pool.name):
            dynamic.set_min(pool.name, target)  # a dynamic pool keeps at least this many
        elif self.master.multi:
            pool.target = target
        else:
            self.master.num_workers = target  # gunicorn's own count (nworkers_changed runs)
        self.master.log.info("app=%s workers %d -> %d (control socket)", pool.name, previous, target)
        self.master.manage_workers()
        return {"app": pool.name, "previous": previous, "workers": target}
