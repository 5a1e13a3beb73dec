"""config/validators.py: every check, and one answer for a value whether a global setting or an app gives it."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final

import pytest
from gunicorn.config import Config

from gunicorn_smartspawn.config import validators as v
from gunicorn_smartspawn.config.apps import KEYS, derive_config, validate_apps
from gunicorn_smartspawn.errors import ConfigError
from gunicorn_smartspawn.hook.settings import PLUGIN_SETTINGS

# -- check: where the value came from, what was expected ------------------------------------------


def test_check_returns_the_normalised_value() -> None:
    assert v.check("spawn_method", v.PLUGIN_CHECKS["spawn_method"], " Direct ") == "direct"


def test_check_names_the_place_and_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        v.check("apps['shop']['workers']", v.positive_int, "4")
    assert str(info.value) == "apps['shop']['workers']='4' is not valid: expected a whole number >= 1"
    assert info.value.__cause__ is None and info.value.__suppress_context__  # one line, no chained traceback


def test_check_lets_other_errors_through() -> None:
    # only ValueError means "bad value"; anything else is a bug in the checker and must show
    def broken(value: Any) -> Any:
        raise KeyError(value)

    with pytest.raises(KeyError):
        v.check("x", broken, 1)


def test_a_config_error_is_a_value_error() -> None:
    # gunicorn turns a validator's ValueError into its own one-line configuration error
    assert issubclass(ConfigError, ValueError)


# -- choice ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("a", "a"), ("B", "b"), ("  b\n", "b"), ("\tA ", "a")])
def test_choice_accepts_any_case_and_spacing(value: str, expected: str) -> None:
    assert v.choice("a", "b")(value) == expected


@pytest.mark.parametrize("value", ["", " ", "c", "a b", "ab", None, 1, True, ["a"], b"a"])
def test_choice_refuses_the_rest(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^'a' or 'b'$"):
        v.choice("a", "b")(value)


def test_choice_explains_itself_when_told() -> None:
    with pytest.raises(ValueError, match=r"^one of the two$"):
        v.choice("a", "b", explain="one of the two")("c")


# -- boolean ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("true", True), ("TRUE", True), (" yes ", True), ("1", True),
     ("false", False), ("No", False), ("0", False), ("\tfalse\n", False)],
)
def test_boolean_accepts_what_gunicorn_accepts(value: Any, expected: bool) -> None:
    assert v.boolean(value) is expected


@pytest.mark.parametrize("value", [1, 0, None, "", "y", "n", "on", "off", "2", 1.0, [True]])
def test_boolean_refuses_the_rest(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^True or False$"):
        v.boolean(value)


# -- whole_seconds --------------------------------------------------------------------------------------------

seconds = v.whole_seconds("0 means never")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (1, 1), (86400, 86400), (7.0, 7), ("0", 0), ("42", 42), (" 42 ", 42), ("007", 7), ("+5", 5)],
)
def test_whole_seconds_accepts(value: Any, expected: int) -> None:
    result = seconds(value)
    assert result == expected and type(result) is int


@pytest.mark.parametrize(
    "value", [-1, "-1", 2.5, 0.1, True, False, None, "", " ", "5.0", "5s", "0x10", "five", [5], float("nan")]
)
def test_whole_seconds_refuses(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^a whole number of seconds >= 0 \(0 means never\)$"):
        seconds(value)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), "inf", "1e400"])
def test_whole_seconds_refuses_infinity(value: Any) -> None:
    # int(float("inf")) raises OverflowError, not ValueError: it must still read as a bad value
    with pytest.raises(ValueError, match=r"^a whole number of seconds >= 0"):
        seconds(value)


# -- numbers, strings, lists, env, user, socket path ----------------------------------------------------------


@pytest.mark.parametrize("value", [1, 2, 1000])
def test_positive_int_accepts(value: int) -> None:
    assert v.positive_int(value) == value


@pytest.mark.parametrize("value", [0, -1, True, False, "4", 4.0, None])
def test_positive_int_refuses(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^a whole number >= 1$"):
        v.positive_int(value)


@pytest.mark.parametrize("value", [0, 1, 30])
def test_non_negative_int_accepts(value: int) -> None:
    assert v.non_negative_int(value) == value


@pytest.mark.parametrize("value", [-1, True, "0", 0.0, None])
def test_non_negative_int_refuses(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^a whole number >= 0$"):
        v.non_negative_int(value)


def test_string_is_trimmed() -> None:
    assert v.string("  shop.wsgi:app \n") == "shop.wsgi:app"


@pytest.mark.parametrize("value", ["", "   ", None, 1, ["a"]])
def test_string_refuses(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^a non-empty string$"):
        v.string(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a", ["a"]), (" a ", ["a"]), (["a", " b"], ["a", "b"]), (("x",), ["x"])],
)
def test_string_list_accepts(value: Any, expected: list[str]) -> None:
    assert v.string_list(value) == expected


@pytest.mark.parametrize("value", ["", " ", [], (), ["a", ""], ["a", 1], None, {"a": 1}, 5])
def test_string_list_refuses(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^a string or a non-empty list of strings$"):
        v.string_list(value)


def test_env_map_accepts_any_mapping_and_copies_it() -> None:
    given = OrderedDict(A="1", B="")
    result = v.env_map(given)
    assert result == {"A": "1", "B": ""} and type(result) is dict and result is not given


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"": "x"}, "a dict of environment variable names to strings"),
        ({"A=B": "x"}, "a dict of environment variable names to strings"),
        ({1: "x"}, "a dict of environment variable names to strings"),
        (["A=1"], "a dict of environment variable names to strings"),
        ({"A": 1}, "a dict whose values are strings"),
        ({"A": None}, "a dict whose values are strings"),
    ],
)
def test_env_map_refuses(value: Any, expected: str) -> None:
    with pytest.raises(ValueError) as info:
        v.env_map(value)
    assert str(info.value) == expected


@pytest.mark.parametrize("value", ["www-data", 0, 1000])
def test_user_accepts_a_name_or_an_id(value: Any) -> None:
    assert v.user(value) == value


@pytest.mark.parametrize("value", ["", True, None, 1.5, ["root"]])
def test_user_refuses(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^a user name or uid$"):
        v.user(value)


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), ("off", "off"), ("/run/x.sock", "/run/x.sock")])
def test_socket_path(value: Any, expected: str | None) -> None:
    assert v.socket_path(value) == expected


@pytest.mark.parametrize("value", [1, True, ["/a"]])
def test_socket_path_refuses(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^a path, or 'off'$"):
        v.socket_path(value)


# -- one set of checks: the global settings and the apps table ------------------------------------------------


def test_the_plugin_checks_are_the_plugin_settings_an_app_may_set() -> None:
    assert set(v.PLUGIN_CHECKS) == set(PLUGIN_SETTINGS) - {"apps", "smartspawn_socket", "max_pool_size"}
    for name, check in v.PLUGIN_CHECKS.items():
        assert KEYS[name] == (check, name), name  # the very same function, applied to the same setting


def _global(name: str, value: Any) -> Any:
    """The value as a run with the plugin's worker sees it: a refusal kept by the Config is raised."""
    cfg = Config()
    cfg.set(name, value)
    result = getattr(cfg, name)
    if isinstance(result, v.Refused):
        raise ConfigError(result.error)
    return result


