"""The ``apps`` table: several applications in one master.

``apps`` in ``gunicorn.conf.py`` maps a name to that app's settings::

    apps = {
        "shop": {"app": "shop.wsgi:application", "bind": ["unix:/run/shop.sock"], "workers": 4},
        "blog": {"app": "blog.app:app", "bind": "127.0.0.1:8002", "spawn_method": "direct"},
    }

This module validates the table strictly (pure: no sockets, no imports of
the apps), derives each app's gunicorn ``Config`` from the global one, and
provides the small application object a preloader or worker loads the app
through. Every error names the app and the key.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gunicorn_smartspawn.config import validators as v
from gunicorn_smartspawn.errors import ConfigError

NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


#: Per-app key -> (validator, gunicorn setting it overrides or None for our own handling)
KEYS: Final[dict[str, tuple[v.Check, str | None]]] = {
    "app": (v.string, None),
    "bind": (v.string_list, "bind"),
    "workers": (v.positive_int, "workers"),
    "threads": (v.positive_int, "threads"),
    **{name: (check, name) for name, check in v.PLUGIN_CHECKS.items()},
    "timeout": (v.non_negative_int, "timeout"),
    "graceful_timeout": (v.non_negative_int, "graceful_timeout"),
    "max_requests": (v.non_negative_int, "max_requests"),
    "max_requests_jitter": (v.non_negative_int, "max_requests_jitter"),
    "chdir": (v.string, None),
    "pythonpath": (v.string_list, None),
    "env": (v.env_map, None),
    "user": (v.user, "user"),
    "group": (v.user, "group"),
    "restart_file": (v.string, None),
}


@dataclass(frozen=True)
class AppConfig:
    """One validated entry of the ``apps`` table."""

    name: str
    app: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    chdir: str | None = None
    pythonpath: tuple[str, ...] = ()
    #: kept out of repr(): gunicorn formats every setting for its debug log, ``apps`` included
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    restart_file: str | None = None

    @property
    def binds(self) -> list[str]:
        return list(self.overrides.get("bind", []))

    def restart_path(self, cwd: str) -> str:
        """Passenger's ``tmp/restart.txt`` below the app's root (its chdir, else ``cwd``)."""
        root = self.chdir or cwd
        path = self.restart_file or os.path.join("tmp", "restart.txt")
        return os.path.normpath(os.path.join(root, path))


def validate_apps(value: Any) -> dict[str, AppConfig] | None:
    """The ``apps`` setting's validator: name -> AppConfig (None stays None: the setting's default,
    as gunicorn's own tests expect of every default), or a ConfigError naming app and key."""
    if value is None:
        return None
    if isinstance(value, Mapping) and all(isinstance(v, AppConfig) for v in value.values()):
        return dict(value)  # already validated (a Config being copied)
    if not isinstance(value, Mapping):
        raise ConfigError(f"apps={value!r} is not valid: expected a dict of app name -> dict of settings")
    apps: dict[str, AppConfig] = {}
    seen_names: dict[str, str] = {}
    for name, entry in value.items():
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ConfigError(
                f"apps: the name {name!r} is not valid: expected letters, digits, '_', '.' or '-' "
                "(at most 64, starting with a letter or digit)"
            )
        if name.lower() in seen_names:
            raise ConfigError(f"apps: the names {seen_names[name.lower()]!r} and {name!r} differ only in case")
        seen_names[name.lower()] = name
        apps[name] = _validate_entry(name, entry)
    _check_binds(apps)
    return apps


def _validate_entry(name: str, entry: Any) -> AppConfig:
    where = f"apps[{name!r}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}={entry!r} is not valid: expected a dict of settings with at least 'app'")
    for key in entry:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(KEYS))}"
            raise ConfigError(f"{where} has an unknown key {key!r}{hint}")
    if "app" not in entry:
        raise ConfigError(f"{where} has no 'app': expected the WSGI app as 'module:callable'")
    checked = {key: v.check(f"{where}[{key!r}]", KEYS[key][0], raw) for key, raw in entry.items()}
    overrides: dict[str, Any] = {}
    for key, value in checked.items():
        setting = KEYS[key][1]
        if setting is not None:
            overrides[setting] = value
    if "bind" not in overrides:
        raise ConfigError(f"{where} has no 'bind': expected an address like '127.0.0.1:8001' or 'unix:/run/{name}.sock'")
    return AppConfig(
        name=name,
        app=checked["app"],
        overrides=overrides,
        chdir=checked.get("chdir"),
        pythonpath=tuple(checked.get("pythonpath", ())),
        env=checked.get("env", {}),
        restart_file=checked.get("restart_file"),
    )


