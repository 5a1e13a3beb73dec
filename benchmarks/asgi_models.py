"""The heavy app served over ASGI: spawn time and memory, smart vs the rest.

    python benchmarks/asgi_models.py [--runs N] [--memory-runs N] [--workers 8]
                                     [--requests 200] [--variants a,b,...]

The same import-heavy Django + pandas service as the other pieces, served
through Django's ASGI handler (``benchmarks.heavy_app.asgi:application``) by
one ASGI request model everywhere, ``harness.ASGI_WORKER``:
``uvicorn_worker.UvicornWorker`` when uvicorn-worker is installed (it runs on
gunicorn 23 too), else gunicorn's native ``asgi`` worker where gunicorn has
one.  Variants (``harness.VARIANTS``):

  smart-asgi          gunicorn -k smartspawn.Worker --spawn-method=smart
                          --smart-worker-class ASGI_WORKER
  direct-asgi         gunicorn -k smartspawn.Worker --spawn-method=direct
                          --smart-worker-class ASGI_WORKER
  stock-asgi          gunicorn -k ASGI_WORKER            (app imported per worker)
  stock-preload-asgi  gunicorn -k ASGI_WORKER --preload  (app imported in the master)

Two parts, each run round by round with the variants interleaved and the
order rotated every round (as every other piece):

spawn
    Exactly ``spawn_time.py``'s server sample (SIGTTIN -> first HTTP answer
    from a new worker pid), with one change: an ASGI worker serves many
    requests at once, so the "hold" that keeps the existing worker from
    accepting the probe is ``GET /_bench/block`` (heavy_app answers with its
    pid, then blocks that worker's event loop with a plain ``time.sleep``
    for at most 25 s, under gunicorn's 30 s worker timeout) instead of
    ``/_bench/hold`` (a sleep in a thread, which would not stop the loop from
    accepting).  The probe then waits in the listen backlog until the new
    worker's loop accepts it.

memory
    Exactly ``memory_usage.py``'s sample (total PSS of master + preloader +
    W workers after boot, after every worker served R requests of the same
    request mix, and after one full ``gc.collect()`` in every worker), with
    ``/_bench/block?collect=1`` as the request that runs the collection and
    keeps the worker from taking the next one.  Defaults: W = 8, R = 200.

Targets (issue): smart spawn at least 40x faster than direct (ratio
direct/smart of spawn time, round by round), smart total PSS at most 0.5x
direct (after the requests).  Exit status 1 if a sample failed, 2 for usage
errors; a missed target is a result.  ``python -m benchmarks`` runs this as
its "asgi" piece (skipped in ``--quick``, see ``run_all.py``).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness, memory_usage, spawn_time  # noqa: E402

DEFAULT_VARIANTS = list(harness.ASGI_VARIANTS)
BLOCK_PATH = "/_bench/block?seconds=20"
COLLECT_PATH = "/_bench/block?seconds=5&collect=1"
# (numerator, denominator) of the spawn-time and of the total-PSS ratios
SPAWN_RATIOS = [("direct-asgi", "smart-asgi"), ("stock-asgi", "smart-asgi"),
                ("smart-asgi", "stock-preload-asgi")]
MEMORY_RATIOS = [("smart-asgi", "direct-asgi"), ("smart-asgi", "stock-asgi"),
                 ("smart-asgi", "stock-preload-asgi")]
# (id, text, part, ratio key, goal, "min" | "max")
TARGETS = [
    ("asgi-spawn", "ASGI: smart spawn >= 40x faster than direct", "spawn",
     "direct-asgi/smart-asgi", 40.0, "min"),
    ("asgi-memory", "ASGI: smart total PSS of 8 workers <= 0.5x direct", "memory",
     "smart-asgi/direct-asgi", 0.5, "max"),
]
MB = 1024 * 1024


@dataclass
class Options:
    app: str = harness.HEAVY_ASGI_APP
    workers: int = 8
    requests: int = 200
    start_timeout: float = 120.0
    timeout: float = 60.0
    retries: int = 2
    isolate_stock: bool = True
    show_commands: bool = False


def available():
    """(True, worker class) or (False, why the ASGI variants cannot run)."""
    worker = harness.asgi_worker_class()
    if worker is None:
        return False, ("neither uvicorn-worker (pip install uvicorn-worker) nor a gunicorn "
                       "with the native asgi worker is installed")
    return True, worker


def _ratios(rounds, pairs, variants, key=None):
    out = {}
    for a, b in pairs:
        if a in variants and b in variants:
            s = harness.paired_ratio(rounds, a, b, key)
            if s:
                out["%s/%s" % (a, b)] = s
    return out


def run_spawn(variants, runs, opts, tmpdir, warmup=0):
    sopts = spawn_time.Options(app=opts.app, probe="hold", timeout=opts.timeout,
                               start_timeout=opts.start_timeout, retries=opts.retries,
                               isolate_stock=opts.isolate_stock,
                               show_commands=opts.show_commands, hold_path=BLOCK_PATH)

    def describe(prefix, r):
        print("%s %9.2f ms (new pid %s, parent %s, %d probe%s, %s%s)"
              % (prefix, r["ms"], r["new_pid"], r["new_ppid"], r["probes"],
                 "" if r["probes"] == 1 else "s", r["probe_mode"],
                 "" if r["settled"] else ", server never idle before the request"))
        return r["ms"]

    for w in range(warmup):  # untimed
        for variant in variants:
            try:
                spawn_time.server_sample(variant, sopts, tmpdir)
            except harness.SampleError as e:
                harness.report_failure("[asgi spawn warm-up %d] %s" % (w + 1, variant), e)
    rounds, failures, detail = harness.interleaved_rounds(
        "asgi spawn", variants, runs, lambda v, d: spawn_time.server_sample(v, sopts, d),
        describe, tmpdir, width=18)
    summary = {v: harness.summarize([r[v] for r in rounds if v in r]) for v in variants}
    return {"unit": "ms", "rounds": rounds, "summary": summary, "failures": failures,
            "ratios": _ratios(rounds, SPAWN_RATIOS, variants),
            "probe_modes": {v: sorted({r["probe_mode"] for r in detail[v]}) for v in variants}}


def run_memory(variants, runs, opts, tmpdir):
    mopts = memory_usage.Options(app=opts.app, workers=opts.workers, requests=opts.requests,
                                 start_timeout=opts.start_timeout,
                                 isolate_stock=opts.isolate_stock,
                                 show_commands=opts.show_commands, collect_path=COLLECT_PATH)

    def describe(prefix, r):
        a, b, c = r["after"], r["boot"], r["collected"]
        print("%s total PSS %6.1f MiB (boot %6.1f, after gc.collect() %6.1f), worker "
              "private median %5.1f MiB; %d requests in %.1f s, %d-%d per worker"
              % (prefix, a["total_pss"] / MB, b["total_pss"] / MB, c["total_pss"] / MB,
                 a["worker_private"]["median"] / MB, r["requests_total"],
                 r["drive_seconds"], r["served"]["min"], r["served"]["max"]))
        return {"total_pss": a["total_pss"], "total_pss_boot": b["total_pss"],
                "total_pss_collected": c["total_pss"],
                "worker_private": a["worker_private"]["median"]}

    rounds, failures, _detail = harness.interleaved_rounds(
        "asgi memory", variants, runs, lambda v, d: memory_usage.memory_sample(v, mopts, d),
        describe, tmpdir, width=18)
    summary = {}
    for v in variants:
        got = [r[v] for r in rounds if v in r]
        summary[v] = {k: harness.summarize([g[k] for g in got])
                      for k in ("total_pss", "total_pss_boot", "total_pss_collected",
                                "worker_private")} if got else None
    return {"unit": "bytes", "rounds": rounds, "summary": summary, "failures": failures,
            "ratios": _ratios(rounds, MEMORY_RATIOS, variants, "total_pss"),
            "workers": opts.workers, "requests": opts.requests}


def evaluate(result):
    """[{id, text, measured, status, value}] for TARGETS from this piece's result."""
    out = []
    for tid, text, part, key, goal, kind in TARGETS:
        s = (result.get(part) or {}).get("ratios", {}).get(key)
        if not s:
            out.append({"id": tid, "text": text, "measured": "not measured",
                        "status": "n/a", "value": None})
            continue
        v = s["median"]
        ok = v >= goal if kind == "min" else v <= goal
        out.append({"id": tid, "text": text, "status": "PASS" if ok else "MISS", "value": v,
                    "measured": "%s %.2fx [%.2f-%.2f] (n=%d)"
                                % (key, v, s["min"], s["max"], s["n"])})
    return out


