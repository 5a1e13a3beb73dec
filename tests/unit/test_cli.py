"""The ``smartspawn`` command and its client, against a fake master: a unix socket served by a thread.

Every failure must be one line on stderr with exit code 1 (2 for usage),
never a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gunicorn_smartspawn.control import cli, client, memory

STATUS: dict[str, Any] = {
    "master": {"pid": 4711, "gunicorn": "27.0.1", "smartspawn": "0.1.0", "uptime": 62.0},
    "apps": [
        {"name": "shop", "spawn_method": "smart", "state": "running", "last_error": None, "retry_in": None,
         "target": 1, "generation": 1,
         "preloader": {"pid": 4712, "generation": 1, "loaded_in": 0.5, "idle_for": 2.0, "idle_timeout": 300},
         "workers": [{"pid": 4713, "age": 1, "generation": 1, "forked": True, "ready": True, "uptime": 61.0,
                      "requests": 5, "busy": True, "last_request_ago": 0.1}]},
    ],
}


def ok(result: Any, protocol: Any = 1) -> bytes:
    return json.dumps({"ok": True, "protocol": protocol, "version": "0.1.0", "result": result}).encode() + b"\n"


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # short: a unix socket path must fit in 108 bytes, tmp_path may not
    with tempfile.TemporaryDirectory(prefix="ss-") as where:
        yield Path(where)


class FakeMaster:
    """Answers one connection with ``reply`` (bytes), or with nothing when ``reply`` is None
    (and ``close`` says whether it hangs up or keeps the client waiting)."""

    def __init__(self, path: Path, reply: bytes | None, close: bool = True) -> None:
        self.path = str(path)
        self.reply = reply
        self.close = close
        self.requests: list[bytes] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.listener.settimeout(10)
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.requests.append(data)
            if self.reply is not None:
                conn.sendall(self.reply)
            elif not self.close:
                self.release.wait(10)

    def __enter__(self) -> FakeMaster:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.listener.close()
        self.thread.join(10)
        assert not self.thread.is_alive()

    def request(self) -> Any:
        [line] = self.requests
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        return json.loads(line)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    assert err.startswith("smartspawn: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err[len("smartspawn: "):-1]


# -- the happy paths: what goes over the wire ----------------------------------------------------


def test_status(capsys: pytest.CaptureFixture[str], sock_dir: Path) -> None:
    with FakeMaster(sock_dir / "m.sock", ok(STATUS)) as master:
        code, out, err = run(capsys, "status", "-s", master.path)
    assert (code, err) == (0, "")
    assert master.request() == {"command": "status"}
    assert out.splitlines()[0] == "gunicorn-smartspawn 0.1.0 on gunicorn 27.0.1: master 4711, up 1m 02s, 1 app"
    assert "busy" in out


def test_status_json_is_the_masters_result(capsys: pytest.CaptureFixture[str], sock_dir: Path) -> None:
    with FakeMaster(sock_dir / "m.sock", ok(STATUS)) as master:
        code, out, _ = run(capsys, "status", "--json", "-s", master.path)
    assert code == 0 and json.loads(out) == STATUS


def test_memory_over_the_socket(capsys: pytest.CaptureFixture[str], sock_dir: Path) -> None:
    report = memory.memory_report([])
    with FakeMaster(sock_dir / "m.sock", ok(report)) as master:
        code, out, _ = run(capsys, "memory", "-s", master.path)
    assert master.request() == {"command": "memory"}
    assert code == 0 and out.rstrip().endswith("(sum of PSS).")


@pytest.mark.parametrize(
    ("argv", "sent", "printed"),
    [
        (["restart", "shop"], {"command": "restart", "app": "shop"}, "app shop: restart requested"),
        (["scale", "shop", "+2"], {"command": "scale", "app": "shop", "delta": 2}, "app shop: workers 1 -> 3"),
        (["scale", "shop", "-1"], {"command": "scale", "app": "shop", "delta": -1}, "app shop: workers 1 -> 3"),
        (["scale", "shop", "3"], {"command": "scale", "app": "shop", "workers": 3}, "app shop: workers 1 -> 3"),
    ],
)
def test_commands_send_one_line(capsys: pytest.CaptureFixture[str], sock_dir: Path, argv: list[str],
                                sent: dict[str, Any], printed: str) -> None:
    result = {"app": "shop", "restarting": True} if argv[0] == "restart" else {"app": "shop", "previous": 1, "workers": 3}
    with FakeMaster(sock_dir / "m.sock", ok(result)) as master:
        code, out, _ = run(capsys, *argv, "-s", master.path)
    assert master.request() == sent
    assert (code, out) == (0, printed + "\n")


def test_socket_from_the_environment(capsys: pytest.CaptureFixture[str], sock_dir: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeMaster(sock_dir / "env.sock", ok(STATUS)) as master:
        monkeypatch.setenv(client.SOCKET_ENV, master.path)
        code, _, _ = run(capsys, "status")
    assert code == 0 and master.request() == {"command": "status"}


def test_socket_path_precedence() -> None:
    assert client.socket_path("/a.sock", {"SMARTSPAWN_SOCKET": "/b.sock", "XDG_RUNTIME_DIR": "/run/u"}) == "/a.sock"
    assert client.socket_path(None, {"SMARTSPAWN_SOCKET": "/b.sock", "XDG_RUNTIME_DIR": "/run/u"}) == "/b.sock"
    assert client.socket_path(None, {"XDG_RUNTIME_DIR": "/run/user/1000"}) == "/run/user/1000/gunicorn-smartspawn.sock"
    assert client.socket_path(None, {}) == os.path.expanduser("~/.gunicorn/smartspawn.sock")


def test_no_master_there(capsys: pytest.CaptureFixture[str], sock_dir: Path) -> None:
    path = sock_dir / "none.sock"
    code, out, err = run(capsys, "status", "-s", str(path))
    assert (code, out) == (1, "")
    assert one_line_error(err) == f"no smartspawn master at {path}: no such socket (is the server running, " \
                                  f"with --smartspawn-socket {path}?)"


def test_stale_socket_file(capsys: pytest.CaptureFixture[str], sock_dir: Path) -> None:
    path = sock_dir / "stale.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))  # the file stays, nobody listens: what a killed master leaves behind
    dead.close()
    code, _, err = run(capsys, "status", "-s", str(path))
    assert code == 1
    assert one_line_error(err).startswith(f"stale socket {path}: nothing is listening there")


def test_a_file_that_is_not_a_socket(capsys: pytest.CaptureFixture[str], sock_dir: Path) -> None:
    path = sock_dir / "plain"
    path.write_text("")
    code, _, err = run(capsys, "memory", "-s", str(path))
    assert code == 1 and one_line_error(err) == f"{path} is not a socket: give the master's --smartspawn-socket path"


def _connect_as_nobody(path: str) -> str:
    import pwd

    nobody = pwd.getpwnam("nobody")
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(r)
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                client.request(path, {"command": "status"}, timeout=2)
                result = "no error"
            except client.ControlError as exc:
                result = str(exc)
            os.write(w, result.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(child, 0)
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to try as another user")
def test_permission_denied(sock_dir: Path) -> None:
    os.chmod(sock_dir, 0o755)
    path = str(sock_dir / "owner-only.sock")
    listener = socket.socket(socket.AF_UNIX)  # no thread: the child is forked
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(1)
    try:
        out = _connect_as_nobody(path)
    finally:
        listener.close()
    assert out == (f"permission denied on {path}: the control socket is owner-only (it belongs to root, uid 0); "
                   "run smartspawn as the server's user or as root")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may connect to any socket")
def test_permission_denied_without_root(capsys: pytest.CaptureFixture[str], sock_dir: Path) -> None:
    path = sock_dir / "closed.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)
    os.chmod(path, 0)
    try:
        code, _, err = run(capsys, "status", "-s", str(path))
    finally:
        listener.close()
    assert code == 1 and one_line_error(err).startswith(f"permission denied on {path}")


def test_no_answer_in_time(capsys: pytest.CaptureFixture[str], sock_dir: Path) -> None:
    with FakeMaster(sock_dir / "slow.sock", None, close=False) as master:
        started = time.monotonic()
        code, _, err = run(capsys, "status", "-s", master.path, "--timeout", "0.3")
        assert time.monotonic() - started < 3
    assert code == 1 and one_line_error(err) == f"no answer from the master at {master.path} within 0.3s"


def test_hangs_up_without_an_answer(capsys: pytest.CaptureFixture[str], sock_dir: Path) -> None:
    with FakeMaster(sock_dir / "rude.sock", None) as master:
        code, _, err = run(capsys, "status", "-s", master.path)
    assert code == 1 and one_line_error(err).startswith(f"the server at {master.path} closed the connection without an "
                                                        "answer (if it is gunicorn's own --control-socket, use gunicornc")


def test_a_master_of_another_protocol(capsys: pytest.CaptureFixture[str], sock_dir: Path) -> None:
    reply = json.dumps({"ok": True, "protocol": 2, "version": "0.4.0", "result": {}}).encode() + b"\n"
    with FakeMaster(sock_dir / "new.sock", reply) as master:
        code, _, err = run(capsys, "status", "-s", master.path)
    assert code == 1
    assert one_line_error(err) == (f"gunicorn-smartspawn 0.4.0 at {master.path} speaks control protocol 2, this "
                                   "smartspawn (0.1.0) speaks 1: use the smartspawn installed with the running server")


def test_a_refusal_carries_the_masters_reason(capsys: pytest.CaptureFixture[str], sock_dir: Path) -> None:
    reply = json.dumps({"ok": False, "protocol": 1, "version": "0.1.0",
                        "error": "unknown app 'shp': this master runs blog, shop"}).encode() + b"\n"
    with FakeMaster(sock_dir / "m.sock", reply) as master:
        code, _, err = run(capsys, "restart", "shp", "-s", master.path)
    assert code == 1 and one_line_error(err) == "the master refused: unknown app 'shp': this master runs blog, shop"


def test_a_multi_line_refusal_stays_one_line(capsys: pytest.CaptureFixture[str], sock_dir: Path) -> None:
    reply = json.dumps({"ok": False, "protocol": 1, "error": "Traceback:\n  x\n  y\nValueError: no"}).encode() + b"\n"
    with FakeMaster(sock_dir / "m.sock", reply) as master:
        code, _, err = run(capsys, "status", "-s", master.path)
    assert code == 1 and one_line_error(err) == "the master refused: ValueError: no (and 3 more lines)"


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 400 Bad Request\r\n\r\n",
        b"\x00\x00\x00\x2a{\"id\": 1, \"status\": \"error\"}",  # gunicorn's own length-prefixed control socket
        b"[1, 2, 3]\n",
        b"\xff\xfe\n",
    ],
)
def test_something_else_at_the_socket(capsys: pytest.CaptureFixture[str], sock_dir: Path, reply: bytes) -> None:
    with FakeMaster(sock_dir / "other.sock", reply) as master:
        code, _, err = run(capsys, "status", "-s", master.path)
    assert code == 1
    assert one_line_error(err).startswith(f"the server at {master.path} answered something that is not a smartspawn reply")


def test_an_answer_without_the_fields_the_table_needs(capsys: pytest.CaptureFixture[str], sock_dir: Path) -> None:
    with FakeMaster(sock_dir / "m.sock", ok({"master": {"pid": 1}})) as master:
        code, _, err = run(capsys, "status", "-s", master.path)
    assert code == 1 and one_line_error(err).startswith("the master's status lacks a field this smartspawn needs")


def test_a_memory_report_of_another_protocol(capsys: pytest.CaptureFixture[str], sock_dir: Path) -> None:
    with FakeMaster(sock_dir / "m.sock", ok({"protocol": 2, "processes": []})) as master:
        code, _, err = run(capsys, "memory", "-s", master.path)
    assert code == 1 and one_line_error(err) == "the master's memory report has protocol 2, this smartspawn reads 1"


# -- memory --pid ------------------------------------------------------------------------------


def test_memory_pid_of_a_process_that_is_not_there(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "memory", "--pid", "4194304")  # above the largest pid_max
    assert code == 1 and one_line_error(err) == "no process with pid 4194304"


def test_memory_pid_of_a_process_that_is_not_gunicorn(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "memory", "--pid", str(os.getpid()))
    assert code == 1 and one_line_error(err).startswith(f"pid {os.getpid()} is not a gunicorn master: its title is ")


# -- usage: exit 2 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["stats"], "invalid choice: 'stats'"),
        (["scale", "shop"], "the following arguments are required: +N|-N|N"),
        (["scale", "shop", "many"], "'many': give +N or -N to add or remove workers, or N for a total"),
        (["scale", "shop", "+0"], "'+0': a change of 0 workers changes nothing"),
        (["scale", "shop", "1.5"], "'1.5': give +N or -N"),
        (["restart"], "the following arguments are required: APP"),
        (["memory", "--pid", "abc"], "'abc' is not a pid"),
        (["memory", "--pid", "0"], "'0' is not a pid"),
        (["memory", "--pid", "1", "-s", "/x.sock"], "give either -s/--socket or --pid, not both"),
        (["status", "--timeout", "0"], "give seconds, more than 0"),
        (["status", "--timeout", "nan"], "give seconds, more than 0"),
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], says: str) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert says in err and "Traceback" not in err


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert (code, out) == (0, "smartspawn 0.1.0\n")
    code, out, _ = run(capsys, "scale", "--help")
    assert code == 0 and "+N|-N|N" in out
    assert all(len(line) <= cli.WIDTH for line in out.splitlines())
