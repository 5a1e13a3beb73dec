"""Request overhead: requests per second on the hello-world app, measured by
``wrk`` on loopback, smart spawning vs stock gunicorn with the same workers.

    python benchmarks/overhead.py [--runs 8] [--duration 2] [--workers 4]
                                  [--cpu-rounds 20] [--cpu-requests 2000] [--cpu-connections 4]
                                  [--requests 20000] [--syscalls 2000]
    python benchmarks/overhead.py --wrapper-cost | --loop-cost

Configurations (all ``benchmarks.hello_app:application``, ``-w 4``):

  smart-sync      gunicorn -k smartspawn.Worker -w 4
  stock-sync      gunicorn -w 4                    (sync worker)
  smart-gthread   gunicorn -k smartspawn.Worker -w 4 --threads 4
  stock-gthread   gunicorn -k gthread -w 4 --threads 4
  direct-sync     gunicorn -k smartspawn.Worker --spawn-method=direct -w 4
  direct-gthread  gunicorn -k smartspawn.Worker --spawn-method=direct -w 4 --threads 4
                  (the plugin's worker class without a preloader)

Two figures, measured in two phases per group:

* requests/s: ``wrk -t2 -c16 -d<duration>s`` bursts (``--runs`` cycles), as
  fast as wrk and the server can go together on the machine's cores;
* server CPU time per request (``--cpu-rounds`` rounds, 20 by default, 0 to
  take it from the requests/s bursts instead): bursts of a fixed count of
  requests (``--cpu-requests``, 2000) over a few kept-alive connections
  (``--cpu-connections``, 4) from one wrk thread (``wrk -t1`` and a Lua script
  that ends wrk at the Nth response). The server's CPU seconds over the burst
  (utime + stime of the master, the preloader and the workers, /proc/PID/stat)
  divided by that count is the figure the CPU ratios compare. A fixed count
  makes every variant do the same work in every round, whatever its speed; one
  wrk thread and 4 connections keep the client on about one core, so on two
  cores the server is not fighting wrk for the CPU, which would add context
  switches and cache misses to whichever server it happened to share a core
  with (the duration bursts' -t2 -c16 saturate both cores). Rounds
  interleave the group's servers, order rotated each round, and the ratio is
  taken round by round.

``--requests N`` makes every requests/s burst a fixed number of requests
instead of a duration (one wrk thread): requests/s is then N over the burst's
wall time.

``--syscalls N`` ends each group with one burst of N requests per server
under ``strace -c -f`` attached to all the server's processes: system calls
per request, by name, for each configuration and against stock.  Unlike
times, these counts do not move with the machine's load.

The configurations are compared in groups (sync: smart, stock and direct; gthread:
smart, stock and direct), all servers of a group running side by side.  A
run waits until every server's workers exist and it is idle, warms each up
with one untimed second of ``wrk``, then runs N cycles; in each cycle every
server of the group gets one burst of ``wrk -t2 -c16 -d<duration>s
http://127.0.0.1:PORT/`` (order rotated every cycle).  The ratio smart /
stock is taken cycle by cycle, between bursts a few seconds apart: other
load on a shared machine changes over seconds, so the closer two bursts are,
the more of that noise a ratio cancels.  An idle server costs nothing while
another is measured.  wrk and the server share the machine's cores, as a
local load test must; the ratio, not the absolute figure, is the result.

``wrk`` is the Debian package of that name.  :func:`find_wrk` finds it on
PATH; ``ensure_wrk(install=True)`` runs ``apt-get install -y wrk`` when it is
missing and we are root, and says so either way.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness  # noqa: E402
from benchmarks.harness import SampleError  # noqa: E402

CONFIGS = {
    # name: (variant, threads)
    "smart-sync": ("smart", 1),
    "stock-sync": ("stock", 1),
    "smart-gthread": ("smart", 4),
    "stock-gthread": ("stock", 4),
    # the plugin's worker class without a preloader: tells a cost of the
    # worker class from a cost of being forked from the preloader
    "direct-gthread": ("direct", 4),
    "direct-sync": ("direct", 1),
}
PAIRS = [("smart-sync", "stock-sync"), ("smart-gthread", "stock-gthread"),
         ("direct-sync", "stock-sync"), ("direct-gthread", "stock-gthread")]
GROUPS = [("smart-sync", "stock-sync", "direct-sync"),
          ("smart-gthread", "stock-gthread", "direct-gthread")]
#: Ends wrk at the Nth response (wrk -t1 -s SCRIPT URL -- N): a fixed request count.
FIXED_COUNT_LUA = """\
local limit, seen = 0, 0
function init(args) limit = tonumber(args[1]) end
function response(status, headers, body)
  seen = seen + 1
  if seen >= limit then
    io.write("fixed-count-done " .. seen .. "\\n")
    io.flush()
    os.exit(0)
  end
