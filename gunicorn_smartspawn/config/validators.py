"""The one set of validators: the global settings and the ``apps`` table both use these.

Each check takes a raw value and returns it normalised, or raises
``ValueError`` whose text says what is expected; :func:`check` turns that
into a :class:`~gunicorn_smartspawn.errors.ConfigError` that names where the
value came from (``spawn_method='fast'`` or ``apps['shop']['spawn_method']='fast'``).
Pure: no imports of gunicorn.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from gunicorn_smartspawn.errors import ConfigError

Check = Callable[[Any], Any]

SPAWN_METHODS: Final = ("smart", "direct")
SMART_FORKS: Final = ("auto", "double-fork")
FORK_SAFETY_MODES: Final = ("warn", "fence", "off")
_TRUE: Final = ("true", "1", "yes")
_FALSE: Final = ("false", "0", "no")


@dataclass(frozen=True)
class Refused:
    """A plugin setting's value that failed its check, kept until the worker class is known.

    A run with the plugin's worker refuses it with ``error`` (at start, as any
    bad setting); a stock run ignores it, as gunicorn ignores names it does
    not know: installing the plugin changes nothing for a run that does not
    use it. Falsy, so an ignored ``apps`` reads as no table.
    """

    error: str
    value: Any

    def __bool__(self) -> bool:
        return False


def deferred(validate: Check) -> Check:
    """``validate`` for gunicorn's Config: a refusal is returned as :class:`Refused`, not raised."""

    def check_later(value: Any) -> Any:
        try:
            return validate(value)
        except ConfigError as exc:
            return Refused(str(exc), value)

    check_later.__name__ = getattr(validate, "__name__", "check_later")
    return check_later


def for_setting(name: str, checker: Check | None = None) -> Check:
    """The validator of setting ``name``: its check (by default the one the ``apps`` table uses too),
    raising a ConfigError that names the setting."""
    chosen = checker or PLUGIN_CHECKS[name]

    def validate(value: Any) -> Any:
        return check(name, chosen, value)

    validate.__name__ = f"validate_{name}"
    return validate


def check(where: str, checker: Check, value: Any) -> Any:
    """``checker(value)``, or a ConfigError ``{where}={value!r} is not valid: expected ...``."""
    try:
        return checker(value)
    except ValueError as exc:
        raise ConfigError(f"{where}={value!r} is not valid: expected {exc}") from None


