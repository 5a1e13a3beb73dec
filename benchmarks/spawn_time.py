"""How long does it take gunicorn to add one worker to a running server?

    python benchmarks/spawn_time.py [--runs N] [--variants a,b,...] [--json PATH]

Variants (all serve the same app, by default the import-heavy Django service
``benchmarks.heavy_app.wsgi:application``; each is run N times, round-robin
with the order rotated every round, so that machine noise hits all alike):

  smart          gunicorn -k smartspawn.Worker --spawn-method=smart  -w 1 ...
  direct         gunicorn -k smartspawn.Worker --spawn-method=direct -w 1 ...
  stock          gunicorn -w 1 ...             (stock sync worker, lazy app)
  stock-preload  gunicorn --preload -w 1 ...   (app imported in the master)
  fork-floor     no server: a Python process that has imported the app
                 calls os.fork(); the time from just before the fork to the
                 child's first statement is the floor any fork-based
                 spawner can reach.

What one server sample measures
-------------------------------
1. Start the server (own session, log to a temp file) with one worker on a
   free 127.0.0.1 port; poll ``GET /health`` on new connections until it
   answers (deadline).  Every answer names the answering process (the
   ``pid`` field of heavy_app's /health JSON, or an ``X-Worker-Pid``
   header), so we know the pid of the existing worker.
2. Occupy that worker ("hold" probe mode, the default): ``GET
   /_bench/hold`` streams back one line with its pid and then keeps the
   request open.  A sync worker serves one request at a time, so from then
   on it accepts no connection.
3. Let the server settle: at least 150 ms after the first answer (gunicorn's
   master sleeps up to 100 ms after each spawn, see notes) and until neither
   the master nor any of its descendants has used CPU for 100 ms (deadline).
4. t0 = CLOCK_MONOTONIC; send SIGTTIN to the master.  Immediately open a
   new connection and send ``GET /health``.  The request waits in the
   listen backlog: the held worker cannot take it, so the first process to
   accept it is the new worker, once it is ready to serve.  t1 =
   CLOCK_MONOTONIC when the complete response has been read.  The sample is
   t1 - t0, i.e. signal -> a NEW worker has served an HTTP request, and is
   only accepted if the pid in the answer was not seen before step 4; if a
   known pid answers (e.g. a threaded worker class that is not blocked by
   the hold), the probe is simply repeated on a new connection until a new
   pid answers or the deadline passes.
   With ``--probe poll`` step 2 is skipped: probes then go back to back and
   the existing worker answers about half of them, which is still correct
   (only a new pid ends the measurement) but adds a little sampling delay
   and keeps one CPU busy during the spawn.
5. If the server's log shows it handled a signal the harness did not send
   (gunicorn logs "Handling signal: ..."; e.g. another test suite or a
   `pkill` on the same machine hit it), the sample is discarded and retried
   (``--retries``).
6. Whatever happens, the whole process group (and any descendant that left
   it) is SIGKILLed in a ``finally`` and reaped before the next sample.

The fork floor is measured in a fresh interpreter per sample that imports
the app, then takes t0 = time.monotonic_ns(), calls os.fork(); the child's
first statement reads time.monotonic_ns() and writes it to a pipe.
CLOCK_MONOTONIC is system-wide, so the two readings are comparable.

Stock variants normally run with whatever the environment loads; with
gunicorn-smartspawn installed that includes its ``.pth`` import hook.
``--isolate-stock`` starts them through a tiny launcher that removes that
hook first, i.e. on unmodified gunicorn.

One untimed warm-up round (``--warmup``) runs before the measured ones, and
the app is imported once up front so that a missing SQLite database is
created outside the measurements.  Exit status is 1 if any sample of any
variant failed (the failing server's log is printed), 2 for usage errors.
"""

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_APP = "benchmarks.heavy_app.wsgi:application"

VARIANTS = {
    "smart": ["-k", "smartspawn.Worker", "--spawn-method=smart"],
    "direct": ["-k", "smartspawn.Worker", "--spawn-method=direct"],
    "stock": [],
    "stock-preload": ["--preload"],
    "fork-floor": None,  # not a server
}
RATIOS = [
    ("direct", "smart"),
    ("stock", "smart"),
    ("smart", "stock-preload"),
    ("smart", "fork-floor"),
]

HEALTH_PATH = "/health"
HOLD_PATH = "/_bench/hold?seconds=120"
POLL_INTERVAL = 0.02  # between readiness probes of a starting server
SETTLE_AFTER_READY = 0.15  # > gunicorn's max 0.1 s post-spawn sleep
SETTLE_QUIET = 0.10
SETTLE_DEADLINE = 10.0