def run(variants, runs, opts=None, tmpdir=None, memory_runs=None, warmup=0):
    """Both parts for ``variants``; the piece's result dict."""
    opts = opts or Options()
    ok, worker = available()
    if not ok:
        return {"piece": "asgi", "skipped": worker}
    started = time.monotonic()
    own_tmp = tmpdir is None
    tmpdir = tmpdir or tempfile.mkdtemp(prefix="asgi-")
    try:
        spawn = run_spawn(variants, runs, opts, tmpdir, warmup)
        memory = run_memory(variants, runs if memory_runs is None else memory_runs,
                            opts, tmpdir)
    finally:
        if own_tmp:
            shutil.rmtree(tmpdir, ignore_errors=True)
    result = {"piece": "asgi", "worker_class": worker, "app": opts.app,
              "variants": variants, "spawn": spawn, "memory": memory,
              "failures": spawn["failures"] + memory["failures"],
              "commands": {v: harness.Server(harness.VARIANTS[v], opts.app, workers=opts.workers,
                                             tmpdir="/tmp", port=8000).display_command()
                           for v in variants},
              "seconds": time.monotonic() - started}
    # flat, for report.py's target helpers: "spawn:a/b", "memory:a/b"
    result["ratios"] = {"%s:%s" % (part, k): v for part in ("spawn", "memory")
                        for k, v in result[part]["ratios"].items()}
    result["notes"] = notes(result, opts)
    result["targets"] = evaluate(result)
    return result


