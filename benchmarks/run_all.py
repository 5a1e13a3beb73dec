"""Run every benchmark and write the report: ``python -m benchmarks``.

    python -m benchmarks                  # full run, ~22 min on 2 cores: docs/benchmarks.{md,png}, benchmarks-growth.png
    python -m benchmarks --quick          # smoke run (~85 s), output to a temp dir
    python -m benchmarks --pieces spawn,memory --out-dir /tmp/b

Pieces (each also runs alone, see its module): spawn (``spawn_time.py``),
boot (``boot_time.py``), memory (``memory_usage.py``), overhead
(``overhead.py``, needs ``wrk``), surge (``surge.py``), and the dynamic
pool's: surge-dynamic (``surge_dynamic.py``), wake (``wake.py``),
idle-memory (``idle_memory.py``); asgi (``asgi_models.py``: the heavy app
over ASGI, spawn time and memory of smart, direct and stock gunicorn with
the same worker class, uvicorn-worker's; a ``--quick`` run measures only
smart-asgi and says so); growth (``growth.py``: spawn time and PSS of a
synthetic app of 100 MiB to 1 GiB with 1 to 32 workers, its chart in
``benchmarks-growth.png``).  uWSGI variants run
where ``pyuwsgi`` imports; the overhead piece runs where ``wrk`` is found
(a full run installs it with apt-get when it can, ``--no-install`` not).
Whatever is skipped is said so in the output and in the report.

The report (``benchmarks.md``) and the chart (``benchmarks.png``) go to
``--out-dir`` (default ``docs/`` for a full run, a new temp dir for
``--quick``); ``--json PATH`` also writes every raw figure.  Exit status: 0
when every sample succeeded, 1 when some failed (the report is written all
the same and lists them), 2 for usage errors.  Targets that are missed do
not change the exit status: they are results.
"""

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
import traceback

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import (asgi_models, boot_time, growth, growth_report, harness,  # noqa: E402
                        idle_memory, memory_usage, overhead, report, spawn_time, surge,
                        surge_dynamic, wake)

PIECES = ["spawn", "boot", "memory", "overhead", "surge", "surge-dynamic", "wake", "idle-memory",
          "asgi", "growth"]

