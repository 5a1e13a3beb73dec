"""Surge on a dynamic pool: 1 -> 8 clients of a 50 ms view; the pool grows by itself.

    python benchmarks/surge_dynamic.py [--runs 3] [--clients 8] [--window 5]
                                       [--variants smart-dynamic,direct-dynamic,...]

Variants (``harness.VARIANTS``):

  smart-dynamic           smart spawning, ``-w 1 --min-workers 1 --max-workers 8``
  direct-dynamic          the same with direct spawning (each new worker imports the app)
  uwsgi-cheaper-backlog   uWSGI cheaper mode, ``--cheaper 1 --processes 8``, algorithm
                          ``backlog`` (grows while the listen queue is above
                          ``--cheaper-overload``, shrinks one a second while it is below)
  uwsgi-cheaper-busyness  the same with the ``busyness`` algorithm (grows when the
                          workers' average busyness over ``--cheaper-overload``
                          seconds is above 50 %)
  smart                   the reference: a fixed pool of 8 smart workers (``-w 8``)

Both uWSGI variants check once a second (``--cheaper-overload 1``, the least
it takes) and start ``--cheaper-step 7`` workers per decision, so that one
decision can take them from 1 to 8 (their default step is 1 worker a second).

What one sample measures
------------------------
1. Start the server (dynamic variants: one worker; the reference: eight);
   wait until the app is imported (heavy_app's ``$HEAVY_APP_IMPORT_LOG``)
   and, for a dynamic pool, 1.2 s more; then until it answers and is idle.
   The pause matters: the plugin's master marks a new worker ready on its
   next pass, up to a second later, and a connection that waits before then
   makes the dynamic pool grow (a pool whose only worker is not marked
   ready counts as saturated), so probing at once would start the step with
   more workers.
2. One client sends ``GET /_bench/sleep?ms=50`` (a view that waits 50 ms
   without using the CPU), one request per new connection, back to back,
   for ``--pre`` seconds (default 1): a steady load that one worker serves
   without a queue.
3. t0 = CLOCK_MONOTONIC: seven more clients start doing the same (8 in
   all).  Nothing else happens: no signal, no command; the pool must notice
   the queue and grow by itself.  Meanwhile the harness reads the worker
   processes from /proc every 20 ms.
4. The clients run until ``--window`` seconds (default 5) have passed and 8
   distinct workers have answered (or ``--timeout``, 60 s).  Recorded:

   - **until 8 serve**: from t0 until the first response from the 8th
     distinct worker pid (``X-Worker-Pid``; the worker that served the
     single client counts as the first);
   - until 8 worker processes exist, and until the first new one serves;
   - **latency**: every request *started* within ``--window`` seconds of
     t0, from its connect to its complete response; its 50th and 99th
     percentiles (nearest rank) and maximum;
   - the workers at t0 (what the pool had before the step), the most
     worker processes seen during the sample (a pool that grows beyond the
     8 clients overshoots), and for the plugin the master's ``scale up``
     log lines and the fork time it logs for each new worker.

The reference's p99 is what the same step costs when the capacity is
already there; a dynamic pool's p99 above it is the price of growing.

The single client before the step keeps the one worker busy nearly all the
time, so the plugin's master already sees the pool saturated and samples it
every 20 ms when the step comes.  ``--pre 0`` starts all clients at once on
an idle pool instead: then the step waits for the master's next ordinary
pass (about once a second) before anything grows.
Every sample of a gunicorn variant is checked for signals it did not get
from the harness (``harness.Server.check_undisturbed``): none are sent.
"""

import argparse
import json
import math
import os
import re
import statistics
import sys
import threading
import time
from dataclasses import dataclass

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness  # noqa: E402
from benchmarks.harness import SampleError  # noqa: E402

REFERENCE = "smart"  # a fixed pool of ``clients`` smart workers
DEFAULT_VARIANTS = ["smart-dynamic", "direct-dynamic", "uwsgi-cheaper-backlog",
                    "uwsgi-cheaper-busyness", REFERENCE]