def notes(result, opts):
    return [
        "request model: `%s` in every variant; app `%s` (Django's ASGI handler; the views "
        "are synchronous and run in the worker's threads)" % (result["worker_class"], opts.app),
        "spawn: SIGTTIN -> first HTTP answer from a new worker pid, as in the spawn piece; "
        "the existing worker is kept from accepting by `%s`, which blocks its event loop "
        "(`/_bench/hold` only blocks a thread)" % BLOCK_PATH,
        "memory: total PSS of master + preloader + %d workers after every worker served "
        "at least %d requests of the memory piece's mix (also after boot and after one "
        "`gc.collect()` per worker, via `%s`)" % (opts.workers, opts.requests, COLLECT_PATH),
    ]


def print_table(result):
    if result.get("skipped"):
        print("asgi: skipped: %s" % result["skipped"])
        return
    print()
    print("ASGI request model: %s; app %s" % (result["worker_class"], result["app"]))
    print("%-19s %5s %11s %11s %11s   %5s %12s %12s %12s"
          % ("variant", "n", "spawn ms", "min", "max", "n", "PSS MiB", "min", "max"))
    for v in result["variants"]:
        s, m = result["spawn"]["summary"].get(v), result["memory"]["summary"].get(v)
        sp = ("%5d %11.2f %11.2f %11.2f" % (s["n"], s["median"], s["min"], s["max"])
              if s else "%5d %11s %11s %11s" % (0, "-", "-", "-"))
        if m:
            t = m["total_pss"]
            me = "%5d %12.1f %12.1f %12.1f" % (t["n"], t["median"] / MB, t["min"] / MB,
                                               t["max"] / MB)
        else:
            me = "%5d %12s %12s %12s" % (0, "-", "-", "-")
        print("%-19s %s   %s" % (v, sp, me))
    print()
    print("ratios, computed round by round (median [min-max]):")
    for part in ("spawn", "memory"):
        for k, s in result[part]["ratios"].items():
            print("  %-6s %-38s %8.2fx  [%.2f-%.2f]" % (part, k, s["median"], s["min"], s["max"]))
    print()
    print("targets:")
    for t in result["targets"]:
        print("  %-4s  %s: %s" % (t["status"], t["text"], t["measured"]))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="The heavy app over ASGI: spawn time of one worker and total PSS of "
                    "W workers, smart vs direct vs stock gunicorn (same worker class).")
    parser.add_argument("--runs", type=int, default=3, help="spawn rounds (default 3)")
    parser.add_argument("--memory-runs", type=int, default=None,
                        help="memory rounds (default: --runs)")
    parser.add_argument("--warmup", type=int, default=0,
                        help="untimed spawn samples of every variant first (default 0)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="comma-separated subset of: %s" % ", ".join(DEFAULT_VARIANTS))
    parser.add_argument("--workers", type=int, default=8, help="memory: workers (default 8)")
    parser.add_argument("--requests", type=int, default=200,
                        help="memory: requests each worker serves first (default 200)")
    parser.add_argument("--no-isolate-stock", dest="isolate_stock", action="store_false",
                        help="run the stock variants with the plugin's .pth import hook active")
    parser.add_argument("--show-commands", action="store_true",
                        help="print each server command line")
    parser.add_argument("--json", metavar="PATH", help="write all results as JSON")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in DEFAULT_VARIANTS]
    if unknown or not variants or args.runs < 1 or args.workers < 1:
        parser.error("bad --variants/--runs/--workers (unknown: %s)" % ", ".join(unknown))
    opts = Options(workers=args.workers, requests=args.requests,
                   isolate_stock=args.isolate_stock, show_commands=args.show_commands)
    meta = harness.machine_facts()
    meta["loadavg_start"] = harness.loadavg()
    print("asgi_models: Python %s, gunicorn %s, gunicorn-smartspawn %s, uvicorn-worker %s, "
          "%s CPUs, load average %s"
          % (meta["python"], meta["gunicorn"], meta["gunicorn_smartspawn"] or "-",
             harness.dist_version("uvicorn-worker") or "-", meta["cpus"], meta["loadavg_start"]))
    ok, why = available()
    if not ok:
        print("asgi: skipped: %s" % why)
        return 0
    meta["app_import_s"] = harness.prepare_app(opts.app)
    print("ASGI app import in a fresh interpreter: %.3f s" % meta["app_import_s"])
    sys.stdout.flush()
    try:
        result = run(variants, args.runs, opts, memory_runs=args.memory_runs,
                     warmup=args.warmup)
    finally:
        leftovers = harness.leftover_processes()
        for pid in leftovers:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
    meta["loadavg_end"] = harness.loadavg()
    print_table(result)
    if leftovers:
        print("LEFTOVER processes (killed): %s" % leftovers)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "asgi": result, "leftovers": leftovers}, f, indent=1,
                      default=str)
        print("results written to %s" % args.json)
    if result.get("failures") or leftovers:
        print("FAILED: %s" % ", ".join(sorted({f["variant"] for f in result["failures"]})))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
