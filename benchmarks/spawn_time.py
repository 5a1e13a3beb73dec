"""How long does a server take to add one worker while it runs?

    python benchmarks/spawn_time.py [--runs N] [--variants a,b,...] [--json PATH]

Variants (see ``harness.VARIANTS``; all serve the same app, by default the
import-heavy Django service ``benchmarks.heavy_app.wsgi:application``; each
is run N times, round-robin with the order rotated every round, so that
machine noise hits all alike):

  smart          gunicorn -k smartspawn.Worker --spawn-method=smart  -w 1 ...
  smart-spare    smart with --spare-workers 1: the new worker is a spare,
                 forked and initialised ahead and parked; TTIN wakes it
  smart-spare-warm  smart-spare with preloader_warmup (conf/smart_warm.py):
                 the preloader and then the spare run the warm-up
                 requests before the spare parks
  direct         gunicorn -k smartspawn.Worker --spawn-method=direct -w 1 ...
  stock          gunicorn -w 1 ...             (stock sync worker, lazy app)
  stock-preload  gunicorn --preload -w 1 ...   (app imported in the master)
  uwsgi          uWSGI preforking (app in the master), cheaper mode
  uwsgi-lazy     uWSGI --lazy-apps (each worker imports the app), cheaper mode
  fork-floor     no server: a Python process that has imported the app
                 calls os.fork(); the time from just before the fork to the
                 child's first statement is the floor any fork-based
                 spawner can reach.

What one server sample measures
-------------------------------
1. Start the server (own session, log to a temp file) with one worker on a
   free 127.0.0.1 port; poll ``GET /health`` on new connections until it
   answers (deadline).  Every answer names the answering process (heavy_app
   sets ``X-Worker-Pid`` on every response), so we know the existing worker.
2. Occupy that worker ("hold" probe mode, the default): ``GET
   /_bench/hold`` streams back one line with its pid and then keeps the
   request open.  A sync worker serves one request at a time, so from then
   on it accepts no connection.
3. Let the server settle: at least 150 ms after the first answer (gunicorn's
   master sleeps up to 100 ms after each spawn, see notes) and until neither
   the master nor any of its descendants has used CPU for 100 ms (deadline).
4. t0 = CLOCK_MONOTONIC; ask for one more worker: SIGTTIN to a gunicorn
   master; for uWSGI, which has no such signal, "+" on its master FIFO in
   cheaper mode (``--cheaper-algo manual``; uWSGI applies it at its next
   cheaper check, at most once a second, ``--cheaper-overload 1``).
   Immediately open a new connection and send ``GET /health``.  The request
   waits in the listen backlog: the held worker cannot take it, so the first
   process to accept it is the new worker, once it is ready to serve.  t1 =
   CLOCK_MONOTONIC when the complete response has been read.  The sample is
   t1 - t0, i.e. request -> a NEW worker has served an HTTP request, and is
   only accepted if the pid in the answer was not seen before step 4; if a
   known pid answers, the probe is repeated on a new connection until a new
   pid answers or the deadline passes.
   With ``--probe poll`` step 2 is skipped: probes then go back to back and
   the existing worker answers about half of them, which is still correct
   (only a new pid ends the measurement) but adds a little sampling delay
   and keeps one CPU busy during the spawn.
5. If a gunicorn server's log shows it handled a signal the harness did not
   send (gunicorn logs "Handling signal: ..."; e.g. another test suite or a
   `pkill` on the same machine hit it), the sample is discarded and retried
   (``--retries``).
6. Whatever happens, the whole process group (and any descendant that left
   it) is SIGKILLed in a ``finally`` and reaped before the next sample.

The fork floor is measured in a fresh interpreter per sample that imports
the app, then takes t0 = time.monotonic_ns(), calls os.fork(); the child's
first statement reads time.monotonic_ns() and writes it to a pipe.
CLOCK_MONOTONIC is system-wide, so the two readings are comparable.

Stock variants run on unmodified gunicorn: a tiny launcher removes the
plugin's ``.pth`` import hook first (``--no-isolate-stock`` keeps it).

One untimed warm-up round (``--warmup``) runs before the measured ones, and
the app is imported once up front so that a missing SQLite database is
created outside the measurements.  Exit status is 1 if any sample of any
variant failed (the failing server's log is printed), 2 for usage errors.
``python -m benchmarks`` runs this as one piece of the full report.
"""

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness  # noqa: E402
from benchmarks.harness import SampleError  # noqa: E402

