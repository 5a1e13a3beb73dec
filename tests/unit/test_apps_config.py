"""config/apps.py: the ``apps`` table validated, each app's gunicorn Config derived, and how an app is entered."""

from __future__ import annotations

import os
import pwd
import sys
from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import Config

from gunicorn_smartspawn.config.apps import (
    KEYS,
    AppConfig,
    AppLoader,
    AppSpec,
    derive_config,
    enter_app,
    normalize_bind,
    validate_apps,
)
from gunicorn_smartspawn.errors import ConfigError
from gunicorn_smartspawn.hook.settings import Apps


def entry(**extra: Any) -> dict[str, Any]:
    return {"app": "shop.wsgi:application", "bind": "127.0.0.1:8001", **extra}


def refused(table: Any) -> str:
    with pytest.raises(ConfigError) as info:
        validate_apps(table)
    return str(info.value)


# -- a valid table -------------------------------------------------------------------------------------


def test_nothing_configured_is_no_apps() -> None:
    assert validate_apps(None) is None  # gunicorn's test_defaults: a default validates to itself
    assert validate_apps({}) == {}


def test_a_full_entry() -> None:
    apps = validate_apps(
        {
            "shop": entry(
                bind=["127.0.0.1:8001", "unix:/run/shop.sock"],
                workers=4,
                threads=2,
                spawn_method=" Direct",
                timeout=0,
                max_requests=100,
                chdir=" /srv/shop ",
                pythonpath="lib",
                env={"SHOP": "1"},
                restart_file="deploy/restart",
            )
        }
    )
    assert list(apps) == ["shop"]
    shop = apps["shop"]
    assert shop == AppConfig(
        name="shop",
        app="shop.wsgi:application",
        overrides={
            "bind": ["127.0.0.1:8001", "unix:/run/shop.sock"],
            "workers": 4,
            "threads": 2,
            "spawn_method": "direct",
            "timeout": 0,
            "max_requests": 100,
        },
        chdir="/srv/shop",
        pythonpath=("lib",),
        env={"SHOP": "1"},
        restart_file="deploy/restart",
    )
    assert shop.binds == ["127.0.0.1:8001", "unix:/run/shop.sock"]


def test_keys_of_our_own_are_not_gunicorn_overrides() -> None:
    shop = validate_apps({"shop": entry(chdir="/srv", pythonpath=["a", "b"], env={}, restart_file="r")})["shop"]
    assert set(shop.overrides) == {"bind"}
    assert {key for key, (_, setting) in KEYS.items() if setting is None} == {
        "app", "chdir", "pythonpath", "env", "restart_file"
    }


def test_a_validated_table_passes_through_unchanged() -> None:
    # gunicorn validates again when it copies a Config: the result must be accepted as is
    apps = validate_apps({"shop": entry(), "blog": entry(bind="127.0.0.1:8002")})
    assert validate_apps(apps) == apps
    cfg = Config()
    cfg.set("apps", apps)
    assert cfg.apps == apps


def test_names_keep_their_order_and_may_use_dots_dashes_and_underscores() -> None:
    table = {"b.shop": entry(bind="127.0.0.1:1"), "a-blog_2": entry(bind="127.0.0.1:2"), "9": entry(bind="127.0.0.1:3")}
    assert list(validate_apps(table)) == ["b.shop", "a-blog_2", "9"]


# -- errors name the app and the key ---------------------------------------------------------------------


def test_not_a_dict() -> None:
    assert refused(["shop"]) == "apps=['shop'] is not valid: expected a dict of app name -> dict of settings"


@pytest.mark.parametrize("name", ["bad name", "", "-shop", ".shop", "x" * 65, "caf\u00e9", 1, None])
def test_bad_names(name: Any) -> None:
    assert refused({name: entry()}).startswith(f"apps: the name {name!r} is not valid: expected letters")


def test_the_longest_name() -> None:
    assert list(validate_apps({"x" * 64: entry()})) == ["x" * 64]


def test_names_differing_only_in_case() -> None:
    table = {"shop": entry(bind="127.0.0.1:1"), "SHOP": entry(bind="127.0.0.1:2")}
    assert refused(table) == "apps: the names 'shop' and 'SHOP' differ only in case"


