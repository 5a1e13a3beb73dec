"""Memory of a whole server after every worker has served its share of requests.

    python benchmarks/memory_usage.py [--runs N] [--workers 8] [--requests 2000]
                                      [--variants a,b,...]

What one sample measures
------------------------
1. Start the server with W workers (default 8) on the heavy app; wait until
   W worker processes exist and the server is idle; read the memory of the
   master and every process below it ("after boot").
2. Drive requests from C client threads (default 2 x W), each sending one
   request per new connection, back to back, a fixed mix that looks like a
   real service's traffic: 10 % product pages (ORM queries, a template,
   pandas look-ups), 5 % the index page, 5 % a JSON stats page, 40 % look-ups
   in a 150,000-entry in-memory customer table, 40 % a health check.
   heavy_app puts the answering pid in every response (``X-Worker-Pid``),
   so requests are counted per worker; the drive stops once every one of
   the W workers has served at least R requests (default 2,000).  With more
   clients than workers, every worker is busy all the time and the shares
   come out nearly even (the table shows the least and the most served).
3. Wait until the server is idle again and read the memory of every process
   ("after the requests").  heavy_app also reports in every response how
   many full (generation 2) collections the worker has run
   (``X-GC-Full-Collections``); the sample records it per worker.
4. Make every worker run one full ``gc.collect()`` (``GET
   /_bench/hold?collect=1``: the worker collects, answers with its pid and is
   then kept busy, so the next such request goes to another worker), wait
   until the server is idle and read the memory once more ("after a full
   collection").  This is what ``gc.freeze()`` is for: a full collection
   writes to the header of every object it examines, and unfrozen objects
   inherited from the preloader or master sit in shared pages.

Memory comes from the plugin's own API, ``gunicorn_smartspawn.control.memory``
(``process_tree(master_pid)`` and ``memory_report(...)``, which read
``/proc/PID/smaps_rollup``):

- total PSS: proportional set size summed over master, preloader (smart
  only) and workers: what the server really costs, shared pages divided
  among the processes that share them;
- per-worker private: private clean + dirty of each worker, the memory its
  exit would free (the cost of one more worker).
"""

import argparse
import collections
import json
import os
import random
import sys
import threading
import time
from dataclasses import dataclass

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness, ksm  # noqa: E402
from benchmarks.harness import SampleError  # noqa: E402

DEFAULT_VARIANTS = [
    "smart", "smart-no-freeze", "smart-warm", "smart-refork", "smart-ksm", "smart-refork-ksm", "direct",
    "stock", "stock-preload",
    "stock-preload-freeze", "stock-preload-freeze-collect",
]
# (numerator, denominator) of the ratios of total PSS after the requests
RATIOS = [
    ("smart", "direct"),
    ("smart", "stock-preload-freeze"),
    ("smart", "stock-preload"),
    ("smart-no-freeze", "smart"),
    ("smart-warm", "smart"),
    ("smart-refork", "smart"),
    ("smart-refork", "stock-preload-freeze"),
    ("smart-ksm", "stock-preload-freeze"),
    ("smart-refork-ksm", "stock-preload-freeze"),
    ("smart-ksm", "smart"),
    ("stock-preload-freeze-collect", "stock-preload-freeze"),
    ("stock-preload-freeze", "stock-preload"),
    ("stock-preload", "direct"),
    ("uwsgi", "smart"),
    ("uwsgi-lazy", "direct"),
]
MIX_DESCRIPTION = ("10 % product pages, 5 % index, 5 % stats JSON, 40 % customer "
                   "look-ups, 40 % health checks; one request per connection")
MB = 1024 * 1024


@dataclass
class Options:
    app: str = harness.HEAVY_APP
    workers: int = 8
    requests: int = 2000
    clients: int = 0  # 0: 2 x workers
    start_timeout: float = 120.0
    drive_timeout: float = 300.0
    isolate_stock: bool = True
    show_commands: bool = False
    # the request that runs gc.collect() in a worker and keeps it from accepting
    # (asgi_models.py: /_bench/block, which blocks an event loop)
    collect_path: str = "/_bench/hold?seconds=5&collect=1"


def request_paths(rng):
    """The request mix (see the module docstring), forever."""
    while True:
        r = rng.random()
        if r < 0.10:
            yield "/products/SKU-%05d/" % rng.randrange(240)
        elif r < 0.15:
            yield "/"
        elif r < 0.20:
            yield "/api/stats/"
        elif r < 0.60:
            yield "/api/customers/C%07d/" % rng.randrange(150_000)
        else:
            yield "/health"


