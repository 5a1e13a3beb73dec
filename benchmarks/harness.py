"""What every benchmark here shares: the server variants, a server handle,
raw-socket HTTP probes, /proc helpers, statistics and the machine's facts.

A server under test always runs in its own session (``start_new_session``),
logs to a file (shown when a sample fails) and is stopped by SIGKILL of its
whole process group plus any descendant that left the group, in a
``finally``.  Every wait has a deadline.  Every server's environment carries
``SMARTSPAWN_BENCH_RUN=<token>`` so that a run can prove it left nothing
behind (:func:`leftover_processes`).

The variants (:data:`VARIANTS`) are named once here and used by every
piece, so "smart" means the same command line in the spawn, boot, memory
and surge tables.
"""

from __future__ import annotations

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
import uuid
from dataclasses import dataclass, field

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF_DIR = os.path.join(REPO_ROOT, "benchmarks", "conf")
HEAVY_APP = "benchmarks.heavy_app.wsgi:application"
HELLO_APP = "benchmarks.hello_app:application"
# The same heavy app served through Django's ASGI handler (asgi_models.py)
HEAVY_ASGI_APP = "benchmarks.heavy_app.asgi:application"

HEALTH_PATH = "/health"
HOLD_PATH = "/_bench/hold?seconds=120"
POLL_INTERVAL = 0.02  # between readiness probes of a starting server
SETTLE_AFTER_READY = 0.15  # > stock gunicorn's max 0.1 s post-spawn sleep
SETTLE_QUIET = 0.10
SETTLE_DEADLINE = 10.0

RUN_ENV = "SMARTSPAWN_BENCH_RUN"
RUN_TOKEN = uuid.uuid4().hex

# Stock variants start through this launcher, which drops gunicorn-smartspawn's
# import hook (installed via a .pth file) from sys.meta_path before gunicorn is
# imported: truly unmodified gunicorn, even with the plugin installed.
STOCK_LAUNCHER = (
    "import sys\n"
    "sys.meta_path[:] = [f for f in sys.meta_path\n"
    "                    if 'smartspawn' not in type(f).__module__]\n"
    "from gunicorn.app.wsgiapp import run\n"
    "sys.argv[0] = 'gunicorn'\n"
    "sys.exit(run())\n"
)
# pyuwsgi's console script, without depending on where pip put it.
UWSGI_LAUNCHER = (
    "import sys\n"
    "from pyuwsgi import run\n"
    "sys.argv[0] = 'uwsgi'\n"
    "sys.exit(run())\n"
)


# --------------------------------------------------------------------------
# variants


@dataclass(frozen=True)
class Variant:
    """One way of serving the app: a command line builder plus a label.

    ``kind`` is "gunicorn" (plugin or stock), "uwsgi", or "floor" (no server).
    """

    name: str
    label: str
    kind: str
    args: tuple[str, ...] = ()
    plugin: bool = False
    stock: bool = False
    #: refork_after: traffic first, until a worker was promoted and the workers rolled onto it
    refork: bool = False
    #: --ksm: KSM's daemon runs during the sample and has converged before memory is read (ksm.py)
    ksm: bool = False

    def command(self, *, app, workers, port, tmpdir, threads=1, spawnable=False,
                isolate_stock=True):
        """The argv that starts this variant with ``workers`` workers.

        ``spawnable`` (uWSGI only): start with ``workers`` but allow adding
        more at run time (cheaper mode, see :meth:`Server.add_worker`)."""
        if self.kind == "gunicorn":
            return self._gunicorn(app, workers, port, tmpdir, threads, isolate_stock)
        if self.kind == "uwsgi":
            return self._uwsgi(app, workers, port, tmpdir, threads, spawnable)
        raise ValueError("%s is not a server" % self.name)

    def _gunicorn(self, app, workers, port, tmpdir, threads, isolate_stock):
        if self.stock and isolate_stock:
            launcher = ["-c", STOCK_LAUNCHER]
        else:
            launcher = ["-m", "gunicorn"]
        cmd = [sys.executable, *launcher, *self.args, "-w", str(workers),
               "-b", "127.0.0.1:%d" % port]
        if threads > 1:
            cmd += ["--threads", str(threads)]
            if self.stock:
                cmd += ["-k", "gthread"]
        if gunicorn_facts()["control_socket"]:
            # gunicorn's control socket at a private path: same behaviour as
            # the default, but concurrent servers do not collide
            cmd += ["--control-socket", os.path.join(tmpdir, "ctl-%d.sock" % port)]
        if self.plugin and plugin_option("--smartspawn-socket"):
            cmd += ["--smartspawn-socket", os.path.join(tmpdir, "ss-%d.sock" % port)]
        cmd.append(app)
        return cmd

    def _uwsgi(self, app, workers, port, tmpdir, threads, spawnable):
        cmd = [sys.executable, "-c", UWSGI_LAUNCHER, *self.args,
               "--master", "--http-socket", "127.0.0.1:%d" % port,
               "--wsgi", app, "--chdir", REPO_ROOT,
               "--need-app", "--die-on-term", "--disable-logging",
               "--master-fifo", os.path.join(tmpdir, "uwsgi-%d.fifo" % port)]
        if threads > 1:
            cmd += ["--threads", str(threads)]
        if spawnable:
            # cheaper mode with the "manual" algorithm: the master FIFO's "+"
            # adds a worker, up to --processes; checked every second
            cmd += ["--processes", "16", "--cheaper-algo", "manual",
                    "--cheaper", str(workers), "--cheaper-initial", str(workers),
                    "--cheaper-overload", "1"]
        else:
            cmd += ["--processes", str(workers)]
        return cmd


