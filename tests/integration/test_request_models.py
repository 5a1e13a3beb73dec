"""Every request model under smart and direct spawning: ``-k smartspawn.Worker --smart-worker-class MODEL``.

One server per model and spawn method goes through a whole life: it serves
from the right processes, the scoreboard counts exactly the requests made,
HUP loads new code into a new generation, and TERM stops it with every
worker's stop events (and an ASGI app's lifespan shutdown). Smaller tests
cover TTIN/TTOU and max_requests per model, gevent's concurrency, the
pairing check, hand-made mixes, per-app models and the stock-run warning.

A model whose package is not installed is skipped here, and fails under
``CI=1`` (``.ci/run`` installs the ``test`` extra); a model the running
gunicorn does not have (``asgi`` on gunicorn 23) is skipped.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gunicorn import __version__ as GUNICORN_VERSION
from gunicorn.workers import SUPPORTED_WORKERS

from harness import SMARTSPAWN, Server, free_port, get_json, import_count, wait_for


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]  # what names the model, after -k smartspawn.Worker
    app: str
    needs: tuple[str, ...] = ()  # importable modules the model needs
    gunicorn_worker: str | None = None  # a gunicorn short name this gunicorn may lack
    asgi: bool = False
    recycles: bool = True  # honours max_requests


MODELS: dict[str, Case] = {
    "sync": Case((), "model_wsgi:app"),
    "gthread-1": Case(("--smart-worker-class", "gthread", "--threads", "1"), "model_wsgi:app"),
    "gevent": Case(("--smart-worker-class", "gevent"), "model_wsgi:app", needs=("gevent",)),
    "tornado": Case(("--smart-worker-class", "tornado"), "model_tornado:app", needs=("tornado",)),
    "asgi": Case(("--smart-worker-class", "asgi"), "model_asgi:app", needs=("starlette",), gunicorn_worker="asgi",
                 asgi=True),
    "uvicorn": Case(("--smart-worker-class", "uvicorn_worker.UvicornWorker"), "model_asgi:app",
                    needs=("uvicorn_worker", "starlette"), asgi=True),
}
#: Only in the shorter tests: a WSGI app under tornado, gevent's pywsgi server (which counts no max_requests).
MORE_MODELS: dict[str, Case] = {
    "tornado-wsgi": Case(("--smart-worker-class", "tornado"), "model_wsgi:app", needs=("tornado",)),
    "gevent_pywsgi": Case(("--smart-worker-class", "gevent_pywsgi"), "model_wsgi:app", needs=("gevent",),
                          recycles=False),
}


def require(*modules: str, gunicorn_worker: str | None = None) -> None:
    for module in modules:
        if importlib.util.find_spec(module) is None:
            if os.environ.get("CI"):
                pytest.fail(f"{module} is not installed: .ci/run installs it (pip install -e '.[test]')")
            pytest.skip(f"{module} is not installed")
    if gunicorn_worker is not None and gunicorn_worker not in SUPPORTED_WORKERS:
        pytest.skip(f"gunicorn {GUNICORN_VERSION} has no {gunicorn_worker!r} worker")


def require_case(case: Case) -> None:
    require(*case.needs, gunicorn_worker=case.gunicorn_worker)


def events(path: Path, name: str) -> list[dict[str, Any]]:
    return [e for e in import_count(path) if e.get("event") == name]


def answer_from_each(server: Server, pids: set[int], timeout: float = 15.0) -> int:
    """Requests until every pid in ``pids`` answered; how many were made (all answered 200)."""
    seen: set[int] = set()
    made = 0

    def done() -> bool:
        nonlocal made
        made += 1
        seen.add(server.get_json("/")["pid"])
        return pids <= seen

    wait_for(done, timeout, what=f"answers from {sorted(pids)}", interval=0.0)
    return made


def counted(server: Server, pids: set[int]) -> tuple[int, bool]:
    """(requests, any busy) of ``pids`` in the master's status, from the scoreboard."""
    [app] = server.control({"command": "status"})["result"]["apps"]
    rows = [w for w in app["workers"] if w["pid"] in pids]
    assert len(rows) == len(pids), app["workers"]
    return sum(w["requests"] or 0 for w in rows), any(w["busy"] for w in rows)


def wait_counted(server: Server, pids: set[int], expected: int) -> None:
    wait_for(lambda: counted(server, pids) == (expected, False), timeout=10,
             what=f"the scoreboard to count {expected} requests of {sorted(pids)}")


def start(server_factory: Callable[..., Server], case: Case, method: str, *extra: str, **kwargs: Any) -> Server:
    return server_factory(*SMARTSPAWN, "--spawn-method", method, *case.args, *extra, case.app, **kwargs)


