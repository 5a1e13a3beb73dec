"""A root master with apps under two unprivileged users: what one app's code can do to the other.

App code is hostile here. ``alpha`` (user smartspawn-a) runs ``isolation_app``,
which looks for ``beta``'s (user smartspawn-b) scoreboard slots and secret;
the one-app tests check who imports the app under ``--user``.

These tests need root (to start the master as root, to create the users if
they are missing, to read other processes' memory). They are skipped
otherwise, and fail under ``CI=1``: there they must run.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import Server, free_port, wait_for

from gunicorn_smartspawn.scoreboard import DEFAULT_SLOTS, SLOT

USERS = ("smartspawn-a", "smartspawn-b")
TOOL = [sys.executable, "-m", "gunicorn_smartspawn.control.cli"]
BOARD_SIZE = SLOT.size * DEFAULT_SLOTS


def cannot_run(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI=1: this security test must run, but {why}")
    pytest.skip(why)


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


@pytest.fixture(scope="module")
def users() -> tuple[User, User]:
    """Two unprivileged users, one per app; created (system users, no login) when missing."""
    if os.geteuid() != 0:
        cannot_run("it needs root (a root master, two users, reading other processes' memory)")
    found = []
    for name in USERS:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            done = subprocess.run(
                ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                 "--shell", "/usr/sbin/nologin", name],
                capture_output=True, text=True,
            )
            if done.returncode != 0:
                cannot_run(f"useradd {name} failed: {done.stderr.strip() or done.returncode}")
            entry = pwd.getpwnam(name)
        assert entry.pw_uid != 0 and entry.pw_gid != 0
        found.append(User(name, entry.pw_uid, entry.pw_gid))
    return found[0], found[1]


def get(port: int, path: str = "/") -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body[:500])
        return json.loads(body)
    finally:
        conn.close()


def smartspawn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TOOL, *args], capture_output=True, text=True, timeout=30)


def strict_json(text: str) -> Any:
    """JSON as the standard says it: NaN and Infinity are refused."""
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} in the output")

    return json.loads(text, parse_constant=refuse)


def uid_of(pid: int) -> int:
    return int(status_field(pid, "Uid").split()[0])


def status_field(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def scoreboard_inodes(pid: int) -> set[int]:
    """Inodes of the scoreboard mappings of ``pid``: shared anonymous, the size of one board."""
    found = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if parts[1][3] == "s" and len(parts) > 5 and parts[5].strip() == "/dev/zero (deleted)" and end - start == BOARD_SIZE:
                found.add(int(parts[4]))
    return found


def memory_copies(pid: int, needle: bytes) -> int:
    """Copies of ``needle`` in ``pid``'s readable anonymous memory, read from /proc/PID/mem."""
    found = 0
    with open(f"/proc/{pid}/maps") as f:
        maps = f.read().splitlines()
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    except OSError as exc:
        cannot_run(f"/proc/{pid}/mem cannot be read: {exc}")
    try:
        for line in maps:
            parts = line.split(None, 5)
            path = parts[5].strip() if len(parts) > 5 else ""
            if not parts[1].startswith("rw") or (path and path not in ("[heap]", "[stack]")):
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            try:
                data = os.pread(fd, end - start, start)
            except OSError:
                continue
            found += data.count(needle)
    finally:
        os.close(fd)
    return found


@pytest.fixture
def start_apps(
    tmp_path: Path, server_factory: Callable[..., Server], users: tuple[User, User]
) -> Iterator[Callable[..., tuple[Server, dict[str, int], str]]]:
    """``start(apps, extra='')``: a root master running ``apps`` (name -> entry), ports filled in."""

    def start(apps: dict[str, dict[str, Any]], extra: str = "") -> tuple[Server, dict[str, int], str]:
        ports = {name: free_port() for name in apps}
        table = {name: {**entry, "bind": f"127.0.0.1:{ports[name]}"} for name, entry in apps.items()}
        conf = tmp_path / "isolation.conf.py"
        conf.write_text(f"worker_class = 'smartspawn.Worker'\n{extra}apps = {table!r}\n")
        control = str(tmp_path / "ss.sock")
        server = server_factory("-c", str(conf), "--smartspawn-socket", control, bind=False)
        for name, entry in apps.items():
            wanted = entry.get("workers", 1)
            wait_for(lambda n=name, w=wanted: len(server.by_title(f"worker [{n}]")) == w, timeout=30,
                     what=f"{wanted} workers of {name}")
        for port in ports.values():
            wait_for(lambda p=port: get(p), timeout=30, what="an answer")
        return server, ports, control

    yield start