def _app(name: str, value: Any) -> Any:
    apps = validate_apps({"shop": {"app": "shop:app", "bind": "127.0.0.1:8001", name: value}})
    return apps["shop"].overrides[name]


def _derived(name: str, value: Any) -> Any:
    apps = validate_apps({"shop": {"app": "shop:app", "bind": "127.0.0.1:8001", name: value}})
    return getattr(derive_config(Config(), apps["shop"]), name)


#: The values each kind of check is tried with: (given, normalised) pairs, and refused values.
CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "spawn_method": v.SPAWN_METHODS,
    "smart_fork": v.SMART_FORKS,
    "fork_safety": v.FORK_SAFETY_MODES,
}
SECONDS_ACCEPTED: Final = [("30", 30), (0, 0), (" 5 ", 5), (12.0, 12)]
SECONDS_REFUSED: Final = [-1, "soon", 2.5, True]
BOOLEAN_ACCEPTED: Final = [("yes", True), ("True", True), ("0", False), (" no ", False), (False, False)]
BOOLEAN_REFUSED: Final = ["maybe", 1, None]
COUNT_ACCEPTED: Final = [("3", 3), (0, 0), (" 8 ", 8), (None, None)]
COUNT_REFUSED: Final = [-1, "many", 2.5, True]
SPARES_ACCEPTED: Final = [("3", 3), (0, 0), (" 1 ", 1), (v.MAX_SPARES, v.MAX_SPARES)]
SPARES_REFUSED: Final = [-1, "many", 2.5, True, None, v.MAX_SPARES + 1]
CLASS_ACCEPTED: Final = [(" gevent ", "gevent"), ("uvicorn_worker.UvicornWorker", "uvicorn_worker.UvicornWorker"), ("", None), (None, None)]
CLASS_REFUSED: Final = [1, True, ["gevent"]]
COUNTS_ACCEPTED: Final = [("1000, 5000", [1000, 5000]), ([50, 100, 1000], [50, 100, 1000]), ("", []), (None, []), ([], [])]
COUNTS_REFUSED: Final = [[100, 50], [0], "many", [True], [1.5], 7, list(range(1, 18))]
WARMUP_ACCEPTED: Final = [
    ("/", ["GET /"]),
    (" /, /health?full=1 ,POST /api/ping", ["GET /", "GET /health?full=1", "POST /api/ping"]),
    (["/", "HEAD https://shop.example.com:8443/x"], ["GET /", "HEAD https://shop.example.com:8443/x"]),
    (("OPTIONS /",), ["OPTIONS /"]),
    ("", []),
    ([], []),
    (None, None),
]
WARMUP_REFUSED: Final = [
    "health", ["/", 1], "get /", "GET / extra", ["/a b"], "ftp://host/", "http:///x", "http://user@host/",
    "/\x00", 5, {"/": 1}, ["/"] * (v.WARMUP_MAX_REQUESTS + 1), "/" + "x" * v.WARMUP_MAX_TARGET,
]