def test_an_entry_that_is_not_a_dict() -> None:
    assert refused({"shop": "shop:app"}) == (
        "apps['shop']='shop:app' is not valid: expected a dict of settings with at least 'app'"
    )


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("wokers", "workers"), ("spawn-method", "spawn_method"), ("bnd", "bind"), ("restart_txt", "restart_file"),
     ("enviro", "env")],
)
def test_an_unknown_key_gets_a_did_you_mean(key: str, suggestion: str) -> None:
    assert refused({"shop": entry(**{key: 1})}) == f"apps['shop'] has an unknown key {key!r}; did you mean {suggestion!r}?"


def test_an_unknown_key_without_a_near_miss_lists_the_known_keys() -> None:
    message = refused({"shop": entry(colour_scheme=True)})
    assert message == f"apps['shop'] has an unknown key 'colour_scheme'; known keys: {', '.join(sorted(KEYS))}"


def test_a_key_that_is_not_a_string() -> None:
    assert refused({"shop": {**entry(), 3: "x"}}).startswith("apps['shop'] has an unknown key 3; known keys: app, bind")


def test_the_unknown_key_is_reported_before_a_missing_app() -> None:
    assert "unknown key 'ap'; did you mean 'app'?" in refused({"shop": {"ap": "x:y", "bind": "127.0.0.1:1"}})


def test_no_app() -> None:
    assert refused({"shop": {"bind": "127.0.0.1:1"}}) == (
        "apps['shop'] has no 'app': expected the WSGI app as 'module:callable'"
    )


def test_no_bind() -> None:
    assert refused({"shop": {"app": "shop:app"}}) == (
        "apps['shop'] has no 'bind': expected an address like '127.0.0.1:8001' or 'unix:/run/shop.sock'"
    )


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("app", "  ", "a non-empty string"),
        ("bind", [], "a string or a non-empty list of strings"),
        ("workers", "4", "a whole number >= 1"),
        ("workers", 0, "a whole number >= 1"),
        ("threads", True, "a whole number >= 1"),
        ("timeout", -1, "a whole number >= 0"),
        ("graceful_timeout", 1.5, "a whole number >= 0"),
        ("max_requests_jitter", None, "a whole number >= 0"),
        ("spawn_method", "fast", "'smart' (fork workers from a preloader) or 'direct'"),
        ("preloader_idle_timeout", -1, "a whole number of seconds >= 0"),
        ("preloader_start_timeout", "soon", "a whole number of seconds >= 0"),
        ("gc_freeze", "maybe", "True or False"),
        ("ksm", "maybe", "True or False"),
        ("env", {"A": 1}, "a dict whose values are strings"),
        ("env", {"A=B": "1"}, "a dict of environment variable names to strings"),
        ("user", "", "a user name or uid"),
        ("group", 1.0, "a user name or uid"),
        ("pythonpath", ["ok", ""], "a string or a non-empty list of strings"),
        ("restart_file", "", "a non-empty string"),
    ],
)
def test_a_bad_value_names_app_key_and_value(key: str, value: Any, expected: str) -> None:
    message = refused({"shop": entry(**{key: value})})
    assert message.startswith(f"apps['shop'][{key!r}]={value!r} is not valid: expected {expected}"), message


def test_the_first_bad_app_is_the_one_named() -> None:
    table = {"good": entry(bind="127.0.0.1:1"), "bad": entry(bind="127.0.0.1:2", workers=0), "worse": 1}
    assert refused(table).startswith("apps['bad']['workers']=0")


