"""Cost growth: spawn time and memory as the app gets bigger and the pool grows.

    python benchmarks/growth.py [--sizes 100,300,1024] [--workers 1,8,32] [--runs 3]
    python benchmarks/growth.py --update-docs    # also rewrite the "Cost growth" section of
                                                 # docs/benchmarks.md and docs/benchmarks-growth.png

The app is ``benchmarks.sized_app:application``: at import it allocates
``$SIZED_APP_MB`` MiB, half Python objects (dicts of small records), half
raw buffers (filled bytearray chunks and numpy arrays), all resident.

What one spawn sample measures (for each size): exactly what spawn_time.py
measures, with the same code (``spawn_time.server_sample`` and
``fork_sample``): from SIGTTIN to a server with one (held) worker until a
NEW worker pid has answered ``GET /health``; for ``smart`` (the preloader
forks) and stock ``gunicorn --preload`` (the master forks), side by side,
plus the bare ``os.fork()`` floor of a process holding the same app.  A
fork copies the parent's page tables, so all three are expected to grow
with the app's size, by about the same amount.

What one memory sample measures (for each size and variant): one server
started with 1 worker, grown with SIGTTIN one worker at a time (each
signal waits for the new worker's title) to each count of ``--workers``;
at each count, once the server is idle, the PSS of every process of the
tree (``gunicorn_smartspawn.control.memory``, smaps_rollup, as
memory_usage.py).  Variants: ``smart`` and stock ``gunicorn --preload``
with the ``gc.freeze()`` recipe (``conf/stock_gc_freeze.py``).  Workers are
idle: the figures are what forking costs before any request dirties a
page, i.e. the floor of what a worker adds; memory_usage.py measures what
requests and the collector add on the heavy app.  The process holding the
app (the preloader, or the stock master) is also read: its RSS and
VmPTE (page tables), the part of the app that every fork copies.

Samples run round by round, sizes in order, variants rotated every round.
Exit status 1 if a sample failed.  ``python -m benchmarks`` runs this as its
``growth`` piece (growth_report.py writes the section and the chart).
"""

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness, memory_usage, spawn_time  # noqa: E402
from benchmarks.harness import SampleError  # noqa: E402

SIZED_APP = "benchmarks.sized_app:application"
SIZE_ENV = "SIZED_APP_MB"
SPAWN_VARIANTS = ["smart", "stock-preload", "fork-floor"]
MEMORY_VARIANTS = ["smart", "stock-preload-freeze"]
SPAWN_RATIOS = [("smart", "stock-preload"), ("smart", "fork-floor"),
                ("stock-preload", "fork-floor")]
MiB = 1024 * 1024


@dataclass
class Options:
    sizes: list = dataclasses.field(default_factory=lambda: [100, 300, 1024])  # MiB
    workers: list = dataclasses.field(default_factory=lambda: [1, 8, 32])
    runs: int = 3  # spawn rounds; one memory sample per size and variant
    spawn_variants: list = dataclasses.field(default_factory=lambda: list(SPAWN_VARIANTS))
    memory_variants: list = dataclasses.field(default_factory=lambda: list(MEMORY_VARIANTS))
    isolate_stock: bool = True
    show_commands: bool = False

    def start_timeout(self, size):
        """The app's import runs at several MiB per second even on a busy machine."""
        return 60.0 + size / 10.0


# --------------------------------------------------------------------------
# spawn time


def spawn_phase(opts, tmpdir, failures):
    """[{size_mb, summary: {variant: ms summary}, ratios, import_s}] for every size."""
    samples = {s: {v: [] for v in opts.spawn_variants} for s in opts.sizes}
    rounds = {s: [] for s in opts.sizes}
    imports = {s: [] for s in opts.sizes}
    forks = {s: [] for s in opts.sizes}  # the plugin's own "forked in X ms" (smart)
    for rnd in range(opts.runs):
        for size in opts.sizes:
            sopts = spawn_time.Options(app=SIZED_APP, env={SIZE_ENV: str(size)},
                                       start_timeout=opts.start_timeout(size),
                                       isolate_stock=opts.isolate_stock,
                                       show_commands=opts.show_commands)
            this = {}
            for variant in harness.rotated(opts.spawn_variants, rnd):
                floor = harness.VARIANTS[variant].kind == "floor"
                sampler = spawn_time.fork_sample if floor else spawn_time.server_sample
                prefix = "[growth spawn %d/%d] %5d MiB %-13s" % (rnd + 1, opts.runs, size, variant)
                try:
                    r = harness.run_with_retries(
                        lambda f=sampler, v=variant, o=sopts: f(v, o, tmpdir), 2, prefix)
                except SampleError as e:
                    harness.report_failure(prefix, e)
                    failures.append({"variant": "%s, %d MiB (spawn)" % (variant, size),
                                     "round": rnd + 1, "error": str(e)})
                    continue
                print("%s %9.2f ms" % (prefix, r["ms"]))
                sys.stdout.flush()
                this[variant] = r["ms"]
                samples[size][variant].append(r["ms"])
                if floor and "import_s" in r:
                    imports[size].append(r["import_s"])
                if r.get("fork_ms") is not None:
                    forks[size].append(r["fork_ms"])
            rounds[size].append(this)
    out = []
    for size in opts.sizes:
        ratios = {}
        for a, b in SPAWN_RATIOS:
            s = harness.paired_ratio(rounds[size], a, b, None)
            if s:
                ratios["%s/%s" % (a, b)] = s
        out.append({"size_mb": size,
                    "summary": {v: harness.summarize(samples[size][v])
                                for v in opts.spawn_variants},
                    "ratios": ratios, "rounds": rounds[size],
                    "import_s": harness.summarize(imports[size]),
                    "smart_fork_ms": harness.summarize(forks[size])})
    return out


