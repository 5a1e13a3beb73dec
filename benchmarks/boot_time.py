"""Boot time: from starting a server until all N workers answer, and how many
connection attempts it refused meanwhile.

    python benchmarks/boot_time.py [--runs N] [--workers 4] [--variants a,b,...]

What one sample measures
------------------------
t0 = CLOCK_MONOTONIC just before the server process is started (own
session, log to a temp file).  From then on a client opens one connection
at a time and sends ``GET /_bench/hold``: heavy_app answers it with a first
line naming the worker's pid and keeps the request open, so that (sync)
worker takes no other connection.  The next attempt therefore can only be
answered by a worker that has not answered yet; after N answers, N distinct
workers have served a request.  The sample is the time of the N-th answer
(also recorded: the first answer).

An attempt that fails with ECONNREFUSED (nothing listens yet: stock
``--preload`` imports the app before it binds) is counted and retried 5 ms
later; an attempt that connects simply waits in the listen backlog until a
worker accepts it.  The target "no refused connection during boot" is about
that count.

Rounds are interleaved across variants (order rotated every round); each
server is SIGKILLed with its whole process group in a ``finally``.
"""

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness  # noqa: E402
from benchmarks.harness import SampleError  # noqa: E402

DEFAULT_VARIANTS = ["smart", "stock-preload", "direct", "stock"]
RATIOS = [("smart", "stock-preload"), ("direct", "smart"), ("stock", "smart"),
          ("uwsgi", "smart")]
RETRY_AFTER_REFUSED = 0.005


@dataclass
class Options:
    app: str = harness.HEAVY_APP
    workers: int = 4
    timeout: float = 90.0
    isolate_stock: bool = True
    show_commands: bool = False


def boot_sample(variant, opts, tmpdir):
    server = harness.Server(harness.VARIANTS[variant], opts.app, workers=opts.workers,
                            tmpdir=tmpdir, isolate_stock=opts.isolate_stock)
    import_log = os.path.join(tmpdir, "imports-%d.log" % server.port)
    server.env["HEAVY_APP_IMPORT_LOG"] = import_log
    if opts.show_commands:
        print("  $ " + server.shown_command())
    holds, answers, errors, refused_at = [], [], [], []
    try:
        t0 = time.monotonic()
        server.start()
        deadline = t0 + opts.timeout
        while len(answers) < opts.workers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SampleError(
                    "%s: %d of %d workers answered within %.0f s (refused %d, errors %s)"
                    % (variant, len(answers), opts.workers, opts.timeout, len(refused_at),
                       errors[-3:]), server.log())
            server.check_alive("booting")
            try:
                held = harness.open_hold(server.port, timeout=remaining)
            except ConnectionRefusedError:
                refused_at.append(time.monotonic() - t0)
                time.sleep(RETRY_AFTER_REFUSED)
                continue
            except OSError as e:  # reset by a dying process, a timeout
                errors.append(repr(e))
                time.sleep(RETRY_AFTER_REFUSED)
                continue
            if held is None:
                raise SampleError("%s: the app has no hold endpoint" % variant, server.log())
            sock, pid = held
            holds.append(sock)
            if any(pid == p for _, p in answers):
                raise SampleError("%s: held worker %d answered twice" % (variant, pid),
                                  server.log())
            answers.append((time.monotonic() - t0, pid))
        server.check_undisturbed([])
        imports = read_import_log(import_log, t0)
        load_start = min((t for _, ev, t in imports if ev == "start"), default=None)
        load_end = min((t for _, ev, t in imports if ev == "end"), default=None)
        during_load = ([t for t in refused_at if t >= load_start]
                       if load_start is not None else [])
        return {"s": answers[-1][0], "first_answer_s": answers[0][0],
                "answers": answers, "refused": len(refused_at),
                "refused_during_load": len(during_load),
                "last_refused_s": refused_at[-1] if refused_at else None,
                "load_start_s": load_start,
                "load_end_s": load_end,  # the first import to finish
                "first_after_load_s": answers[0][0] - load_end if load_end is not None else None,
                "imports": len([1 for _, ev, _ in imports if ev == "end"]),
                "errors": errors, "master_pid": server.pid}
    finally:
        for sock in holds:
            sock.close()
        server.stop()


