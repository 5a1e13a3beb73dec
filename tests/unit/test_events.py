"""Passenger-style events, and what importing the package (or anything) loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from gunicorn_smartspawn import events, on_event
from gunicorn_smartspawn.events import (
    KNOWN_EVENTS,
    PRELOADER_LOADED,
    STARTING_WORKER_PROCESS,
    STOPPING_WORKER_PROCESS,
)


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    saved = {name: events.callbacks(name) for name in KNOWN_EVENTS}
    events.clear()
    yield
    events.clear()
    for name, registered in saved.items():
        for fn in registered:
            on_event(name, fn)


def test_known_events() -> None:
    assert set(KNOWN_EVENTS) == {STARTING_WORKER_PROCESS, STOPPING_WORKER_PROCESS, PRELOADER_LOADED}
    assert STARTING_WORKER_PROCESS == "starting_worker_process"
    assert STOPPING_WORKER_PROCESS == "stopping_worker_process"
    assert PRELOADER_LOADED == "preloader_loaded"


def test_plain_registration_returns_the_function() -> None:
    def reconnect(forked: bool) -> None: ...

    assert on_event("starting_worker_process", reconnect) is reconnect
    assert events.callbacks("starting_worker_process") == (reconnect,)
    assert events.callbacks("stopping_worker_process") == ()


def test_decorator_registration_keeps_the_function() -> None:
    @on_event("stopping_worker_process")
    def flush() -> None: ...

    assert callable(flush) and flush.__name__ == "flush"
    assert events.callbacks("stopping_worker_process") == (flush,)


def test_same_function_twice_is_registered_once() -> None:
    calls = []

    def fn(forked: bool) -> None:
        calls.append(forked)

    on_event("starting_worker_process", fn)
    on_event("starting_worker_process", fn)
    on_event("starting_worker_process")(fn)
    assert events.callbacks("starting_worker_process") == (fn,)
    events.fire("starting_worker_process", True)
    assert calls == [True]


def test_same_function_may_serve_several_events() -> None:
    def fn(*args: object) -> None: ...

    on_event("starting_worker_process", fn)
    on_event("preloader_loaded", fn)
    assert events.callbacks("starting_worker_process") == (fn,)
    assert events.callbacks("preloader_loaded") == (fn,)


def test_unknown_event_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        on_event("starting_worker", lambda forked: None)
    message = str(info.value)
    assert "'starting_worker'" in message
    for name in KNOWN_EVENTS:
        assert repr(name) in message
    with pytest.raises(ValueError):
        on_event("bogus")  # the decorator form checks the name at once
    with pytest.raises(ValueError):
        events.fire("bogus")
    with pytest.raises(ValueError):
        events.callbacks("bogus")


@pytest.mark.parametrize("thing", [None, 42, "print", object()])
def test_non_callable_is_a_type_error(thing: object) -> None:
    if thing is None:
        # None means "use me as a decorator"; the decorator itself checks
        with pytest.raises(TypeError, match="callable"):
            on_event("preloader_loaded")(None)  # type: ignore[arg-type]
    else:
        with pytest.raises(TypeError, match="callable"):
            on_event("preloader_loaded", thing)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="callable"):
            on_event("preloader_loaded")(thing)  # type: ignore[arg-type]
    assert events.callbacks("preloader_loaded") == ()


def test_fire_calls_in_registration_order_with_the_arguments() -> None:
    calls = []
    on_event("starting_worker_process", lambda forked: calls.append(("a", forked)))
    on_event("starting_worker_process", lambda forked: calls.append(("b", forked)))

    @on_event("starting_worker_process")
    def third(forked: bool) -> None:
        calls.append(("c", forked))

    events.fire("starting_worker_process", False)
    assert calls == [("a", False), ("b", False), ("c", False)]
    events.fire("stopping_worker_process")  # nothing registered: nothing happens
    assert len(calls) == 3


def test_fire_propagates_a_callback_error_and_stops() -> None:
    calls = []

    def broken() -> None:
        raise RuntimeError("no database")

    on_event("preloader_loaded", broken)
    on_event("preloader_loaded", lambda: calls.append("after"))
    with pytest.raises(RuntimeError, match="no database"):
        events.fire("preloader_loaded")
    assert calls == []


def test_clear_forgets_everything() -> None:
    for name in KNOWN_EVENTS:
        on_event(name, lambda *a: None)
    events.clear()
    for name in KNOWN_EVENTS:
        assert events.callbacks(name) == ()
    on_event("preloader_loaded", print)  # still usable afterwards
    assert events.callbacks("preloader_loaded") == (print,)


# -- import side effects, in fresh interpreters ---------------------------------------------------


def run_python(code: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)  # type: ignore[no-any-return]


REPORT = (
    "import json, sys; print(json.dumps({"
    "'gunicorn': sorted(m for m in sys.modules if m == 'gunicorn' or m.startswith('gunicorn.')),"
    "'plugin': sorted(m for m in sys.modules if 'smartspawn' in m),"
    "'meta_path': [type(f).__module__ for f in sys.meta_path],"
    "}))"
)


def test_importing_the_package_does_not_import_gunicorn() -> None:
    report = run_python(
        "import gunicorn_smartspawn\n"
        "from gunicorn_smartspawn import on_event\n"
        "on_event('starting_worker_process', lambda forked: None)\n" + REPORT
    )
    assert report["gunicorn"] == []
    assert "gunicorn_smartspawn" in report["plugin"]  # type: ignore[operator]
    assert "gunicorn_smartspawn.worker" not in report["plugin"]  # type: ignore[operator]
    assert "gunicorn_smartspawn.hook.settings" not in report["plugin"]  # type: ignore[operator]


def test_plain_process_loads_only_the_tiny_hook() -> None:
    report = run_python("import json\n" + REPORT)
    assert report["plugin"] == ["_gunicorn_smartspawn_hook"]
    assert report["gunicorn"] == []
    assert "_gunicorn_smartspawn_hook" in report["meta_path"]  # type: ignore[operator]


def test_importing_gunicorn_config_registers_the_settings() -> None:
    report = run_python(
        "import gunicorn.config, json, sys\n"
        "cfg = gunicorn.config.Config()\n"
        "print(json.dumps({'spawn_method': 'spawn_method' in cfg.settings,"
        " 'default': cfg.spawn_method if 'spawn_method' in cfg.settings else None,"
        " 'idle': 'preloader_idle_timeout' in cfg.settings,"
        " 'gc_freeze': 'gc_freeze' in cfg.settings,"
        " 'settings_module': 'gunicorn_smartspawn.hook.settings' in sys.modules}))"
    )
    assert report == {"spawn_method": True, "default": "smart", "idle": True, "gc_freeze": True, "settings_module": True}


def test_gunicorn_help_lists_the_flags_in_a_fresh_process() -> None:
    report = run_python(
        "import json\n"
        "from gunicorn.config import Config\n"
        "text = Config().parser().format_help()\n"
        "print(json.dumps({'flags': ['--spawn-method' in text, '--preloader-idle-timeout' in text, '--no-gc-freeze' in text]}))"
    )
    assert report == {"flags": [True, True, True]}


def test_hook_removes_its_finder_once_gunicorn_is_loaded() -> None:
    report = run_python("import gunicorn.config, gunicorn.app.base, gunicorn.app.wsgiapp\n" + REPORT)
    assert "_gunicorn_smartspawn_hook" not in report["meta_path"]  # type: ignore[operator]
    assert "gunicorn_smartspawn.hook.plugin" in report["plugin"]  # type: ignore[operator]