# --isolate-stock: start stock variants through this launcher, which drops
# any import hook of gunicorn-smartspawn (installed via a .pth file) from
# sys.meta_path before gunicorn is imported, i.e. truly unmodified gunicorn.
STOCK_LAUNCHER = (
    "import sys\n"
    "sys.meta_path[:] = [f for f in sys.meta_path\n"
    "                    if 'smartspawn' not in type(f).__module__]\n"
    "from gunicorn.app.wsgiapp import run\n"
    "sys.argv[0] = 'gunicorn'\n"
    "sys.exit(run())\n"
)


def plugin_hook_active():
    return any("smartspawn" in type(f).__module__ for f in sys.meta_path)


class SampleError(Exception):
    def __init__(self, message, log=None):
        super().__init__(message)
        self.log = log


class Disturbed(SampleError):
    """The server got signals the harness did not send (retried)."""


SIGNAL_LOG_RE = re.compile(r"Handling signal: (\w+)")


def foreign_signals(log, sent):
    """Signals the server's log says it handled beyond those in ``sent``.

    Another process on the machine (a test suite, a `pkill`) signalling our
    server would make the sample meaningless; gunicorn logs every signal it
    handles as "Handling signal: name", which this checks."""
    seen = [s.lower() for s in SIGNAL_LOG_RE.findall(log) if s.lower() != "chld"]
    for name in sent:
        if name in seen:
            seen.remove(name)
    return seen


# --------------------------------------------------------------------------
# small helpers


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_text(path, limit=20000):
    try:
        with open(path, "r", errors="replace") as f:
            data = f.read()
    except OSError as e:
        return "<cannot read %s: %s>" % (path, e)
    if len(data) > limit:
        data = "...[cut]...\n" + data[-limit:]
    return data


def children_of(pid):
    """Direct children of ``pid`` (all threads), from /proc; [] if gone."""
    kids = []
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return kids
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                kids.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return kids


def descendants_of(pid):
    seen, todo = [], [pid]
    while todo:
        for kid in children_of(todo.pop()):
            if kid not in seen:
                seen.append(kid)
                todo.append(kid)
    return seen


def cpu_ticks(pids):
    """Sum of utime+stime (clock ticks) of the given live processes."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is field 3 (state); utime, stime are fields 14, 15
        total += int(fields[11]) + int(fields[12])
    return total


def process_group_alive(pgid):
    """True while some non-zombie process is in process group ``pgid``."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def wait_until(predicate, timeout, interval=0.01):
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --------------------------------------------------------------------------
# HTTP probing (raw sockets: no client library overhead, one connection each)


def _parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers


def _pid_from(headers, body):
    if "x-worker-pid" in headers:
        with contextlib.suppress(ValueError):
            return int(headers["x-worker-pid"])
    with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
        return int(json.loads(body.decode("utf-8", "replace").splitlines()[0])["pid"])
    return None


def _request_bytes(port, path):
    return (
        "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\nUser-Agent: spawn_time\r\n"
        "Connection: close\r\n\r\n" % (path, port)
    ).encode("ascii")


def probe(port, timeout, path=HEALTH_PATH):
    """One GET on a new connection; returns (status, answering pid, ppid)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(_request_bytes(port, path))
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status, headers = _parse_head(head)
    ppid = None
    with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
        ppid = int(json.loads(body.decode("utf-8", "replace"))["ppid"])
    return status, _pid_from(headers, body), ppid


def open_hold(port, timeout):
    """Start a hold request; return (socket, pid of the held worker) or None.

    None means the app has no hold endpoint (or it did not stream a pid
    line first); the caller then falls back to poll mode."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.settimeout(timeout)
        s.sendall(_request_bytes(port, HOLD_PATH))
        buf = b""
        while b"\r\n\r\n" not in buf or b"\n" not in buf.partition(b"\r\n\r\n")[2]:
            data = s.recv(4096)
            if not data:
                s.close()
                return None
            buf += data
        head, _, body = buf.partition(b"\r\n\r\n")
        status, headers = _parse_head(head)
        try:
            pid = int(json.loads(body.split(b"\n", 1)[0].decode())["pid"])
        except (ValueError, KeyError, TypeError):
            pid = None
        if status != 200 or pid is None:
            s.close()
            return None
        return s, pid
    except BaseException:
        s.close()
        raise