DEFAULT_VARIANTS = ["smart", "direct", "stock", "stock-preload", "fork-floor"]
RATIOS = [
    ("direct", "smart"),
    ("stock", "smart"),
    ("smart", "stock-preload"),
    ("smart", "fork-floor"),
    ("smart-spare", "fork-floor"),
    ("smart-spare-warm", "fork-floor"),
    ("stock-preload", "smart-spare-warm"),
    ("smart", "smart-spare"),
    ("uwsgi", "smart"),
]


@dataclass
class Options:
    app: str = harness.HEAVY_APP
    probe: str = "hold"
    timeout: float = 60.0
    start_timeout: float = 60.0
    retries: int = 2
    isolate_stock: bool = True
    show_commands: bool = False
    hold_path: str = harness.HOLD_PATH  # asgi_models.py: /_bench/block (event loop)
    env: dict = dataclasses.field(default_factory=dict)  # extra environment (growth.py: app size)


# --------------------------------------------------------------------------
# one server sample


def measure_spawn(server, timeout):
    """Ask for one worker, then probe until a pid not seen before answers."""
    probes = 0
    last_err = None
    t0 = time.monotonic_ns()
    server.add_worker()
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SampleError(
                "%s: no new worker answered within %.0f s after the request "
                "(%d probes, known pids %s, last: %s)"
                % (server.name, timeout, probes, sorted(server.known_pids), last_err),
                server.log())
        server.check_alive("spawning")
        probes += 1
        try:
            status, pid, ppid = harness.probe(server.port, timeout=remaining)
        except OSError as e:
            last_err = repr(e)
            if not isinstance(e, socket.timeout):
                time.sleep(0.001)  # refused/reset: do not spin flat out
            continue
        t1 = time.monotonic_ns()
        if status == 200 and pid and pid not in server.known_pids:
            return {"ms": (t1 - t0) / 1e6, "new_pid": pid, "new_ppid": ppid,
                    "probes": probes, "t0": t0 / 1e9, "t1": t1 / 1e9}
        last_err = "status %s from pid %s" % (status, pid)
        if pid:
            server.known_pids.add(pid)


def warm_request_ms(server, n=5):
    """Median time of GET /health on a new connection to the running worker:
    the part of every spawn sample that is the probe request itself."""
    times = []
    for _ in range(n):
        t = time.monotonic_ns()
        harness.probe(server.port, timeout=10)
        times.append((time.monotonic_ns() - t) / 1e6)
    return statistics.median(times)


BREAKDOWN_VARIANTS = ("smart", "smart-spare", "smart-spare-warm", "stock-preload")
BREAKDOWN_STEPS = (  # (label, from event, to event)
    ("request -> new worker runs (post_fork)", "t0", "post_fork"),
    ("gunicorn worker initialisation", "post_fork", "post_worker_init"),
    ("until the first request is read", "post_worker_init", "pre_request"),
    ("first request in the new worker", "pre_request", "post_request"),
    ("response reaches the client", "post_request", "t1"),
)
#: A spare ran post_fork and post_worker_init before the request (when it was parked).
SPARE_STEPS = (
    ("request -> released spare reads the request", "t0", "pre_request"),
    *BREAKDOWN_STEPS[3:],
)


def breakdown_steps(variant):
    return SPARE_STEPS if "--spare-workers" in harness.VARIANTS[variant].args else BREAKDOWN_STEPS


def wait_spare_parked(server, timeout):
    """A spare variant: measure a release, not a spare's boot."""
    if "--spare-workers" in server.variant.args:
        if not harness.wait_until(lambda: " parked" in server.log(), timeout=timeout):
            raise SampleError("%s: no spare parked" % server.name, server.log())


def _with_conf(args, conf, tmpdir):
    """``args`` with gunicorn config ``conf`` added: gunicorn reads one ``-c``, so a variant
    that has its own gets a file that runs both, its own first."""
    if "-c" not in args:
        return args + ("-c", conf)
    i = args.index("-c")
    both = os.path.join(tmpdir, "breakdown-%s.conf.py" % os.path.basename(args[i + 1])[:-3])
    with open(both, "w") as f:
        for path in (args[i + 1], conf):
            f.write("exec(compile(open(%r).read(), %r, 'exec'))\n" % (path, path))
    return args[:i] + ("-c", both) + args[i + 2:]


