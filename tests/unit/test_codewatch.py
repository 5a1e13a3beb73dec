"""The master's --reload for smart apps: debounce, what is watched, what a change does (master/codewatch.py).

Real files in a temporary directory, a real inotify descriptor, real pools
(master/pool.py) and a real gunicorn Config; times are passed in, so the
debounce is checked without waiting.
"""

from __future__ import annotations

import logging
import os
import select
from pathlib import Path

import pytest
from gunicorn.config import Config

from gunicorn_smartspawn import _compat
from gunicorn_smartspawn.config.apps import AppSpec
from gunicorn_smartspawn.master import codewatch
from gunicorn_smartspawn.master.actions import StartPreloader
from gunicorn_smartspawn.master.apps import AppTable
from gunicorn_smartspawn.master.codewatch import SETTLE, CodeWatch, Debounce
from gunicorn_smartspawn.master.pool import AppPool
from gunicorn_smartspawn.wire import MAX_WATCH_FILES

# -- Debounce --------------------------------------------------------------------------------------


def test_a_burst_of_changes_is_one_reload_after_the_quiet() -> None:
    d = Debounce(settle=0.3, longest=3.0, spacing=1.0)
    assert d.take(100.0) is None and d.due_at() is None
    for i in range(5):
        d.change(100.0 + i * 0.05, "/app/a.py")
    d.change(100.2, "/app/b.py")
    assert d.take(100.4) is None  # 0.2 s after the last change
    assert d.take(100.5) == (["/app/a.py", "/app/b.py"], 0)
    assert d.take(100.6) is None and d.due_at() is None


def test_a_stream_of_changes_still_reloads_after_longest() -> None:
    d = Debounce(settle=0.3, longest=3.0, spacing=1.0)
    now = 10.0
    while now < 13.0:
        d.change(now, "/a.py")
        assert d.take(now) is None
        now += 0.1
    assert d.take(13.0) == (["/a.py"], 0)


def test_two_reloads_are_spacing_apart() -> None:
    d = Debounce(settle=0.3, longest=3.0, spacing=1.0)
    d.change(0.0, "/a.py")
    assert d.take(0.3) is not None
    d.change(0.35, "/a.py")
    assert d.take(0.7) is None  # quiet long enough, but the last reload was 0.4 s ago
    assert d.take(1.3) == (["/a.py"], 0)


def test_the_changed_paths_are_bounded() -> None:
    d = Debounce()
    for i in range(codewatch.MAX_REPORTED + 7):
        d.change(0.0, f"/m{i}.py")
    paths, more = d.take(10.0) or ([], 0)
    assert len(paths) == codewatch.MAX_REPORTED and more == 7


# -- CodeWatch -------------------------------------------------------------------------------------


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def table(*apps: tuple[str, str], engine: str = "poll", extra: list[str] | None = None) -> tuple[AppTable, Lines]:
    log = logging.getLogger(f"codewatch-test-{id(apps)}")
    lines = Lines()
    log.addHandler(lines)
    log.setLevel(logging.INFO)
    t = AppTable(log)
    for name, method in apps:
        cfg = Config()
        cfg.set("reload", True)
        cfg.set("reload_engine", engine)
        cfg.set("reload_extra_files", extra or [])
        t.specs[name] = AppSpec(name=name, app=None, cfg=cfg)
        t.pools[name] = AppPool(name=name, spawn_method=method, target=1)  # type: ignore[arg-type]
    return t, lines