# --------------------------------------------------------------------------
# one server sample


class Server:
    def __init__(self, variant, extra_args, app, control_socket_opt, tmpdir,
                 isolate=False):
        self.variant = variant
        self.port = free_port()
        self.log_path = os.path.join(tmpdir, "%s-%d.log" % (variant, self.port))
        launcher = ["-c", STOCK_LAUNCHER] if isolate else ["-m", "gunicorn"]
        self.cmd = [sys.executable, *launcher, *extra_args, "-w", "1",
                    "-b", "127.0.0.1:%d" % self.port]
        if control_socket_opt:
            # Same behaviour as the default, but a private path so that
            # concurrent servers (ours or the user's) do not collide.
            self.cmd += ["--control-socket",
                         os.path.join(tmpdir, "ctl-%d.sock" % self.port)]
        self.cmd.append(app)
        self.proc = None
        self.known_pids = set()

    def log(self):
        return read_text(self.log_path)

    def start(self):
        self._log_file = open(self.log_path, "wb")
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(
            self.cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def check_alive(self, what):
        rc = self.proc.poll()
        if rc is not None:
            raise SampleError("%s: server exited with status %s while %s"
                              % (self.variant, rc, what), self.log())

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        last_err = None
        while time.monotonic() < deadline:
            self.check_alive("starting")
            try:
                status, pid, _ = probe(self.port, timeout=max(0.05, min(5.0, deadline - time.monotonic())))
                if status == 200 and pid:
                    self.known_pids.add(pid)
                    return pid
                last_err = "status %s, pid %s" % (status, pid)
            except OSError as e:
                last_err = repr(e)
            time.sleep(POLL_INTERVAL)
        raise SampleError("%s: no answer on port %d within %.0f s (last: %s)"
                          % (self.variant, self.port, timeout, last_err), self.log())

    def settle(self, ready_at):
        """Wait until the server is idle; returns True if it got there."""
        master = self.proc.pid
        deadline = time.monotonic() + SETTLE_DEADLINE
        while time.monotonic() < ready_at + SETTLE_AFTER_READY:
            time.sleep(0.01)
        quiet_since = time.monotonic()
        ticks = cpu_ticks([master] + descendants_of(master))
        while time.monotonic() < deadline:
            self.check_alive("settling")
            time.sleep(0.01)
            now_ticks = cpu_ticks([master] + descendants_of(master))
            now = time.monotonic()
            if now_ticks != ticks:
                ticks, quiet_since = now_ticks, now
            elif now - quiet_since >= SETTLE_QUIET:
                return True
        return False

    def measure_ttin(self, timeout):
        """SIGTTIN, then probe until a pid not seen before answers."""
        probes = 0
        t0 = time.monotonic_ns()
        os.kill(self.proc.pid, signal.SIGTTIN)
        deadline = time.monotonic() + timeout
        last_err = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SampleError(
                    "%s: no new worker answered within %.0f s after SIGTTIN "
                    "(%d probes, known pids %s, last: %s)"
                    % (self.variant, timeout, probes, sorted(self.known_pids), last_err),
                    self.log())
            self.check_alive("spawning")
            probes += 1
            try:
                status, pid, ppid = probe(self.port, timeout=remaining)
            except OSError as e:
                last_err = repr(e)
                if isinstance(e, socket.timeout):
                    continue
                time.sleep(0.001)  # refused/reset: do not spin flat out
                continue
            t1 = time.monotonic_ns()
            if status == 200 and pid and pid not in self.known_pids:
                return {"ms": (t1 - t0) / 1e6, "new_pid": pid, "new_ppid": ppid,
                        "probes": probes}
            last_err = "status %s from pid %s" % (status, pid)
            if pid:
                self.known_pids.add(pid)

    def stop(self):
        if self.proc is None:
            return
        master = self.proc.pid
        victims = descendants_of(master)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(master, signal.SIGKILL)
        for pid in victims:  # descendants that may have left the group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        wait_until(lambda: not process_group_alive(master), timeout=10)
        self._log_file.close()


def run_server_sample(variant, args, app, opts, tmpdir):
    isolate = args.isolate_stock and variant.startswith("stock")
    server = Server(variant, VARIANTS[variant], app, opts.control_socket_opt, tmpdir,
                    isolate=isolate)
    hold = None
    try:
        if args.show_commands:
            print("  $ " + " ".join(server.cmd if not isolate else
                                    [server.cmd[0], "-c", "<STOCK_LAUNCHER>"] + server.cmd[3:]))
        server.start()
        ready_pid = server.wait_ready(args.start_timeout)
        ready_at = time.monotonic()
        mode = args.probe
        if mode == "hold":
            held = open_hold(server.port, timeout=args.start_timeout)
            if held is None:
                mode = "poll (no hold endpoint)"
            else:
                hold, held_pid = held
                server.known_pids.add(held_pid)
        settled = server.settle(ready_at)
        try:
            result = server.measure_ttin(args.timeout)
        except SampleError as e:
            extra = foreign_signals(server.log(), ["ttin"])
            if extra:
                raise Disturbed("%s (server also got foreign signals: %s)"
                                % (e, ", ".join(extra)), e.log)
            raise
        extra = foreign_signals(server.log(), ["ttin"])
        if extra:
            raise Disturbed("%s: server got foreign signals during the sample: %s"
                            % (variant, ", ".join(extra)), server.log())
        result.update({"first_pid": ready_pid, "master_pid": server.proc.pid,
                       "isolated": isolate,
                       "probe_mode": mode, "settled": settled})
        return result
    finally:
        if hold is not None:
            hold.close()
        server.stop()


# --------------------------------------------------------------------------
# fork floor


def fork_floor_child(app):
    """Runs in a fresh interpreter: import the app, fork once, report."""
    sys.path.insert(0, REPO_ROOT)
    module = app.split(":", 1)[0]
    t = time.perf_counter()
    __import__(module)
    import_s = time.perf_counter() - t
    r, w = os.pipe()
    t0 = time.monotonic_ns()
    pid = os.fork()
    if pid == 0:
        t1 = time.monotonic_ns()
        os.write(w, b"%d\n" % t1)
        os._exit(0)
    t_parent = time.monotonic_ns()
    os.close(w)
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(r, 64)
        if not chunk:
            break
        data += chunk
    os.waitpid(pid, 0)
    t1 = int(data)
    print(json.dumps({"ms": (t1 - t0) / 1e6, "parent_return_ms": (t_parent - t0) / 1e6,
                      "import_s": import_s}))


def run_fork_sample(variant, args, app, opts, tmpdir):
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--fork-floor-child", "--app", app],
        cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=args.start_timeout + args.timeout)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if proc.returncode != 0:
        raise SampleError("fork-floor: helper exited with status %s" % proc.returncode,
                          err.decode(errors="replace"))
    return json.loads(out.decode().strip().splitlines()[-1])