# -- one address, one app ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("127.0.0.1:8001", "127.0.0.1:8001"),
        ("127.0.0.1:8001", "localhost:8001"),
        ("127.0.0.1:8001", "LOCALHOST:8001"),
        ("127.0.0.1", "127.0.0.1:8000"),  # gunicorn's default port
        ("[::1]:8001", "[::1]:8001"),
        ("unix:/tmp/x.sock", "unix:///tmp/x.sock"),
        ("unix:x.sock", "unix:{cwd}/x.sock"),
        ("fd://3", "fd://3"),
    ],
)
def test_one_address_in_two_apps_is_refused(first: str, second: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    second = second.format(cwd=tmp_path)
    table = {"shop": entry(bind=first), "blog": entry(bind=second)}
    assert refused(table) == (
        f"apps['blog']['bind']={second!r} is used also by apps['shop']: each address belongs to one app"
    )


def test_one_address_twice_in_one_app_is_refused() -> None:
    message = refused({"shop": entry(bind=["127.0.0.1:8001", "localhost:8001"])})
    assert message == "apps['shop']['bind']='localhost:8001' is used twice: each address belongs to one app"


@pytest.mark.parametrize(
    ("first", "second"),
    [("127.0.0.1:8001", "127.0.0.1:8002"), ("127.0.0.1:8001", "127.0.0.2:8001"), ("unix:/tmp/a", "unix:/tmp/b"),
     ("fd://3", "fd://4"), ("unix:/tmp/8001", "127.0.0.1:8001")],
)
def test_different_addresses_are_fine(first: str, second: str) -> None:
    assert list(validate_apps({"shop": entry(bind=first), "blog": entry(bind=second)})) == ["shop", "blog"]


@pytest.mark.parametrize(
    ("first", "second"),
    [(":8000", "0.0.0.0:8000"), ("[::1]", "[::1]:8000"), ("tcp://127.0.0.1:8001", "127.0.0.1:8001"),
     ("[::1]:8001", "[::1]:8001")],
)
def test_gunicorn_spellings_of_one_address_are_one_address(first: str, second: str) -> None:
    # read as gunicorn's parse_address reads them: ':8000' is every interface, '[::1]' has port 8000,
    # 'tcp://' is a prefix; with --reuse-port two apps could otherwise both bind one address
    assert normalize_bind(first) == normalize_bind(second)
    assert refused({"shop": entry(bind=first), "blog": entry(bind=second)}).startswith(
        f"apps['blog']['bind']={second!r} is used also by apps['shop']"
    )


@pytest.mark.parametrize("bind", ["127.0.0.1:http", "fd://x"])
def test_an_address_gunicorn_cannot_parse_names_the_app(bind: str) -> None:
    assert refused({"shop": entry(bind=bind)}).startswith(f"apps['shop']['bind']={bind!r} is not valid")


@pytest.mark.parametrize("bind", ["127.0.0.1:99999", "127.0.0.1:65536"])
def test_a_port_out_of_range_is_refused(bind: str) -> None:
    assert refused({"shop": entry(bind=bind)}).startswith(f"apps['shop']['bind']={bind!r} is not valid")


# -- derive_config on gunicorn's own Config ----------------------------------------------------------------


def _one(**extra: Any) -> AppConfig:
    return validate_apps({"shop": entry(**extra)})["shop"]


def test_derive_config_applies_the_overrides_to_a_copy() -> None:
    base = Config()
    base.set("workers", 3)
    base.set("timeout", 30)
    base.set("graceful_timeout", 7)
    base.set("spawn_method", "direct")
    app = _one(bind=["127.0.0.1:8001", "127.0.0.1:8002"], workers=2, timeout=10, spawn_method="smart", gc_freeze="no")
    cfg = derive_config(base, app)
    assert (cfg.workers, cfg.timeout, cfg.spawn_method, cfg.gc_freeze) == (2, 10, "smart", False)
    assert cfg.bind == ["127.0.0.1:8001", "127.0.0.1:8002"]
    assert cfg.graceful_timeout == 7  # not overridden: the global value
    assert cfg.proc_name == "shop"
    assert cfg.apps == {}  # a derived config describes one app
    # the global config is untouched
    assert (base.workers, base.timeout, base.spawn_method, base.gc_freeze) == (3, 30, "direct", True)
    assert base.bind == ["127.0.0.1:8000"] and base.settings["proc_name"].get() is None
    assert all(cfg.settings[name] is not base.settings[name] for name in base.settings)
    cfg.set("graceful_timeout", 1)
    assert base.graceful_timeout == 7


def test_derived_configs_of_two_apps_are_independent() -> None:
    base = Config()
    apps = validate_apps({"shop": entry(workers=2), "blog": entry(bind="127.0.0.1:8002", workers=5)})
    shop, blog = (derive_config(base, a) for a in apps.values())
    assert (shop.workers, blog.workers, base.workers) == (2, 5, 1)
    assert (shop.proc_name, blog.proc_name) == ("shop", "blog")


def test_derive_config_adds_the_app_env_after_the_global_one() -> None:
    base = Config()
    base.set("raw_env", ["A=1", "B=global"])
    cfg = derive_config(base, _one(env={"B": "shop", "C": "x=y"}))
    assert cfg.env == {"A": "1", "B": "shop", "C": "x=y"}
    assert base.env == {"A": "1", "B": "global"}


def test_derive_config_without_env_keeps_the_global_env() -> None:
    base = Config()
    base.set("raw_env", ["A=1"])
    assert derive_config(base, _one()).env == {"A": "1"}


def test_an_app_with_its_own_user_gets_owner_only_sockets() -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    base = Config()
    assert base.umask == 0
    cfg = derive_config(base, _one(user=me))
    assert cfg.uid == os.getuid()
    assert cfg.umask == 0o177
    assert base.umask == 0
    assert derive_config(base, _one()).umask == 0  # no user of its own: the global umask
    assert derive_config(base, _one(group=os.getgid())).umask == 0


def test_gunicorns_own_validation_of_an_override_names_the_app() -> None:
    with pytest.raises(ConfigError) as info:
        derive_config(Config(), _one(user="no-such-user-smartspawn"))
    message = str(info.value)
    assert message.startswith("apps['shop']['user']='no-such-user-smartspawn' is not valid: ")
    assert "No such user" in message


# -- restart.txt -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chdir", "restart_file", "expected"),
    [
        (None, None, "/srv/cwd/tmp/restart.txt"),
        ("/srv/shop", None, "/srv/shop/tmp/restart.txt"),
        ("/srv/shop", "deploy/restart", "/srv/shop/deploy/restart"),
        ("/srv/shop", "../shared/restart.txt", "/srv/shared/restart.txt"),
        ("/srv/shop", "/run/shop.restart", "/run/shop.restart"),
        (None, "./x/../restart", "/srv/cwd/restart"),
    ],
)
def test_restart_path(chdir: str | None, restart_file: str | None, expected: str) -> None:
    app = AppConfig(name="shop", app="shop:app", chdir=chdir, restart_file=restart_file)
    assert app.restart_path("/srv/cwd") == expected