# -- item 4: one scoreboard per app; what a worker writes is checked --------------------------------


def test_a_worker_reaches_no_other_apps_scoreboard_and_forged_slots_read_as_unknown(
    start_apps: Callable[..., tuple[Server, dict[str, int], str]], users: tuple[User, User]
) -> None:
    a, b = users
    server, ports, control = start_apps({
        "alpha": {"app": "isolation_app:app", "workers": 2, "user": a.name, "group": a.gid},
        "beta": {"app": "isolation_app:app", "workers": 2, "user": b.name, "group": b.gid, "spawn_method": "direct"},
    })
    for _ in range(3):
        get(ports["beta"])  # and one each while starting: 4

    def all_ready() -> dict[str, Any] | None:
        status = strict_json(smartspawn("status", "-s", control, "--json").stdout)
        return status if all(row["ready"] for app in status["apps"] for row in app["workers"]) else None

    wait_for(all_ready, timeout=30, what="every worker's first heartbeat (its slot is written by then)")
    beta_pids = set(server.by_title("worker [beta]"))
    attack = get(ports["alpha"], "/forge")
    assert not beta_pids & set(attack["forged"]), "alpha's code wrote into beta's slots"
    assert attack["forged"], "alpha's worker found no slot of its sibling to forge"

    done = smartspawn("status", "-s", control, "--json")
    assert done.returncode == 0, done.stderr
    status = strict_json(done.stdout)
    apps = {app["name"]: app for app in status["apps"]}
    beta_rows = apps["beta"]["workers"]
    assert sum(row["requests"] for row in beta_rows) == 4
    assert all(row["busy"] is False for row in beta_rows)
    forged = [row for row in apps["alpha"]["workers"] if row["pid"] in attack["forged"]]
    assert forged and all((row["requests"], row["busy"], row["last_request_ago"]) == (None, None, None) for row in forged)
    text = smartspawn("status", "-s", control)
    assert text.returncode == 0 and "Traceback" not in text.stderr, text.stderr
    assert "alpha" in text.stdout and "beta" in text.stdout

    boards = scoreboard_inodes(server.pid)
    assert len(boards) == 2, f"the master maps one scoreboard per app: {boards}"
    by_app = {}
    for name in ("alpha", "beta"):
        pids = server.by_title(f"worker [{name}]") + server.by_title(f"preloader [{name}]")
        seen = [scoreboard_inodes(pid) for pid in pids]
        assert all(len(s) == 1 for s in seen), f"each process of {name} maps exactly one scoreboard: {seen}"
        assert len(set.union(*seen)) == 1, f"the processes of {name} share one scoreboard: {seen}"
        by_app[name] = set.union(*seen)
    assert by_app["alpha"].isdisjoint(by_app["beta"]) and by_app["alpha"] | by_app["beta"] == boards
    assert [board["inode"] for board in attack["scoreboards"]] == sorted(by_app["alpha"])


# -- item 5: another app's secrets ----------------------------------------------------------------------