# Sizes of a full run and of a --quick smoke run.
FULL = {
    "spawn": {"variants": ["smart", "smart-spare", "smart-spare-warm", "direct", "stock",
                           "stock-preload", "fork-floor",
                           "uwsgi", "uwsgi-lazy"], "runs": 5, "warmup": 0, "breakdown": 3},
    "boot": {"variants": ["smart", "stock-preload", "direct", "stock", "uwsgi",
                          "uwsgi-lazy"], "runs": 5, "workers": 4},
    "memory": {"variants": ["smart", "smart-no-freeze", "smart-warm", "smart-refork", "smart-ksm",
                            "smart-refork-ksm", "direct", "stock",
                            "stock-preload", "stock-preload-freeze",
                            "stock-preload-freeze-collect", "uwsgi", "uwsgi-lazy"],
               "runs": 1, "workers": 8, "requests": 2000},
    # requests/s: 10 cycles of 2 s bursts; CPU per request: 20 rounds of 2000 requests over 4
    # connections from one wrk thread (overhead.py's docstring says why); then 2000 requests per
    # server under strace -c -f (where strace is installed): system calls per request
    "overhead": {"configs": list(overhead.CONFIGS), "runs": 10, "duration": 2.0,
                 "warmup": 1.0, "workers": 4, "cpu_rounds": 30, "cpu_requests": 2000,
                 "cpu_connections": 4, "syscalls": 2000,
                 "in_process": {"repeats": 20}},
    "surge": {"variants": ["smart", "direct", "stock-preload"], "runs": 5, "target": 8},
    "surge-dynamic": {"variants": ["smart-dynamic", "direct-dynamic", "uwsgi-cheaper-backlog",
                                   "uwsgi-cheaper-busyness", "smart"],
                      "runs": 3, "clients": 8, "pre": 1.0, "window": 5.0},
    "wake": {"parts": wake.PARTS, "runs": 3, "cycles": 2},
    "idle-memory": {"configs": idle_memory.DEFAULT_CONFIGS, "runs": 1, "apps": 3,
                    "requests": 200},
    # the heavy app over ASGI (asgi_models.py): spawn rounds, memory rounds
    "asgi": {"variants": list(asgi_models.DEFAULT_VARIANTS), "runs": 5, "memory_runs": 1,
             "workers": 8, "requests": 500},
    # cost growth (growth.py): a synthetic app of 100 MiB, 300 MiB, 1 GiB; spawn
    # rounds; memory of 1, 8, 32 idle workers (about 5 min on a busy 2-core machine)
    "growth": {"sizes": [100, 300, 1024], "workers": [1, 8, 32], "runs": 3,
               "spawn_variants": growth.SPAWN_VARIANTS,
               "memory_variants": growth.MEMORY_VARIANTS},
}
QUICK = {
    "spawn": {"variants": ["smart", "direct", "stock-preload", "fork-floor", "uwsgi"],
              "runs": 1, "warmup": 0, "breakdown": 1},
    "boot": {"variants": ["smart", "stock-preload", "uwsgi"], "runs": 1, "workers": 2},
    "memory": {"variants": ["smart", "direct", "stock-preload-freeze"], "runs": 1,
               "workers": 2, "requests": 20},
    "overhead": {"configs": ["smart-sync", "stock-sync"], "runs": 2, "duration": 1.0,
                 "warmup": 0.0, "workers": 2, "cpu_rounds": 2, "cpu_requests": 300,
                 "cpu_connections": 2, "in_process": {"repeats": 1}},
    "surge": {"variants": ["smart", "direct"], "runs": 1, "target": 3},
    # the dynamic pool's pieces, as small as they go: smart only, 3 clients for 0.6 s
    # (no pause before the first probe: the step may start with 2 workers);
    # one wake of each kind, its references taken from the spawn piece and the app's
    # import measured at the start of the run; two apps, two configurations
    "surge-dynamic": {"variants": ["smart-dynamic", "smart"], "runs": 1, "clients": 3,
                      "pre": 0.3, "window": 0.6, "quiet": 0.0},
    "wake": {"parts": wake.WAKE_VARIANTS, "runs": 1, "cycles": 1},
    "idle-memory": {"configs": ["zero-preloaders", "one-worker"], "runs": 1, "apps": 2,
                    "requests": 20},
    # ASGI: all four variants once would add about 30 s (two servers that import the
    # app in every worker); the smoke run spawns and measures smart-asgi only
    "asgi": {"variants": ["smart-asgi"], "runs": 1, "memory_runs": 1, "workers": 2,
             "requests": 20,
             "skipped": "--quick runs smart-asgi only (one spawn, 2 workers' memory): "
                        "direct-asgi, stock-asgi and stock-preload-asgi are skipped to keep "
                        "the smoke run short, so the ASGI targets are n/a"},
    # cost growth: one small size, one spawn each of smart and stock --preload, smart's
    # memory at 1 and 2 workers (about 10 s; the bare fork floor and the recipe are left out)
    "growth": {"sizes": [20], "workers": [1, 2], "runs": 1,
               "spawn_variants": ["smart", "stock-preload"], "memory_variants": ["smart"]},
}


