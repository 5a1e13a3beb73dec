"""The master's table of apps: configuration in, one spec and one pool per app out.

Built again on every (re)load: apps keep their listeners and restart-file
state across a HUP, new apps get a pool, removed ones are drained and then
forgotten. Passenger's ``tmp/restart.txt`` is watched here too.
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn import util

from gunicorn_smartspawn.config.apps import AppLoader, AppSpec, derive_config
from gunicorn_smartspawn.master.pool import AppPool


class AppTable:
    """Specs (what each app is) and pools (what each app has) by app name."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.specs: dict[str, AppSpec] = {}
        self.pools: dict[str, AppPool] = {}
        self.multi = False
        #: listeners of an app whose bind changed, closed once its old generation is gone
        self.retired_listeners: list[Any] = []
        self._restart_check_at = 0.0
        #: apps whose bind changed in the last configure: their previous listeners
        self._rebound: dict[str, list[Any]] = {}

    def configure(self, cfg: Any, app: Any, num_workers: int) -> set[str]:
        """(Re)build the specs and pools from the configuration just read; the names of new apps.

        An app that comes back while its removed incarnation still drains is
        not new: it keeps its pool and listeners, and the reload that follows
        gives it a new generation.
        """
        wanted = self._wanted(cfg, app)
        added = {name for name in wanted if name not in self.specs}
        self._rebound = {}
        for name, gone in self.specs.items():
            if name not in wanted and not gone.removed:
                gone.removed = True
                self.pools[name].target = 0
                self.log.info("app=%s removed from the configuration: stopping it", name)
        cwd = util.getcwd()
        for name, spec in wanted.items():
            old = self.specs.get(name)
            if old is not None:
                if old.removed:
                    self.log.info("app=%s is back in the configuration while it drained: reloading it", name)
                if old.config is not None and spec.config is not None and old.config.binds != spec.config.binds:
                    self.log.warning("app=%s bind changed from %s to %s: rebinding", name, old.config.binds, spec.config.binds)
                    self.retired_listeners.extend(old.listeners)
                    self._rebound[name] = old.listeners
                else:
                    spec.listeners = old.listeners
                spec.restart_mtime = old.restart_mtime
            spec.restart_path = spec.config.restart_path(cwd) if spec.config else os.path.join(cwd, "tmp", "restart.txt")
            if old is None:
                spec.restart_mtime = _mtime(spec.restart_path)
            self.specs[name] = spec
            self._configure_pool(spec, num_workers if not self.multi else spec.cfg.workers)
        return added

    def _wanted(self, cfg: Any, app: Any) -> dict[str, AppSpec]:
        if not self.multi:
            name = default_app_name(app)
            return {name: AppSpec(name=name, app=app, cfg=cfg)}
        wanted: dict[str, AppSpec] = {}
        for name, entry in cfg.apps.items():
            app_cfg = derive_config(cfg, entry)
            wanted[name] = AppSpec(name=name, app=AppLoader(entry, app_cfg), cfg=app_cfg, config=entry)
        return wanted

    def _configure_pool(self, spec: AppSpec, target: int) -> None:
        pool = self.pools.get(spec.name)
        method = spec.cfg.spawn_method
        if pool is None:
            self.pools[spec.name] = AppPool(
                name=spec.name,
                spawn_method=method,
                target=target,
                idle_timeout=preloader_idle_timeout(spec.cfg),
                start_timeout=float(spec.cfg.preloader_start_timeout),
                spawn_timeout=float(spec.cfg.spawn_timeout),
                halt_on_boot_failure=not self.multi,
                spare_target=spare_workers(spec.cfg),
            )
            return
        if pool.spawn_method != method:
            self.log.warning(
                "app=%s spawn_method change from %r to %r needs a restart; keeping %r",
                spec.name, pool.spawn_method, method, pool.spawn_method,
            )
        pool.target = target
        pool.idle_timeout = preloader_idle_timeout(spec.cfg)
        pool.start_timeout = float(spec.cfg.preloader_start_timeout)
        pool.spawn_timeout = float(spec.cfg.spawn_timeout)
        pool.spare_target = spare_workers(spec.cfg)

    def bind_failed(self, name: str, error: str, added: bool) -> None:
        """A reload could not bind ``name``'s addresses: a new app stays out, an app whose
        bind changed keeps serving at its old addresses. The others are not touched."""
        spec = self.specs[name]
        for listener in spec.listeners:
            listener.close()
        if added:
            del self.specs[name]
            del self.pools[name]
            self.log.error("app=%s not started: %s", name, error)
            return
        old = self._rebound.pop(name, [])
        self.retired_listeners = [lnr for lnr in self.retired_listeners if lnr not in old]
        spec.listeners = old
        self.log.error("app=%s keeps its old addresses: %s", name, error)

    def all_listeners(self) -> list[Any]:
        return [lnr for spec in self.specs.values() for lnr in spec.listeners]

    def foreign_listeners(self, spec: AppSpec) -> list[Any]:
        """Every listener that is not ``spec``'s (other apps', retired ones): what a child of ``spec`` must close."""
        mine = {lnr.fileno() for lnr in spec.listeners}
        others = [lnr for other in self.specs.values() if other is not spec for lnr in other.listeners]
        found: dict[int, Any] = {}
        for lnr in [*others, *self.retired_listeners]:
            if lnr.fileno() not in mine:
                found.setdefault(id(lnr), lnr)
        return list(found.values())

    def old_generation_alive(self) -> bool:
        return any(w.generation < p.generation for p in self.pools.values() for w in p.workers.values())

    def check_restart_files(self, now: float) -> bool:
        """Passenger's restart.txt: a new mtime restarts that app alone (checked once a second,
        and True when it was: the master's other once-a-second checks follow)."""
        if now < self._restart_check_at:
            return False
        self._restart_check_at = now + 1.0
        for spec in self.specs.values():
            if spec.restart_path is None or spec.removed:
                continue
            mtime = _mtime(spec.restart_path)
            if mtime is not None and mtime != spec.restart_mtime:
                self.log.info("app=%s %s touched: restarting the app", spec.name, spec.restart_path)
                self.pools[spec.name].request_reload(now)
            spec.restart_mtime = mtime
        return True

    def keep_only(self, name: str) -> None:
        """In a fresh child of the master: drop every other app's spec and pool (settings, env, state)."""
        self.specs = {n: s for n, s in self.specs.items() if n == name}
        self.pools = {n: p for n, p in self.pools.items() if n == name}

    def forget(self, name: str) -> AppSpec:
        """Drop a removed app whose processes are all gone; its spec, to close its listeners."""
        del self.pools[name]
        return self.specs.pop(name)


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def default_app_name(app: Any) -> str:
    """The one-app form's name: the module of ``APP_MODULE`` (``example_app.wsgi``)."""
    uri = getattr(app, "app_uri", None)
    if isinstance(uri, str) and uri:
        return uri.split(":", 1)[0]
    return "default"


def spare_workers(cfg: Any) -> int:
    """The setting; none for a direct app (only a preloader parks spares)."""
    return int(cfg.spare_workers) if cfg.spawn_method == "smart" else 0


def preloader_idle_timeout(cfg: Any) -> float:
    """The setting, or its default by the kind of pool: keep the preloader of a fixed pool (it
    respawns workers from it, at once and from the same code), idle out a dynamic pool's."""
    seconds = cfg.preloader_idle_timeout
    if seconds is None:
        dynamic = cfg.min_workers is not None or cfg.max_workers is not None
        seconds = 300 if dynamic else 0
    return float(seconds)