# --------------------------------------------------------------------------
# driver


def dist_version(name):
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def gunicorn_facts():
    """Version, whether it has --control-socket, and its spawn sleep.

    Read from gunicorn's source files rather than imported, so that an
    installed plugin hooking gunicorn's modules cannot interfere."""
    facts = {"version": dist_version("gunicorn"), "control_socket": False,
             "spawn_sleep": None, "spawn_sleep_after_fork": None}
    try:
        import importlib.util
        pkg = os.path.dirname(importlib.util.find_spec("gunicorn").origin)
        with open(os.path.join(pkg, "config.py")) as f:
            facts["control_socket"] = '"--control-socket"' in f.read()
        with open(os.path.join(pkg, "arbiter.py")) as f:
            lines = f.read().splitlines()
        start = next(i for i, line in enumerate(lines)
                     if line.strip().startswith("def spawn_workers("))
        body = []
        for line in lines[start + 1:]:
            if line.strip().startswith("def "):
                break
            body.append(line.strip())
        spawn = [i for i, line in enumerate(body) if "self.spawn_worker()" in line]
        sleep = [i for i, line in enumerate(body) if "sleep" in line and "random" in line]
        if spawn and sleep:
            facts["spawn_sleep"] = body[sleep[0]]
            facts["spawn_sleep_after_fork"] = sleep[0] > spawn[0]
    except Exception as e:  # informational only
        facts["error"] = repr(e)
    return facts


def summarize(samples):
    if not samples:
        return None
    return {"median_ms": statistics.median(samples), "min_ms": min(samples),
            "max_ms": max(samples), "n": len(samples)}