def choice(*choices: str, explain: str = "") -> Check:
    """One of ``choices``, any case, spaces trimmed."""
    expected = explain or " or ".join(repr(c) for c in choices)

    def check_choice(value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise ValueError(expected)

    return check_choice


def boolean(value: Any) -> bool:
    """True/False, or one of the strings gunicorn itself accepts for a boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (*_TRUE, *_FALSE):
        return value.strip().lower() in _TRUE
    raise ValueError("True or False")


def whole_seconds(zero_means: str, none_means: str = "") -> Check:
    """A number of seconds >= 0, from an int or a decimal string (and None, if ``none_means`` says what it is)."""

    def check_seconds(value: Any) -> int | None:
        if none_means and value is None:
            return None
        try:
            if isinstance(value, bool):
                raise ValueError
            seconds = int(value.strip()) if isinstance(value, str) else int(value)
            if seconds != value and not isinstance(value, str):
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            seconds = -1
        if seconds < 0:
            also = f", or None ({none_means})" if none_means else ""
            raise ValueError(f"a whole number of seconds >= 0 ({zero_means}){also}")
        return seconds

    return check_seconds


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("a whole number >= 1")
    return value


def non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("a whole number >= 0")
    return value


def string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty string")
    return value.strip()


def string_list(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError("a string or a non-empty list of strings")
    return [v.strip() for v in value]


def env_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k and "=" not in k for k in value):
        raise ValueError("a dict of environment variable names to strings")
    if not all(isinstance(v, str) for v in value.values()):
        raise ValueError("a dict whose values are strings")
    return dict(value)


def user(value: Any) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ValueError("a user name or uid")
    return value


def optional_count(value: Any) -> int | None:
    """None (not set), or a whole number >= 0 from an int or a decimal string."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        count = int(value.strip()) if isinstance(value, str) else int(value)
        if count != value and not isinstance(value, str):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        count = -1
    if count < 0:
        raise ValueError("a whole number >= 0, or None")
    return count


#: The most thresholds refork_after may list: each one is a refork, a new generation of workers.
MAX_REFORKS: Final = 16


def request_counts(value: Any) -> list[int]:
    """Increasing request counts, from a list or a comma-separated string; empty (or None): off."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [v for v in (p.strip() for p in value.split(",")) if v]
        try:
            value = [int(v) for v in value]
        except ValueError:
            value = None
    expected = f"a list of increasing request counts >= 1, at most {MAX_REFORKS} (e.g. [1000, 5000]), or [] for off"
    if not isinstance(value, (list, tuple)) or len(value) > MAX_REFORKS:
        raise ValueError(expected)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
        raise ValueError(expected)
    if any(b <= a for a, b in itertools.pairwise(value)):
        raise ValueError(expected)
    return list(value)
#: The most spares one app may keep parked.
MAX_SPARES: Final = 32


def spare_count(value: Any) -> int:
    """``spare_workers``: a whole number from 0 (none) to :data:`MAX_SPARES`, from an int or a decimal string."""
    try:
        count = optional_count(value)
    except ValueError:
        count = None
    if count is None or count > MAX_SPARES:
        raise ValueError(f"a whole number from 0 (no spare) to {MAX_SPARES}")
    return count


def worker_class(value: Any) -> Any:
    """None (the default: sync, or gthread with threads > 1), a name as ``-k`` takes it, or a class.

    Only the shape is checked here: whether the name can be imported is the
    master's check at start (``worker.models``), which names the setting.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, type):
        return value
    raise ValueError("a worker class as -k names one (sync, gthread, gevent, tornado, asgi, module.Class) or a class")


def socket_path(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("a path, or 'off'")
    return value


#: The most requests a warm-up may list, and the longest one.
WARMUP_MAX_REQUESTS: Final = 200
WARMUP_MAX_TARGET: Final = 2048
_WARMUP_EXPECTED: Final = (
    "a list of requests such as ['/', 'GET /health', 'HEAD http://example.com/'] (or one string, "
    "comma-separated): a path starting with '/' or an http(s) URL, optionally after a method in capitals"
)


def warmup_requests(value: Any) -> list[str] | None:
    """The preloader's warm-up: each request as ``"METHOD target"``; None (the default) or empty: none.

    A string is split on commas (the command line's form); a target is a path
    (``/x?y=1``) or an absolute ``http(s)://host/path`` URL (its host becomes
    the request's ``Host``). The preloader parses these with :func:`split_request`.
    """
    if value is None:
        return None
    if isinstance(value, str) and not value.strip():
        return []
    entries = value.split(",") if isinstance(value, str) else value
    if not isinstance(entries, (list, tuple)) or len(entries) > WARMUP_MAX_REQUESTS:
        raise ValueError(f"{_WARMUP_EXPECTED}; at most {WARMUP_MAX_REQUESTS} requests")
    normalised = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(_WARMUP_EXPECTED)
        parts = entry.split()
        if len(parts) == 1:
            parts = ["GET", *parts]
        if len(parts) != 2 or not split_request(f"{parts[0]} {parts[1]}"):
            raise ValueError(f"{_WARMUP_EXPECTED}; {entry!r} is not one")
        normalised.append(f"{parts[0]} {parts[1]}")
    return normalised


def split_request(text: str) -> tuple[str, str, str, str, str] | None:
    """``"METHOD target"`` -> (method, scheme, host, path, query), or None if it is not one."""
    method, _, target = text.partition(" ")
    if not (0 < len(method) <= 16 and method.isascii() and method.isalpha() and method.isupper()):
        return None
    if not (0 < len(target) <= WARMUP_MAX_TARGET) or not target.isprintable() or any(c.isspace() for c in target):
        return None
    scheme, host = "http", ""
    for prefix in ("http://", "https://"):
        if target.lower().startswith(prefix):
            scheme = prefix[:-3]
            host, slash, rest = target[len(prefix):].partition("/")
            if not host or "@" in host:
                return None
            target = slash + rest if slash else "/"
    if not target.startswith("/"):
        return None
    path, _, query = target.partition("?")
    return method, scheme, host, path, query.partition("#")[0]


#: The plugin's own settings that an ``apps`` entry may also set, with their one check.
PLUGIN_CHECKS: Final[dict[str, Check]] = {
    "spawn_method": choice(
        *SPAWN_METHODS, explain="'smart' (fork workers from a preloader) or 'direct' (each worker imports the app)"
    ),
    "preloader_idle_timeout": whole_seconds(
        "0 keeps the preloader forever", none_means="0 for a fixed pool, 300 for a dynamic one"
    ),
    "preloader_start_timeout": whole_seconds("0 waits forever"),
    "spawn_timeout": whole_seconds("0 waits forever"),
    "gc_freeze": boolean,
    "ksm": boolean,
    "smart_fork": choice(
        *SMART_FORKS,
        explain="'auto' (one clone when the preloader is single-threaded) or 'double-fork' (always fork twice)",
    ),
    "fork_safety": choice(
        *FORK_SAFETY_MODES,
        explain="'warn' (log what workers inherit), 'fence' (also cut inherited connections in each worker) or 'off'",
    ),
    "fork_safety_libraries": boolean,
    "smart_worker_class": worker_class,
    "preloader_warmup": warmup_requests,
    "preloader_warmup_timeout": whole_seconds("0 sets no limit"),
    "min_workers": optional_count,
    "max_workers": optional_count,
    "worker_idle_timeout": whole_seconds("0 never stops an idle worker"),
    "spare_workers": spare_count,
    "friendly_errors": boolean,
    "refork_after": request_counts,
}