UWSGI_CHEAPER = ("uwsgi-cheaper-backlog", "uwsgi-cheaper-busyness")
# Seconds between the app's import and the first probe: the master marks a new
# worker ready on its next pass (at most 1 s later). A connection that waits
# while the only worker is not yet marked ready makes the plugin's pool grow
# (it counts as saturated), so probing earlier would start the surge with
# more than one worker.
QUIET_BEFORE_PROBE = 1.2
FORKED_RE = re.compile(r"worker pid=\d+\b.*? forked in ([\d.]+) ?ms")
SCALE_LINE_RE = re.compile(r"app=\S+ (scale (?:up|down) \d+->\d+: .*)$", re.M)


@dataclass
class Options:
    app: str = harness.HEAVY_APP
    clients: int = 8
    view_ms: int = 50
    pre: float = 1.0
    window: float = 5.0
    timeout: float = 60.0
    start_timeout: float = 60.0
    quiet_before_probe: float = QUIET_BEFORE_PROBE  # 0 in --quick (see QUIET_BEFORE_PROBE)
    isolate_stock: bool = True
    show_commands: bool = False


def percentile(values, q):
    """Nearest-rank percentile (q in 0-100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def wait_imported(server, import_log, timeout):
    """Wait until some process of the server has imported the app (heavy_app
    logs its import's end to ``$HEAVY_APP_IMPORT_LOG``)."""
    def imported():
        server.check_alive("importing the app")
        try:
            with open(import_log) as f:
                return any(line.split()[1:2] == ["end"] for line in f)
        except OSError:
            return False

    if not harness.wait_until(imported, timeout, interval=0.02):
        raise SampleError("%s: the app was not imported within %.0f s" % (server.name, timeout),
                          server.log())


def start_workers(variant, clients):
    """The ``workers`` of the command: the reference's fixed pool, a dynamic
    gunicorn pool's starting count (1), uWSGI's --processes (its maximum)."""
    if variant == REFERENCE:
        return clients
    if harness.VARIANTS[variant].kind == "uwsgi":
        return harness.DYNAMIC_MAX
    return 1


def surge_dynamic_sample(variant, opts, tmpdir):
    server = harness.Server(harness.VARIANTS[variant], opts.app,
                            workers=start_workers(variant, opts.clients), tmpdir=tmpdir,
                            isolate_stock=opts.isolate_stock)
    if opts.show_commands:
        print("  $ " + server.shown_command())
    path = "/_bench/sleep?ms=%d" % opts.view_ms
    records = []  # (start, end, pid or None, status or error), appended by the clients
    stop = threading.Event()
    go = threading.Event()
    threads = []

    def client(wait_for):
        if wait_for is not None:
            wait_for.wait()
        while not stop.is_set():
            t = time.monotonic()
            try:
                status, pid, _ = harness.get(server.port, path, timeout=60)
            except OSError as e:
                records.append((t, time.monotonic(), None, repr(e)))
                time.sleep(0.01)
                continue
            records.append((t, time.monotonic(), pid, status))

    import_log = os.path.join(tmpdir, "imports-%d.log" % server.port)
    server.env["HEAVY_APP_IMPORT_LOG"] = import_log
    try:
        server.start()
        wait_imported(server, import_log, opts.start_timeout)
        if variant != REFERENCE:  # a fixed pool does not grow
            time.sleep(opts.quiet_before_probe)
        server.wait_ready(opts.start_timeout)
        # the reference starts its 8 workers; a dynamic pool (uWSGI too) starts at 1
        server.wait_workers(opts.clients if variant == REFERENCE else 1, opts.start_timeout)
        server.settle()
        threads = [threading.Thread(target=client, args=(None if i == 0 else go,), daemon=True)
                   for i in range(opts.clients)]
        threads[0].start()
        time.sleep(opts.pre)
        workers_at_step = len(server.worker_pids())
        for t in threads[1:]:
            t.start()
        t0 = time.monotonic()
        go.set()
        timeline = [(0.0, workers_at_step)]
        window_end = t0 + opts.window
        deadline = t0 + opts.timeout
        full_at = None
        while True:
            time.sleep(0.02)
            now = time.monotonic()
            server.check_alive("serving the surge")
            n = len(server.worker_pids())
            if n != timeline[-1][1]:
                timeline.append((now - t0, n))
            if full_at is None:
                served = {r[2] for r in list(records) if r[2] is not None}
                if len(served) >= opts.clients:
                    full_at = now
            if now >= window_end and (full_at is not None or now >= deadline):
                break
            if now >= deadline:
                break
        stop.set()
        for t in threads:
            t.join(timeout=65)
        if server.variant.kind == "gunicorn":
            server.check_undisturbed([])
        log = server.log()
    finally:
        stop.set()
        go.set()
        server.stop()

    done = sorted(records, key=lambda r: r[1])
    errors = [r for r in done if r[2] is None or r[3] != 200]
    seen, until_all, first_new = [], None, None
    first_pid = None
    for _start, end, pid, status in done:
        if pid is None or status != 200:
            continue
        if first_pid is None:
            first_pid = pid
        if pid not in seen:
            seen.append(pid)
            if end >= t0 and first_new is None and pid != first_pid:
                first_new = end - t0
            if len(seen) == opts.clients and until_all is None:
                until_all = max(0.0, end - t0)
    in_window = [(end - start) * 1000 for start, end, pid, status in done
                 if t0 <= start < window_end and pid is not None and status == 200]
    if not in_window:
        raise SampleError("%s: no request completed in the window (%d errors: %s)"
                          % (variant, len(errors), [e[3] for e in errors[:3]]), log)
    procs_full = next((t for t, n in timeline if n >= opts.clients), None)
    first_proc = next((t for t, n in timeline if n > workers_at_step), None)
    return {
        "until_all_serve_s": until_all,
        "first_new_serves_s": first_new,
        "until_all_processes_s": procs_full,
        "first_new_process_s": first_proc,
        "fork_ms": [float(x) for x in FORKED_RE.findall(log)][-(opts.clients - 1):]
        if server.variant.plugin and workers_at_step < opts.clients else [],
        "workers_at_step": workers_at_step,
        "most_workers": max(n for _, n in timeline),
        "distinct_workers": len(seen),
        "p50_ms": percentile(in_window, 50), "p99_ms": percentile(in_window, 99),
        "max_ms": max(in_window), "mean_ms": statistics.fmean(in_window),
        "requests_in_window": len(in_window),
        "errors": len(errors), "error_examples": [str(e[3]) for e in errors[:3]],
        "timeline": timeline,
        "scale_lines": SCALE_LINE_RE.findall(log)[:20],
        "master_pid": server.pid,
    }


def _fmt(x, unit="s"):
    if x is None:
        return "   never"
    return ("%8.3f s" % x) if unit == "s" else ("%7.1f ms" % x)


def run(variants, runs, opts=None, tmpdir=None):
    opts = opts or Options()
    started = time.monotonic()

    def describe(prefix, r):
        print("%s %s until %d serve (processes %s, first new serves %s); workers at the "
              "step %d; latency p50 %s p99 %s max %s over %d requests; %d errors"
              % (prefix, _fmt(r["until_all_serve_s"]).strip(), opts.clients,
                 _fmt(r["until_all_processes_s"]).strip(), _fmt(r["first_new_serves_s"]).strip(),
                 r["workers_at_step"], _fmt(r["p50_ms"], "ms").strip(),
                 _fmt(r["p99_ms"], "ms").strip(), _fmt(r["max_ms"], "ms").strip(),
                 r["requests_in_window"], r["errors"]))
        return {"until_all_serve_s": r["until_all_serve_s"], "p99_ms": r["p99_ms"]}

    rounds, failures, detail = harness.interleaved_rounds(
        "surge-dynamic", variants, runs,
        lambda variant, tmp: surge_dynamic_sample(variant, opts, tmp), describe, tmpdir, width=22)
    summary = {}
    for v in variants:
        rs = detail[v]
        if not rs:
            summary[v] = None
            continue
        reached = [r["until_all_serve_s"] for r in rs if r["until_all_serve_s"] is not None]
        procs = [r["until_all_processes_s"] for r in rs if r["until_all_processes_s"] is not None]
        first = [r["first_new_serves_s"] for r in rs if r["first_new_serves_s"] is not None]
        summary[v] = {
            "until_all_serve_s": harness.summarize(reached),
            "reached": len(reached), "n": len(rs),
            "until_all_processes_s": harness.summarize(procs),
            "first_new_serves_s": harness.summarize(first),
            "first_new_process_s": harness.summarize(
                [r["first_new_process_s"] for r in rs if r["first_new_process_s"] is not None]),
            "fork_ms": harness.summarize([x for r in rs for x in r["fork_ms"]]),
            "p99_ms": harness.summarize([r["p99_ms"] for r in rs]),
            "p50_ms": harness.summarize([r["p50_ms"] for r in rs]),
            "max_ms": harness.summarize([r["max_ms"] for r in rs]),
            "workers_at_step": harness.summarize([r["workers_at_step"] for r in rs]),
            "most_workers": harness.summarize([r["most_workers"] for r in rs]),
            "requests_in_window": harness.summarize([r["requests_in_window"] for r in rs]),
            "errors": sum(r["errors"] for r in rs),
        }
    ratios = {}
    for v in variants:
        if v != REFERENCE and REFERENCE in variants:
            s = harness.paired_ratio(rounds, v, REFERENCE, "p99_ms")
            if s:
                ratios["%s/%s p99" % (v, REFERENCE)] = s
    for a in ("direct-dynamic",) + UWSGI_CHEAPER:
        if a in variants and "smart-dynamic" in variants:
            s = harness.paired_ratio(rounds, a, "smart-dynamic", "until_all_serve_s")
            if s:
                ratios["%s/smart-dynamic until all serve" % a] = s
    commands = {}
    for v in variants:
        s = harness.Server(harness.VARIANTS[v], opts.app, workers=start_workers(v, opts.clients),
                           tmpdir="/tmp", port=8000)
        commands[v] = s.display_command()
    return {"piece": "surge-dynamic", "variants": variants, "clients": opts.clients,
            "view_ms": opts.view_ms, "window_s": opts.window, "pre_s": opts.pre,
            "reference": REFERENCE, "rounds": rounds, "summary": summary, "ratios": ratios,
            "failures": failures, "runs": detail, "commands": commands,
            "notes": [
                "1 client for %.1f s, then %d clients (t0), each sending GET "
                "/_bench/sleep?ms=%d (50 ms of waiting, no CPU) on a new connection, back "
                "to back; no signal or command is sent: the dynamic pools grow by "
                "themselves; %d interleaved rounds"
                % (opts.pre, opts.clients, opts.view_ms, runs),
                "until %d serve: t0 -> the first response from the %dth distinct worker "
                "pid; latency: every request started in the first %.0f s after t0, connect "
                "to complete response (nearest-rank percentiles)"
                % (opts.clients, opts.clients, opts.window),
                "reference: `smart` with a fixed pool of %d workers (`-w %d`), the same "
                "step with the capacity already there" % (opts.clients, opts.clients),
            ],
            "seconds": time.monotonic() - started}


def print_table(result):
    print()
    print("%-24s %12s %12s %10s %10s %8s" % ("variant", "until all", "processes", "p99",
                                             "p50", "at step"))
    for v in result["variants"]:
        s = result["summary"][v]
        if not s:
            print("%-24s %12s" % (v, "-"))
            continue

        def med(key, unit="s"):
            return _fmt(s[key]["median"] if s[key] else None, unit)

        print("%-24s %12s %12s %10s %10s %8.0f" % (
            v, med("until_all_serve_s"), med("until_all_processes_s"), med("p99_ms", "ms"),
            med("p50_ms", "ms"), s["workers_at_step"]["median"]))
    for k, s in result["ratios"].items():
        print("  %-50s %6.2fx [%.2f-%.2f]" % (k, s["median"], s["min"], s["max"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--window", type=float, default=5.0,
                        help="seconds after the step whose requests the latency covers")
    parser.add_argument("--pre", type=float, default=1.0,
                        help="seconds of one client before the step")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--show-commands", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if (any(v not in harness.VARIANTS or harness.VARIANTS[v].kind == "floor" for v in variants)
            or args.runs < 1 or not 2 <= args.clients <= harness.DYNAMIC_MAX):
        parser.error("bad --variants, --runs or --clients (2-%d)" % harness.DYNAMIC_MAX)
    if any(harness.VARIANTS[v].kind == "uwsgi" for v in variants):
        ok, why = harness.uwsgi_available()
        if not ok:
            print("uWSGI variants skipped: %s" % why)
            variants = [v for v in variants if harness.VARIANTS[v].kind != "uwsgi"]
    harness.prepare_app(harness.HEAVY_APP)
    result = run(variants, args.runs, Options(clients=args.clients, window=args.window,
                                              pre=args.pre, timeout=args.timeout,
                                              show_commands=args.show_commands))
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