def breakdown_sample(variant, opts, tmpdir):
    """A spawn sample with hooks that log when the new worker reaches
    post_fork, post_worker_init and its first pre/post_request; returns the
    milliseconds of each step (BREAKDOWN_STEPS)."""
    base = harness.VARIANTS[variant]
    conf = os.path.join(harness.CONF_DIR, "spawn_breakdown.py")
    hooked = dataclasses.replace(base, name=variant + "+hooks",
                                 args=_with_conf(base.args, conf, tmpdir))
    server = harness.Server(hooked, opts.app, workers=1, tmpdir=tmpdir, spawnable=True,
                            isolate_stock=opts.isolate_stock)
    log_path = os.path.join(tmpdir, "breakdown-%d.log" % server.port)
    server.env["SPAWN_BREAKDOWN_LOG"] = log_path
    hold = None
    try:
        server.start()
        server.wait_ready(opts.start_timeout)
        wait_spare_parked(server, opts.start_timeout)
        hold, held_pid = harness.open_hold(server.port, timeout=opts.start_timeout,
                                           path=opts.hold_path)
        server.known_pids.add(held_pid)
        server.settle()
        r = measure_spawn(server, opts.timeout)
        server.check_undisturbed(["ttin"])
        times = {"t0": r["t0"], "t1": r["t1"]}  # CLOCK_MONOTONIC, as the hooks
        with open(log_path) as f:
            for line in f:
                pid, event, t = line.split()
                if int(pid) == r["new_pid"]:
                    times.setdefault(event, float(t))
        steps = breakdown_steps(variant)
        missing = [e for _, a, b in steps for e in (a, b) if e not in times]
        if missing:
            raise SampleError("%s: hooks %s not logged" % (hooked.name, missing), server.log())
        return {label: (times[b] - times[a]) * 1000 for label, a, b in steps}
    finally:
        if hold is not None:
            hold.close()
        server.stop()


def logged_fork_ms(server, pid):
    """The plugin's own figure for creating worker ``pid`` ("worker pid=N ...
    forked in X ms" in the master's log), or None."""
    pattern = re.compile(r"(?:worker|spare) pid=%d\b.*? forked in ([\d.]+) ?ms" % pid)
    found = []

    def seen():
        found[:] = pattern.findall(server.log())
        return bool(found)

    harness.wait_until(seen, timeout=2.0, interval=0.02)
    return float(found[0]) if found else None