# --------------------------------------------------------------------------
# memory


def read_status(pid):
    """VmRSS and VmPTE of ``pid`` in bytes, from /proc/PID/status."""
    found = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmPTE"):
                found[key] = int(value.split()[0]) * 1024
    return {"rss": found.get("VmRSS"), "page_tables": found.get("VmPTE")}


def grow_to(server, n, timeout):
    """SIGTTIN one at a time (signals sent together may merge into one) until
    ``n`` workers exist; returns (worker pids, signals sent)."""
    workers = server.worker_pids()
    sent = 0
    while len(workers) < n:
        want = len(workers) + 1
        server.add_worker()
        sent += 1
        workers = server.wait_workers(want, timeout)
    return workers, sent


def point(n, snap):
    """What one snapshot of ``n`` idle workers keeps."""
    workers = [p for p in snap["processes"] if p["role"] == "worker"]
    return {"workers": n, "total_pss": snap["total_pss"], "master_pss": snap["master_pss"],
            "preloader_pss": snap["preloader_pss"], "other_pss": snap["other_pss"],
            "workers_pss": sum(p["pss"] for p in workers),
            "worker_pss": snap["worker_pss"]["median"],
            "worker_private": snap["worker_private"]["median"],
            "total_rss": snap["total_rss"]}


def memory_sample(variant, size, opts, tmpdir):
    server = harness.Server(harness.VARIANTS[variant], SIZED_APP, workers=1, tmpdir=tmpdir,
                            isolate_stock=opts.isolate_stock, env={SIZE_ENV: str(size)})
    timeout = opts.start_timeout(size)
    signals = 0
    try:
        if opts.show_commands:
            print("  $ " + server.shown_command())
        server.start()
        server.wait_ready(timeout)
        server.wait_workers(1, timeout)
        points = []
        for n in sorted(opts.workers):
            workers, sent = grow_to(server, n, timeout)
            signals += sent
            if len(workers) != n:
                raise SampleError("%s: %d workers, expected %d" % (variant, len(workers), n),
                                  server.log())
            server.settle()
            points.append(point(n, memory_usage.snapshot(server, workers)))
        holders = server.preloader_pids() or [server.pid]
        holder = read_status(holders[0])
        server.check_undisturbed(["ttin"] * signals)
        return {"points": points, "holder": holder,
                "holder_role": "preloader" if server.variant.plugin else "master"}
    finally:
        server.stop()


def memory_phase(opts, tmpdir, failures):
    """[{size_mb, variants: {variant: sample or None}}] for every size."""
    out = []
    for i, size in enumerate(opts.sizes):
        entry = {"size_mb": size, "variants": {}}
        for variant in harness.rotated(opts.memory_variants, i):
            prefix = "[growth memory] %5d MiB %-21s" % (size, variant)
            try:
                r = harness.run_with_retries(
                    lambda v=variant, n=size: memory_sample(v, n, opts, tmpdir), 2, prefix)
            except SampleError as e:
                harness.report_failure(prefix, e)
                failures.append({"variant": "%s, %d MiB (memory)" % (variant, size),
                                 "round": 1, "error": str(e)})
                entry["variants"][variant] = None
                continue
            add_marginals(r)
            print("%s holder RSS %6.0f MiB, page tables %5.2f MiB; total PSS %s MiB; "
                  "added per worker %s MiB" % (
                      prefix, r["holder"]["rss"] / MiB, r["holder"]["page_tables"] / MiB,
                      " / ".join("%d: %.0f" % (p["workers"], p["total_pss"] / MiB)
                                 for p in r["points"]),
                      " / ".join("%.1f" % (p["added_per_worker"] / MiB)
                                 for p in r["points"][1:])))
            sys.stdout.flush()
            entry["variants"][variant] = r
        out.append(entry)
    return out


def add_marginals(sample):
    """Each point after the first: total PSS added per worker since the previous point."""
    prev = None
    for p in sample["points"]:
        if prev is not None:
            p["added_per_worker"] = ((p["total_pss"] - prev["total_pss"])
                                     / (p["workers"] - prev["workers"]))
        prev = p


# --------------------------------------------------------------------------
# driver