def drive(port, expected, per_worker, clients, timeout):
    """Send requests until each pid in ``expected`` has answered ``per_worker``
    of them; returns {counts, total, seconds, errors, bad_status, complete}."""
    counts = collections.Counter()
    full_gcs = {}  # pid -> [first, last] count of full collections it reported
    lock = threading.Lock()
    stop = threading.Event()
    errors, bad = [], []

    def client(index):
        paths = request_paths(random.Random(1000 + index))
        while not stop.is_set():
            path = next(paths)
            headers = {}
            try:
                status, pid, _ = harness.get(port, path, timeout=30, headers_out=headers)
            except OSError as e:
                errors.append("%s: %r" % (path, e))
                if len(errors) > 50:
                    stop.set()
                time.sleep(0.01)
                continue
            if status != 200:
                bad.append((path, status))
                if len(bad) > 50:
                    stop.set()
            with lock:
                counts[pid] += 1
                if "x-gc-full-collections" in headers:
                    n = int(headers["x-gc-full-collections"])
                    seen = full_gcs.setdefault(pid, [n, n])
                    seen[0], seen[1] = min(seen[0], n), max(seen[1], n)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    complete = False
    try:
        while not stop.is_set():
            time.sleep(0.05)
            with lock:
                done = all(counts[p] >= per_worker for p in expected)
            if done:
                complete = True
                break
            if time.monotonic() - started > timeout:
                break
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=35)
    seconds = time.monotonic() - started
    # full collections during the drive (the counter includes those the
    # process inherited from its parent's import)
    return {"counts": dict(counts),
            "full_gcs": {pid: last - first for pid, (first, last) in full_gcs.items()},
            "total": sum(counts.values()), "seconds": seconds,
            "errors": errors[:10], "n_errors": len(errors), "bad_status": bad[:10],
            "n_bad_status": len(bad), "complete": complete}


def collect_in_every_worker(server, workers, timeout,
                            path="/_bench/hold?seconds=5&collect=1"):
    """Make each worker run one full ``gc.collect()``: hold requests with
    ``collect=1``, one at a time, each worker kept busy so that the next
    request goes to another; returns {pid: objects collected}."""
    holds, collected = [], {}
    try:
        for _ in workers:
            held = harness.open_hold(server.port, timeout, path=path)
            if held is None:
                raise SampleError("%s: no hold endpoint" % server.name, server.log())
            holds.append(held[0])
            collected[held[1]] = None
    finally:
        for sock in holds:
            sock.close()
    if sorted(collected) != sorted(workers):
        raise SampleError("%s: gc.collect() ran in %s, workers are %s"
                          % (server.name, sorted(collected), workers), server.log())
    return collected


def snapshot(server, workers):
    """The memory report of the server's process tree, with roles fixed up:
    the root is the master, ``workers`` are workers (uWSGI's titles say
    nothing), plugin preloaders keep their role."""
    from gunicorn_smartspawn.control import memory

    tree = memory.process_tree(server.pid)
    report = memory.memory_report(tree)
    procs = []
    for p in report["processes"]:
        role = p["role"]
        if p["pid"] == server.pid:
            role = "master"
        elif p["pid"] in workers:
            role = "worker"
        elif role == "worker":
            role = "other"  # a worker we did not drive (should not happen)
        procs.append(dict(p, role=role))

    def by_role(role, key):
        return [p[key] for p in procs if p["role"] == role]

    return {
        "total_pss": report["totals"]["pss"],
        "total_rss": report["totals"]["rss"],
        "total_private": report["totals"]["private"],
        "saved_by_sharing": report["saved_by_sharing"],
        "master_pss": sum(by_role("master", "pss")),
        "preloader_pss": sum(by_role("preloader", "pss")),
        "other_pss": sum(by_role("other", "pss")),
        "worker_pss": harness.summarize(by_role("worker", "pss")),
        "worker_private": harness.summarize(by_role("worker", "private")),
        "worker_shared": harness.summarize(by_role("worker", "shared")),
        "n_workers": len(by_role("worker", "pss")),
        "processes": procs,
    }


def refork_first(server, workers, clients, timeout):
    """A refork variant: the request mix until a worker was promoted to preloader and every worker
    is one it forked (``refork_after``); the new workers' pids. They then serve the measured
    requests like any variant's (the requests that made the refork are not counted)."""
    stop = threading.Event()

    def client(index):
        paths = request_paths(random.Random(2000 + index))
        while not stop.is_set():
            try:
                harness.get(server.port, next(paths), timeout=30)
            except OSError:
                time.sleep(0.01)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = server.worker_pids()
            if " refork 1: " in server.log() and len(now) == len(workers) and not set(now) & set(workers) \
                    and len(server.preloader_pids()) == 1:
                return now
        raise SampleError("no refork within %.0f s (workers %s)" % (timeout, server.worker_pids()), server.log())
    finally:
        stop.set()
        for t in threads:
            t.join(35)


