"""What a fresh child of the master drops before it becomes one app's preloader or worker.

Runs right after ``fork()`` in the child, before any application code: the
child keeps only what belongs to its own app. Closed: the master's private
descriptors (wake-up pipe, control sockets, every preloader channel), the
heartbeat files of every other worker, and the listeners of every other app.
Unmapped: every other app's scoreboard. Dropped, then collected: every other
app's configuration (spec, pool, derived config with its ``env``, listener
and worker objects, its entry of the ``apps`` table and of the configuration
module's ``apps`` dict), after its ``env`` values were overwritten in place
where nothing else holds them. (The master never puts an app's ``env`` into
its own ``os.environ``; each child sets its own app's.)

What neither can take back is a copy the master freed before the fork
(while gunicorn compiled ``gunicorn.conf.py``, for one): the child's memory
is a copy of the master's. docs/multi-app.md ("What one app can see of
another") says what remains and where to keep secrets instead.
"""

from __future__ import annotations

import gc
import linecache
import os
import signal
import socket
import sys
from typing import Any

from gunicorn_smartspawn.config.apps import AppConfig, AppSpec
from gunicorn_smartspawn.master.scrub import wipe_exclusive_strings

#: The module name gunicorn gives a configuration file it executes.
CONFIG_MODULE = "__config__"


def leave_master(master: Any, spec: AppSpec, private_fds: list[int]) -> None:
    """In a fresh child of the master: drop what belongs to the master and to other apps."""
    signal.set_wakeup_fd(-1)
    for fd in private_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    for listener in master.apps.foreign_listeners(spec):
        _close_listener(listener)
    if master.apps.multi:
        master.LISTENERS = list(spec.listeners)  # the others hold their app's configuration
    spares = [c.worker for c in master.children.of_role("spare")]
    for worker in [*master.children.workers.values(), *spares, *master.children.pending_workers()]:
        worker.tmp.close()
    master.scoreboards.keep_only(spec.name)
    forget_other_apps(master, spec)


def _close_listener(listener: Any) -> None:
    """Close a gunicorn listener's descriptor and detach it, so that no later collection of the
    object closes the same number again (by then, maybe another file's)."""
    sock = getattr(listener, "sock", None)
    try:
        fd = sock.detach() if isinstance(sock, socket.socket) else listener.fileno()
        if fd >= 0:
            os.close(fd)
    except OSError:
        pass


def forget_other_apps(master: Any, spec: AppSpec) -> None:
    """Drop every other app's configuration objects this child inherited, then collect them.

    The other apps' ``env`` values that only this package's objects still hold
    are overwritten first (:mod:`.scrub`), so that their bytes do not stay in
    the memory the drop frees.
    """
    others = [other for other in master.apps.specs.values() if other.name != spec.name]
    if not others:
        return  # the one-app form, or the only app left
    for module in _config_modules(master.cfg):
        _prune_apps_dict(getattr(module, "apps", None), spec.name)
    _prune_apps_setting(master.cfg, spec.name)
    linecache.clearcache()  # source lines of gunicorn.conf.py, if a traceback ever showed them
    containers = _env_containers(master, spec, others)
    wipe_exclusive_strings(containers)
    containers.clear()
    others.clear()
    master.children.forget_other_apps(spec.name)
    master.apps.keep_only(spec.name)
    gc.unfreeze()  # the master froze its heap before the fork (spawner.HeapSharing): what was dropped
    gc.collect()   # may sit in cycles that only a collection over everything frees


def _env_containers(master: Any, spec: AppSpec, others: list[AppSpec]) -> list[Any]:
    """The dicts and lists of this package's that hold another app's ``env``: each other
    app's validated entry and derived ``raw_env``, for its spec and its workers' objects."""
    workers = [c.worker for role in ("worker", "spare") for c in master.children.of_role(role) if c.app != spec.name]
    workers += [w for w in master.children.pending_workers() if getattr(w, "app_name", None) != spec.name]
    entries = [other.config for other in others]
    entries += [getattr(getattr(w, "app", None), "config", None) for w in workers]
    keep = {id(_raw_env(master.cfg)), id(_raw_env(spec.cfg))}  # the global list, maybe shared
    raw_envs = [_raw_env(cfg) for cfg in [*(other.cfg for other in others), *(w.cfg for w in workers)]]
    return [
        *(entry.env for entry in entries if isinstance(entry, AppConfig)),
        *(raw for raw in raw_envs if isinstance(raw, list) and id(raw) not in keep),
    ]


def _raw_env(cfg: Any) -> Any:
    setting = getattr(cfg, "settings", {}).get("raw_env")
    return getattr(setting, "value", None)


def _prune_apps_setting(cfg: Any, name: str) -> None:
    """The global ``apps`` setting: only ``name``'s validated entry stays."""
    setting = getattr(cfg, "settings", {}).get("apps")
    if setting is not None and isinstance(setting.value, dict):
        setting.value = {key: entry for key, entry in setting.value.items() if key == name}


def _config_modules(cfg: Any) -> list[Any]:
    """The modules gunicorn executed as the configuration (``-c file.py`` or ``-c python:module``)."""
    names = [CONFIG_MODULE]
    location = getattr(cfg, "config", None)
    if isinstance(location, str) and location.startswith("python:"):
        names.append(location[len("python:") :])
    return [sys.modules[n] for n in names if n in sys.modules]


def _prune_apps_dict(apps: Any, name: str) -> None:
    """The configuration file's own ``apps`` dict, in place (hooks may hold it too)."""
    if isinstance(apps, dict):
        for key in [key for key in apps if key != name]:
            del apps[key]