def read_import_log(path, t0):
    """[(pid, 'start'|'end', seconds since t0)] from heavy_app's import log."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                pid, event, t = line.split()
                out.append((int(pid), event, float(t) - t0))
    except (OSError, ValueError):
        pass
    return out


def run(variants, runs, opts=None, tmpdir=None):
    """Measure ``variants`` for ``runs`` interleaved rounds; the piece's result dict."""
    opts = opts or Options()
    started = time.monotonic()

    def describe(prefix, r):
        print("%s %7.3f s to %d workers (first answer %.3f s), refused %d "
              "(%d while the app loaded), %d app import%s"
              % (prefix, r["s"], opts.workers, r["first_answer_s"], r["refused"],
                 r["refused_during_load"], r["imports"], "" if r["imports"] == 1 else "s"))
        return r

    rounds, failures, detail = harness.interleaved_rounds(
        "boot", variants, runs, lambda variant, tmp: boot_sample(variant, opts, tmp), describe, tmpdir)
    summary = {}
    for v in variants:
        rs = detail[v]
        summary[v] = {
            "all": harness.summarize([r["s"] for r in rs]),
            "first": harness.summarize([r["first_answer_s"] for r in rs]),
            "refused": harness.summarize([r["refused"] for r in rs]),
            "refused_total": sum(r["refused"] for r in rs),
            "refused_during_load": harness.summarize([r["refused_during_load"] for r in rs]),
            "refused_during_load_total": sum(r["refused_during_load"] for r in rs),
            "last_refused_s": harness.summarize(
                [r["last_refused_s"] for r in rs if r["last_refused_s"] is not None]),
            "load_start_s": harness.summarize(
                [r["load_start_s"] for r in rs if r["load_start_s"] is not None]),
            "load_end_s": harness.summarize([r["load_end_s"] for r in rs if r["load_end_s"] is not None]),
            "first_after_load_s": harness.summarize(
                [r["first_after_load_s"] for r in rs if r["first_after_load_s"] is not None]),
        }
    ratios = {}
    rounds_first = [{v: {"s": r.get("first_answer_s")} for v, r in rd.items()} for rd in rounds]
    for a, b in RATIOS:
        if a in variants and b in variants:
            s = harness.paired_ratio(rounds, a, b, "s")
            if s:
                ratios["%s/%s" % (a, b)] = s
            first = harness.paired_ratio(rounds_first, a, b, "s")
            if first:
                ratios["first answer: %s/%s" % (a, b)] = first
    return {"piece": "boot", "unit": "s", "workers": opts.workers, "variants": variants,
            "rounds": [{v: r["s"] for v, r in rd.items()} for rd in rounds],
            "summary": summary, "ratios": ratios, "failures": failures, "runs": detail,
            "notes": [
                "time = server process started -> worker #%d (distinct) answered "
                "(each answering worker is then kept busy by a hold request, so every "
                "next answer comes from a worker that had not answered yet); %d "
                "interleaved rounds" % (opts.workers, runs),
                "refused = connection attempts that got ECONNREFUSED during boot "
                "(one attempt at a time, retried every %d ms); 'while the app "
                "loaded' counts those made after the first process began importing "
                "the app (heavy_app logs its import start and end with "
                "CLOCK_MONOTONIC); the others fall in the interpreter's and "
                "gunicorn's own start-up, before any server has bound its socket"
                % (RETRY_AFTER_REFUSED * 1000),
            ],
            "seconds": time.monotonic() - started}


def print_table(result):
    print()
    print("%-14s %4s %10s %10s %10s %12s %9s %9s %13s" % (
        "variant", "n", "median s", "min s", "max s", "first ans s", "refused",
        "in load", "load->first s"))
    for v in result["variants"]:
        s = result["summary"][v]
        if s["all"]:
            after = s["first_after_load_s"]
            print("%-14s %4d %10.3f %10.3f %10.3f %12.3f %9d %9d %13s" % (
                v, s["all"]["n"], s["all"]["median"], s["all"]["min"], s["all"]["max"],
                s["first"]["median"], s["refused_total"], s["refused_during_load_total"],
                "%.3f" % after["median"] if after else "-"))
        else:
            print("%-14s %4d %10s" % (v, 0, "-"))
    for k, s in result["ratios"].items():
        print("  %-22s %6.2fx [%.2f-%.2f]" % (k, s["median"], s["min"], s["max"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--app", default=harness.HEAVY_APP)
    parser.add_argument("--show-commands", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if any(v not in harness.VARIANTS for v in variants) or args.runs < 1:
        parser.error("bad --variants or --runs")
    harness.prepare_app(args.app)
    result = run(variants, args.runs, Options(app=args.app, workers=args.workers,
                                              show_commands=args.show_commands))
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