def touch(path: Path, text: str) -> int:
    """Write ``path`` with an mtime surely different from before; its mtime_ns."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))
    return path.stat().st_mtime_ns


def reloads(pool: AppPool) -> bool:
    return any(isinstance(a, StartPreloader) and a.generation == 2 for a in pool.tick(1000.0))


def test_a_changed_reported_file_reloads_that_app_only(tmp_path: Path) -> None:
    t, lines = table(("shop", "smart"), ("blog", "smart"))
    watch = CodeWatch(t, t.log)
    watch.configure(str(tmp_path))
    shop, blog = tmp_path / "shop.py", tmp_path / "blog.py"
    watch.files_reported("shop", 101, [(str(shop), touch(shop, "v1"))], 0.0)
    watch.files_reported("blog", 102, [(str(blog), touch(blog, "v1"))], 0.0)
    watch.tick(0.0)
    touch(shop, "v2")
    watch.tick(1.0)  # the poll sees it ...
    assert not t.pools["shop"].reload_requested
    watch.tick(1.0 + SETTLE)  # ... and the quiet after it reloads
    assert t.pools["shop"].reload_requested and not t.pools["blog"].reload_requested
    assert f"app=shop reloading: {shop} modified, generation 2" in lines.lines
    assert reloads(t.pools["shop"])


def test_a_file_changed_before_the_report_reloads(tmp_path: Path) -> None:
    t, _ = table(("shop", "smart"))
    watch = CodeWatch(t, t.log)
    watch.configure(str(tmp_path))
    shop = tmp_path / "shop.py"
    seen = touch(shop, "v1")
    touch(shop, "v2")  # saved while the preloader imported v1
    watch.files_reported("shop", 101, [(str(shop), seen)], 5.0)
    watch.tick(5.0 + SETTLE)
    assert t.pools["shop"].reload_requested


def test_a_new_preloaders_list_replaces_the_old_and_is_bounded(tmp_path: Path) -> None:
    t, lines = table(("shop", "smart"))
    watch = CodeWatch(t, t.log)
    watch.configure(str(tmp_path))
    watch.files_reported("shop", 101, [("/nonexistent/old.py", 1)], 0.0)
    watch.files_reported("shop", 202, [(f"/nonexistent/new{i}.py", 1) for i in range(MAX_WATCH_FILES + 5)], 0.0)
    files = watch.watched["shop"].files
    assert "/nonexistent/old.py" not in files and len(files) == MAX_WATCH_FILES
    assert any("watches the first" in line for line in lines.lines)
    watch.tick(1.0)
    watch.tick(2.0)
    assert not t.pools["shop"].reload_requested  # missing files change nothing


def test_a_failed_imports_list_adds_to_the_serving_ones(tmp_path: Path) -> None:
    t, _ = table(("shop", "smart"))
    watch = CodeWatch(t, t.log)
    watch.configure(str(tmp_path))
    shop, helper = tmp_path / "shop.py", tmp_path / "helper.py"
    watch.files_reported("shop", 101, [(str(shop), touch(shop, "v1"))], 0.0)
    watch.files_reported("shop", 202, [(str(helper), touch(helper, "broken"))], 0.0, current=False)
    assert set(watch.watched["shop"].files) == {str(shop), str(helper)}
    assert watch.watched["shop"].reporter == 101
    touch(helper, "fixed")
    watch.tick(1.0)
    watch.tick(1.0 + SETTLE)
    assert t.pools["shop"].reload_requested


def test_direct_apps_and_unknown_apps_are_not_watched(tmp_path: Path) -> None:
    t, _ = table(("blog", "direct"))
    watch = CodeWatch(t, t.log)
    watch.configure(str(tmp_path))
    assert watch.watched == {}
    blog = tmp_path / "blog.py"
    watch.files_reported("blog", 5, [(str(blog), 1)], 0.0)
    watch.files_reported("nope", 5, [(str(blog), 1)], 0.0)
    assert watch.watched == {} and watch.timeout(0.0) == float("inf")


def test_an_extra_file_change_reloads(tmp_path: Path) -> None:
    data = tmp_path / "settings.toml"
    touch(data, "a = 1")  # gunicorn wants a plain extra file to exist
    t, _ = table(("shop", "smart"), extra=[str(data)])
    watch = CodeWatch(t, t.log)
    watch.configure(str(tmp_path))
    watch.tick(0.0)
    watch.tick(1.0 + SETTLE)
    assert not t.pools["shop"].reload_requested
    touch(data, "a = 2")
    watch.tick(2.0)
    assert not t.pools["shop"].reload_requested  # polled once a second: the last poll was at 1.3
    watch.tick(2.3)
    watch.tick(2.3 + SETTLE)
    assert t.pools["shop"].reload_requested


@pytest.mark.skipif(not _compat.is_reload_pattern("*.txt"), reason="gunicorn < 27 has no reload_extra_files globs")
def test_an_extra_glob_is_expanded_every_poll(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    touch(tmp_path / "templates" / "base.html", "<p>base</p>")
    t, _ = table(("shop", "smart"), extra=[str(tmp_path / "templates" / "*.html")])
    watch = CodeWatch(t, t.log)
    watch.configure(str(tmp_path))
    page = tmp_path / "templates" / "index.html"
    touch(page, "<p>1</p>")
    watch.tick(0.0)
    watch.tick(0.0 + SETTLE)
    assert str(page) in watch.watched["shop"].files
    assert not t.pools["shop"].reload_requested  # its creation is not an edit (as in gunicorn)
    touch(page, "<p>2</p>")
    watch.tick(1.0)
    watch.tick(1.0 + SETTLE)
    assert t.pools["shop"].reload_requested


def test_inotify_engine_sees_a_save_in_the_select(tmp_path: Path) -> None:
    t, lines = table(("shop", "smart"), engine="inotify")
    watch = CodeWatch(t, t.log)
    watch.configure(str(tmp_path))
    shop, other = tmp_path / "shop.py", tmp_path / "notes.txt"
    watch.files_reported("shop", 101, [(str(shop), touch(shop, "v1"))], 0.0)
    [fd] = watch.fds()
    try:
        watch.tick(0.0)
        touch(other, "not watched")
        readable, _, _ = select.select([fd], [], [], 5.0)
        watch.ready(fd)
        watch.tick(0.5)
        watch.tick(0.5 + SETTLE)
        assert not t.pools["shop"].reload_requested  # an unwatched file in the directory
        touch(shop, "v2")
        readable, _, _ = select.select([fd], [], [], 5.0)
        assert readable == [fd]
        watch.ready(fd)
        assert watch.watched["shop"].debounce.due_at() is not None  # seen without waiting for a poll
        due = watch.watched["shop"].debounce.due_at()
        assert due is not None
        watch.tick(due)
        assert t.pools["shop"].reload_requested
        assert any(line.startswith("app=shop reloading:") for line in lines.lines)
    finally:
        watch.close()
