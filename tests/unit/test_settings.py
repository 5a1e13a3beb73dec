"""The plugin's settings: validators, registration with gunicorn's Config, command-line flags."""

from __future__ import annotations

from typing import Any

import pytest
from gunicorn.config import Config

from gunicorn_smartspawn.config.validators import Refused
from gunicorn_smartspawn.errors import ConfigError
from gunicorn_smartspawn.hook.settings import (
    PLUGIN_SETTINGS,
    SECTION,
    validate_gc_freeze,
    validate_idle_timeout,
    validate_spawn_method,
)

# -- spawn_method ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("smart", "smart"),
        ("direct", "direct"),
        ("Smart", "smart"),
        ("DIRECT", "direct"),
        ("  direct\n", "direct"),
        ("\tSmArT ", "smart"),
    ],
)
def test_spawn_method_is_normalised(value: str, expected: str) -> None:
    assert validate_spawn_method(value) == expected


@pytest.mark.parametrize("value", ["", "  ", "preload", "smart direct", "smarter", "fork", None, 1, True, ["smart"]])
def test_spawn_method_rejects_other_values(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        validate_spawn_method(value)
    message = str(info.value)
    assert "spawn_method" in message
    assert repr(value) in message
    assert "'smart'" in message and "'direct'" in message


def test_config_error_is_a_value_error() -> None:
    # gunicorn reports a ValueError from a validator as a configuration error
    with pytest.raises(ValueError):
        validate_spawn_method("bogus")


# -- preloader_idle_timeout --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (5, 5), (300, 300), (86400, 86400), ("0", 0), ("5", 5), ("300", 300), (" 42 ", 42), (7.0, 7)],
)
def test_idle_timeout_accepts_whole_seconds(value: Any, expected: int) -> None:
    result = validate_idle_timeout(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    "value",
    [-1, -300, "-1", " -5 ", 2.5, 0.1, -0.0001, True, False, "abc", "", "  ", "5.0", "5s", "five", [5], {"s": 5}],
)
def test_idle_timeout_rejects_the_rest(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        validate_idle_timeout(value)
    message = str(info.value)
    assert "preloader_idle_timeout" in message
    assert repr(value) in message
    assert "whole number of seconds >= 0" in message


@pytest.mark.parametrize(("value", "expected"), [("05", 5), ("0300", 300)])
def test_idle_timeout_accepts_decimal_strings_with_leading_zeros(value: str, expected: int) -> None:
    assert validate_idle_timeout(value) == expected


# -- gc_freeze ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("true", True), ("False", False), (" yes ", True), ("NO", False), ("1", True), ("0", False)],
)
def test_gc_freeze_accepts_booleans(value: Any, expected: bool) -> None:
    assert validate_gc_freeze(value) is expected


@pytest.mark.parametrize("value", ["maybe", "", 1, 0, None, 2.0])
def test_gc_freeze_rejects_the_rest(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        validate_gc_freeze(value)
    assert "gc_freeze" in str(info.value) and repr(value) in str(info.value)


# -- gunicorn's Config ------------------------------------------------------------------------


def test_config_knows_the_settings_with_their_defaults() -> None:
    cfg = Config()
    assert {"spawn_method", "preloader_idle_timeout", "gc_freeze"} <= set(PLUGIN_SETTINGS)
    for name in PLUGIN_SETTINGS:
        assert name in cfg.settings
        assert cfg.settings[name].section == SECTION == "Smart Spawning"
    assert cfg.spawn_method == "smart"
    assert cfg.preloader_idle_timeout is None  # 0 for a fixed pool, 300 for a dynamic one
    assert validate_idle_timeout(None) is None
    assert cfg.gc_freeze is True


def test_config_set_runs_the_validators() -> None:
    cfg = Config()
    cfg.set("spawn_method", " Direct ")
    assert cfg.spawn_method == "direct"
    cfg.set("preloader_idle_timeout", "0")
    assert cfg.preloader_idle_timeout == 0
    cfg.set("gc_freeze", "false")
    assert cfg.gc_freeze is False
    # a refusal waits for the worker class: a stock run ignores it, a run with ours refuses it
    cfg.set("spawn_method", "bogus")
    assert isinstance(cfg.spawn_method, Refused) and not cfg.spawn_method
    assert cfg.spawn_method.error.startswith("spawn_method='bogus' is not valid: expected ")
    cfg.set("preloader_idle_timeout", -1)
    assert isinstance(cfg.preloader_idle_timeout, Refused) and "preloader_idle_timeout" in cfg.preloader_idle_timeout.error


def test_each_config_gets_its_own_values() -> None:
    first, second = Config(), Config()
    first.set("spawn_method", "direct")
    assert second.spawn_method == "smart"


def parse(*argv: str) -> Any:
    return Config().parser().parse_args(list(argv))


def test_parser_defaults_leave_the_settings_alone() -> None:
    args = parse("app:application")
    assert args.spawn_method is None
    assert args.preloader_idle_timeout is None
    assert args.gc_freeze is None


def test_parser_spawn_method() -> None:
    assert parse("--spawn-method", "direct").spawn_method == "direct"
    assert parse("--spawn-method=smart").spawn_method == "smart"


def test_parser_idle_timeout() -> None:
    args = parse("--preloader-idle-timeout", "5")
    assert args.preloader_idle_timeout == 5
    cfg = Config()
    cfg.set("preloader_idle_timeout", args.preloader_idle_timeout)
    assert cfg.preloader_idle_timeout == 5


def test_parser_gc_freeze_flag_pair() -> None:
    assert parse("--no-gc-freeze").gc_freeze is False
    assert parse("--gc-freeze").gc_freeze is True


def test_parser_values_apply_to_a_config_as_gunicorn_does() -> None:
    cfg = Config()
    args = cfg.parser().parse_args(["--spawn-method", "direct", "--preloader-idle-timeout", "5", "--no-gc-freeze"])
    for key, value in vars(args).items():
        if value is not None and key in cfg.settings:
            cfg.set(key, value)
    assert (cfg.spawn_method, cfg.preloader_idle_timeout, cfg.gc_freeze) == ("direct", 5, False)


@pytest.mark.parametrize(
    "argv",
    [("--spawn-method", "bogus"), ("--preloader-idle-timeout", "soon"), ("--gc-freeze=yes",)],
)
def test_parser_rejects_bad_values(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2
    assert argv[0].split("=")[0] in capsys.readouterr().err


def test_help_lists_the_flags_in_their_section() -> None:
    text = Config().parser().format_help()
    for flag in ("--spawn-method", "--preloader-idle-timeout", "--gc-freeze", "--no-gc-freeze"):
        assert flag in text
    assert "{smart,direct}" in text