# -- a whole life per model and spawn method ------------------------------------------------------------


@pytest.mark.parametrize("method", ["smart", "direct"])
@pytest.mark.parametrize("model", list(MODELS))
def test_a_model_serves_counts_reloads_and_stops(server_factory, tmp_path, import_log, event_log, model, method):
    case = MODELS[model]
    require_case(case)
    version = tmp_path / "version"
    version.write_text("v1")
    server = start(server_factory, case, method, "-w", "2", "--timeout", "4", env={"MODEL_VERSION_FILE": str(version)})
    first = set(server.wait_workers(2))
    made = answer_from_each(server, first)
    made += 5
    for _ in range(5):
        answer = server.get_json("/")
        assert answer["version"] == "v1" and answer["forked"] is (method == "smart")
    wait_counted(server, first, made)
    _check_imports_and_events(server, case, method, import_log, event_log, first)
    if model == "gthread-1":
        assert answer["multithread"] is True  # gunicorn's gthread worker, with one thread
    elif case.app == "model_wsgi:app":
        assert answer["socket"] == ("gevent._socket3" if model == "gevent" else "socket")

    version.write_text("v2")
    server.signal(signal.SIGHUP)
    wait_for(lambda: not first & set(server.workers()) and len(server.workers()) == 2, timeout=25,
             what="generation 2 to replace generation 1")
    second = set(server.wait_workers(2))
    made = answer_from_each(server, second)
    assert all(server.get_json("/")["version"] == "v2" for _ in range(4))
    wait_counted(server, second, made + 4)
    _check_started(case, method, event_log, first | second)

    server.signal(signal.SIGTERM)
    assert server.wait_exit(20) == 0
    stopped = {e["pid"] for e in events(event_log, "stopping_worker_process")}
    assert first | second <= stopped
    if case.asgi:
        assert sorted(e["pid"] for e in events(event_log, "lifespan_shutdown")) == sorted(first | second)
    log = server.log()
    assert "WORKER TIMEOUT" not in log and "Traceback" not in log, log[-3000:]


def _check_imports_and_events(server: Server, case: Case, method: str, import_log: Path, event_log: Path,
                              workers: set[int]) -> None:
    imports = import_count(import_log)
    if method == "smart":
        [preloader] = server.preloaders()
        assert [i["pid"] for i in imports] == [preloader]  # imported once, in the preloader
    else:
        assert server.preloaders() == []
        assert {i["pid"] for i in imports} == workers  # each worker imported it
    _check_started(case, method, event_log, workers)


def _check_started(case: Case, method: str, event_log: Path, workers: set[int]) -> None:
    wait_for(lambda: {e["pid"] for e in events(event_log, "starting_worker_process")} >= workers,
             what="starting_worker_process in every worker")
    started = [e for e in events(event_log, "starting_worker_process") if e["pid"] in workers]
    assert len(started) == len(workers) and all(e["forked"] is (method == "smart") for e in started)
    if case.asgi:  # each worker ran the lifespan startup once, itself; the preloader never did
        startups = sorted(e["pid"] for e in events(event_log, "lifespan_startup"))
        assert [p for p in startups if p in workers] == sorted(workers)
        assert set(startups) <= workers | {e["pid"] for e in events(event_log, "stopping_worker_process")}


# -- TTIN, TTOU and max_requests per model ------------------------------------------------------------------


@pytest.mark.parametrize("model", [*MODELS, *MORE_MODELS])
def test_a_model_grows_shrinks_and_recycles(server_factory, model):
    case = {**MODELS, **MORE_MODELS}[model]
    require_case(case)
    extra = ("--max-requests", "3") if case.recycles else ()
    server = start(server_factory, case, "smart", "-w", "1", *extra)
    [first] = server.wait_workers(1)
    server.signal(signal.SIGTTIN)
    two = set(server.wait_workers(2))
    made = answer_from_each(server, two)
    if case.recycles:  # a worker leaves after 3 requests (an async one within a second) and another is forked

        def recycled() -> bool:
            seen.add(server.get_json("/")["pid"])
            return len(seen - two) >= 2

        seen: set[int] = set()
        wait_for(recycled, timeout=20, what="workers recycled by max_requests", interval=0.05)
        server.wait_workers(2)
    else:
        wait_counted(server, two, made)
    server.signal(signal.SIGTTOU)
    server.wait_workers(1)
    assert server.get_json("/")["path"] == "/"
    assert len(server.preloaders()) == 1
    assert "Traceback" not in server.log()


# -- gevent: patched before the import, many requests at once on one worker ---------------------------------