def _conf(name):
    return os.path.join(CONF_DIR, name)


PLUGIN = ("-k", "smartspawn.Worker")
# The dynamic pool of the surge: from 1 worker up to DYNAMIC_MAX by itself; the
# idle timeout is long enough that no worker is stopped during a sample.
DYNAMIC_MAX = 8
DYNAMIC_ARGS = ("--min-workers", "1", "--max-workers", str(DYNAMIC_MAX),
                "--worker-idle-timeout", "300")
# uWSGI's counterpart: from --cheaper 1 up to --processes, checked once a
# second (--cheaper-overload 1, the least); spawning --cheaper-step 7 at a time,
# so that one decision can take it from 1 to 8 (the default step is 1 a second)
UWSGI_CHEAPER_ARGS = ("--cheaper", "1", "--cheaper-initial", "1", "--cheaper-overload", "1",
                      "--cheaper-step", str(DYNAMIC_MAX - 1))


def asgi_worker_class():
    """The ASGI request model of the *-asgi variants: uvicorn-worker's
    ``uvicorn_worker.UvicornWorker`` when it is installed (it runs on every
    gunicorn the plugin supports), else gunicorn's native ``asgi`` worker
    when this gunicorn has one, else None (the ASGI variants are skipped)."""
    import importlib.util
    if importlib.util.find_spec("uvicorn_worker") is not None:
        return "uvicorn_worker.UvicornWorker"
    spec = importlib.util.find_spec("gunicorn")
    if spec is not None and spec.origin and os.path.exists(
            os.path.join(os.path.dirname(spec.origin), "workers", "gasgi.py")):
        return "asgi"
    return None


ASGI_WORKER = asgi_worker_class() or "uvicorn_worker.UvicornWorker"
ASGI_VARIANTS = ("smart-asgi", "direct-asgi", "stock-asgi", "stock-preload-asgi")


def variant_app(name, default=HEAVY_APP):
    """The app a variant serves by default: the ASGI heavy app for *-asgi."""
    return HEAVY_ASGI_APP if name in ASGI_VARIANTS else default