def memory_sample(variant, opts, tmpdir):
    if not harness.VARIANTS[variant].ksm:
        return _memory_sample(variant, opts, tmpdir, None)
    with ksm.Daemon() as daemon:
        return _memory_sample(variant, opts, tmpdir, daemon)


def _memory_sample(variant, opts, tmpdir, daemon):
    """One sample; ``daemon`` (the ksm variants): KSM has converged before each reading."""
    converged = []

    def settle():
        server.settle()
        if daemon is not None:
            converged.append(daemon.converge())

    server = harness.Server(harness.VARIANTS[variant], opts.app, workers=opts.workers,
                            tmpdir=tmpdir, isolate_stock=opts.isolate_stock)
    if opts.show_commands:
        print("  $ " + server.shown_command())
    try:
        t0 = time.monotonic()
        server.start()
        server.wait_ready(opts.start_timeout)
        workers = server.wait_workers(opts.workers, opts.start_timeout - (time.monotonic() - t0))
        if len(workers) != opts.workers:
            raise SampleError("%s: %d workers, expected %d" % (variant, len(workers), opts.workers),
                              server.log())
        clients = opts.clients or 2 * opts.workers
        if harness.VARIANTS[variant].refork:
            workers = refork_first(server, workers, clients, opts.drive_timeout)
        settle()
        boot = snapshot(server, workers)
        load = drive(server.port, workers, opts.requests, clients, opts.drive_timeout)
        server.check_alive("serving")
        strangers = sorted(set(load["counts"]) - set(workers))
        if not load["complete"] or strangers:
            raise SampleError(
                "%s: drive incomplete (counts %s, unknown pids %s, %d errors %s, %d bad %s)"
                % (variant, load["counts"], strangers, load["n_errors"], load["errors"][:3],
                   load["n_bad_status"], load["bad_status"][:3]), server.log())
        if server.worker_pids() != workers:
            raise SampleError("%s: workers changed during the drive: %s -> %s"
                              % (variant, workers, server.worker_pids()), server.log())
        settle()
        after = snapshot(server, workers)
        collect_in_every_worker(server, workers, timeout=60, path=opts.collect_path)
        settle()
        collected = snapshot(server, workers)
        server.check_undisturbed([])
        served = [load["counts"][p] for p in workers]
        full_gcs = [load["full_gcs"].get(p) for p in workers]
        return {"boot": boot, "after": after, "collected": collected,
                "served": harness.summarize(served),
                "full_gcs": full_gcs if None not in full_gcs else None,
                "requests_total": load["total"], "drive_seconds": load["seconds"],
                "requests_per_second": load["total"] / load["seconds"],
                "n_bad_status": load["n_bad_status"], "n_errors": load["n_errors"],
                "clients": clients, "master_pid": server.pid,
                "ksm": converged[1] if len(converged) > 1 else None}
    finally:
        server.stop()


def _gc_range(full_gcs):
    if not full_gcs:
        return "?"
    lo, hi = min(full_gcs), max(full_gcs)
    return str(lo) if lo == hi else "%d-%d" % (lo, hi)


