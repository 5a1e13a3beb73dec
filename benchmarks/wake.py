"""Wake from zero: an app scaled to zero workers gets a connection; how soon is it answered?

    python benchmarks/wake.py [--runs 3] [--cycles 3]

Two ways of being at zero, each its own server (``harness.VARIANTS``):

  smart-zero       ``--min-workers 0 --worker-idle-timeout 1 --preloader-idle-timeout 0``:
                   no worker, the preloader (the imported app) kept
  smart-zero-cold  the same with ``--preloader-idle-timeout 1``: the preloader
                   idles out too, nothing of the app is left but its socket

and, in the same rounds, what the targets compare them with:

  spawn            one smart spawn, exactly as ``spawn_time.py`` measures it (a
                   fixed pool of one busy worker; SIGTTIN until a new worker has
                   answered ``GET /health``), and the warm request (``GET
                   /health`` on a new connection to a running worker)
  import           the app's import in a fresh interpreter
                   (``measure_import.py --child``)

What one wake sample measures
-----------------------------
1. Start the server with ``-w 1`` (so ``max_workers`` is 1); wait until it
   answers.
2. Wait until it has no worker (the worker idles out after 1 s; the master
   checks about once a second) and, for ``smart-zero-cold``, no preloader;
   for ``smart-zero`` the preloader must still be there.  Then wait until
   the server is idle (no CPU for 100 ms).
3. t0 = CLOCK_MONOTONIC; open a new connection and send ``GET /health``.
   Nothing accepts it at first: the master, which watches the listener of an
   app at zero, wakes, spawns a worker (``smart-zero-cold``: starts a
   preloader first, which imports the app), and the new worker accepts it.
   The sample is t0 -> the complete response, from a worker pid not seen
   before.
4. Repeat from 2 ``--cycles`` times on the same server (the worker of the
   previous wake idles out again).  Also recorded: how long after its last
   response the pool was back at zero.

Targets: waking with the preloader kept within 3x of one smart spawn plus
one warm request; waking with it gone within 1.2x of the import plus one
spawn.  Ratios are taken round by round (the median wake of a round over
the sum of the same round's figures).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness, spawn_time  # noqa: E402
from benchmarks.harness import SampleError  # noqa: E402

WAKE_VARIANTS = ["smart-zero", "smart-zero-cold"]
PARTS = WAKE_VARIANTS + ["spawn", "import"]
TARGETS = {"smart-zero": 3.0, "smart-zero-cold": 1.2}


@dataclass
class Options:
    app: str = harness.HEAVY_APP
    cycles: int = 3
    start_timeout: float = 60.0
    zero_timeout: float = 20.0
    wake_timeout: float = 60.0
    isolate_stock: bool = True
    show_commands: bool = False


def wait_for_zero(server, preloader_kept, timeout):
    """Wait until the server has no worker and (preloader_kept) still its
    preloader, or (not preloader_kept) no preloader either."""
    deadline = time.monotonic() + timeout
    while True:
        server.check_alive("scaling to zero")
        workers, preloaders = server.worker_pids(), server.preloader_pids()
        if not workers:
            if preloader_kept and not preloaders:
                raise SampleError("%s: the preloader went away with --preloader-idle-timeout 0"
                                  % server.name, server.log())
            if preloader_kept or not preloaders:
                return
        if time.monotonic() > deadline:
            raise SampleError("%s: still %d workers, %d preloaders %.0f s after the last "
                              "request (worker idle timeout 1 s)"
                              % (server.name, len(workers), len(preloaders), timeout),
                              server.log())
        time.sleep(0.02)


def wake_sample(variant, opts, tmpdir):
    server = harness.Server(harness.VARIANTS[variant], opts.app, workers=1, tmpdir=tmpdir,
                            isolate_stock=opts.isolate_stock)
    if opts.show_commands:
        print("  $ " + server.shown_command())
    preloader_kept = variant == "smart-zero"
    wakes, zero_after, warm = [], [], []
    try:
        server.start()
        server.wait_ready(opts.start_timeout)
        last_answer = time.monotonic()
        for _ in range(opts.cycles):
            wait_for_zero(server, preloader_kept, opts.zero_timeout)
            zero_after.append(time.monotonic() - last_answer)
            server.settle()
            t0 = time.monotonic_ns()
            status, pid, _ = harness.probe(server.port, timeout=opts.wake_timeout)
            t1 = time.monotonic_ns()
            if status != 200 or not pid or pid in server.known_pids:
                raise SampleError("%s: the wake was answered with status %s by pid %s (known: %s)"
                                  % (variant, status, pid, sorted(server.known_pids)),
                                  server.log())
            server.known_pids.add(pid)
            wakes.append((t1 - t0) / 1e6)
            warm.append(spawn_time.warm_request_ms(server, n=3))
            last_answer = time.monotonic()
        server.check_undisturbed([])
        return {"wake_ms": wakes, "median_ms": statistics.median(wakes),
                "zero_after_s": zero_after, "warm_after_wake_ms": warm,
                "master_pid": server.pid}
    finally:
        server.stop()


def import_sample():
    """The app's import in a fresh interpreter (measure_import.py's child)."""
    script = os.path.join(harness.REPO_ROOT, "benchmarks", "measure_import.py")
    res = subprocess.run([sys.executable, script, "--child"], cwd=harness.REPO_ROOT,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise SampleError("import of the app failed", res.stderr[-4000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def part_sample(part, opts, tmpdir):
    if part in WAKE_VARIANTS:
        return wake_sample(part, opts, tmpdir)
    if part == "spawn":
        sopts = spawn_time.Options(app=opts.app, isolate_stock=opts.isolate_stock,
                                   show_commands=opts.show_commands)
        return spawn_time.server_sample("smart", sopts, tmpdir)
    if part == "import":
        return import_sample()
    raise ValueError(part)


def fallback_references(spawn_piece, import_s):
    """References from elsewhere in the same run, for a plan that does not
    measure them in this piece (``python -m benchmarks --quick``): the spawn
    piece's smart samples, and the app's import timed at the start of the run
    (``harness.prepare_app``: a fresh interpreter, as ``measure_import.py``)."""
    out = {}
    smart = ((spawn_piece or {}).get("summary") or {}).get("smart") or {}
    if smart.get("median") is not None and smart.get("warm_request_ms") is not None:
        out["spawn"] = {"ms": smart["median"], "warm_request_ms": smart["warm_request_ms"]}
    if import_s:
        out["import"] = {"import_s": import_s}
    return out


def reference_ms(part, round_values, fallback=None):
    """What a wake of ``part`` is compared with, from one round's figures (or,
    for figures this piece did not measure, ``fallback``)."""
    fallback = fallback or {}
    spawn = round_values.get("spawn") or fallback.get("spawn")
    if spawn is None:
        return None
    if part == "smart-zero":
        return spawn["ms"] + spawn["warm_request_ms"]
    imp = round_values.get("import") or fallback.get("import")
    if imp is None:
        return None
    return imp["import_s"] * 1000 + spawn["ms"]


def run(runs, opts=None, tmpdir=None, parts=None, fallback=None):
    """``parts``: which of PARTS to measure (default all); ``fallback``: see
    :func:`fallback_references`."""
    opts = opts or Options()
    parts = parts or PARTS
    fallback = {k: v for k, v in (fallback or {}).items() if k not in parts}
    started = time.monotonic()

    def describe(prefix, r):
        if "wake_ms" in r:
            print("%s wake %s ms (median %.1f ms); back at zero %s s after the last answer"
                  % (prefix, " ".join("%.1f" % x for x in r["wake_ms"]), r["median_ms"],
                     " ".join("%.1f" % x for x in r["zero_after_s"])))
            return {"median_ms": r["median_ms"]}
        if "import_s" in r:
            print("%s import %.3f s in a fresh interpreter" % (prefix, r["import_s"]))
            return {"import_s": r["import_s"]}
        print("%s smart spawn %.1f ms, warm request %.2f ms"
              % (prefix, r["ms"], r["warm_request_ms"]))
        return {"ms": r["ms"], "warm_request_ms": r["warm_request_ms"]}

    rounds, failures, detail = harness.interleaved_rounds(
        "wake", parts, runs, lambda part, tmp: part_sample(part, opts, tmp), describe, tmpdir,
        width=16)
    summary = {}
    for part in parts:
        rs = detail[part]
        if not rs:
            summary[part] = None
        elif part in WAKE_VARIANTS:
            summary[part] = {
                "wake_ms": harness.summarize([x for r in rs for x in r["wake_ms"]]),
                "zero_after_s": harness.summarize([x for r in rs for x in r["zero_after_s"]]),
                "warm_after_wake_ms": harness.summarize(
                    [x for r in rs for x in r["warm_after_wake_ms"]]),
            }
        elif part == "spawn":
            summary[part] = {"ms": harness.summarize([r["ms"] for r in rs]),
                             "warm_request_ms": harness.summarize(
                                 [r["warm_request_ms"] for r in rs])}
        else:
            summary[part] = {"import_s": harness.summarize([r["import_s"] for r in rs])}
    ratios, references = {}, {}
    for part in WAKE_VARIANTS:
        if part not in parts:
            continue
        values, refs = [], []
        for rnd in rounds:
            ref = reference_ms(part, rnd, fallback)
            if ref and part in rnd:
                values.append(rnd[part]["median_ms"] / ref)
                refs.append(ref)
        if values:
            ratios[part] = harness.summarize(values)
            references[part] = harness.summarize(refs)
    commands = {}
    for part in WAKE_VARIANTS:
        s = harness.Server(harness.VARIANTS[part], opts.app, workers=1, tmpdir="/tmp", port=8000)
        commands[part] = s.display_command()
    return {"piece": "wake", "variants": parts, "cycles": opts.cycles, "rounds": rounds,
            "fallback": fallback,
            "summary": summary, "ratios": ratios, "references": references,
            "targets": TARGETS, "failures": failures, "runs": detail, "commands": commands,
            "notes": [
                "%d interleaved rounds; each wake server is woken %d times (each time after "
                "its worker, and for the cold variant its preloader, idled out again)"
                % (runs, opts.cycles),
                "wake = a new connection's GET /health sent to an app at zero workers -> "
                "its complete response (from a new worker)",
                "references, from the same round: `smart-zero` vs one smart spawn "
                "(spawn_time.py's sample: SIGTTIN -> the new worker's first answer) plus "
                "one warm request; `smart-zero-cold` vs the app's import in a fresh "
                "interpreter plus one smart spawn",
            ] + (["references not measured in this piece, taken from elsewhere in the same "
                  "run: %s" % ", ".join(
                      {"spawn": "the spawn piece's smart median", "import": "the app's "
                       "import timed at the start of the run"}[k] for k in sorted(fallback))]
                 if fallback else []),
            "seconds": time.monotonic() - started}


def print_table(result):
    s = result["summary"]
    print()
    for part in WAKE_VARIANTS:
        if s.get(part):
            w = s[part]["wake_ms"]
            print("%-16s wake %8.1f ms [%.1f-%.1f], n=%d" % (part, w["median"], w["min"],
                                                             w["max"], w["n"]))
    if s.get("spawn"):
        print("%-16s %8.1f ms, warm request %.2f ms" % ("spawn", s["spawn"]["ms"]["median"],
                                                       s["spawn"]["warm_request_ms"]["median"]))
    if s.get("import"):
        print("%-16s %8.3f s" % ("import", s["import"]["import_s"]["median"]))
    for part, r in result["ratios"].items():
        print("  %-16s wake / reference %.2fx [%.2f-%.2f] (target <= %.1fx)"
              % (part, r["median"], r["min"], r["max"], TARGETS[part]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=3, help="wakes per server")
    parser.add_argument("--show-commands", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.cycles < 1:
        parser.error("--runs and --cycles must be at least 1")
    harness.prepare_app(harness.HEAVY_APP)
    result = run(args.runs, Options(cycles=args.cycles, show_commands=args.show_commands))
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