def _kind(name: str) -> str:
    check = v.PLUGIN_CHECKS[name]
    if check is v.boolean:
        return "boolean"
    if check.__name__ == "check_seconds":
        return "seconds"
    if check is v.optional_count:
        return "count"
    if check is v.worker_class:
        return "class"
    if check is v.request_counts:
        return "counts"
    if check is v.warmup_requests:
        return "warmup"
    if check is v.spare_count:
        return "spares"
    assert name in CHOICES, f"{name}: a new kind of check needs its samples in this file"
    return "choice"


def _samples() -> tuple[list[tuple[str, Any, Any]], list[tuple[str, Any]]]:
    accepted: list[tuple[str, Any, Any]] = []
    refused: list[tuple[str, Any]] = []
    for name in sorted(v.PLUGIN_CHECKS):
        kind = _kind(name)
        if kind == "boolean":
            accepted += [(name, given, expected) for given, expected in BOOLEAN_ACCEPTED]
            refused += [(name, value) for value in BOOLEAN_REFUSED]
        elif kind == "seconds":
            accepted += [(name, given, expected) for given, expected in SECONDS_ACCEPTED]
            refused += [(name, value) for value in SECONDS_REFUSED]
        elif kind == "count":
            accepted += [(name, given, expected) for given, expected in COUNT_ACCEPTED]
            refused += [(name, value) for value in COUNT_REFUSED]
        elif kind == "counts":
            accepted += [(name, given, expected) for given, expected in COUNTS_ACCEPTED]
            refused += [(name, value) for value in COUNTS_REFUSED]
        elif kind == "spares":
            accepted += [(name, given, expected) for given, expected in SPARES_ACCEPTED]
            refused += [(name, value) for value in SPARES_REFUSED]
        elif kind == "class":
            accepted += [(name, given, expected) for given, expected in CLASS_ACCEPTED]
            refused += [(name, value) for value in CLASS_REFUSED]
        elif kind == "warmup":
            accepted += [(name, given, expected) for given, expected in WARMUP_ACCEPTED]
            refused += [(name, value) for value in WARMUP_REFUSED]
        else:
            accepted += [(name, f" {c.title()} ", c) for c in CHOICES[name]] + [(name, c.upper(), c) for c in CHOICES[name]]
            refused += [(name, "fast"), (name, ""), (name, 1), (name, f"{CHOICES[name][0]} {CHOICES[name][1]}")]
    return accepted, refused


ACCEPTED, REFUSED = _samples()


def test_every_plugin_check_is_sampled() -> None:
    assert {name for name, _, _ in ACCEPTED} == {name for name, _ in REFUSED} == set(v.PLUGIN_CHECKS)
    # the examples this file promises: gc_freeze="yes" and spawn_method=" Smart "
    assert ("gc_freeze", "yes", True) in ACCEPTED and ("spawn_method", " Smart ", "smart") in ACCEPTED


@pytest.mark.parametrize(("name", "value", "expected"), ACCEPTED, ids=[f"{n}={v!r}" for n, v, _ in ACCEPTED])
def test_a_value_means_the_same_globally_and_per_app(name: str, value: Any, expected: Any) -> None:
    assert _global(name, value) == expected
    assert _app(name, value) == expected
    assert _derived(name, value) == expected
    assert type(_global(name, value)) is type(_app(name, value)) is type(expected)


@pytest.mark.parametrize(("name", "value"), REFUSED, ids=[f"{n}={v!r}" for n, v in REFUSED])
def test_a_value_is_refused_globally_and_per_app_with_the_same_explanation(name: str, value: Any) -> None:
    with pytest.raises(ConfigError) as globally:
        _global(name, value)
    with pytest.raises(ConfigError) as per_app:
        _app(name, value)
    assert str(globally.value).startswith(f"{name}={value!r} is not valid: expected ")
    assert str(per_app.value).startswith(f"apps['shop'][{name!r}]={value!r} is not valid: expected ")
    assert str(globally.value).split(" is not valid: ")[1] == str(per_app.value).split(" is not valid: ")[1]
