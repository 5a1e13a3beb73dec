"""Did-you-mean for names a configuration file sets that no setting has (hook/typos.py)."""

from __future__ import annotations

import os

from gunicorn.config import Config

from gunicorn_smartspawn.hook import typos


def test_near_misses_of_plugin_and_gunicorn_settings_are_suspects() -> None:
    names = {"spawn_methd": "direct", "preloader_idle_timout": 0, "worker": 3, "timout": 30}
    found = dict(typos.suspects(names, Config().settings))
    assert found == {"spawn_methd": "spawn_method", "preloader_idle_timout": "preloader_idle_timeout",
                     "timout": "timeout", "worker": "workers"}


def test_helpers_imports_and_real_settings_are_left_alone() -> None:
    def helper() -> None: ...

    names = {"spawn_method": "smart", "WORKERS": 4, "billing_db": "x", "_private": 1, "os": os, "helper": helper,
             "apps_list": ["billing", "shop"]}
    assert typos.suspects(names, Config().settings) == []