def run(variants, runs, opts=None, tmpdir=None):
    """Measure ``variants`` for ``runs`` interleaved rounds; the piece's result dict."""
    opts = opts or Options()
    started = time.monotonic()
    skipped = {}
    if any(harness.VARIANTS[v].ksm for v in variants) and ksm.unavailable():
        skipped = {v: ksm.unavailable() for v in variants if harness.VARIANTS[v].ksm}
        variants = [v for v in variants if v not in skipped]
        for v, why in skipped.items():
            print("[memory] %s skipped: %s" % (v, why))

    def describe(prefix, r):
        a, b, c = r["after"], r["boot"], r["collected"]
        print("%s total PSS %6.1f MiB (boot %6.1f, after gc.collect() %6.1f), worker "
              "private median %5.1f MiB (boot %5.1f, after gc.collect() %5.1f); "
              "%d requests in %.1f s, %d-%d per worker, full collections per worker "
              "during them: %s"
              % (prefix, a["total_pss"] / MB, b["total_pss"] / MB, c["total_pss"] / MB,
                 a["worker_private"]["median"] / MB, b["worker_private"]["median"] / MB,
                 c["worker_private"]["median"] / MB,
                 r["requests_total"], r["drive_seconds"], r["served"]["min"],
                 r["served"]["max"], _gc_range(r["full_gcs"])))
        return {"total_pss": a["total_pss"], "worker_private": a["worker_private"]["median"]}

    rounds, failures, detail = harness.interleaved_rounds(
        "memory", variants, runs, lambda variant, tmp: memory_sample(variant, opts, tmp), describe,
        tmpdir, width=28)
    summary = {}
    for v in variants:
        rs = detail[v]
        if not rs:
            summary[v] = None
            continue
        summary[v] = {
            "total_pss": harness.summarize([r["after"]["total_pss"] for r in rs]),
            "total_pss_boot": harness.summarize([r["boot"]["total_pss"] for r in rs]),
            "worker_private": harness.summarize([r["after"]["worker_private"]["median"] for r in rs]),
            "worker_private_boot": harness.summarize([r["boot"]["worker_private"]["median"] for r in rs]),
            "total_pss_collected": harness.summarize([r["collected"]["total_pss"] for r in rs]),
            "worker_private_collected": harness.summarize(
                [r["collected"]["worker_private"]["median"] for r in rs]),
            "full_gcs": _gc_range([n for r in rs for n in (r["full_gcs"] or [])]),
            "worker_private_min": min(r["after"]["worker_private"]["min"] for r in rs),
            "worker_private_max": max(r["after"]["worker_private"]["max"] for r in rs),
            "master_pss": harness.summarize([r["after"]["master_pss"] for r in rs]),
            "preloader_pss": harness.summarize([r["after"]["preloader_pss"] for r in rs]),
            "total_rss": harness.summarize([r["after"]["total_rss"] for r in rs]),
            "served_min": min(r["served"]["min"] for r in rs),
            "served_max": max(r["served"]["max"] for r in rs),
            "requests_per_second": harness.summarize([r["requests_per_second"] for r in rs]),
            "ksm": [r["ksm"] for r in rs if r.get("ksm")],
        }
    ratios = {}
    for a, b in RATIOS:
        if a in variants and b in variants:
            s = harness.paired_ratio(rounds, a, b, "total_pss")
            if s:
                ratios["%s/%s" % (a, b)] = s
    return {"piece": "memory", "unit": "bytes", "variants": variants, "skipped_variants": skipped,
            "workers": opts.workers, "requests": opts.requests, "rounds": rounds,
            "summary": summary, "ratios": ratios, "failures": failures, "runs": detail,
            "notes": [
                "%d workers; each served at least %d requests (%s) from %d client "
                "threads; memory read after the server was idle again"
                % (opts.workers, opts.requests, MIX_DESCRIPTION, opts.clients or 2 * opts.workers),
                "total PSS = master + preloader (smart) + workers, from "
                "gunicorn_smartspawn.control.memory (smaps_rollup); per-worker private = "
                "private clean + dirty of one worker (median over the workers)",
                "ratios are of total PSS after the requests, computed round by round",
                "then every worker runs one full gc.collect() (a hold request with "
                "collect=1, each worker kept busy so that the next goes to another), "
                "the server settles and memory is read again: what a worker's first "
                "full collection, which comes sooner or later, does to the sharing",
                "the ksm variants (--ksm) run with the kernel's KSM daemon started for the "
                "sample (it needs root) and, before each reading, scanning fast until %d full "
                "scans have passed: the steady state the default rate reaches in minutes; "
                "the machine's KSM settings are restored after each sample" % ksm.SCANS,
            ],
            "seconds": time.monotonic() - started}


def print_table(result):
    print()
    print("%-30s %10s %10s %12s %12s %11s" % (
        "variant", "PSS MiB", "boot MiB", "priv/wkr MiB", "boot priv MiB", "served"))
    for v in result["variants"]:
        s = result["summary"][v]
        if not s:
            print("%-30s %10s" % (v, "-"))
            continue
        print("%-30s %10.1f %10.1f %12.1f %12.1f %5d-%5d" % (
            v, s["total_pss"]["median"] / MB, s["total_pss_boot"]["median"] / MB,
            s["worker_private"]["median"] / MB, s["worker_private_boot"]["median"] / MB,
            s["served_min"], s["served_max"]))
    for k, s in result["ratios"].items():
        print("  %-45s %6.2fx" % (k, s["median"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000, help="per worker")
    parser.add_argument("--clients", type=int, default=0, help="default 2 x workers")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--show-commands", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if any(v not in harness.VARIANTS for v in variants) or args.runs < 1:
        parser.error("bad --variants or --runs")
    harness.prepare_app(harness.HEAVY_APP)
    result = run(variants, args.runs, Options(workers=args.workers, requests=args.requests,
                                              clients=args.clients,
                                              show_commands=args.show_commands))
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