@pytest.mark.parametrize("method", ["smart", "direct"])
def test_gevent_serves_twenty_slow_requests_at_once_on_one_worker(server_factory, import_log, method):
    require("gevent")
    server = start(server_factory, MODELS["gevent"], method, "-w", "1")
    [worker] = server.wait_workers(1)
    server.wait_serving()
    [record] = import_count(import_log)
    assert record["socket"] == "gevent._socket3" and record["lock"] == "gevent.thread"  # patched before the import
    assert record["pid"] == (server.preloaders()[0] if method == "smart" else worker)

    def slow(_: int) -> dict[str, Any]:
        return get_json(server.port, "/sleep?1", timeout=10)  # type: ignore[arg-type]

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        busy = pool.submit(lambda: wait_for(lambda: counted(server, {worker})[1], timeout=5, what="busy"))
        answers = list(pool.map(slow, range(20)))
        assert busy.result()
    elapsed = time.monotonic() - started
    print(f"gevent ({method}): 20 concurrent 1-second requests on one worker in {elapsed:.2f}s")
    assert elapsed < 5.0, elapsed
    assert {a["pid"] for a in answers} == {worker}
    wait_counted(server, {worker}, 21)  # and wait_serving's one


# -- ASGI: no loop in the preloader; one the import left is reported ------------------------------------------------


def test_an_event_loop_made_at_import_is_reported_and_each_worker_runs_its_own(server_factory, event_log):
    case = MODELS["uvicorn"]
    require_case(case)
    server = start(server_factory, case, "smart", "-w", "2", env={"MODEL_LOOP_AT_IMPORT": "1"})
    workers = set(server.wait_workers(2))
    answer_from_each(server, workers)
    line = server.wait_log("fork safety: an asyncio event loop, ")
    assert "(the main thread's current loop), was created at import" in line
    assert sorted(e["pid"] for e in events(event_log, "lifespan_startup")) == sorted(workers)


# -- HUP changes the model; one that does not exist leaves the running workers serving -------------------------------


@pytest.mark.parametrize("method", ["smart", "direct"])
def test_hup_changes_the_model_and_a_bad_one_keeps_the_old_workers(server_factory, tmp_path, method):
    require("gevent")
    conf = tmp_path / "model.conf.py"
    conf.write_text("smart_worker_class = 'gthread'\nsmartspawn_socket = 'off'\n")
    server = server_factory("-c", str(conf), *SMARTSPAWN, "--spawn-method", method, "-w", "1", "model_wsgi:app")
    [first] = server.wait_workers(1)
    assert server.wait_serving()["multithread"] is True
    conf.write_text("smart_worker_class = 'no_such_model'\nsmartspawn_socket = 'off'\n")
    server.signal(signal.SIGHUP)
    server.wait_log("smart_worker_class='no_such_model': gunicorn ")
    server.wait_log("new ones fail to load until it is fixed")
    server.wait_log("could not load")  # the new generation's load fails, and backs off
    assert server.workers() == [first] and server.get_json("/")["pid"] == first
    conf.write_text("smart_worker_class = 'gevent'\nsmartspawn_socket = 'off'\n")
    server.signal(signal.SIGHUP)
    wait_for(lambda: server.get_json("/")["socket"] == "gevent._socket3", timeout=25, what="the gevent generation")
    assert first not in server.workers() or wait_for(lambda: first not in server.workers(), what="gthread retired")
    assert server.proc is not None and server.proc.poll() is None


# -- the application against the model ------------------------------------------------------------------------


PAIRINGS = [
    pytest.param((), "model_asgi:app", "is an ASGI application", ("starlette",), id="asgi-app-under-sync"),
    pytest.param(("--smart-worker-class", "uvicorn_worker.UvicornWorker"), "model_wsgi:app", "is a WSGI application",
                 ("uvicorn_worker",), id="wsgi-app-under-uvicorn"),
]


@pytest.mark.parametrize("method", ["smart", "direct"])
@pytest.mark.parametrize(("args", "app", "what", "needs"), PAIRINGS)
def test_an_app_the_model_cannot_serve_fails_at_load(server_factory, args, app, what, needs, method):
    require(*needs)
    server = server_factory(*SMARTSPAWN, "--spawn-method", method, *args, app)
    assert server.wait_exit(20) == 4  # gunicorn's APP_LOAD_ERROR: never a 500 at request time
    lines = [line for line in server.log().splitlines() if what in line]
    assert lines, server.log()
    assert f"set {'smart_worker_class'} (--smart-worker-class) to " in lines[0]
    assert "Traceback" not in server.log()


def test_a_model_gunicorn_does_not_have_is_one_line_at_start(server_factory):
    name = "asgi" if "asgi" not in SUPPORTED_WORKERS else "no_such_model"
    server = server_factory(*SMARTSPAWN, "--smart-worker-class", name, "model_wsgi:app")
    assert server.wait_exit(20) == 1
    assert f"Error: smart_worker_class={name!r}: gunicorn {GUNICORN_VERSION} has no worker named {name!r}" in server.log()
    assert server.preloaders() == [] and "Traceback" not in server.log()


