"""A hostile preloader against the master's end of its channel, with a real server.

A preloader runs application code, maybe as another user: whatever it writes
on its channel is hostile input to the master. Two ways to be that preloader
here: take its end of the channel (``pidfd_getfd``, as the hostile-frame tests
of test_reliability.py do) and write from the test, or load an app whose
import writes on the channel it finds among its own descriptors.

Each test checks what the issue "The preloader is untrusted" reported: the
master's descriptor table does not fill (items 2), its log does not flood
(item 3), and the app's other workers keep serving.
"""

from __future__ import annotations

import array
import fcntl
import json
import os
import signal
import socket
import struct
import termios
import time
from pathlib import Path

from harness import Server, fd_targets, steal_fd, unix_socket_inodes, wait_for

SMART = ["-k", "smartspawn.Worker", "--spawn-method", "smart"]
#: what one recvmsg of the master takes (wire.MAX_FDS_PER_READ): the most it can hold for an instant
FDS_PER_READ = 16


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def log_size(server: Server) -> int:
    return server.log_path.stat().st_size


def master_log_bytes(server: Server, since: int) -> int:
    """Bytes the master itself logged after offset ``since``: its own lines, not what the app's processes
    print to the same file (an app may print what it likes; the bound is on what it makes the master say)."""
    with open(server.log_path, "rb") as f:
        f.seek(since)
        tail = f.read()
    mine = f"] [{server.pid}] [".encode()
    return sum(len(line) + 1 for line in tail.splitlines() if mine in line[:60])


def bad_frame_lines(server: Server, preloader: int) -> list[str]:
    return [line for line in server.log().splitlines() if f"preloader pid={preloader} sent a bad frame" in line]


def steal_channel(preloader: int, master: int) -> socket.socket:
    """The preloader's end of its channel: its only unnamed unix socket the master does not share."""
    master_inodes = set(fd_targets(master).values())
    unix = unix_socket_inodes()
    candidates = [
        fd for fd, target in fd_targets(preloader).items()
        if target in unix and unix[target] == "" and target not in master_inodes
    ]
    assert len(candidates) == 1, candidates
    return socket.socket(fileno=steal_fd(preloader, candidates[0]))


def unread(sock: socket.socket) -> int:
    """Bytes sent on ``sock`` that its peer has not read yet (SIOCOUTQ)."""
    out = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, out)
    return out[0]


def preloader_failed_frame(error_chars: int, traceback_chars: int) -> bytes:
    body = json.dumps({"type": "PreloaderFailed", "error": "E" * error_chars, "traceback": "T" * traceback_chars}).encode()
    return struct.pack("!I", len(body)) + body


def keeps_serving(server: Server, workers: list[int]) -> None:
    """Every one of ``workers`` still answers, and the master is alive."""
    assert server.proc is not None and server.proc.poll() is None
    assert server.pids_answering(set(workers)) >= set(workers)


# -- item 2: descriptors ---------------------------------------------------------------------------


def test_trickled_frame_with_descriptors_leaves_the_masters_fd_table_alone(server_factory):
    """The reported attack: announce a 900 KB frame, trickle its bytes with 16 descriptors each."""
    server = server_factory(*SMART, "-w", "2", "probe_app:app")
    workers = server.wait_workers(2)
    server.wait_registered(workers)  # the master read the preloader's reports before the theft
    if server.arg("--control-socket"):  # gunicorn 27 opens its control server's fds in a thread
        server.wait_log("Control socket listening at")
    [preloader] = server.preloaders()
    sock = steal_channel(preloader, server.pid)
    before = peak = fd_count(server.pid)
    chunks = 0
    hung_up = False
    with sock:
        sock.settimeout(5)
        for i in range(40):
            fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(FDS_PER_READ)]
            try:
                socket.send_fds(sock, [(struct.pack("!I", 900_000) if i == 0 else b"") + b"x" * 64], fds)
            except (BrokenPipeError, ConnectionResetError):
                hung_up = True
                break
            finally:
                for fd in fds:
                    os.close(fd)
            chunks += 1
            # the master read this chunk (or hung up) before the next: then its table is what we look at
            wait_for(lambda: unread(sock) == 0, timeout=10, what="the master to read the chunk")
            peak = max(peak, fd_count(server.pid))
    sent = chunks * FDS_PER_READ
    print(f"master fds: {before} before, peak {peak} while {sent} descriptors were trickled in {chunks} chunk(s)")
    assert peak <= before + FDS_PER_READ, f"the master's fd count rose from {before} to {peak} ({sent} fds sent)"
    assert hung_up, f"the master kept reading {chunks} chunks with {sent} descriptors"
    wait_for(lambda: preloader not in server.preloaders(), what="the hostile preloader to be stopped")
    [line] = bad_frame_lines(server, preloader)
    assert f"({FDS_PER_READ} descriptor(s) arrived with events: the limit is 0); stopping it" in line, line
    after = wait_for(lambda: (n := fd_count(server.pid)) < before and n, what="the master's fds to go below the start")
    print(f"master fds after: {after}")
    keeps_serving(server, workers)
    # the HUP that killed the master with EMFILE: a new generation comes up
    server.signal(signal.SIGHUP)
    new = server.wait_workers(2, exclude=workers, timeout=30)
    keeps_serving(server, new)
    assert fd_count(server.pid) <= before + 2