def prepare_app(app):
    """Import the app once (creates/seeds the SQLite DB, warms caches)."""
    module = app.split(":", 1)[0]
    code = ("import sys, time; sys.path.insert(0, %r); t = time.perf_counter(); "
            "__import__(%r); print(time.perf_counter() - t)" % (REPO_ROOT, module))
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=600)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit("cannot import %s (see above)" % module)
    return float(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Time to spawn one extra gunicorn worker (SIGTTIN -> new "
                    "worker answers), side by side for several spawn methods.")
    parser.add_argument("--runs", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds before the measured ones (default 1)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of: %s" % ", ".join(VARIANTS))
    parser.add_argument("--app", default=DEFAULT_APP, help="WSGI app (default %(default)s)")
    parser.add_argument("--probe", choices=["hold", "poll"], default="hold",
                        help="hold: keep the existing worker busy (default); "
                             "poll: probe back to back, stop at a new pid")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="max seconds from SIGTTIN to the new worker's answer")
    parser.add_argument("--start-timeout", type=float, default=60.0,
                        help="max seconds for a server to answer after start")
    parser.add_argument("--retries", type=int, default=2,
                        help="retries of a sample whose server received signals "
                             "the harness did not send (default 2)")
    parser.add_argument("--isolate-stock", action="store_true",
                        help="run the stock variants with gunicorn-smartspawn's "
                             ".pth import hook removed (truly unmodified gunicorn)")
    parser.add_argument("--show-commands", action="store_true",
                        help="print each server command line")
    parser.add_argument("--json", metavar="PATH", help="write all results as JSON")
    parser.add_argument("--fork-floor-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.fork_floor_child:
        fork_floor_child(args.app)
        return 0

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants or args.runs < 1 or args.warmup < 0:
        parser.error("bad --variants/--runs/--warmup (unknown: %s)" % ", ".join(unknown))

    gfacts = gunicorn_facts()

    class Opts:
        control_socket_opt = gfacts["control_socket"]

    meta = {
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "gunicorn": gfacts["version"],
        "gunicorn_smartspawn": dist_version("gunicorn-smartspawn"),
        "django": dist_version("django"),
        "numpy": dist_version("numpy"),
        "pandas": dist_version("pandas"),
        "app": args.app,
        "runs": args.runs,
        "warmup": args.warmup,
        "probe": args.probe,
        "variants": variants,
        "plugin_hook_active": plugin_hook_active(),
        "isolate_stock": args.isolate_stock,
    }
    print("spawn_time: Python %s (%s), gunicorn %s, gunicorn-smartspawn %s, %s CPUs"
          % (meta["python"], sys.executable, meta["gunicorn"],
             meta["gunicorn_smartspawn"] or "not installed", meta["cpus"]))
    print("app %s; variants %s; %d warm-up + %d measured rounds; probe mode %s"
          % (args.app, ", ".join(variants), args.warmup, args.runs, args.probe))
    meta["app_import_s"] = prepare_app(args.app)
    print("app import in a fresh interpreter: %.3f s" % meta["app_import_s"])
    sys.stdout.flush()

    results = {v: {"samples_ms": [], "runs": [], "failures": [],
                    "disturbed": []} for v in variants}
    tmpdir = tempfile.mkdtemp(prefix="spawn_time-")
    try:
        run_rounds(args, variants, results, tmpdir, Opts)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return report(args, meta, variants, results, gfacts)


def run_rounds(args, variants, results, tmpdir, Opts):
    total_rounds = args.warmup + args.runs
    for rnd in range(total_rounds):
        warm = rnd < args.warmup
        shift = rnd % len(variants)
        order = variants[shift:] + variants[:shift]
        label = "warm-up %d/%d" % (rnd + 1, args.warmup) if warm else \
            "round %d/%d" % (rnd - args.warmup + 1, args.runs)
        for variant in order:
            runner = run_fork_sample if VARIANTS[variant] is None else run_server_sample
            try:
                for attempt in range(args.retries + 1):
                    try:
                        r = runner(variant, args, args.app, Opts, tmpdir)
                        break
                    except Disturbed as e:
                        results[variant]["disturbed"].append({"round": label, "error": str(e)})
                        print("[%s] %-13s DISTURBED: %s" % (label, variant, e))
                        if attempt == args.retries:
                            raise
                        print("[%s] %-13s retrying" % (label, variant))
            except SampleError as e:
                print("[%s] %-13s FAILED: %s" % (label, variant, e))
                if e.log:
                    print("----- log -----\n%s\n---------------" % e.log.rstrip())
                results[variant]["failures"].append(
                    {"round": label, "error": str(e), "log": e.log})
                sys.stdout.flush()
                continue
            extra = ""
            if "new_pid" in r:
                extra = " (new pid %s, parent %s, master %s, %d probe%s, %s%s)" % (
                    r["new_pid"], r["new_ppid"], r["master_pid"], r["probes"],
                    "" if r["probes"] == 1 else "s", r["probe_mode"],
                    "" if r["settled"] else ", server never idle before SIGTTIN")
            print("[%s] %-13s %9.2f ms%s" % (label, variant, r["ms"], extra))
            sys.stdout.flush()
            if not warm:
                results[variant]["samples_ms"].append(r["ms"])
                results[variant]["runs"].append(r)


def report(args, meta, variants, results, gfacts):
    for v in variants:
        results[v]["summary"] = summarize(results[v]["samples_ms"])

    ratios = {}
    for a, b in RATIOS:
        sa, sb = results.get(a, {}).get("summary"), results.get(b, {}).get("summary")
        if sa and sb and sb["median_ms"] > 0:
            ratios["%s/%s" % (a, b)] = sa["median_ms"] / sb["median_ms"]

    notes = [
        "time = SIGTTIN sent to the master -> first HTTP response from a new "
        "worker pid (fork-floor: just before os.fork() -> child's first "
        "statement); %d measured run%s per variant, interleaved, order rotated "
        "every round" % (args.runs, "" if args.runs == 1 else "s"),
    ]
    if gfacts.get("spawn_sleep"):
        if gfacts["spawn_sleep_after_fork"]:
            where = ("it follows each fork, so a single SIGTTIN's new worker is "
                     "not delayed by it, but the master is blocked meanwhile and "
                     "with several spawns in a row each one after the first waits "
                     "for it")
        else:
            where = "it precedes the fork, so it is part of every spawn time"
        notes.append(
            "stock gunicorn's Arbiter.spawn_workers() sleeps a random 0-100 ms "
            "per spawned worker (`%s`); it is left in, as users get it: %s. The "
            "harness waits >= 150 ms after the first worker answers so that the "
            "initial spawn's sleep is not counted." % (gfacts["spawn_sleep"], where))
    if args.probe == "hold":
        notes.append(
            "probe mode hold: the existing worker is kept busy by /_bench/hold, "
            "so the probe sent right after SIGTTIN waits in the listen backlog "
            "until the new worker accepts it")
    if meta["plugin_hook_active"] and any(v.startswith("stock") for v in variants):
        notes.append(
            "stock variants: gunicorn-smartspawn is installed here and its .pth "
            "import hook %s" % (
                "was removed for them (--isolate-stock): unmodified gunicorn"
                if args.isolate_stock else
                "was active in them (it registers the plugin's settings); "
                "--isolate-stock runs them on unmodified gunicorn"))
    disturbed = sum(len(results[v]["disturbed"]) for v in variants)
    if disturbed:
        notes.append("%d sample(s) were discarded and retried because their server "
                     "received signals from another process" % disturbed)
    unsettled = sum(1 for v in variants for r in results[v]["runs"]
                    if r.get("settled") is False)
    if unsettled:
        notes.append("%d sample(s) started before the server was idle "
                     "(CPU still in use %.0f s after start)" % (unsettled, SETTLE_DEADLINE))

    print()
    print("Python %s, gunicorn %s, gunicorn-smartspawn %s, Django %s, numpy %s, pandas %s"
          % (meta["python"], meta["gunicorn"], meta["gunicorn_smartspawn"] or "-",
             meta["django"], meta["numpy"], meta["pandas"]))
    print("%-14s %5s %11s %11s %11s" % ("variant", "n", "median ms", "min ms", "max ms"))
    for v in variants:
        s = results[v]["summary"]
        nfail = len([f for f in results[v]["failures"] if not f["round"].startswith("warm")])
        fail = "  (%d failed)" % nfail if nfail else ""
        if s:
            print("%-14s %5d %11.2f %11.2f %11.2f%s"
                  % (v, s["n"], s["median_ms"], s["min_ms"], s["max_ms"], fail))
        else:
            print("%-14s %5d %11s %11s %11s%s" % (v, 0, "-", "-", "-", fail))
    if ratios:
        print()
        print("ratios of medians:")
        for k, val in ratios.items():
            print("  %-20s %8.2fx" % (k, val))
    print()
    print("notes:")
    for n in notes:
        print("  - " + n)

    failed = [v for v in variants if results[v]["failures"]]
    if args.json:
        payload = {"meta": meta, "variants": results, "ratios": ratios,
                   "notes": notes, "failed_variants": failed}
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
        print("results written to %s" % args.json)
    if failed:
        print("FAILED variants: %s" % ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