end
"""
FIXED_RE = re.compile(r"fixed-count-done (\d+)")


@dataclass
class Options:
    app: str = harness.HELLO_APP
    workers: int = 4
    duration: float = 2.0
    warmup: float = 1.0
    wrk_threads: int = 2
    connections: int = 16
    start_timeout: float = 60.0
    isolate_stock: bool = True
    show_commands: bool = False
    wrk: str = "wrk"
    #: >0: every requests/s burst is this many requests, not a duration
    requests: int = 0
    #: >0: rounds of fixed-count bursts that give the CPU figure (0: from the requests/s bursts)
    cpu_rounds: int = 20
    #: requests per CPU burst, and the connections (one wrk thread) that send them
    cpu_requests: int = 2000
    cpu_connections: int = 4
    #: >0: end each group with one burst of this many requests per server under strace -c
    syscalls: int = 0
    script: str = ""


def find_wrk():
    return shutil.which("wrk")


def ensure_wrk(install):
    """(path or None, message): find wrk; with ``install``, try apt-get as root."""
    path = find_wrk()
    if path:
        return path, "wrk found at %s" % path
    if not install:
        return None, "wrk is not installed (Debian: apt-get install wrk); overhead skipped"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, ("wrk is not installed and cannot be installed here (needs root "
                      "and apt-get); overhead skipped")
    print("wrk not found: installing the Debian package (apt-get install -y wrk)")
    sys.stdout.flush()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "install", "-y", "-qq", "wrk"],
                ["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        try:
            res = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, "installing wrk failed (%s); overhead skipped" % e
        if cmd[1] == "install" and res.returncode == 0 and find_wrk():
            return find_wrk(), "wrk was not installed: installed it with apt-get"
    return None, ("installing wrk with apt-get failed (%s); overhead skipped"
                  % (res.stderr.strip().splitlines() or ["?"])[-1])


def wrk_version(path):
    try:
        res = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"wrk (\S+)", res.stdout + res.stderr)
    return m.group(1) if m else None


RPS_RE = re.compile(r"Requests/sec:\s+([\d.]+)")
SOCKET_ERRORS_RE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
NON2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)")
TOTAL_RE = re.compile(r"(\d+) requests in ([\d.]+)(\w+),")


def run_wrk(wrk, port, duration, opts):
    cmd = [wrk, "-t%d" % opts.wrk_threads, "-c%d" % opts.connections,
           "-d%ds" % max(1, round(duration)), "http://127.0.0.1:%d/" % port]
    shown = " ".join(["wrk"] + cmd[1:-1] + ["http://127.0.0.1:PORT/"])
    res = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         timeout=duration + 60, start_new_session=True)
    out = res.stdout + res.stderr
    m = RPS_RE.search(out)
    if res.returncode != 0 or not m:
        raise SampleError("wrk failed (status %s): %s" % (res.returncode, out.strip()[-500:]))
    errors = SOCKET_ERRORS_RE.search(out)
    non2xx = NON2XX_RE.search(out)
    total = TOTAL_RE.search(out)
    return {"rps": float(m.group(1)),
            "requests": int(total.group(1)) if total else None,
            "socket_errors": dict(zip(("connect", "read", "write", "timeout"),
                                      map(int, errors.groups()))) if errors else {},
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "command": shown}


def run_wrk_fixed(wrk, port, requests, opts, connections=None):
    """One burst of exactly ``requests`` responses (wrk -t1 and :data:`FIXED_COUNT_LUA`)."""
    connections = connections or opts.connections
    cmd = [wrk, "-t1", "-c%d" % connections, "-d%ds" % 3600, "-s", opts.script,
           "http://127.0.0.1:%d/" % port, "--", str(requests)]
    shown = "wrk -t1 -c%d -s fixed_count.lua http://127.0.0.1:PORT/ -- %d" % (connections, requests)
    started = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         timeout=600, start_new_session=True)
    elapsed = time.monotonic() - started
    out = res.stdout + res.stderr
    m = FIXED_RE.search(out)
    if res.returncode != 0 or not m:
        raise SampleError("wrk failed (status %s): %s" % (res.returncode, out.strip()[-500:]))
    done = int(m.group(1))
    return {"rps": done / elapsed, "requests": done, "socket_errors": {}, "non_2xx": 0,
            "command": shown}


def write_script(tmpdir):
    path = os.path.join(tmpdir, "fixed_count.lua")
    with open(path, "w") as f:
        f.write(FIXED_COUNT_LUA)
    return path


STRACE_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def parse_strace_summary(text):
    """{syscall: calls} from the table ``strace -c`` writes."""
    calls = {}
    for line in text.splitlines():
        m = STRACE_ROW.match(line)
        if m and m.group(2) != "total":
            calls[m.group(2)] = calls.get(m.group(2), 0) + int(m.group(1))
    return calls


def count_syscalls(server, requests, opts, tmpdir):
    """System calls of all the server's processes (threads too) over ``requests`` requests
    (over the CPU rounds' ``cpu_connections`` when there are CPU rounds):
    {"per_request": total / requests, "by_name": {name: calls / requests}}."""
    pids = [server.pid] + harness.descendants_of(server.pid)
    out = os.path.join(tmpdir, "strace-%d.txt" % server.port)
    cmd = ["strace", "-c", "-f", "-o", out]
    for pid in pids:
        cmd += ["-p", str(pid)]
    tracer = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        attached = set()
        deadline = time.monotonic() + 30
        while not set(pids) <= attached and time.monotonic() < deadline:
            line = tracer.stderr.readline()
            if not line:
                break
            m = re.search(r"Process (\d+) attached", line)
            if m:
                attached.add(int(m.group(1)))
        if not set(pids) <= attached:
            raise SampleError("strace attached to %s of %s" % (sorted(attached), pids))
        # the CPU rounds' burst shape when there are CPU rounds: the counts then go with them
        r = run_wrk_fixed(opts.wrk, server.port, requests, opts,
                          connections=opts.cpu_connections if opts.cpu_rounds > 0 else None)
    finally:
        tracer.send_signal(signal.SIGINT)
        try:
            tracer.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.communicate()
    calls = parse_strace_summary(harness.read_text(out))
    done = r["requests"]
    return {"per_request": sum(calls.values()) / done,
            "by_name": {k: v / done for k, v in sorted(calls.items())}, "requests": done}


def wrapper_cost(repeats=30, number=20000):
    """What the plugin adds around one request in the worker's own code, measured in this
    process: the hello-world app called as gunicorn calls it (body iterated, then closed),
    bare and wrapped as a worker wraps it (:mod:`gunicorn_smartspawn.worker.counting` over a
    real scoreboard slot: a sync one, and gthread's locked one).  The minimum of ``repeats``
    timings is kept, which other load on the machine moves far less than a server's figures.
    Returns {"bare_us", "sync_us", "gthread_us"}: the bare call, and what each wrapper adds."""
    import timeit

    from gunicorn.http.wsgi import FileWrapper

    from benchmarks.hello_app import application
    from gunicorn_smartspawn.scoreboard import Scoreboard
    from gunicorn_smartspawn.worker import counting

    environ = {"wsgi.file_wrapper": FileWrapper}

    def start_response(status, headers):
        pass

    def serve(app):
        body = app(environ, start_response)
        for _ in body:
            pass
        if hasattr(body, "close"):
            body.close()

    board = Scoreboard(2)
    apps = {"bare_us": application}
    for key, threaded in (("sync_us", False), ("gthread_us", True)):
        tally = counting.Tally(board.slot(board.assign(), threaded), lambda: None)
        apps[key] = counting.counted(application, "wsgi", tally)
    best = dict.fromkeys(apps, float("inf"))
    for _ in range(repeats):
        for key, app in apps.items():
            best[key] = min(best[key], timeit.timeit(lambda app=app: serve(app), number=number) / number * 1e6)
    return {"bare_us": best["bare_us"], "sync_us": best["sync_us"] - best["bare_us"],
            "gthread_us": best["gthread_us"] - best["bare_us"]}


def loop_cost(repeats=20, number=400):
    """What the sync worker's loop costs around the app for one connection, gunicorn's code
    against the plugin's, measured in this process on loopback: the heartbeat (``notify()``),
    ``accept`` (stock: ``setblocking(1)``, ``close_on_exec``) and the listener's address that
    ``handle_request`` asks for, then the close.  Connections are opened before each timing,
    so connecting is not counted.  Also one heartbeat alone (gthread calls it about twice per
    request).  The minimum of ``repeats`` timings is kept.  Returns {"stock_us", "plugin_us",
    "saved_us", "notify_stock_us", "notify_plugin_us"} per connection / per call."""
    import socket
    import timeit

    from gunicorn.config import Config
    from gunicorn.workers.sync import SyncWorker as StockSync
    from gunicorn.workers.workertmp import WorkerTmp

    from gunicorn_smartspawn.worker import SyncWorker as PluginSync
    from gunicorn_smartspawn.worker.heartbeat import Heartbeat, window_for

    cfg = Config()
    tmp = WorkerTmp(cfg)
    beat = Heartbeat(window_for(cfg.timeout))

    class Loop:
        _named_listeners = None

        def __init__(self, notify):
            self.notify = notify

        def handle(self, listener, client, addr):
            listener.getsockname()  # what gunicorn's sync handle_request asks of it
            client.close()

    loops = {"stock_us": (StockSync.accept, Loop(tmp.notify)),
             "plugin_us": (PluginSync.accept, Loop(lambda: beat.beat(tmp.fileno())))}
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    best = dict.fromkeys(loops, float("inf"))
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(number)
        listener.setblocking(False)
        for _ in range(repeats):
            for key, (accept, loop) in loops.items():
                peers = [socket.create_connection(listener.getsockname()) for _ in range(number)]
                started = time.perf_counter()
                for _ in range(number):
                    loop.notify()
                    accept(loop, listener)
                best[key] = min(best[key], (time.perf_counter() - started) / number * 1e6)
                for peer in peers:
                    peer.close()
        calls = number * 50
        best["notify_stock_us"] = min(timeit.repeat(tmp.notify, number=calls, repeat=repeats)) / calls * 1e6
        best["notify_plugin_us"] = min(timeit.repeat(lambda: beat.beat(tmp.fileno()), number=calls,
                                                     repeat=repeats)) / calls * 1e6
    finally:
        listener.close()
        tmp.close()
    best["saved_us"] = best["stock_us"] - best["plugin_us"]
    return best


def gthread_turn(sock, poller, worker, deadline_s=5.0):
    """What gunicorn 27's gthread worker does with a kept-alive connection around one request,
    but the request itself: to the poller and back (``finish_request``, ``on_client_socket_readable``),
    the blocking-mode calls of ``handle`` and of the parser's two ``finish_body`` (no body to
    drain), and the loop's parent check, made twice (the loop turns about twice per request)."""
    sock.setblocking(False)  # finish_request: to the poller
    poller.register(sock, 1)
    poller.unregister(sock)  # readable again: to a thread
    sock.setblocking(True)  # handle
    prior = sock.gettimeout()  # next(parser): finish_body() of the previous request
    sock.settimeout(prior)
    prior = sock.gettimeout()  # _keepalive_after: finish_body(deadline)
    sock.settimeout(deadline_s)
    sock.settimeout(prior)
    worker.is_parent_alive()
    worker.is_parent_alive()


def gthread_cost(repeats=20, number=2000):
    """The gthread worker's own work around one kept-alive request (:func:`gthread_turn`), with
    gunicorn's parent check against the plugin's (at most once per heartbeat window), on CPython's
    socket in both, measured in this process on a socket pair; the minimum of ``repeats`` timings.
    Returns {"stock_us", "plugin_us", "saved_us"} per request."""
    import selectors
    import socket

    from gunicorn.workers.gthread import ThreadWorker as StockThread

    from gunicorn_smartspawn.worker import ThreadedWorker
    from gunicorn_smartspawn.worker.heartbeat import Heartbeat, window_for

    stock_worker = object.__new__(StockThread)
    plugin_worker = object.__new__(ThreadedWorker)
    for worker in (stock_worker, plugin_worker):
        worker.ppid = os.getppid()
        worker.smart_heartbeat = Heartbeat(window_for(30))
    mine, b = socket.socketpair()
    theirs, peer = socket.socketpair()
    best = {"stock_us": float("inf"), "plugin_us": float("inf")}
    with selectors.DefaultSelector() as poller:
        try:
            for _ in range(repeats):
                for key, sock, worker in (("stock_us", theirs, stock_worker),
                                          ("plugin_us", mine, plugin_worker)):
                    started = time.perf_counter()
                    for _ in range(number):
                        gthread_turn(sock, poller, worker)
                    best[key] = min(best[key], (time.perf_counter() - started) / number * 1e6)
        finally:
            for sock in (mine, b, theirs, peer):
                sock.close()
    best["saved_us"] = best["stock_us"] - best["plugin_us"]
    return best


def in_process_costs(repeats=20):
    """The three in-process figures of the request path (:func:`wrapper_cost`, :func:`loop_cost`,
    :func:`gthread_cost`), for a full run's explanation of the CPU targets: what the plugin's own
    code adds or saves per request against gunicorn's, free of the noise of a server's CPU time."""
    return {"wrapper_cost": wrapper_cost(repeats=repeats),
            "loop_cost": loop_cost(repeats=repeats),
            "gthread_cost": gthread_cost(repeats=repeats)}


def start_group(configs, opts, tmpdir):
    """Start the servers of ``configs``; returns {config: Server} (all ready, idle)."""
    servers = {}
    try:
        for config in configs:
            variant, threads = CONFIGS[config]
            server = harness.Server(harness.VARIANTS[variant], opts.app, workers=opts.workers,
                                    tmpdir=tmpdir, threads=threads,
                                    isolate_stock=opts.isolate_stock)
            if opts.show_commands:
                print("  $ " + server.shown_command())
            servers[config] = server.start()
        for server in servers.values():
            server.wait_ready(opts.start_timeout)
            server.wait_workers(opts.workers, opts.start_timeout)
        for server in servers.values():
            if opts.warmup > 0:
                run_wrk_on(server, opts.warmup, opts)
        for server in servers.values():
            server.settle()
        return servers
    except BaseException:
        for server in servers.values():
            server.stop()
        raise


def server_cpu_ticks(server):
    return harness.cpu_ticks([server.pid] + harness.descendants_of(server.pid))


def run_wrk_on(server, duration, opts, fixed=None):
    """One wrk burst; also the server's CPU time per request (all its
    processes, from /proc/PID/stat), which other load on the machine moves
    far less than requests/s.  ``fixed``: (requests, connections) of a
    fixed-count burst (the CPU rounds)."""
    before = server_cpu_ticks(server)
    try:
        if fixed:
            r = run_wrk_fixed(opts.wrk, server.port, fixed[0], opts, connections=fixed[1])
        elif opts.requests > 0:
            r = run_wrk_fixed(opts.wrk, server.port, opts.requests, opts)
        else:
            r = run_wrk(opts.wrk, server.port, duration, opts)
    except SampleError as e:
        e.log = server.log()
        raise
    ticks = server_cpu_ticks(server) - before
    server.check_alive("under load")
    if r["requests"]:
        r["cpu_us_per_request"] = ticks * 1e6 / os.sysconf("SC_CLK_TCK") / r["requests"]
    return r


def cpu_phase(group, servers, opts, cpu_rounds, cpu_detail):
    """The CPU rounds of one group: in each, one burst of ``opts.cpu_requests`` requests per
    server (order rotated); fills ``cpu_rounds[i][config]`` (µs per request); returns failures."""
    failures = []
    fixed = (opts.cpu_requests, opts.cpu_connections)
    for i in range(len(cpu_rounds)):
        for config in harness.rotated(group, i):
            prefix = "[overhead CPU round %d/%d] %-14s" % (i + 1, len(cpu_rounds), config)
            try:
                r = run_wrk_on(servers[config], 0, opts, fixed=fixed)
            except SampleError as e:
                harness.report_failure(prefix, e)
                failures.append({"variant": config, "round": "cpu %d" % (i + 1), "error": str(e)})
                continue
            if r.get("cpu_us_per_request"):
                cpu_rounds[i][config] = r["cpu_us_per_request"]
                cpu_detail[config].append(r)
                print("%s %7.1f us CPU per request (%d requests, %.0f requests/s)" % (
                    prefix, r["cpu_us_per_request"], r["requests"], r["rps"]))
                sys.stdout.flush()
    return failures


def run(runs, wrk, opts=None, tmpdir=None, configs=None):
    """``runs`` cycles of one wrk burst per configuration, group by group."""
    opts = opts or Options()
    opts.wrk = wrk
    configs = configs or list(CONFIGS)
    started = time.monotonic()
    own_tmp = tmpdir is None
    tmpdir = tmpdir or tempfile.mkdtemp(prefix="overhead-")
    opts.script = write_script(tmpdir)
    syscalls = {}
    rounds = [dict() for _ in range(runs)]
    fixed_cpu = opts.cpu_rounds > 0
    cpu_rounds = [dict() for _ in range(opts.cpu_rounds if fixed_cpu else runs)]
    failures, detail, commands = [], {c: [] for c in configs}, {}
    cpu_detail = {c: [] for c in configs}
    groups = [[c for c in g if c in configs] for g in GROUPS]
    groups += [[c] for c in configs if not any(c in g for g in GROUPS)]
    try:
        for group in [g for g in groups if g]:
            try:
                servers = start_group(group, opts, tmpdir)
            except SampleError as e:
                harness.report_failure("[overhead] %s" % ", ".join(group), e)
                failures += [{"variant": c, "round": 0, "error": str(e)} for c in group]
                continue
            try:
                for c in group:
                    commands[c] = servers[c].display_command()
                for cycle in range(runs):
                    for config in harness.rotated(group, cycle):
                        prefix = "[overhead cycle %d/%d] %-14s" % (cycle + 1, runs, config)
                        try:
                            r = run_wrk_on(servers[config], opts.duration, opts)
                        except SampleError as e:
                            harness.report_failure(prefix, e)
                            failures.append({"variant": config, "round": cycle + 1,
                                             "error": str(e)})
                            continue
                        errs = sum(r["socket_errors"].values()) if r["socket_errors"] else 0
                        print("%s %9.1f requests/s%s" % (
                            prefix, r["rps"], " (%d socket errors, %d non-2xx)"
                            % (errs, r["non_2xx"]) if errs or r["non_2xx"] else ""))
                        sys.stdout.flush()
                        rounds[cycle][config] = r["rps"]
                        if r.get("cpu_us_per_request") and not fixed_cpu:
                            cpu_rounds[cycle][config] = r["cpu_us_per_request"]
                        detail[config].append(r)
                if fixed_cpu:
                    failures += cpu_phase(group, servers, opts, cpu_rounds, cpu_detail)
                if opts.syscalls > 0 and shutil.which("strace"):
                    for config in group:
                        try:
                            syscalls[config] = count_syscalls(servers[config], opts.syscalls,
                                                              opts, tmpdir)
                        except SampleError as e:
                            harness.report_failure("[overhead strace] %s" % config, e)
                for server in servers.values():
                    server.check_undisturbed([])
            finally:
                for server in servers.values():
                    server.stop()
    finally:
        if own_tmp:
            shutil.rmtree(tmpdir, ignore_errors=True)
    summary = {c: harness.summarize([r[c] for r in rounds if c in r]) for c in configs}
    ratios = {}
    for a, b in PAIRS:
        if a in configs and b in configs:
            s = harness.paired_ratio(rounds, a, b, None)
            if s:
                ratios["%s/%s" % (a, b)] = s
    cpu = {c: harness.summarize([r[c] for r in cpu_rounds if c in r]) for c in configs}
    cpu_ratios = {}
    for a, b in PAIRS:
        if a in configs and b in configs:
            s = harness.paired_ratio(cpu_rounds, a, b, None)
            if s:
                cpu_ratios["%s/%s" % (a, b)] = s
    syscall_diffs = {}
    for a, b in PAIRS:
        if a in syscalls and b in syscalls:
            names = set(syscalls[a]["by_name"]) | set(syscalls[b]["by_name"])
            syscall_diffs["%s-%s" % (a, b)] = {
                "per_request": syscalls[a]["per_request"] - syscalls[b]["per_request"],
                "by_name": {n: syscalls[a]["by_name"].get(n, 0.0) - syscalls[b]["by_name"].get(n, 0.0)
                            for n in sorted(names)
                            if abs(syscalls[a]["by_name"].get(n, 0.0)
                                   - syscalls[b]["by_name"].get(n, 0.0)) >= 0.01}}
    wrk_cmd = next((d[0]["command"] for d in detail.values() if d), None)
    return {"piece": "overhead", "unit": "requests/s", "variants": configs,
            "workers": opts.workers, "duration": opts.duration, "rounds": rounds,
            "summary": summary, "ratios": ratios, "failures": failures, "runs": detail,
            "cpu_us_per_request": cpu, "cpu_ratios": cpu_ratios, "cpu_rounds": cpu_rounds,
            "syscalls_per_request": syscalls, "syscall_diffs": syscall_diffs,
            "requests_per_burst": opts.requests or None,
            "cpu_method": cpu_method(opts, runs, cpu_detail),
            "commands": commands, "wrk_command": wrk_cmd,
            "notes": notes(opts, runs, wrk_cmd, cpu_detail),
            "seconds": time.monotonic() - started}


def cpu_method(opts, runs, cpu_detail):
    """How the CPU figure was taken: {"fixed_count", "rounds", "requests", "connections", "command"}."""
    if opts.cpu_rounds > 0:
        command = next((d[0]["command"] for d in cpu_detail.values() if d), None)
        return {"fixed_count": True, "rounds": opts.cpu_rounds, "requests": opts.cpu_requests,
                "connections": opts.cpu_connections, "command": command}
    return {"fixed_count": opts.requests > 0, "rounds": runs, "requests": opts.requests or None,
            "connections": opts.connections, "command": None}


def notes(opts, runs, wrk_cmd, cpu_detail):
    out = [
        "requests/s of `%s` against %s, -w %d; the servers of a group (sync: smart, stock, "
        "direct; gthread: the same with 4 threads) run side by side, each warmed up with %g s "
        "of wrk, then %d cycles of one %g s burst per server (order rotated every cycle); "
        "ratios smart/stock are taken cycle by cycle"
        % (wrk_cmd or "wrk", opts.app, opts.workers, opts.warmup, runs, opts.duration),
        "wrk and the server share the machine's cores (loopback only); requests/s on two "
        "cores moves by about ±15 % between runs, which the CPU time per request below, "
        "measured on its own, is meant to see through",
    ]
    method = cpu_method(opts, runs, cpu_detail)
    if opts.cpu_rounds > 0:
        out.append(
            "server CPU time per request, the figure the CPU targets compare: %d rounds of one "
            "fixed-count burst per server (`%s`: %d requests over %d kept-alive connections from "
            "one wrk thread), order rotated every round, the ratio taken round by round; the "
            "server's CPU time is user + system of all its processes (master, preloader, "
            "workers; /proc/PID/stat) over the burst, divided by the %d requests"
            % (method["rounds"], method["command"] or "wrk -t1", method["requests"],
               method["connections"], method["requests"]))
        out.append(
            "why fixed counts and one client thread: every variant does the same work in every "
            "round whatever its speed (a timed burst gives the faster server more requests to "
            "spread its fixed costs over), and one wrk thread on %d connections keeps the client "
            "to about one core, so the server is not fighting wrk for the two cores; the "
            "requests/s bursts (-t2 -c16) saturate both, which adds context switches and cache "
            "misses to whichever server wrk happens to crowd, and so noise to a ratio of them. "
            "Every variant is measured the same way, interleaved"
            % method["connections"])
    else:
        out.append(
            "server CPU time per request: user + system time of all the server's processes "
            "during each requests/s burst (/proc/PID/stat), divided by the requests wrk completed")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="cycles (default 8)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per burst")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--install-wrk", action="store_true",
                        help="apt-get install wrk if it is missing (root only)")
    parser.add_argument("--show-commands", action="store_true")
    parser.add_argument("--requests", type=int, default=0, metavar="N",
                        help="bursts of N requests each (wrk -t1) instead of --duration")
    parser.add_argument("--cpu-rounds", type=int, default=20, metavar="N",
                        help="rounds of fixed-count bursts for the CPU figure (default 20; 0: take "
                             "it from the requests/s bursts)")
    parser.add_argument("--cpu-requests", type=int, default=2000, metavar="N",
                        help="requests per CPU burst (default 2000)")
    parser.add_argument("--cpu-connections", type=int, default=4, metavar="N",
                        help="connections of the CPU bursts, from one wrk thread (default 4)")
    parser.add_argument("--syscalls", type=int, default=0, metavar="N",
                        help="end each group with N requests per server under strace -c -f")
    parser.add_argument("--configs", help="comma-separated configurations (default: all)")
    parser.add_argument("--wrapper-cost", action="store_true",
                        help="only measure, in this process, what the worker's request wrapper adds")
    parser.add_argument("--loop-cost", action="store_true",
                        help="only measure, in this process, the sync loop's cost per connection "
                             "and the gthread worker's per kept-alive request, gunicorn's against "
                             "the plugin's")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.loop_cost:
        cost = loop_cost()
        print("sync loop around the app, per connection (heartbeat, accept, listener address, close): "
              "gunicorn %.2f us, plugin %.2f us, saved %.2f us; one heartbeat: gunicorn %.2f us, "
              "plugin %.2f us (min of 20)" % (cost["stock_us"], cost["plugin_us"], cost["saved_us"],
                                               cost["notify_stock_us"], cost["notify_plugin_us"]))
        cost = gthread_cost()
        print("gthread worker around one kept-alive request (to the poller and back, blocking-mode "
              "calls, two parent checks): gunicorn %.2f us, plugin %.2f us, saved %.2f us (min of 20)"
              % (cost["stock_us"], cost["plugin_us"], cost["saved_us"]))
        return 0
    if args.wrapper_cost:
        cost = wrapper_cost()
        print("hello-world app called as gunicorn calls it: %.2f us; the plugin's wrapper adds "
              "%.2f us (sync slot), %.2f us (gthread's locked slot) per request (min of 30 x 20000)"
              % (cost["bare_us"], cost["sync_us"], cost["gthread_us"]))
        return 0
    wrk, message = ensure_wrk(args.install_wrk)
    print(message)
    if wrk is None:
        return 1
    result = run(args.runs, wrk, Options(duration=args.duration, workers=args.workers,
                                         show_commands=args.show_commands,
                                         requests=args.requests, syscalls=args.syscalls,
                                         cpu_rounds=args.cpu_rounds, cpu_requests=args.cpu_requests,
                                         cpu_connections=args.cpu_connections),
                 configs=args.configs.split(",") if args.configs else None)
    for c, s in result["summary"].items():
        if s:
            print("%-14s %9.1f requests/s [%.1f-%.1f]" % (c, s["median"], s["min"], s["max"]))
    for k, s in result["ratios"].items():
        print("  %-28s %.3fx [%.3f-%.3f]" % (k, s["median"], s["min"], s["max"]))
    for c, s in result["cpu_us_per_request"].items():
        if s:
            print("%-14s %7.1f us CPU per request [%.1f-%.1f]" % (c, s["median"], s["min"], s["max"]))
    for k, s in result["cpu_ratios"].items():
        print("  CPU %-24s %.3fx [%.3f-%.3f] (%d rounds)" % (k, s["median"], s["min"], s["max"], s["n"]))
    for note in result["notes"]:
        print("note: " + note)
    for c, sc in result["syscalls_per_request"].items():
        print("%-14s %6.2f system calls per request: %s" % (c, sc["per_request"], ", ".join(
            "%s %.2f" % (k, v) for k, v in sc["by_name"].items() if v >= 0.01)))
    for k, d in result["syscall_diffs"].items():
        print("  syscalls %-28s %+.2f per request %s" % (k, d["per_request"], " ".join(
            "%s %+.2f" % (n, v) for n, v in d["by_name"].items())))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