# Scale to zero: no worker kept; a worker idle for 1 s is stopped (max_workers
# defaults to -w, 1 in wake.py)
SCALE_TO_ZERO_ARGS = ("--min-workers", "0", "--worker-idle-timeout", "1")
VARIANTS = {v.name: v for v in [
    Variant("smart", "smartspawn smart", "gunicorn",
            (*PLUGIN, "--spawn-method=smart"), plugin=True),
    Variant("smart-spare", "smartspawn smart, one spare worker parked", "gunicorn",
            (*PLUGIN, "--spawn-method=smart", "--spare-workers", "1"), plugin=True),
    Variant("smart-spare-warm", "smartspawn smart, one spare parked, app warmed (preloader and spare)",
            "gunicorn", (*PLUGIN, "--spawn-method=smart", "--spare-workers", "1", "-c", _conf("smart_warm.py")),
            plugin=True),
    Variant("smart-no-freeze", "smartspawn smart --no-gc-freeze", "gunicorn",
            (*PLUGIN, "--spawn-method=smart", "--no-gc-freeze"), plugin=True),
    Variant("smart-warm", "smartspawn smart, app warmed in the preloader", "gunicorn",
            (*PLUGIN, "--spawn-method=smart", "-c", _conf("smart_warm.py")), plugin=True),
    Variant("smart-refork", "smartspawn smart, refork after 1000 requests", "gunicorn",
            (*PLUGIN, "--spawn-method=smart", "--refork-after", "1000"), plugin=True, refork=True),
    Variant("smart-ksm", "smartspawn smart --ksm", "gunicorn",
            (*PLUGIN, "--spawn-method=smart", "--ksm"), plugin=True, ksm=True),
    Variant("smart-refork-ksm", "smartspawn smart, refork after 1000 requests, --ksm", "gunicorn",
            (*PLUGIN, "--spawn-method=smart", "--refork-after", "1000", "--ksm"), plugin=True,
            refork=True, ksm=True),
    Variant("direct", "smartspawn direct", "gunicorn",
            (*PLUGIN, "--spawn-method=direct"), plugin=True),
    Variant("stock", "gunicorn", "gunicorn", (), stock=True),
    Variant("stock-preload", "gunicorn --preload", "gunicorn", ("--preload",), stock=True),
    Variant("stock-preload-freeze", "gunicorn --preload + gc.freeze() recipe", "gunicorn",
            ("--preload", "-c", _conf("stock_gc_freeze.py")), stock=True),
    Variant("stock-preload-freeze-collect",
            "gunicorn --preload + gc.freeze() recipe + gc.collect()", "gunicorn",
            ("--preload", "-c", _conf("stock_gc_freeze_collect.py")), stock=True),
    Variant("uwsgi", "uWSGI (preforking)", "uwsgi", ()),
    Variant("uwsgi-lazy", "uWSGI --lazy-apps", "uwsgi", ("--lazy-apps",)),
    # dynamic pools (surge_dynamic.py, wake.py): the pool sizes itself, no signals.
    # gunicorn's -w is the starting count; uWSGI's --processes (the ``workers``
    # of the command) is its maximum, --cheaper its minimum.
    Variant("smart-dynamic", "smartspawn smart, dynamic pool 1-%d" % DYNAMIC_MAX, "gunicorn",
            (*PLUGIN, "--spawn-method=smart", *DYNAMIC_ARGS), plugin=True),
    Variant("direct-dynamic", "smartspawn direct, dynamic pool 1-%d" % DYNAMIC_MAX, "gunicorn",
            (*PLUGIN, "--spawn-method=direct", *DYNAMIC_ARGS), plugin=True),
    Variant("uwsgi-cheaper-backlog", "uWSGI cheaper mode, backlog algorithm", "uwsgi",
            ("--cheaper-algo", "backlog", *UWSGI_CHEAPER_ARGS)),
    Variant("uwsgi-cheaper-busyness", "uWSGI cheaper mode, busyness algorithm", "uwsgi",
            ("--cheaper-algo", "busyness", *UWSGI_CHEAPER_ARGS)),
    Variant("smart-zero", "smartspawn smart, scale to zero, preloader kept", "gunicorn",
            (*PLUGIN, "--spawn-method=smart", *SCALE_TO_ZERO_ARGS, "--preloader-idle-timeout", "0"),
            plugin=True),
    Variant("smart-zero-cold", "smartspawn smart, scale to zero, preloader idled out too",
            "gunicorn", (*PLUGIN, "--spawn-method=smart", *SCALE_TO_ZERO_ARGS,
                         "--preloader-idle-timeout", "1"), plugin=True),
    # ASGI (asgi_models.py): the same request model everywhere, ASGI_WORKER
    Variant("smart-asgi", "smartspawn smart, %s" % ASGI_WORKER, "gunicorn",
            (*PLUGIN, "--spawn-method=smart", "--smart-worker-class", ASGI_WORKER),
            plugin=True),
    Variant("direct-asgi", "smartspawn direct, %s" % ASGI_WORKER, "gunicorn",
            (*PLUGIN, "--spawn-method=direct", "--smart-worker-class", ASGI_WORKER),
            plugin=True),
    Variant("stock-asgi", "gunicorn -k %s" % ASGI_WORKER, "gunicorn",
            ("-k", ASGI_WORKER), stock=True),
    Variant("stock-preload-asgi", "gunicorn -k %s --preload" % ASGI_WORKER, "gunicorn",
            ("-k", ASGI_WORKER, "--preload"), stock=True),
    Variant("fork-floor", "bare os.fork() floor", "floor"),
]}