@pytest.mark.parametrize("spawn_method", ["smart", "direct"])
def test_an_app_finds_no_other_apps_env_secret_in_its_memory(
    start_apps: Callable[..., tuple[Server, dict[str, int], str]], users: tuple[User, User], spawn_method: str
) -> None:
    a, b = users
    secret = "pw-" + secrets.token_hex(20)
    shared = "shared-" + secrets.token_hex(8)  # one literal in both entries: the same str object in the master
    half = len(secret) // 2
    server, ports, _ = start_apps(
        {
            "alpha": {"app": "isolation_app:app", "workers": 1, "user": a.name, "group": a.gid,
                      "spawn_method": spawn_method,
                      "env": {"PROBE_HEAD": secret[:half], "PROBE_TAIL": secret[half:], "SHARED_TOKEN": shared}},
            "beta": {"app": "isolation_app:app", "workers": 1, "user": b.name, "group": b.gid,
                     "env": {"DATABASE_PASSWORD": secret, "SHARED_TOKEN": shared}},
        },
        extra="raw_env = ['GLOBAL_SETTING=" + "g-" + secrets.token_hex(8) + "']\n",
    )
    scan = get(ports["alpha"], "/scan?env=DATABASE_PASSWORD&env=SHARED_TOKEN&env=GLOBAL_SETTING")
    assert scan["uid"] == a.uid
    for when in ("at_import", "now"):
        assert scan[when]["copies"] == 0, f"{when}: alpha's memory holds {scan[when]['copies']} copies of beta's secret"
        assert scan[when]["live"] == [], f"{when}: live objects in alpha hold beta's secret: {scan[when]['live']}"
        assert scan[when]["apps"] == ["alpha"], f"{when}: alpha's process still sees other apps' entries"
    assert scan["env"]["DATABASE_PASSWORD"] is None
    assert scan["env"]["SHARED_TOKEN"] == shared, "alpha's own value, shared with beta's, must stay intact"
    assert scan["env"]["GLOBAL_SETTING"].startswith("g-")

    alpha_pids = server.by_title("worker [alpha]") + server.by_title("preloader [alpha]")
    assert len(alpha_pids) == (2 if spawn_method == "smart" else 1)
    for pid in alpha_pids:
        assert memory_copies(pid, secret.encode()) == 0, f"pid {pid} of alpha holds beta's secret"
    assert memory_copies(server.pid, secret.encode()) > 0, "the master holds the secret: the scan must see it"

    beta = get(ports["beta"], "/?env=DATABASE_PASSWORD&env=SHARED_TOKEN")
    assert beta["env"] == {"DATABASE_PASSWORD": secret, "SHARED_TOKEN": shared}, "beta's own env must be intact"


# -- item 6: the one-app form imports as --user ---------------------------------------------------------


@pytest.mark.parametrize("initgroups", [False, True], ids=["", "initgroups"])
@pytest.mark.parametrize("spawn_method", ["smart", "direct"])
def test_one_app_with_user_imports_the_app_as_that_user(
    server_factory: Callable[..., Server], users: tuple[User, User], spawn_method: str, initgroups: bool
) -> None:
    a, _ = users
    server = server_factory(
        "-k", "smartspawn.Worker", "--spawn-method", spawn_method, "--user", a.name, "--group", str(a.gid),
        *(["--initgroups"] if initgroups else []), "isolation_app:app",
    )
    answer = server.wait_serving(timeout=30)
    assert (answer["import_uid"], answer["import_euid"], answer["uid"], answer["gid"]) == (a.uid, a.uid, a.uid, a.gid)
    assert 0 not in answer["groups"], "the app runs with root's group"
    assert uid_of(server.pid) == 0
    children = server.preloaders() + server.workers()
    assert len(children) == (2 if spawn_method == "smart" else 1)
    for pid in children:
        assert uid_of(pid) == a.uid
        assert status_field(pid, "Gid").split() == [str(a.gid)] * 4
        assert "0" not in status_field(pid, "Groups").split(), f"pid {pid} keeps root's groups"


@pytest.mark.parametrize("form", ["one app", "apps table"])
def test_a_preloader_that_gave_up_root_still_dies_with_the_master(
    tmp_path: Path, server_factory: Callable[..., Server], users: tuple[User, User], form: str
) -> None:
    """The kernel clears the parent-death signal when a process changes its credentials."""
    a, _ = users
    if form == "one app":
        server = server_factory("-k", "smartspawn.Worker", "--user", a.name, "--group", str(a.gid),
                                "isolation_app:app", env={"HANG_AT_IMPORT": "120"})
    else:
        conf = tmp_path / "hang.conf.py"
        entry = {"app": "isolation_app:app", "bind": f"127.0.0.1:{free_port()}", "user": a.name, "group": a.gid,
                 "env": {"HANG_AT_IMPORT": "120"}}
        conf.write_text(f"worker_class = 'smartspawn.Worker'\napps = {{'alpha': {entry!r}}}\n")
        server = server_factory("-c", str(conf), "--smartspawn-socket", str(tmp_path / "ss.sock"), bind=False)
    [preloader] = wait_for(lambda: server.preloaders() or None, timeout=20, what="the preloader")
    wait_for(lambda: uid_of(preloader) == a.uid, timeout=10, what="the preloader to run as the user")
    server.signal(9)
    server.wait_exit(timeout=10)
    wait_for(lambda: not os.path.exists(f"/proc/{preloader}") or status_field(preloader, "State").startswith("Z"),
             timeout=5, what="the preloader, stuck in the import, to die with the master")