def run(opts=None, tmpdir=None):
    """Both phases; the piece's result dict."""
    opts = opts or Options()
    started = time.monotonic()
    own_tmp = tmpdir is None
    tmpdir = tmpdir or tempfile.mkdtemp(prefix="growth-")
    failures = []
    try:
        spawn = spawn_phase(opts, tmpdir, failures) if opts.runs else []
        memory = memory_phase(opts, tmpdir, failures) if opts.memory_variants else []
    finally:
        if own_tmp:
            import shutil
            shutil.rmtree(tmpdir, ignore_errors=True)
    return {"piece": "growth", "app": SIZED_APP, "sizes": opts.sizes, "workers": opts.workers,
            "runs": opts.runs, "spawn_variants": opts.spawn_variants,
            "memory_variants": opts.memory_variants, "spawn": spawn, "memory": memory,
            "failures": failures, "notes": notes(opts), "seconds": time.monotonic() - started}


def notes(opts):
    return [
        "app: `%s` with `%s` = each size: half Python objects (dicts of records of "
        "strings, ints, floats, lists, tuples), half raw buffers (bytearray and numpy "
        "arrays), every page written" % (SIZED_APP, SIZE_ENV),
        "spawn: as the spawn section (SIGTTIN -> first answer of a new worker pid, the "
        "existing worker held); %d round%s, sizes in order, variants rotated every round"
        % (opts.runs, "" if opts.runs == 1 else "s"),
        "memory: one server per size and variant, started with 1 worker and grown by SIGTTIN, "
        "one worker at a time; PSS read with %s workers, each time once the server is idle; no requests served, so "
        "this is what a fork costs before requests dirty pages (see the memory section for that)"
        % _and(sorted(opts.workers)),
        "page tables: VmPTE of the process that holds the app and forks (the preloader; "
        "stock: the master), read at the end of its memory sample",
    ]


def _and(numbers):
    words = [str(n) for n in numbers]
    return words[0] if len(words) == 1 else "%s and %s" % (", ".join(words[:-1]), words[-1])


def print_table(result):
    print()
    print("%8s  %-14s %10s %10s %10s" % ("size", "variant", "median ms", "min", "max"))
    for entry in result["spawn"]:
        for v, s in entry["summary"].items():
            if s:
                print("%4d MiB  %-14s %10.2f %10.2f %10.2f"
                      % (entry["size_mb"], v, s["median"], s["min"], s["max"]))
        for k, s in entry["ratios"].items():
            print("          %-30s %6.2fx" % (k, s["median"]))
    print()
    for entry in result["memory"]:
        for v, r in entry["variants"].items():
            if not r:
                continue
            print("%4d MiB  %-21s total PSS %s; per-worker PSS %s MiB"
                  % (entry["size_mb"], v,
                     ", ".join("%d: %.0f MiB" % (p["workers"], p["total_pss"] / MiB)
                               for p in r["points"]),
                     ", ".join("%.1f" % (p["worker_pss"] / MiB) for p in r["points"])))


def _ints(text):
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,300,1024", help="app sizes in MiB")
    parser.add_argument("--workers", default="1,8,32", help="worker counts for the memory part")
    parser.add_argument("--runs", type=int, default=3, help="spawn rounds (0: no spawn part)")
    parser.add_argument("--spawn-variants", default=",".join(SPAWN_VARIANTS))
    parser.add_argument("--memory-variants", default=",".join(MEMORY_VARIANTS),
                        help="empty: no memory part")
    parser.add_argument("--show-commands", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="write all results as JSON")
    parser.add_argument("--update-docs", nargs="?", const=os.path.join(harness.REPO_ROOT, "docs"),
                        metavar="DIR", help="write benchmarks-growth.png to DIR (default docs/) "
                        "and replace the Cost growth section of DIR/benchmarks.md")
    args = parser.parse_args(argv)
    try:
        opts = Options(sizes=_ints(args.sizes), workers=_ints(args.workers), runs=args.runs,
                       spawn_variants=[v for v in args.spawn_variants.split(",") if v],
                       memory_variants=[v for v in args.memory_variants.split(",") if v],
                       show_commands=args.show_commands)
    except ValueError as e:
        parser.error("--sizes/--workers: %s" % e)
    bad = [v for v in opts.spawn_variants + opts.memory_variants if v not in harness.VARIANTS]
    if bad or not opts.sizes or not opts.workers or args.runs < 0 or min(opts.workers) < 1:
        parser.error("bad --sizes, --workers, --runs or variants (%s)" % ", ".join(bad))
    meta = harness.machine_facts()
    meta.update({"mode": "growth", "loadavg_start": harness.loadavg(),
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())})
    load_before = harness.loadavg()
    result = run(opts)
    result["loadavg"] = [load_before, harness.loadavg()]
    meta["loadavg_end"] = harness.loadavg()
    print_table(result)
    results = {"meta": meta, "pieces": {"growth": result}}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    if args.update_docs:
        from benchmarks import growth_report
        print(growth_report.update_docs(results, args.update_docs))
    leftovers = harness.leftover_processes()
    if leftovers:
        print("LEFTOVER processes (killed now): %s" % leftovers)
        for pid in leftovers:
            os.kill(pid, 9)
    return 1 if result["failures"] or leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