def uwsgi_available():
    """(True, version) if pyuwsgi imports here, else (False, why)."""
    res = subprocess.run(
        [sys.executable, "-c", "import pyuwsgi, importlib.metadata as m; "
                               "print(m.version('pyuwsgi'))"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if res.returncode == 0:
        return True, res.stdout.strip()
    lines = (res.stderr.strip() or "import failed").splitlines()
    return False, lines[-1]


# --------------------------------------------------------------------------
# errors


class SampleError(Exception):
    """A sample failed; ``log`` is the server's log, shown with the error."""

    def __init__(self, message, log=None):
        super().__init__(message)
        self.log = log


class Disturbed(SampleError):
    """The server got signals the harness did not send (the sample is retried)."""


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


def proc_stat(pid):
    """The fields of /proc/PID/stat after the command name, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_ticks(pids):
    """Sum of utime+stime (clock ticks) of the given live processes."""
    total = 0
    for pid in pids:
        fields = proc_stat(pid)
        if fields:
            # fields[0] is field 3 (state); utime, stime are fields 14, 15
            total += int(fields[11]) + int(fields[12])
    return total


def process_group_alive(pgid):
    """True while some non-zombie process is in process group ``pgid``."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = proc_stat(int(name))
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def leftover_processes(token=RUN_TOKEN):
    """Live pids whose environment carries this run's token (should be none)."""
    needle = ("%s=%s" % (RUN_ENV, token)).encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as f:
                env = f.read()
        except OSError:
            continue
        fields = proc_stat(int(name))
        if needle in env.split(b"\0") and fields and fields[0] != "Z":
            found.append(int(name))
    return found


def wait_until(predicate, timeout, interval=0.01):
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return None


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
    with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError, IndexError):
        return int(json.loads(body.decode("utf-8", "replace").splitlines()[0])["pid"])
    return None


def request_bytes(port, path):
    return (
        "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\nUser-Agent: smartspawn-bench\r\n"
        "Connection: close\r\n\r\n" % (path, port)
    ).encode("ascii")


def get(port, path, timeout, headers_out=None):
    """One GET on a new connection: (status, answering pid, body); the
    response headers (lower-case names) go to ``headers_out`` if given."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(request_bytes(port, path))
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status, headers = _parse_head(head)
    if headers_out is not None:
        headers_out.update(headers)
    return status, _pid_from(headers, body), body


def probe(port, timeout, path=HEALTH_PATH):
    """One GET on a new connection; returns (status, answering pid, ppid)."""
    status, pid, body = get(port, path, timeout)
    ppid = None
    with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
        ppid = int(json.loads(body.decode("utf-8", "replace"))["ppid"])
    return status, pid, ppid


def open_hold(port, timeout, path=HOLD_PATH):
    """Start a hold request; return (socket, pid of the held worker) or None.

    heavy_app's ``/_bench/hold`` streams one line with its pid and keeps the
    request open, so that (sync) worker accepts nothing else meanwhile.  None
    means the app has no hold endpoint.  Connection errors propagate
    (``ConnectionRefusedError`` while nothing listens)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.settimeout(timeout)
        s.sendall(request_bytes(port, path))
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
# a server under test


@dataclass
class Server:
    """One variant's server: ``start()``, probe it, ``stop()`` in a finally."""

    variant: Variant
    app: str
    workers: int
    tmpdir: str
    threads: int = 1
    spawnable: bool = False
    isolate_stock: bool = True
    env: dict = field(default_factory=dict)
    port: int = field(default_factory=free_port)

    def __post_init__(self):
        self.log_path = os.path.join(
            self.tmpdir, "%s-%d.log" % (self.variant.name, self.port))
        self.cmd = self.variant.command(
            app=self.app, workers=self.workers, port=self.port, tmpdir=self.tmpdir,
            threads=self.threads, spawnable=self.spawnable,
            isolate_stock=self.isolate_stock)
        self.proc = None
        self.known_pids = set()
        self._log_file = None

    @property
    def name(self):
        return self.variant.name

    @property
    def pid(self):
        return self.proc.pid

    def shown_command(self):
        """The command line as a user would type it (launchers hidden)."""
        cmd = list(self.cmd)
        if cmd[1:3] in (["-c", STOCK_LAUNCHER], ["-m", "gunicorn"]):
            cmd[:3] = ["gunicorn"]
        elif cmd[1:3] == ["-c", UWSGI_LAUNCHER]:
            cmd[:3] = ["uwsgi"]
        return " ".join(cmd)

    def display_command(self):
        """:meth:`shown_command` without the per-run parts (private control
        sockets, FIFO, port 8000 instead of the free port), for reports."""
        words = self.shown_command().split(" ")
        out = []
        skip = False
        for w in words:
            if skip:
                skip = False
                continue
            if w in ("--control-socket", "--smartspawn-socket", "--master-fifo"):
                skip = True
                continue
            out.append(w)
        cmd = " ".join(out).replace("127.0.0.1:%d" % self.port, "127.0.0.1:8000")
        return cmd.replace(REPO_ROOT, ".")

    def log(self):
        return read_text(self.log_path)

    def start(self):
        self._log_file = open(self.log_path, "wb")
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env[RUN_ENV] = RUN_TOKEN
        for key in [k for k in env if k.startswith(("GUNICORN_", "UWSGI_"))]:
            del env[key]
        env.update(self.env)
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def check_alive(self, what):
        rc = self.proc.poll()
        if rc is not None:
            raise SampleError("%s: server exited with status %s while %s"
                              % (self.name, rc, what), self.log())

    def wait_ready(self, timeout):
        """Poll GET /health until a worker answers; returns its pid."""
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
                          % (self.name, self.port, timeout, last_err), self.log())

    def worker_pids(self):
        """The live worker processes, from /proc (titles for gunicorn, the
        master's children for uWSGI)."""
        return self.pids_of_role("worker")

    def preloader_pids(self):
        """The live preloaders (smart spawning; none for other servers)."""
        return self.pids_of_role("preloader")

    def pids_of_role(self, role):
        """Live processes below the master titled ``gunicorn: ROLE [...]``
        (uWSGI: its workers are the master's children, it has no preloader)."""
        from gunicorn_smartspawn.control.memory import parse_title, read_title

        pids = []
        for pid in descendants_of(self.pid):
            fields = proc_stat(pid)
            if not fields or fields[0] == "Z":
                continue
            if self.variant.kind == "uwsgi":
                if role == "worker" and int(fields[1]) == self.pid:
                    pids.append(pid)
                continue
            with contextlib.suppress(Exception):
                if parse_title(read_title(pid))[0] == role:
                    pids.append(pid)
        return sorted(pids)

    def wait_workers(self, n, timeout):
        """Wait until ``n`` worker processes exist; returns their pids."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive("waiting for %d workers" % n)
            pids = self.worker_pids()
            if len(pids) >= n:
                return pids
            if time.monotonic() > deadline:
                raise SampleError("%s: %d of %d workers after %.0f s"
                                  % (self.name, len(pids), n, timeout), self.log())
            time.sleep(0.05)

    def settle(self, ready_at=None):
        """Wait until the server is idle (no CPU for 100 ms); True if it got there."""
        master = self.pid
        deadline = time.monotonic() + SETTLE_DEADLINE
        ready_at = time.monotonic() if ready_at is None else ready_at
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

    def add_worker(self):
        """Ask for one more worker: SIGTTIN (gunicorn) or "+" on the master
        FIFO (uWSGI cheaper mode, applied at the master's next 1 s check)."""
        if self.variant.kind == "uwsgi":
            fifo = self.cmd[self.cmd.index("--master-fifo") + 1]
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(fd, b"+")
            finally:
                os.close(fd)
        else:
            os.kill(self.pid, signal.SIGTTIN)

    def signals_handled(self, name):
        """How many times gunicorn's log says it handled signal ``name``."""
        return sum(1 for s in SIGNAL_LOG_RE.findall(self.log()) if s.lower() == name)

    def check_undisturbed(self, sent):
        if self.variant.kind != "gunicorn":
            return
        extra = foreign_signals(self.log(), sent)
        if extra:
            raise Disturbed("%s: server got signals it was not sent: %s"
                            % (self.name, ", ".join(extra)), self.log())

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
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        wait_until(lambda: not process_group_alive(master), timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------
# rounds, statistics


def rotated(items, round_index):
    """``items`` rotated by the round number, so no variant always goes first."""
    shift = round_index % len(items) if items else 0
    return items[shift:] + items[:shift]


def summarize(samples):
    """{median, min, max, n} of a list of numbers (None if empty)."""
    if not samples:
        return None
    return {"median": statistics.median(samples), "min": min(samples),
            "max": max(samples), "n": len(samples)}


def paired_ratio(rounds, a, b, key):
    """Ratio a/b computed round by round (both measured in the same round),
    summarized; rounds is a list of {variant: value-dict}."""
    ratios = []
    for r in rounds:
        va, vb = r.get(a), r.get(b)
        if va is None or vb is None:
            continue
        x, y = va[key] if isinstance(va, dict) else va, vb[key] if isinstance(vb, dict) else vb
        if x is not None and y:
            ratios.append(x / y)
    return summarize(ratios)


def run_with_retries(fn, retries, log_prefix):
    """Call ``fn()``; retry when the server was disturbed by foreign signals."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Disturbed as e:
            print("%s DISTURBED (%s)%s" % (log_prefix, e,
                                           "" if attempt == retries else ", retrying"))
            if attempt == retries:
                raise


def interleaved_rounds(piece, variants, runs, sample, describe, tmpdir=None, width=13):
    """Run ``sample(variant, tmpdir)`` for every variant, ``runs`` rounds, the order
    rotated each round so that machine noise hits all alike.

    ``describe(prefix, result)`` prints the sample's line and returns what the
    round keeps of it (for paired ratios). A failed sample is reported and
    recorded, never fatal. Returns ``(rounds, failures, detail)``: one dict per
    round, the failures, and every sample's full result per variant.
    """
    own_tmp = tmpdir is None
    tmpdir = tmpdir or tempfile.mkdtemp(prefix=piece + "-")
    rounds, failures, detail = [], [], {v: [] for v in variants}
    try:
        for rnd in range(runs):
            this_round = {}
            for variant in rotated(variants, rnd):
                prefix = "[%s round %d/%d] %-*s" % (piece, rnd + 1, runs, width, variant)
                try:
                    result = run_with_retries(lambda: sample(variant, tmpdir), 2, prefix)
                except SampleError as e:
                    report_failure(prefix, e)
                    failures.append({"variant": variant, "round": rnd + 1, "error": str(e)})
                    continue
                this_round[variant] = describe(prefix, result)
                sys.stdout.flush()
                detail[variant].append(result)
            rounds.append(this_round)
    finally:
        if own_tmp:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return rounds, failures, detail


def report_failure(prefix, error):
    print("%s FAILED: %s" % (prefix, error))
    if getattr(error, "log", None):
        print("----- server log -----\n%s\n----------------------" % error.log.rstrip())
    sys.stdout.flush()


# --------------------------------------------------------------------------
# facts about the machine and the software


def dist_version(name):
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


_GUNICORN_FACTS = None


def gunicorn_facts():
    """Version, whether it has --control-socket, and its spawn sleep.

    Read from gunicorn's source files rather than imported, so that an
    installed plugin hooking gunicorn's modules cannot interfere."""
    global _GUNICORN_FACTS
    if _GUNICORN_FACTS is not None:
        return _GUNICORN_FACTS
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
    _GUNICORN_FACTS = facts
    return facts


def plugin_option(flag):
    """True if the installed plugin's settings define command-line ``flag``."""
    import importlib.util
    spec = importlib.util.find_spec("gunicorn_smartspawn")
    if spec is None or not spec.submodule_search_locations:
        return False
    root = list(spec.submodule_search_locations)[0]
    for path in (os.path.join(root, "hook", "settings.py"),  # the layout by process role
                 os.path.join(root, "settings.py")):  # before it
        try:
            with open(path) as f:
                if '"%s"' % flag in f.read():
                    return True
        except OSError:
            pass
    return False


def plugin_hook_active():
    return any("smartspawn" in type(f).__module__ for f in sys.meta_path)


def cpu_model():
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or None


def mem_total_bytes():
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    return None


def machine_facts():
    return {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": mem_total_bytes(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "gunicorn": gunicorn_facts()["version"],
        "gunicorn_smartspawn": dist_version("gunicorn-smartspawn"),
        "django": dist_version("django"),
        "numpy": dist_version("numpy"),
        "pandas": dist_version("pandas"),
        "pyuwsgi": dist_version("pyuwsgi"),
        "matplotlib": dist_version("matplotlib"),
        "plugin_hook_active": plugin_hook_active(),
    }


def prepare_app(app):
    """Import the app once in a fresh interpreter (creates and seeds the
    SQLite database outside the measurements); returns the import seconds."""
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
