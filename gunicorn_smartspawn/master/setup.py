"""Checks of the global configuration that only the master can make, before gunicorn's setup.

Refusals raise (gunicorn prints them and exits 1 at start; on HUP the old
configuration keeps serving); what is only adjusted comes back as notes that
the master logs once its logger exists.
"""

from __future__ import annotations

import sys
from typing import Any

from gunicorn_smartspawn import _linux
from gunicorn_smartspawn.worker import models


def setup_notes(app: Any, reloading: bool) -> list[str]:
    """Refuse what cannot run; adjust and explain what can (``preload_app``)."""
    cfg = app.cfg
    apps = cfg.apps or {}
    if apps and getattr(app, "app_uri", None):
        raise RuntimeError(
            f"both APP_MODULE ({app.app_uri}) and apps = {{...}} are given: name the app in one place "
            "(an entry of apps, or APP_MODULE with --bind for a single app)"
        )
    methods = {e.overrides.get("spawn_method", cfg.spawn_method) for e in apps.values()} or {cfg.spawn_method}
    if "smart" in methods and not sys.platform.startswith("linux"):
        raise RuntimeError(
            f"spawn_method='smart' needs Linux (child subreaper, fork); this is {sys.platform}. "
            "Use --spawn-method=direct"
        )
    notes: list[str] = []
    try:
        models.check_config(cfg, cfg.worker_class)  # smart_worker_class, globally and per app
    except models.ModelError as exc:
        if not reloading:
            raise
        notes.append(f"{exc}: workers that run keep running; new ones fail to load until it is fixed")
    if cfg.preload_app:
        if "direct" in methods and not reloading:
            raise RuntimeError(
                "preload_app=True (--preload) conflicts with spawn_method='direct': it would import "
                "the app in the master. Use --spawn-method=smart to preload it in a preloader"
            )
        if "direct" in methods:  # a reload: keep serving, say why
            notes.append(
                "preload_app=True is ignored: it conflicts with spawn_method='direct' (it would import "
                "the app in the master); the master refused it at start and ignores it on reload"
            )
        else:
            notes.append(
                "preload_app=True is ignored with spawn_method='smart': the app is preloaded in its "
                "preloader process, not in the master"
            )
        cfg.set("preload_app", False)
    if any(e.overrides.get("ksm", cfg.ksm) for e in apps.values()) or (not apps and cfg.ksm):
        notes.extend(ksm_notes())
    return notes


def ksm_notes(kernel: str = _linux.KSM_RUN) -> list[str]:
    """What keeps ``ksm = True`` from merging anything on this machine (nothing: no note)."""
    supported = _linux.memory_merge_supported()
    if supported is not None:
        return [f"ksm=True has no effect: {supported}"]
    running = _linux.ksm_running(kernel)
    if running is None:
        return ["ksm=True has no effect: this kernel has no KSM (/sys/kernel/mm/ksm is missing)"]
    if not running:
        return [
            "ksm=True marks the app's processes, but KSM is stopped (/sys/kernel/mm/ksm/run is not 1): "
            "nothing is merged until root starts it with: echo 1 > /sys/kernel/mm/ksm/run"
        ]
    return []
