"""What a fresh child drops of the other apps (master/isolation.py), and the in-place wipe (master/scrub.py).

No fork: the functions run on the objects a master holds, in this process.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from gunicorn.config import Config

from gunicorn_smartspawn.config.apps import AppConfig
from gunicorn_smartspawn.master.apps import AppTable
from gunicorn_smartspawn.master.children import Child, Children
from gunicorn_smartspawn.master.isolation import CONFIG_MODULE, forget_other_apps
from gunicorn_smartspawn.master.scrub import wipe_exclusive_strings
from gunicorn_smartspawn.scoreboard import Scoreboards


def fresh(text: str) -> str:
    """A string object of its own (not a constant, not interned)."""
    return "".join(list(text))


# -- scrub ---------------------------------------------------------------------------------------------------


def test_a_string_only_the_containers_hold_is_zeroed_in_place() -> None:
    env = {"PASSWORD": fresh("s3cret-value-1")}
    raw = [fresh("PASSWORD=s3cret-value-1")]
    assert wipe_exclusive_strings([env, raw]) == 2
    assert env["PASSWORD"] == "\0" * len("s3cret-value-1")
    assert raw[0] == "\0" * len("PASSWORD=s3cret-value-1")
    assert list(env) == ["PASSWORD"], "keys are not values: left alone"


def test_a_string_held_elsewhere_too_is_left_alone() -> None:
    kept = fresh("still-needed-here")
    env = {"A": kept}
    assert wipe_exclusive_strings([env]) == 0
    assert kept == "still-needed-here"
    other = {"B": kept}
    del kept
    assert wipe_exclusive_strings([env]) == 0  # `other` holds it
    assert other["B"] == "still-needed-here"
    assert wipe_exclusive_strings([env, other]) == 1  # every holder is given: both would drop it
    assert env["A"] == other["B"] == "\0" * len("still-needed-here")


def test_a_container_given_twice_counts_once() -> None:
    env = {"A": fresh("counted-once-please")}
    assert wipe_exclusive_strings([env, env, [env]]) == 1


def test_strings_the_wipe_cannot_place_are_left_alone() -> None:
    env = {
        "unicode": fresh("pässwörd-non-ascii"),
        "empty": "",
        "constant": "a-constant-in-this-module",  # held by this function's code too
        "number": 12345,
    }
    assert wipe_exclusive_strings([env, ("tuple", fresh("tuple-item")), "not a container", None]) == 1  # only the tuple's
    assert env["unicode"] == "pässwörd-non-ascii" and env["constant"] == "a-constant-in-this-module"


# -- forget_other_apps ---------------------------------------------------------------------------------------


@dataclass
class Log:
    lines: list[str] = field(default_factory=list)

    def info(self, msg: str, *args: Any) -> None:
        self.lines.append(msg % args)

    warning = error = info


@dataclass
class Worker:
    cfg: Any
    app: Any
    app_name: str


class Master:
    """What forget_other_apps reaches: apps, children, cfg, scoreboards."""

    def __init__(self, table: dict[str, Any], raw_env: list[str]) -> None:
        self.cfg = Config()
        self.cfg.set("apps", table)
        self.cfg.set("raw_env", raw_env)
        self.apps = AppTable(Log())
        self.apps.multi = True
        self.apps.configure(self.cfg, None, 1)
        self.children = Children()
        self.scoreboards = Scoreboards(slots=2)
        for pid, name in enumerate(self.apps.specs, 100):
            spec = self.apps.specs[name]
            self.children.add(Child(pid, "worker", name, 1, 0.0, worker=Worker(spec.cfg, spec.app, name)))
            self.children.expect(name, 7, 50, Worker(spec.cfg, spec.app, name))


@pytest.fixture
def config_module() -> Iterator[types.ModuleType]:
    """gunicorn.conf.py as gunicorn leaves it: a module in sys.modules, its raw ``apps`` dict."""
    saved = sys.modules.get(CONFIG_MODULE)
    module = types.ModuleType(CONFIG_MODULE)
    sys.modules[CONFIG_MODULE] = module
    yield module
    if saved is None:
        sys.modules.pop(CONFIG_MODULE, None)
    else:
        sys.modules[CONFIG_MODULE] = saved


def test_a_child_keeps_only_its_own_apps_configuration(config_module: types.ModuleType) -> None:
    shared = fresh("shared-by-both-apps")
    config_module.apps = {
        "alpha": {"app": "a:app", "bind": "127.0.0.1:9001", "env": {"TOKEN": fresh("alpha-token"), "SHARED": shared}},
        "beta": {"app": "b:app", "bind": "127.0.0.1:9002", "env": {"PASSWORD": fresh("beta-password"), "SHARED": shared}},
    }
    hook_holds = config_module.apps  # a hook of the configuration file may hold the dict
    master = Master(config_module.apps, [fresh("GLOBAL=everyone")])
    del shared
    alpha, beta = master.apps.specs["alpha"], master.apps.specs["beta"]
    beta_entry: AppConfig | None = beta.config
    assert beta_entry is not None
    beta_raw_env = beta.cfg.settings["raw_env"].value

    forget_other_apps(master, alpha)

    assert list(master.apps.specs) == ["alpha"] and list(master.apps.pools) == ["alpha"]
    assert list(master.cfg.apps) == ["alpha"]
    assert list(config_module.apps) == ["alpha"] and hook_holds is config_module.apps
    assert [c.app for c in master.children.of_role("worker")] == ["alpha"]
    assert [w.app_name for w in master.children.pending_workers()] == ["alpha"]
    # beta's values: overwritten where only beta's objects held them ...
    assert beta_entry.env["PASSWORD"] == "\0" * len("beta-password")
    assert [s for s in beta_raw_env if "beta-password" in s or s.startswith("PASSWORD")] == []
    # ... and never what alpha, or every app, still needs
    assert alpha.config is not None
    assert dict(alpha.config.env) == {"TOKEN": "alpha-token", "SHARED": "shared-by-both-apps"}
    assert beta_entry.env["SHARED"] == "shared-by-both-apps"
    assert alpha.cfg.env == {"GLOBAL": "everyone", "TOKEN": "alpha-token", "SHARED": "shared-by-both-apps"}
    assert master.cfg.env == {"GLOBAL": "everyone"}


def test_a_value_the_configuration_file_binds_to_a_name_is_not_touched(config_module: types.ModuleType) -> None:
    config_module.BETA_PASSWORD = fresh("named-in-the-config")
    config_module.apps = {
        "alpha": {"app": "a:app", "bind": "127.0.0.1:9001"},
        "beta": {"app": "b:app", "bind": "127.0.0.1:9002", "env": {"PASSWORD": config_module.BETA_PASSWORD}},
    }
    master = Master(config_module.apps, [])
    forget_other_apps(master, master.apps.specs["alpha"])
    assert config_module.BETA_PASSWORD == "named-in-the-config"  # documented: keep secrets out of the file


def test_the_one_app_form_has_nothing_to_forget() -> None:
    master = Master({}, [])
    master.apps.multi = False
    master.apps.configure(master.cfg, types.SimpleNamespace(app_uri="shop.wsgi:app"), 1)
    [spec] = master.apps.specs.values()
    forget_other_apps(master, spec)
    assert list(master.apps.specs) == ["shop.wsgi"]