# -- hand-made mixes, per-app models, stock runs ------------------------------------------------------------------


@pytest.mark.parametrize(("worker_class", "app", "needs"), [
    ("model_workers.SmartUvicorn", "model_asgi:app", ("uvicorn_worker", "starlette")),
    ("model_workers.SmartGevent", "model_wsgi:app", ("gevent",)),
])
def test_a_hand_made_mix_is_served_like_a_composed_one(server_factory, import_log, worker_class, app, needs):
    require(*needs)
    server = server_factory("-k", worker_class, "-w", "1", app)
    [worker] = server.wait_workers(1)
    made = answer_from_each(server, {worker})
    wait_counted(server, {worker}, made)  # the scoreboard counts its requests
    [record] = import_count(import_log)
    assert record["pid"] == server.preloaders()[0]
    if "Gevent" in worker_class:
        assert record["socket"] == "gevent._socket3"  # patched in the preloader, before the import


def test_each_app_of_a_table_has_its_own_model(server_factory, tmp_path):
    require("gevent", "uvicorn_worker", "starlette")
    ports = {"api": free_port(), "site": free_port()}
    apps = {
        "api": {"app": "model_asgi:app", "bind": f"127.0.0.1:{ports['api']}", "smart_worker_class": "uvicorn_worker.UvicornWorker"},
        "site": {"app": "model_wsgi:app", "bind": f"127.0.0.1:{ports['site']}", "smart_worker_class": "gevent",
                 "spawn_method": "direct"},
    }
    conf = tmp_path / "models.conf.py"
    conf.write_text(f"worker_class = 'smartspawn.Worker'\nsmartspawn_socket = 'off'\napps = {apps!r}\n")
    server = server_factory("-c", str(conf), bind=False)
    wait_for(lambda: get_json(ports["api"], timeout=2)["startups"] == 1, timeout=20, what="the ASGI app")
    site = wait_for(lambda: get_json(ports["site"], timeout=2), timeout=20, what="the gevent app")
    assert site["socket"] == "gevent._socket3" and site["forked"] is False
    assert get_json(ports["api"])["forked"] is True


def test_a_plugin_setting_on_a_stock_run_is_pointed_out(server_factory, tmp_path):
    require("gevent")
    server = server_factory("-k", "gevent", "--spawn-method", "smart", "model_wsgi:app")
    server.wait_serving()
    expected = ("smartspawn_socket, spawn_method are gunicorn-smartspawn settings and -k gevent is not its worker: "
                "use -k smartspawn.Worker --smart-worker-class gevent")
    server.wait_log(expected)
    assert server.preloaders() == []  # gunicorn's own arbiter serves, as asked
    quiet = tmp_path / "quiet.conf.py"
    quiet.write_text("")  # -c: the fixture adds no --smartspawn-socket
    stock = server_factory("-c", str(quiet), "-k", "gevent", "model_wsgi:app")
    stock.wait_serving()
    assert "gunicorn-smartspawn" not in stock.log()



@pytest.mark.parametrize("model", list(MODELS))
def test_a_spare_of_each_model_warms_up_parks_and_serves_once_released(server_factory, model):
    case = MODELS[model]
    require_case(case)
    server = start(server_factory, case, "smart", "-w", "1", "--spare-workers", "1", "--preloader-warmup", "/")
    [worker] = server.wait_workers(1)
    name = case.app.split(":")[0]
    spare = wait_for(lambda: (server.app_pids("spare", name) or [None])[0], 20, what="a spare")
    server.wait_log(f"spare pid={spare} gen=1 parked")
    text = server.log()
    prepared = {"uvicorn": "uvicorn's protocol modules imported", "asgi": "gunicorn's ASGI lifespan imported"}
    if model in prepared:  # imported once in the preloader, not in every worker as it starts (worker/servers.py)
        assert re.search(rf"preloader gen=1 pid=\d+ loaded in .*, {prepared[model]}", text)
    if case.app == "model_tornado:app":  # the warm-up runs WSGI and ASGI apps only, and says so
        assert f"app={name} spare pid={spare} preloader_warmup skipped" in text
    else:
        assert f"app={name} spare pid={spare} warm-up: 1 requests in " in text and ", 0 failed" in text
    server.signal(signal.SIGTTIN)
    wait_for(lambda: spare in server.workers(), timeout=10, what="the spare to become a worker")
    made = answer_from_each(server, {worker, spare})
    wait_counted(server, {worker, spare}, made)  # the spare's warm-up requests are not counted
