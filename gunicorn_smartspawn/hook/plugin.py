"""Glue between stock gunicorn and the plugin, called by the startup hook.

``on_gunicorn_module`` runs right after ``gunicorn.config`` and after
``gunicorn.app.base`` finished importing:

* ``gunicorn.config``: import :mod:`gunicorn_smartspawn.settings`, whose
  ``Setting`` subclasses register themselves, before any ``Config`` exists.
* ``gunicorn.app.wsgiapp``: let a configuration with an ``apps`` table run
  without ``APP_MODULE``, and refuse ``apps`` without our worker class.
* ``gunicorn.app.base``: replace the module's ``Arbiter`` name, which
  ``BaseApplication.run()`` calls, with :func:`select_arbiter`. It returns
  gunicorn's own ``Arbiter`` unless the worker class is ours, so a gunicorn
  run without ``-k smartspawn.Worker`` is untouched.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from gunicorn_smartspawn.hook import state

NO_APP_MODULE = "No application module specified."


def on_gunicorn_module(name: str, module: ModuleType) -> None:
    if name == "gunicorn.config":
        from gunicorn_smartspawn.hook import settings  # noqa: F401  (registers the settings)

        state.settings_registered()
    elif name == "gunicorn.app.base":
        current = getattr(module, "Arbiter", None)
        if current is None or current is select_arbiter:
            return
        state.remember_stock_arbiter(current)
        setattr(module, "Arbiter", select_arbiter)  # noqa: B010  (mypy: ModuleType has no Arbiter)
        _remember_config_names(module.Application)
    elif name == "gunicorn.app.wsgiapp":
        _allow_apps_without_app_module(module.WSGIApplication)
        _stock_runs_keep_stock_settings(module.WSGIApplication)


def _allow_apps_without_app_module(application_class: Any) -> None:
    """With an ``apps`` table, gunicorn must not insist on APP_MODULE."""
    original = application_class.load_config
    if getattr(original, "_smartspawn", False):
        return

    def load_config(self: Any) -> None:
        from gunicorn.errors import ConfigError

        try:
            original(self)
        except ConfigError as exc:
            apps = self.cfg.settings["apps"].get() if "apps" in self.cfg.settings else None
            refused = getattr(apps, "error", None)  # an apps table that failed its check
            if str(exc) == NO_APP_MODULE and refused and uses_smartspawn(self.cfg.settings["worker_class"].get()):
                raise ConfigError(refused) from None
            if str(exc) != NO_APP_MODULE or not apps:
                raise
        apps = self.cfg.settings["apps"].get() if "apps" in self.cfg.settings else None
        ours = uses_smartspawn(self.cfg.settings["worker_class"].get())
        if apps and not ours:
            raise ConfigError("apps = {...} needs worker_class = 'smartspawn.Worker' (-k smartspawn.Worker)")
        if ours:
            from gunicorn_smartspawn.config.validators import Refused
            from gunicorn_smartspawn.hook import typos
            from gunicorn_smartspawn.hook.settings import PLUGIN_SETTINGS

            for name in PLUGIN_SETTINGS:  # a stock run ignores them; ours refuses, as any bad setting
                value = self.cfg.settings[name].get()
                if isinstance(value, Refused):
                    raise ConfigError(value.error)

            for where, names in getattr(self, "_smartspawn_config_names", {}).items():
                typos.warn(where, names, self.cfg.settings)

    load_config._smartspawn = True  # type: ignore[attr-defined]
    application_class.load_config = load_config


def _remember_config_names(application_class: Any) -> None:
    """Keep the names a configuration file set, for the did-you-mean of :mod:`.typos`."""
    original = application_class.load_config_from_module_name_or_filename
    if getattr(original, "_smartspawn", False):
        return

    def load(self: Any, location: str) -> Any:
        names = original(self, location)
        if isinstance(names, dict):
            remembered = getattr(self, "_smartspawn_config_names", {})
            remembered[location] = dict(names)
            self._smartspawn_config_names = remembered
        return names

    load._smartspawn = True  # type: ignore[attr-defined]
    application_class.load_config_from_module_name_or_filename = load


installed = state.installed


def uses_smartspawn(worker_class: Any) -> bool:
    """Is ``worker_class`` (a setting value: class or dotted string) our worker?"""
    if isinstance(worker_class, str):
        module = worker_class.rsplit(".", 1)[0] if "." in worker_class else ""
        if module in ("smartspawn", "gunicorn_smartspawn") or module.startswith(
            "gunicorn_smartspawn."
        ):
            return True
        if module.startswith("gunicorn.") or "." not in worker_class:
            return False  # gunicorn's own classes and its short names (sync, gthread, ...)
        try:
            from gunicorn import util

            worker_class = util.load_class(worker_class)
        except Exception:
            return False  # gunicorn reports the bad class itself, moments later
    from gunicorn_smartspawn.worker import Worker

    return isinstance(worker_class, type) and issubclass(worker_class, Worker)


def _stock_runs_keep_stock_settings(application_class: Any) -> None:
    """A run whose worker class is not ours ends up with gunicorn's own settings only.

    Ours are registered before gunicorn parses anything (it must know the
    flags); once the configuration is read, a stock run drops them from its
    ``Config`` (at start and on every HUP), so that nothing of it differs from
    stock gunicorn, not even its ``--log-level debug`` dump. The one line
    about plugin settings it was given is kept for the arbiter selector.
    """
    inner = application_class.load_config
    if getattr(inner, "_smartspawn_stock", False):
        return

    def load_config(self: Any) -> None:
        inner(self)
        settings = self.cfg.settings
        if uses_smartspawn(settings["worker_class"].get()):
            return
        from gunicorn_smartspawn.hook.settings import SECTION

        self._smartspawn_note = foreign_worker_note(self.cfg)
        for name in [n for n, setting in settings.items() if getattr(setting, "section", None) == SECTION]:
            del settings[name]

    load_config._smartspawn_stock = True  # type: ignore[attr-defined]
    application_class.load_config = load_config


def select_arbiter(app: Any) -> Any:
    """Build the arbiter for ``app``: ours for ``-k smartspawn.Worker``, else gunicorn's."""
    if uses_smartspawn(app.cfg.settings["worker_class"].get()):
        from gunicorn_smartspawn.control import attach_control
        from gunicorn_smartspawn.master.arbiter import SmartArbiter

        return SmartArbiter(app, services=[attach_control])
    arbiter = state.stock_arbiter()(app)
    note = getattr(app, "_smartspawn_note", None) or foreign_worker_note(app.cfg)
    if note is not None:
        arbiter.log.warning(note)
    return arbiter


def foreign_worker_note(cfg: Any) -> str | None:
    """One line for a stock run given plugin settings (``-k gevent --spawn-method smart``): they do
    nothing there, and this says how to ask for them; None when no plugin setting was given."""
    from gunicorn_smartspawn.hook.settings import PLUGIN_SETTINGS

    given = [n for n in PLUGIN_SETTINGS if n != "apps" and getattr(cfg.settings.get(n), "explicit", False)]
    if not given:
        return None
    worker = cfg.settings["worker_class"].get()
    spelled = worker if isinstance(worker, str) else f"{worker.__module__}.{worker.__qualname__}"
    if spelled == "sync" and getattr(cfg, "threads", 1) > 1:
        spelled = "gthread"
    model = "" if spelled in ("sync", "gunicorn.workers.sync.SyncWorker") else f" --smart-worker-class {spelled}"
    what = f"{given[0]} is a gunicorn-smartspawn setting" if len(given) == 1 else (
        f"{', '.join(given)} are gunicorn-smartspawn settings"
    )
    return f"{what} and -k {spelled} is not its worker: use -k smartspawn.Worker{model}"
