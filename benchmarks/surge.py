"""Surge: a pool of 1 worker has to grow to 8 at once; how soon do 8 serve?

    python benchmarks/surge.py [--runs 5] [--target 8] [--variants smart,direct]

What one sample measures
------------------------
1. Start the server with one worker; wait until it answers, then keep it
   busy with a hold request (``GET /_bench/hold``) and wait until the server
   is idle.
2. t0 = CLOCK_MONOTONIC.  Seven client threads each open a connection and
   send ``GET /_bench/hold``: the requests wait in the listen backlog, and
   each is taken by a new worker as soon as it is ready, which answers with
   its pid and is then kept busy, so every answer comes from a different
   worker.  Meanwhile the main thread sends SIGTTIN seven times in a loop, as
   an operator's script or an autoscaler would; it sends the next one once
   the master's log says it handled the previous one (``Handling signal:
   ttin``), because signals of one kind that arrive together are merged
   (by the kernel while pending, and by Python's signal handling) and the
   extra ones would be lost.
3. The sample is the time from t0 until the 7th new worker answered, i.e.
   until 8 distinct workers serve.  Also recorded: when the loop had sent
   its last signal, and when each new worker answered.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness  # noqa: E402
from benchmarks.harness import SampleError  # noqa: E402

DEFAULT_VARIANTS = ["smart", "direct"]
RATIOS = [("direct", "smart"), ("stock-preload", "smart")]


@dataclass
class Options:
    app: str = harness.HEAVY_APP
    target: int = 8
    start_timeout: float = 60.0
    timeout: float = 120.0
    signal_timeout: float = 30.0
    isolate_stock: bool = True
    show_commands: bool = False


def surge_sample(variant, opts, tmpdir):
    server = harness.Server(harness.VARIANTS[variant], opts.app, workers=1,
                            tmpdir=tmpdir, isolate_stock=opts.isolate_stock)
    if opts.show_commands:
        print("  $ " + server.shown_command())
    holds, answers, errors = [], [], []
    lock = threading.Lock()
    extra = opts.target - 1
    try:
        server.start()
        server.wait_ready(opts.start_timeout)
        ready_at = time.monotonic()
        held = harness.open_hold(server.port, timeout=opts.start_timeout)
        if held is None:
            raise SampleError("%s: the app has no hold endpoint" % variant, server.log())
        holds.append(held[0])
        first_pid = held[1]
        server.settle(ready_at)
        handled_before = server.signals_handled("ttin")

        def client():
            try:
                h = harness.open_hold(server.port, timeout=opts.timeout)
            except OSError as e:
                with lock:
                    errors.append(repr(e))
                return
            if h is None:
                with lock:
                    errors.append("no pid line")
                return
            with lock:
                holds.append(h[0])
                answers.append((time.monotonic() - t0, h[1]))

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, daemon=True) for _ in range(extra)]
        for t in threads:
            t.start()
        for i in range(extra):
            os.kill(server.pid, signal.SIGTTIN)
            want = handled_before + i + 1
            if not harness.wait_until(lambda: server.signals_handled("ttin") >= want,
                                      opts.signal_timeout, interval=0.001):
                raise SampleError("%s: the master did not handle SIGTTIN #%d within %.0f s"
                                  % (variant, i + 1, opts.signal_timeout), server.log())
        signals_done = time.monotonic() - t0
        deadline = time.monotonic() + opts.timeout
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
            server.check_alive("growing")
        with lock:
            got = sorted(answers)
            errs = list(errors)
        pids = {first_pid} | {p for _, p in got}
        if len(got) < extra or len(pids) < opts.target:
            raise SampleError("%s: %d new workers answered, %d distinct pids (errors %s)"
                              % (variant, len(got), len(pids), errs[:3]), server.log())
        server.check_undisturbed(["ttin"] * extra)
        return {"s": got[-1][0], "answers_s": [t for t, _ in got],
                "signals_sent_s": signals_done, "pids": sorted(pids), "master_pid": server.pid}
    finally:
        for sock in holds:
            sock.close()
        server.stop()


def run(variants, runs, opts=None, tmpdir=None):
    opts = opts or Options()
    started = time.monotonic()

    def describe(prefix, r):
        print("%s %8.3f s until %d workers serve (signals sent by %.3f s)"
              % (prefix, r["s"], opts.target, r["signals_sent_s"]))
        return r["s"]

    rounds, failures, detail = harness.interleaved_rounds(
        "surge", variants, runs, lambda variant, tmp: surge_sample(variant, opts, tmp), describe, tmpdir)
    summary = {v: harness.summarize([r[v] for r in rounds if v in r]) for v in variants}
    ratios = {}
    for a, b in RATIOS:
        if a in variants and b in variants:
            s = harness.paired_ratio(rounds, a, b, None)
            if s:
                ratios["%s/%s" % (a, b)] = s
    return {"piece": "surge", "unit": "s", "target": opts.target, "variants": variants,
            "rounds": rounds, "summary": summary, "ratios": ratios, "failures": failures,
            "runs": detail,
            "notes": [
                "pool of 1 worker (kept busy); %d x SIGTTIN in a loop, each sent once "
                "the master logged the previous one; time until %d distinct workers "
                "have answered; %d interleaved rounds" % (opts.target - 1, opts.target, runs),
            ],
            "seconds": time.monotonic() - started}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--target", type=int, default=8)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--show-commands", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if (any(v not in harness.VARIANTS or harness.VARIANTS[v].kind != "gunicorn" for v in variants)
            or args.runs < 1 or args.target < 2):
        parser.error("bad --variants (gunicorn variants only), --runs or --target")
    harness.prepare_app(harness.HEAVY_APP)
    result = run(variants, args.runs, Options(target=args.target,
                                              show_commands=args.show_commands))
    for v, s in result["summary"].items():
        if s:
            print("%-14s %8.3f s [%.3f-%.3f]" % (v, s["median"], s["min"], s["max"]))
    for k, s in result["ratios"].items():
        print("  %-22s %.2fx [%.2f-%.2f]" % (k, s["median"], s["min"], s["max"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