def normalize_bind(bind: str) -> str:
    """A comparable form of a bind address: 'unix:/abs/path', 'tcp:host:port' or 'fd:N'.

    Read as gunicorn reads it (``gunicorn.util.parse_address``): ``:8000`` is
    every interface, a host without a port has port 8000, ``tcp://`` is a prefix.
    """
    from gunicorn import util

    try:
        address = util.parse_address(bind)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"bind={bind!r} is not valid: {exc}") from None
    if isinstance(address, int):
        return f"fd:{address}"
    if isinstance(address, str):
        return "unix:" + os.path.abspath(address)
    host, port = address
    if not 0 <= int(port) <= 65535:
        raise ConfigError(f"bind={bind!r} is not valid: the port must be 0 to 65535")
    host = host.strip("[]").lower() or "0.0.0.0"
    if host == "localhost":
        host = "127.0.0.1"
    return f"tcp:{host}:{port}"


def _check_binds(apps: Mapping[str, AppConfig]) -> None:
    owner: dict[str, str] = {}
    for app in apps.values():
        for bind in app.binds:
            try:
                key = normalize_bind(bind)
            except ConfigError as exc:
                raise ConfigError(f"apps[{app.name!r}]['bind']={bind!r} is not valid: {str(exc).split(': ', 1)[-1]}") from None
            if key in owner:
                other = owner[key]
                what = "twice" if other == app.name else f"also by apps[{other!r}]"
                raise ConfigError(f"apps[{app.name!r}]['bind']={bind!r} is used {what}: each address belongs to one app")
            owner[key] = app.name


def derive_config(base: Any, app: AppConfig) -> Any:
    """A copy of the global gunicorn ``Config`` with ``app``'s settings applied."""
    # not copy.copy(): gunicorn 23's Config.__getattr__ recurses on a half-built copy
    cfg = object.__new__(type(base))
    cfg.__dict__.update(base.__dict__)
    cfg.settings = {name: setting.copy() for name, setting in base.settings.items()}
    for name, value in app.overrides.items():
        try:
            cfg.set(name, value)
        except Exception as exc:
            raise ConfigError(f"apps[{app.name!r}][{name!r}]={value!r} is not valid: {exc}") from None
    cfg.set("proc_name", app.name)
    if "apps" in cfg.settings:
        cfg.set("apps", {})
    if app.env:
        cfg.set("raw_env", [*base.settings["raw_env"].get(), *(f"{k}={v}" for k, v in app.env.items())])
    if "user" in app.overrides and "umask" in cfg.settings:
        cfg.set("umask", 0o177)  # its unix sockets: owner only
    return cfg


class AppLoader:
    """The application object of one app in a multi-app master.

    Plays the part of gunicorn's ``WSGIApplication`` for the worker classes
    (``wsgi()``, ``cfg``); it imports nothing until a preloader or direct
    worker calls ``wsgi()`` after :func:`enter_app` has set up the process.
    """

    def __init__(self, app: AppConfig, cfg: Any) -> None:
        self.config = app
        self.cfg = cfg
        self.app_uri = app.app
        self.callable: Any = None

    def load(self) -> Any:
        from gunicorn import util

        return util.import_app(self.app_uri)

    def wsgi(self) -> Any:
        if self.callable is None:
            self.callable = self.load()
        return self.callable

    def reload(self) -> None:  # pragma: no cover - the master reloads the global config
        pass


def enter_app(app: AppConfig, cfg: Any) -> None:
    """In a preloader or direct worker of ``app``, before the import: directory, paths, env."""
    if app.chdir:
        os.chdir(app.chdir)
        if app.chdir not in sys.path:
            sys.path.insert(0, app.chdir)
    for path in reversed(app.pythonpath):
        path = os.path.abspath(path)
        if path not in sys.path:
            sys.path.insert(0, path)
    for key, value in cfg.env.items():
        os.environ[key] = value


@dataclass
class AppSpec:
    """What the master holds for one app: its settings, application object and listeners."""

    name: str
    app: Any  # gunicorn's WSGIApplication (the one-app form) or an AppLoader
    cfg: Any  # the app's gunicorn Config
    config: AppConfig | None = None  # None in the one-app form
    listeners: list[Any] = field(default_factory=list)
    restart_path: str | None = None
    restart_mtime: float | None = None
    removed: bool = False

    def enter(self) -> None:
        """Set up a freshly forked preloader or direct worker of this app."""
        if self.config is not None:
            enter_app(self.config, self.cfg)
