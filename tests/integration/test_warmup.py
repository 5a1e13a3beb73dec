"""``preloader_warmup`` with real gunicorn: once per preloader, before the first fork, never fatal.

The test apps (apps/warmup_app.py, apps/warmup_asgi.py) write a line per
warm-up request they serve, with the pid that served it, and answer GET /
with the paths they were warmed with: a worker that lists them never served
them itself, so it inherited the preloader's memory after the warm-up.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from harness import SMART, SMARTSPAWN, Server, free_port, get_json, wait_for
from test_fork_safety import Service, memcached, postgres, postgres_logs  # noqa: F401  (fixtures)


def warm_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def start(server_factory: Any, tmp_path: Path, *args: str, app: str = "warmup_app:application",
          env: dict[str, str] | None = None) -> tuple[Server, Path]:
    log = tmp_path / "warm.jsonl"
    server = server_factory(*SMART, "-w", "2", *args, app, env={"WARMUP_LOG": str(log), **(env or {})})
    return server, log


def test_the_warm_up_runs_once_in_the_preloader_before_the_first_fork(server_factory: Any, tmp_path: Path) -> None:
    server, log = start(
        server_factory, tmp_path, "--preloader-warmup", "/,/missing,POST /boom,http://shop.example:8080/x?y=1",
    )
    workers = server.wait_workers(2)
    server.pids_answering(set(workers))
    lines = warm_lines(log)
    [preloader] = server.preloaders()
    assert {line["pid"] for line in lines} == {preloader}  # one process, the preloader, not a worker
    requests = [(line["method"], line["path"]) for line in lines]
    assert requests == [("GET", "/"), ("GET", "/missing"), ("POST", "/boom"), ("GET", "/x")]
    seen = (lines[3]["host"], lines[3]["server_port"], lines[3]["query"], lines[0]["host"])
    assert seen == ("shop.example:8080", "8080", "y=1", "localhost")
    for _ in range(6):
        answer = get_json(server.port)
        assert answer["pid"] in workers and answer["warmed"] == ["/", "/missing", "/boom", "/x"]
    text = server.log()
    # failures are warnings naming the request; the app serves anyway
    assert "warm-up request='GET /missing' answered status=404 (expected 2xx or 3xx)" in text
    assert "warm-up request='POST /boom' raised RuntimeError: the warm-up's /boom" in text
    assert f"preloader gen=1 pid={preloader} warm-up: 4 requests in " in text and ", 2 failed" in text
    assert text.index("warm-up: 4 requests") < text.index("loaded in")  # before the preloader reports ready


def test_a_new_generation_warms_up_again_after_hup(server_factory: Any, tmp_path: Path) -> None:
    server, log = start(server_factory, tmp_path, "--preloader-warmup", "/a")
    first = server.wait_workers(2)
    server.pids_answering(set(first))
    server.signal(signal.SIGHUP)
    second = server.wait_workers(2, exclude=first, timeout=30)
    wait_for(lambda: set(first).isdisjoint(server.workers()), 20, what="the old workers to leave")
    [preloader] = wait_for(lambda: server.preloaders() if len(server.preloaders()) == 1 else None, 20, what="one preloader")
    lines = warm_lines(log)
    assert [line["path"] for line in lines] == ["/a", "/a"]
    assert lines[1]["pid"] == preloader != lines[0]["pid"]
    seen = server.pids_answering(set(second))
    assert seen <= set(second) | set(first)
    assert get_json(server.port)["warmed"] == ["/a"]  # inherited from the new preloader only


def test_a_warm_up_that_hangs_is_stopped_and_the_app_serves(server_factory: Any, tmp_path: Path) -> None:
    server, log = start(
        server_factory, tmp_path, "--preloader-warmup", "/,/hang,/never", "--preloader-warmup-timeout", "2",
    )
    server.wait_workers(2, timeout=30)
    assert get_json(server.port)["warmed"] == ["/", "/hang"]  # /never was skipped
    assert "preloader_warmup stopped after preloader_warmup_timeout=2s: 1 of 3 requests done" in server.log()
    assert [line["path"] for line in warm_lines(log)] == ["/", "/hang"]


def test_each_app_of_a_multi_app_master_has_its_own_warm_up(server_factory: Any, tmp_path: Path) -> None:
    ports = {"shop": free_port(), "blog": free_port()}
    apps = {
        "shop": {"app": "warmup_app:application", "bind": f"127.0.0.1:{ports['shop']}", "workers": 1,
                 "preloader_warmup": ["/shop-page"], "spare_workers": 1},
        "blog": {"app": "warmup_app:application", "bind": f"127.0.0.1:{ports['blog']}", "workers": 1,
                 "spare_workers": 1},
    }
    conf = tmp_path / "multi.conf.py"
    conf.write_text(f"worker_class = 'smartspawn.Worker'\npreloader_warmup = ['/global']\napps = {apps!r}\n")
    log = tmp_path / "warm.jsonl"
    server = server_factory("-c", str(conf), bind=False, env={"WARMUP_LOG": str(log)})
    shop = wait_for(lambda: get_json(ports["shop"], timeout=2), 30, what="shop")
    blog = wait_for(lambda: get_json(ports["blog"], timeout=2), 30, what="blog")
    assert shop["warmed"] == ["/shop-page"] and blog["warmed"] == ["/global"]  # per app, else the global list
    spares = {app: wait_for(lambda app=app: server.app_pids("spare", app), 20, what=f"{app}'s spare")[0] for app in ports}
    for pid in spares.values():
        server.wait_log(f"spare pid={pid} gen=1 parked")
    by_pid = {line["pid"]: line["path"] for line in warm_lines(log)}
    assert by_pid == {  # each app's spare warms up with its own app's list, as its preloader did
        server.app_pids("preloader", "shop")[0]: "/shop-page", spares["shop"]: "/shop-page",
        server.app_pids("preloader", "blog")[0]: "/global", spares["blog"]: "/global",
    }


def test_an_asgi_app_is_warmed_up_on_a_loop_of_its_own(server_factory: Any, tmp_path: Path) -> None:
    pytest.importorskip("gunicorn.workers.gasgi", reason="this gunicorn has no asgi worker")
    server, log = start(
        server_factory, tmp_path, "--smart-worker-class", "asgi", "--preloader-warmup", "/,/missing",
        app="warmup_asgi:application",
    )
    workers = server.wait_workers(2, timeout=30)
    answer = get_json(server.port)
    assert answer["pid"] in workers and answer["warmed"] == ["/", "/missing"]
    lines = warm_lines(log)
    assert {line["pid"] for line in lines} == set(server.preloaders())
    assert all(line["body"] for line in lines)
    assert "warm-up request='GET /missing' answered status=404" in server.log()


def _backend_alive(port: int, backend: int) -> bool:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (backend,))
            alive: bool = cursor.fetchone()[0] == 1
    finally:
        conn.close()
    return alive


def test_the_warm_up_connections_are_not_shared_with_workers(
    server_factory: Any, tmp_path: Path, memcached: Service, postgres_logs: Service  # noqa: F811
) -> None:
    pytest.importorskip("psycopg2")
    pytest.importorskip("pymemcache")
    server, log = start(
        server_factory, tmp_path, "--preloader-warmup", "/db,/cache",
        env={"WU_PG_PORT": str(postgres_logs.port), "WU_MEMCACHED": f"127.0.0.1:{memcached.port}"},
    )
    workers = server.wait_workers(2)
    db_warm, cache_warm = warm_lines(log)
    assert cache_warm["ok"] is True
    # Django's connection (kept open: CONN_MAX_AGE=None) was closed before the fork
    wait_for(lambda: not _backend_alive(postgres_logs.port, db_warm["backend"]), 10, what="the warm-up's backend to end")
    for _ in range(4):
        db = get_json(server.port, "/db")
        cache = get_json(server.port, "/cache")
        assert db["pid"] in workers and db["backend"] != db_warm["backend"] and db["port"] != db_warm["port"]
        assert cache["ok"] is True and cache["port"] != cache_warm["port"]  # pymemcache reconnected in the worker
    assert "pymemcache" in server.log()  # fork safety reported the warm-up's client


def test_a_stock_run_ignores_the_setting(server_factory: Any, tmp_path: Path) -> None:
    log = tmp_path / "warm.jsonl"
    server = server_factory("-w", "1", "--preloader-warmup", "/", "warmup_app:application", env={"WARMUP_LOG": str(log)})
    assert wait_for(lambda: get_json(server.port, timeout=2), 20, what="stock gunicorn")["warmed"] == []
    assert not log.exists()
    assert SMARTSPAWN[1] not in server.args


def test_a_spare_runs_the_warm_up_again_before_it_parks_uncounted(server_factory: Any, tmp_path: Path) -> None:
    server, log = start(server_factory, tmp_path, "--preloader-warmup", "/a,/missing", "--spare-workers", "1")
    server.wait_workers(2)
    spare = wait_for(lambda: (server.app_pids("spare", "warmup_app") or [None])[0], 20, what="a spare")
    server.wait_log(f"spare pid={spare} gen=1 parked")
    [preloader] = server.preloaders()
    lines = warm_lines(log)
    assert [(line["pid"], line["path"]) for line in lines] == [
        (preloader, "/a"), (preloader, "/missing"), (spare, "/a"), (spare, "/missing"),
    ]  # the workers forked before it ran none; the spare ran the list once more, before parking
    text = server.log()
    assert text.index(f"app=warmup_app spare pid={spare} warm-up: 2 requests in ") < text.index(f"spare pid={spare} gen=1 parked")
    assert f"app=warmup_app spare pid={spare} warm-up request='GET /missing' answered status=404" in text
    server.signal(signal.SIGTTIN)
    wait_for(lambda: spare in server.workers(), 10, what="the spare to become a worker")
    answers = wait_for(lambda: [a for a in (get_json(server.port) for _ in range(8)) if a["pid"] == spare] or None,
                       15, what="answers from the released spare")
    assert answers[0]["warmed"] == ["/a", "/missing", "/a", "/missing"]  # the preloader's, then its own

    def served() -> int | None:
        workers_now = server.control({"command": "status"})["result"]["apps"][0]["workers"]
        return next((w["requests"] for w in workers_now if w["pid"] == spare), None)

    # exactly what it served over HTTP: the warm-up's two requests are not counted
    wait_for(lambda: served() == len(answers), 10, what=f"the spare's count to reach {len(answers)}")

    server.signal(signal.SIGHUP)  # a new generation: its spare warms up with the new preloader's app
    found = wait_for(lambda: re.search(r"spare pid=(\d+) gen=2 parked", server.log()), 40, what="generation 2's spare")
    new_spare = int(found.group(1))
    assert [line["path"] for line in warm_lines(log) if line["pid"] == new_spare] == ["/a", "/missing"]