def test_frame_over_the_event_limit_is_refused_from_its_length(server_factory):
    server = server_factory(*SMART, "-w", "2", "probe_app:app")
    workers = server.wait_workers(2)
    server.wait_registered(workers)  # the master read the preloader's reports before the theft
    [preloader] = server.preloaders()
    before = fd_count(server.pid)
    with steal_channel(preloader, server.pid) as sock:
        sock.sendall(struct.pack("!I", 900_000) + b'{"type":"PreloaderFailed","error":"')
        server.wait_log(f"preloader pid={preloader} sent a bad frame", timeout=10)
    [line] = bad_frame_lines(server, preloader)
    assert "(frame of 900000 bytes exceeds the 65536-byte limit for events); stopping it" in line, line
    wait_for(lambda: preloader not in server.preloaders(), what="the hostile preloader to be stopped")
    wait_for(lambda: fd_count(server.pid) < before, what="the master to close the channel")
    keeps_serving(server, workers)


# -- item 3: the log ---------------------------------------------------------------------------------


def test_flood_of_preloader_failed_frames_costs_one_log_line(server_factory):
    """A serving preloader's end writes PreloaderFailed frames, each within the frame and text bounds, as
    fast as the master takes them. Before the bounds every frame was an ERROR line of 2000 characters."""
    server = server_factory(*SMART, "-w", "2", "probe_app:app")
    workers = server.wait_workers(2)
    server.wait_registered(workers)  # the master read the preloader's reports before the theft
    [preloader] = server.preloaders()
    frame = preloader_failed_frame(4000, 0)  # small: many of them fit in what one receive() reads
    start = log_size(server)
    started = time.monotonic()
    sent = 0
    hung_up = False
    with steal_channel(preloader, server.pid) as sock:
        sock.settimeout(5)
        while time.monotonic() - started < 5 and log_size(server) - start < 1 << 20:  # (stops an unbounded run early)
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                hung_up = True
                break
            sent += 1
    elapsed = time.monotonic() - started
    wait_for(lambda: preloader not in server.preloaders(), what="the hostile preloader to be stopped")
    growth = master_log_bytes(server, start)
    print(f"flood: {sent} frames of {len(frame)} bytes in {elapsed:.2f}s; the master logged {growth} bytes")
    assert growth < 4096, f"the master logged {growth} bytes for {sent} frames"
    assert hung_up, f"the master kept reading: {sent} frames in {elapsed:.1f}s"
    [line] = bad_frame_lines(server, preloader)
    assert "(PreloaderFailed after PreloaderReady: the limit is one load report per preloader)" in line, line
    keeps_serving(server, workers)


HOSTILE_APP = '''
import json, os, socket, struct, time

MODE = {mode!r}


def app(environ, start_response):
    body = json.dumps({{"pid": os.getpid(), "mode": MODE}}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _my_channel():
    """This preloader's end of its channel: its one unnamed unix stream socket."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink("/proc/self/fd/" + name).startswith("socket:"):
                continue
            s = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        if s.family == socket.AF_UNIX and s.type == socket.SOCK_STREAM and not s.getsockname():
            found.append(s)
        else:
            s.close()
    assert len(found) == 1, found
    return found[0]


if MODE == "flood":
    body = json.dumps({{"type": "PreloaderFailed", "error": "E" * 4000, "traceback": "T" * 30000}}).encode()
    frame = struct.pack("!I", len(body)) + body
    sock = _my_channel()
    sock.settimeout(1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            sock.sendall(frame)
        except OSError:  # the master hung up
            break
    raise ImportError("hostile app: flooded its channel")
'''


def write_app(path: Path, mode: str) -> None:
    path.write_text(HOSTILE_APP.format(mode=mode))


def test_app_flooding_its_channel_at_import_costs_a_few_lines_per_attempt(server_factory, tmp_path):
    """Each HUP loads an app whose import floods PreloaderFailed frames from inside its preloader. Each
    attempt is stopped at the second frame and costs the log a few lines; the old generation's workers
    serve all along; the fixed app then loads."""
    write_app(tmp_path / "hostile.py", "good")
    server = server_factory(*SMART, "-w", "2", "hostile:app", env={"PYTHONDONTWRITEBYTECODE": "1"})
    workers = server.wait_workers(2)
    [good_preloader] = server.preloaders()
    write_app(tmp_path / "hostile.py", "flood")
    start = log_size(server)
    started = time.monotonic()
    answers: list[str] = []
    attempts = 3
    for attempt in range(1, attempts + 1):
        server.signal(signal.SIGHUP)

        def stopped_or_flooded(attempt: int = attempt) -> bool:
            answers.append(server.get_json("/")["mode"])  # the old generation serves meanwhile
            return master_log_bytes(server, start) > 1 << 20 or server.log().count("sent a bad frame") >= attempt

        wait_for(stopped_or_flooded, timeout=20, what=f"hostile attempt {attempt} to be stopped")
    elapsed = time.monotonic() - started
    growth = master_log_bytes(server, start)
    print(f"hostile app: {attempts} attempts in {elapsed:.2f}s; the master logged {growth} bytes,"
          f" {growth // attempts} per attempt")
    # per attempt: the HUP, start, bad frame and exit lines, and the lines that quote the first
    # PreloaderFailed's error if it was read alone: at most 4096 characters each (wire.MAX_ERROR_TEXT)
    assert growth < attempts * 16 * 1024, f"the master logged {growth} bytes in {attempts} attempts"
    lines = [line for line in server.log().splitlines() if "sent a bad frame" in line]
    assert len(lines) == attempts
    for line in lines:
        assert "(PreloaderFailed after PreloaderFailed: the limit is one load report per preloader)" in line, line
    assert set(answers) == {"good"}
    assert sorted(server.workers()) == sorted(workers)
    assert server.preloaders() == [good_preloader]
    keeps_serving(server, workers)
    # the app is fixed: the next HUP brings the new generation
    write_app(tmp_path / "hostile.py", "fixed")
    server.signal(signal.SIGHUP)
    wait_for(lambda: all(server.get_json("/")["mode"] == "fixed" for _ in range(6)), timeout=30, what="the fixed app")