def run_piece(name, plan, env, tmpdir, done=None):
    """Run one piece with the plan's sizes; returns its result dict.  ``done``:
    the results of the pieces run before it (wake takes its references from
    the spawn piece and the app's import when its plan does not measure them)."""
    app = harness.HEAVY_APP
    common = {"isolate_stock": env["isolate_stock"], "show_commands": env["show_commands"]}
    if name == "spawn":
        variants = env["filter"](plan["variants"])
        opts = spawn_time.Options(app=app, **common)
        return spawn_time.run(variants, plan["runs"], plan["warmup"], opts, tmpdir,
                              breakdown_runs=plan.get("breakdown", 0))
    if name == "boot":
        variants = env["filter"](plan["variants"])
        opts = boot_time.Options(app=app, workers=plan["workers"], **common)
        return boot_time.run(variants, plan["runs"], opts, tmpdir)
    if name == "memory":
        variants = env["filter"](plan["variants"])
        opts = memory_usage.Options(app=app, workers=plan["workers"],
                                    requests=plan["requests"], **common)
        return memory_usage.run(variants, plan["runs"], opts, tmpdir)
    if name == "overhead":
        if env["wrk"] is None:
            return {"piece": "overhead", "skipped": env["wrk_message"]}
        opts = overhead.Options(workers=plan["workers"], duration=plan["duration"],
                                warmup=plan["warmup"], cpu_rounds=plan.get("cpu_rounds", 0),
                                cpu_requests=plan.get("cpu_requests", 2000),
                                cpu_connections=plan.get("cpu_connections", 4),
                                syscalls=plan.get("syscalls", 0), **common)
        result = overhead.run(plan["runs"], env["wrk"], opts, tmpdir, plan["configs"])
        if plan.get("in_process"):  # the request path's own code, plugin against gunicorn, in this process
            result.update(overhead.in_process_costs(**plan["in_process"]))
        return result
    if name == "surge":
        opts = surge.Options(app=app, target=plan["target"], **common)
        return surge.run(env["filter"](plan["variants"]), plan["runs"], opts, tmpdir)
    if name == "surge-dynamic":
        opts = surge_dynamic.Options(app=app, clients=plan["clients"], pre=plan["pre"],
                                     window=plan["window"],
                                     quiet_before_probe=plan.get(
                                         "quiet", surge_dynamic.QUIET_BEFORE_PROBE), **common)
        return surge_dynamic.run(env["filter"](plan["variants"]), plan["runs"], opts, tmpdir)
    if name == "wake":
        opts = wake.Options(app=app, cycles=plan["cycles"], **common)
        return wake.run(plan["runs"], opts, tmpdir, parts=plan["parts"],
                        fallback=wake.fallback_references((done or {}).get("spawn"),
                                                          env.get("app_import_s")))
    if name == "idle-memory":
        opts = idle_memory.Options(app=app, apps=plan["apps"], requests=plan["requests"], **common)
        return idle_memory.run(plan["configs"], plan["runs"], opts, tmpdir)
    if name == "asgi":
        opts = asgi_models.Options(workers=plan["workers"], requests=plan["requests"], **common)
        return asgi_models.run(plan["variants"], plan["runs"], opts, tmpdir,
                               memory_runs=plan["memory_runs"])
    if name == "growth":
        opts = growth.Options(sizes=plan["sizes"], workers=plan["workers"], runs=plan["runs"],
                              spawn_variants=env["filter"](plan["spawn_variants"]),
                              memory_variants=env["filter"](plan["memory_variants"]), **common)
        return growth.run(opts, tmpdir)
    raise ValueError(name)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run all benchmarks of gunicorn-smartspawn and write the report "
                    "(markdown + PNG chart).")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: every piece once with tiny numbers (about 85 s); "
                             "writes to a temp dir unless --out-dir is given")
    parser.add_argument("--out-dir", help="where benchmarks.md and benchmarks.png go "
                                          "(default: docs/ for a full run)")
    parser.add_argument("--json", metavar="PATH", help="also write all raw results as JSON")
    parser.add_argument("--pieces", default=",".join(PIECES),
                        help="comma-separated subset of: %s" % ", ".join(PIECES))
    parser.add_argument("--no-uwsgi", action="store_true", help="skip the uWSGI variants")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get install wrk when it is missing")
    parser.add_argument("--no-isolate-stock", dest="isolate_stock", action="store_false",
                        help="run stock gunicorn with the plugin's .pth hook active")
    parser.add_argument("--show-commands", action="store_true",
                        help="print every server command line")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the servers' logs (their directory is printed)")
    args = parser.parse_args(argv)
    pieces = [p.strip() for p in args.pieces.split(",") if p.strip()]
    if not pieces or any(p not in PIECES for p in pieces):
        parser.error("--pieces: choose from %s" % ", ".join(PIECES))
    plan = QUICK if args.quick else FULL
    out_dir = args.out_dir or (tempfile.mkdtemp(prefix="benchmarks-quick-") if args.quick
                               else os.path.join(harness.REPO_ROOT, "docs"))
    os.makedirs(out_dir, exist_ok=True)

    started = time.monotonic()
    started_wall = datetime.datetime.now(datetime.timezone.utc)
    meta = harness.machine_facts()
    meta.update({"mode": "quick" if args.quick else "full", "plan": plan,
                 "pieces": pieces, "started": started_wall.isoformat(timespec="seconds"),
                 "isolate_stock": args.isolate_stock, "loadavg_start": harness.loadavg()})
    print("benchmarks (%s): Python %s, gunicorn %s, gunicorn-smartspawn %s, %s CPUs (%s)"
          % (meta["mode"], meta["python"], meta["gunicorn"], meta["gunicorn_smartspawn"],
             meta["cpus"], meta["cpu_model"]))

    skipped = {}
    if args.no_uwsgi:
        uwsgi_ok, uwsgi_msg = False, "skipped (--no-uwsgi)"
    else:
        uwsgi_ok, uwsgi_msg = harness.uwsgi_available()
        if not uwsgi_ok:
            uwsgi_msg = "pyuwsgi is not installed or does not import here (%s)" % uwsgi_msg
    meta["uwsgi"] = {"available": uwsgi_ok,
                     "message": ("pyuwsgi %s" % uwsgi_msg) if uwsgi_ok else uwsgi_msg}
    if not uwsgi_ok:
        skipped["uwsgi"] = "uWSGI variants skipped: %s" % uwsgi_msg
        print(skipped["uwsgi"])
    if "asgi" in pieces:
        asgi_ok, asgi_msg = asgi_models.available()
        if not asgi_ok:
            skipped["asgi"] = "ASGI piece skipped: %s" % asgi_msg
        elif plan["asgi"].get("skipped"):
            skipped["asgi"] = "ASGI piece: %s" % plan["asgi"]["skipped"]
        if "asgi" in skipped:
            print(skipped["asgi"])
    wrk, wrk_message = (None, "not needed")
    if "overhead" in pieces:
        wrk, wrk_message = overhead.ensure_wrk(install=not args.quick and not args.no_install)
        print(wrk_message)
        if wrk is None:
            skipped["overhead"] = wrk_message
    meta["wrk"] = {"path": wrk, "version": overhead.wrk_version(wrk) if wrk else None,
                   "message": wrk_message}

    def keep(variants):
        return [v for v in variants
                if uwsgi_ok or harness.VARIANTS[v].kind != "uwsgi"]

    env = {"filter": keep, "wrk": wrk, "wrk_message": wrk_message,
           "isolate_stock": args.isolate_stock, "show_commands": args.show_commands}
    meta["app_import_s"] = env["app_import_s"] = harness.prepare_app(harness.HEAVY_APP)
    print("heavy app import in a fresh interpreter: %.2f s" % meta["app_import_s"])
    sys.stdout.flush()

    results = {"meta": meta, "skipped": skipped, "pieces": {}}
    tmpdir = tempfile.mkdtemp(prefix="benchmarks-logs-")
    failed = False
    try:
        for name in pieces:
            print("\n== %s" % name)
            sys.stdout.flush()
            load_before = harness.loadavg()
            try:
                res = run_piece(name, plan[name], env, tmpdir, results["pieces"])
            except Exception as e:  # a bug in a piece must not lose the others
                traceback.print_exc()
                res = {"piece": name, "error": "%s: %s" % (type(e).__name__, e)}
            res["loadavg"] = [load_before, harness.loadavg()]
            results["pieces"][name] = res
            if res.get("failures") or res.get("error"):
                failed = True
            if "seconds" in res:
                print("(%s took %.0f s)" % (name, res["seconds"]))
    finally:
        leftovers = harness.leftover_processes()
        if leftovers:
            print("LEFTOVER processes of this run (killed now): %s" % leftovers)
            for pid in leftovers:
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
        results["leftovers"] = leftovers
        if args.keep_logs:
            print("server logs kept in %s" % tmpdir)
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)

    meta["seconds"] = time.monotonic() - started
    meta["loadavg_end"] = harness.loadavg()
    md_path = os.path.join(out_dir, "benchmarks.md")
    png_path = os.path.join(out_dir, "benchmarks.png")
    chart_error = report.write_chart(results, png_path)
    if chart_error:
        print("chart not written: %s" % chart_error)
        results["chart_error"] = chart_error
    if report.piece(results, "growth"):
        growth_error = growth_report.write_chart(
            results, os.path.join(out_dir, growth_report.CHART))
        if growth_error:
            print("growth chart not written: %s" % growth_error)
        results["growth_chart"] = growth_error or growth_report.CHART
    report.write_markdown(results, md_path, chart=None if chart_error else "benchmarks.png")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    print()
    print(report.targets_text(results))
    print("\nwrote %s%s (%.1f min)" % (md_path, "" if chart_error else " and " + png_path,
                                      meta["seconds"] / 60))
    if failed or leftovers:
        print("some samples FAILED (see above and the report)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