def server_sample(variant, opts, tmpdir):
    server = harness.Server(harness.VARIANTS[variant], opts.app, workers=1,
                            tmpdir=tmpdir, spawnable=True,
                            isolate_stock=opts.isolate_stock, env=dict(opts.env))
    hold = None
    try:
        if opts.show_commands:
            print("  $ " + server.shown_command())
        server.start()
        ready_pid = server.wait_ready(opts.start_timeout)
        wait_spare_parked(server, opts.start_timeout)
        warm_ms = warm_request_ms(server)
        ready_at = time.monotonic()
        mode = opts.probe
        if mode == "hold":
            held = harness.open_hold(server.port, timeout=opts.start_timeout,
                                     path=opts.hold_path)
            if held is None:
                mode = "poll (no hold endpoint)"
            else:
                hold, held_pid = held
                server.known_pids.add(held_pid)
        settled = server.settle(ready_at)
        try:
            result = measure_spawn(server, opts.timeout)
        except SampleError as e:
            extra = (harness.foreign_signals(server.log(), ["ttin"])
                     if server.variant.kind == "gunicorn" else [])
            if extra:
                raise harness.Disturbed("%s (server also got foreign signals: %s)"
                                        % (e, ", ".join(extra)), e.log)
            raise
        server.check_undisturbed(["ttin"])
        if server.variant.plugin:
            result["fork_ms"] = logged_fork_ms(server, result["new_pid"])
        result.update({"first_pid": ready_pid, "master_pid": server.pid,
                       "warm_request_ms": warm_ms,
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
    sys.path.insert(0, harness.REPO_ROOT)
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


def fork_sample(variant, opts, tmpdir):
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--fork-floor-child", "--app", opts.app],
        cwd=harness.REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True, env=dict(os.environ, **opts.env),
    )
    try:
        out, err = proc.communicate(timeout=opts.start_timeout + opts.timeout)
    except subprocess.TimeoutExpired:
        out, err = b"", b"timed out"
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


def run(variants, runs, warmup=1, opts=None, tmpdir=None, breakdown_runs=0):
    """Measure ``variants`` for ``runs`` rounds, then ``breakdown_runs`` hooked
    samples of smart and stock --preload; returns the piece's result dict."""
    opts = opts or Options()
    started = time.monotonic()
    own_tmp = tmpdir is None
    tmpdir = tmpdir or tempfile.mkdtemp(prefix="spawn_time-")
    rounds, failures, disturbed, runs_detail = [], [], 0, {v: [] for v in variants}
    try:
        for rnd in range(warmup + runs):
            warm = rnd < warmup
            label = ("warm-up %d/%d" % (rnd + 1, warmup) if warm
                     else "round %d/%d" % (rnd - warmup + 1, runs))
            this_round = {}
            for variant in harness.rotated(variants, rnd):
                sampler = fork_sample if harness.VARIANTS[variant].kind == "floor" else server_sample
                prefix = "[spawn %s] %-13s" % (label, variant)
                try:
                    r = harness.run_with_retries(
                        lambda: sampler(variant, opts, tmpdir), opts.retries, prefix)
                except SampleError as e:
                    harness.report_failure(prefix, e)
                    if not warm:
                        failures.append({"variant": variant, "round": label, "error": str(e)})
                    disturbed += isinstance(e, harness.Disturbed)
                    continue
                extra = ""
                if "new_pid" in r:
                    extra = " (new pid %s, parent %s, master %s, %d probe%s, %s%s)" % (
                        r["new_pid"], r["new_ppid"], r["master_pid"], r["probes"],
                        "" if r["probes"] == 1 else "s", r["probe_mode"],
                        "" if r["settled"] else ", server never idle before the request")
                print("%s %9.2f ms%s" % (prefix, r["ms"], extra))
                sys.stdout.flush()
                if not warm:
                    this_round[variant] = r["ms"]
                    runs_detail[variant].append(r)
            if not warm:
                rounds.append(this_round)
        breakdown = run_breakdown(variants, breakdown_runs, opts, tmpdir, failures)
    finally:
        if own_tmp:
            shutil.rmtree(tmpdir, ignore_errors=True)
    summary = {v: harness.summarize([r[v] for r in rounds if v in r]) for v in variants}
    for v in variants:
        warm = [r["warm_request_ms"] for r in runs_detail[v] if "warm_request_ms" in r]
        if summary[v] and warm:
            summary[v]["warm_request_ms"] = statistics.median(warm)
        forks = [r["fork_ms"] for r in runs_detail[v] if r.get("fork_ms") is not None]
        if summary[v] and forks:
            summary[v]["fork_ms"] = statistics.median(forks)
    ratios = {}
    for a, b in RATIOS:
        if a in variants and b in variants:
            s = harness.paired_ratio(rounds, a, b, None)
            if s:
                ratios["%s/%s" % (a, b)] = s
    return {"piece": "spawn", "unit": "ms", "variants": variants, "rounds": rounds,
            "summary": summary, "ratios": ratios, "failures": failures,
            "breakdown": breakdown,
            "runs": runs_detail, "notes": notes(opts, variants, runs),
            "seconds": time.monotonic() - started}


def run_breakdown(variants, runs, opts, tmpdir, failures):
    """{variant: {step: summary of ms}} from hooked spawn samples."""
    out = {}
    chosen = [v for v in BREAKDOWN_VARIANTS if v in variants]
    samples = {v: [] for v in chosen}
    for rnd in range(runs):
        for variant in harness.rotated(chosen, rnd):
            prefix = "[spawn breakdown %d/%d] %-13s" % (rnd + 1, runs, variant)
            try:
                r = harness.run_with_retries(
                    lambda: breakdown_sample(variant, opts, tmpdir), opts.retries, prefix)
            except SampleError as e:
                harness.report_failure(prefix, e)
                failures.append({"variant": variant + " (breakdown)", "round": rnd + 1,
                                 "error": str(e)})
                continue
            print("%s %s" % (prefix, ", ".join("%.1f" % x for x in r.values())))
            samples[variant].append(r)
    for v in chosen:
        if samples[v]:
            out[v] = {label: harness.summarize([r[label] for r in samples[v]])
                      for label, _, _ in breakdown_steps(v)}
    return out


def notes(opts, variants, runs):
    out = [
        "time = request for one more worker (SIGTTIN; uWSGI: '+' on the master "
        "FIFO) -> first HTTP response from a new worker pid (fork-floor: just "
        "before os.fork() -> child's first statement); %d measured run%s per "
        "variant, interleaved, order rotated every round"
        % (runs, "" if runs == 1 else "s"),
    ]
    gfacts = harness.gunicorn_facts()
    if gfacts.get("spawn_sleep") and any(harness.VARIANTS[v].stock for v in variants):
        if gfacts["spawn_sleep_after_fork"]:
            where = ("it follows each fork, so a single SIGTTIN's new worker is "
                     "not delayed by it, but the master is blocked meanwhile")
        else:
            where = "it precedes the fork, so it is part of every spawn time"
        out.append(
            "stock gunicorn's Arbiter.spawn_workers() sleeps a random 0-100 ms "
            "per spawned worker (`%s`); it is left in, as users get it: %s."
            % (gfacts["spawn_sleep"], where))
    if any(v.startswith("uwsgi") for v in variants):
        out.append(
            "uWSGI has no signal that adds a worker at once: in cheaper mode "
            "(--cheaper-algo manual) the master FIFO's '+' raises the worker "
            "count, and the master applies it at its next cheaper check (every "
            "--cheaper-overload=1 s, the minimum), so its figures are dominated "
            "by that tick, not by the fork")
    if opts.probe == "hold":
        out.append(
            "probe mode hold: the existing worker is kept busy by /_bench/hold, "
            "so the probe sent right after the request waits in the listen "
            "backlog until the new worker accepts it")
    return out


def print_table(result):
    print()
    print("%-14s %5s %11s %11s %11s" % ("variant", "n", "median ms", "min ms", "max ms"))
    for v in result["variants"]:
        s = result["summary"][v]
        nfail = sum(1 for f in result["failures"] if f["variant"] == v)
        fail = "  (%d failed)" % nfail if nfail else ""
        if s:
            print("%-14s %5d %11.2f %11.2f %11.2f%s"
                  % (v, s["n"], s["median"], s["min"], s["max"], fail))
        else:
            print("%-14s %5d %11s %11s %11s%s" % (v, 0, "-", "-", "-", fail))
    if result["ratios"]:
        print()
        print("ratios, computed round by round (median [min-max]):")
        for k, s in result["ratios"].items():
            print("  %-20s %8.2fx  [%.2f-%.2f]" % (k, s["median"], s["min"], s["max"]))
    for v, steps in result.get("breakdown", {}).items():
        print()
        print("breakdown of a %s spawn (median ms):" % v)
        for label, s in steps.items():
            print("  %-45s %8.2f" % (label, s["median"]))
    print()
    print("notes:")
    for n in result["notes"]:
        print("  - " + n)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Time to spawn one extra worker (request -> new worker "
                    "answers), side by side for several spawn methods.")
    parser.add_argument("--runs", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds before the measured ones (default 1)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="comma-separated subset of: %s" % ", ".join(harness.VARIANTS))
    parser.add_argument("--app", default=harness.HEAVY_APP, help="WSGI app (default %(default)s)")
    parser.add_argument("--probe", choices=["hold", "poll"], default="hold",
                        help="hold: keep the existing worker busy (default); "
                             "poll: probe back to back, stop at a new pid")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="max seconds from the request to the new worker's answer")
    parser.add_argument("--start-timeout", type=float, default=60.0,
                        help="max seconds for a server to answer after start")
    parser.add_argument("--retries", type=int, default=2,
                        help="retries of a sample whose server received signals "
                             "the harness did not send (default 2)")
    parser.add_argument("--no-isolate-stock", dest="isolate_stock", action="store_false",
                        help="run the stock variants with gunicorn-smartspawn's "
                             ".pth import hook active")
    parser.add_argument("--isolate-stock", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--show-commands", action="store_true",
                        help="print each server command line")
    parser.add_argument("--breakdown", type=int, default=0, metavar="N",
                        help="N extra hooked samples of smart and stock-preload that split "
                             "a spawn into its steps (default 0)")
    parser.add_argument("--json", metavar="PATH", help="write all results as JSON")
    parser.add_argument("--fork-floor-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.fork_floor_child:
        fork_floor_child(args.app)
        return 0

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in harness.VARIANTS]
    if unknown or not variants or args.runs < 1 or args.warmup < 0:
        parser.error("bad --variants/--runs/--warmup (unknown: %s)" % ", ".join(unknown))
    opts = Options(app=args.app, probe=args.probe, timeout=args.timeout,
                   start_timeout=args.start_timeout, retries=args.retries,
                   isolate_stock=args.isolate_stock, show_commands=args.show_commands)
    meta = harness.machine_facts()
    print("spawn_time: Python %s, gunicorn %s, gunicorn-smartspawn %s, %s CPUs"
          % (meta["python"], meta["gunicorn"], meta["gunicorn_smartspawn"] or "-", meta["cpus"]))
    print("app %s; variants %s; %d warm-up + %d measured rounds; probe mode %s"
          % (args.app, ", ".join(variants), args.warmup, args.runs, args.probe))
    meta["app_import_s"] = harness.prepare_app(args.app)
    print("app import in a fresh interpreter: %.3f s" % meta["app_import_s"])
    sys.stdout.flush()
    result = run(variants, args.runs, args.warmup, opts, breakdown_runs=args.breakdown)
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "spawn": result}, f, indent=2)
        print("results written to %s" % args.json)
    if result["failures"]:
        print("FAILED: %s" % ", ".join(sorted({f["variant"] for f in result["failures"]})))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