def test_restart_path_of_a_validated_entry() -> None:
    assert _one(chdir="/srv/shop/").restart_path("/elsewhere") == "/srv/shop/tmp/restart.txt"


# -- the application object, and entering an app -----------------------------------------------------------


def test_app_loader_imports_nothing_until_asked_and_then_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = "smartspawn_unit_loader_app"
    source = "LOADS = []\nLOADS.append(1)\ndef application(environ, start_response):\n    return []\n"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    app = validate_apps({"shop": entry(app=f"{module}:application")})["shop"]
    cfg = derive_config(Config(), app)
    loader = AppLoader(app, cfg)
    assert (loader.cfg, loader.app_uri, loader.config) == (cfg, f"{module}:application", app)
    assert module not in sys.modules
    first = loader.wsgi()
    assert loader.wsgi() is first
    assert first is sys.modules[module].application
    assert sys.modules[module].LOADS == [1]
    monkeypatch.delitem(sys.modules, module)


def test_enter_app_sets_directory_path_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "shop"
    (root / "lib").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("SMARTSPAWN_UNIT_A", "before")
    monkeypatch.delenv("SMARTSPAWN_UNIT_B", raising=False)
    app = _one(chdir=str(root), pythonpath=["lib", "/opt/extra"], env={"SMARTSPAWN_UNIT_A": "shop", "SMARTSPAWN_UNIT_B": "2"})
    base = Config()
    base.set("raw_env", ["SMARTSPAWN_UNIT_B=global"])
    cfg = derive_config(base, app)
    AppSpec(name="shop", app=None, cfg=cfg, config=app).enter()
    assert os.getcwd() == str(root)
    # pythonpath first, in its own order, relative to the app's directory; then the directory itself
    assert sys.path[:3] == [str(root / "lib"), "/opt/extra", str(root)]
    assert os.environ["SMARTSPAWN_UNIT_A"] == "shop"
    assert os.environ["SMARTSPAWN_UNIT_B"] == "2"


def test_entering_twice_does_not_grow_sys_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    app = _one(chdir=str(tmp_path), pythonpath="lib")
    cfg = derive_config(Config(), app)
    enter_app(app, cfg)
    once = list(sys.path)
    enter_app(app, cfg)
    assert sys.path == once


def test_the_one_app_form_enters_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = list(sys.path)
    AppSpec(name="example", app=None, cfg=Config()).enter()
    assert os.getcwd() == str(tmp_path) and sys.path == path


# -- what the settings say about the table -------------------------------------------------------------------


def test_the_apps_setting_documents_every_key() -> None:
    missing = [key for key in KEYS if f"``{key}``" not in Apps.desc]
    assert missing == []
