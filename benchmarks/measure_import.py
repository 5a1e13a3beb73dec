"""Measure what importing heavy_app costs: wall time and resident memory.

    python benchmarks/measure_import.py [--runs N] [--module MOD]

Each run is a fresh interpreter (``python measure_import.py --child``) that
imports the WSGI module and reports the import wall time and the VmRSS of
the process afterwards.  The first run after a fresh checkout also creates
and seeds the SQLite database, which is why runs are reported separately.
Exits non-zero if the median import is below 0.5 s or the RSS below 80 MB,
the targets this app is meant to meet.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIN_IMPORT_S = 0.5
MIN_RSS_MB = 80.0


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/self/status")


def child(module):
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    before = rss_mb()
    t0 = time.perf_counter()
    __import__(module)
    elapsed = time.perf_counter() - t0
    print(json.dumps({"import_s": elapsed, "rss_mb": rss_mb(), "rss_before_mb": before}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--module", default="benchmarks.heavy_app.wsgi")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.module)
        return 0

    results = []
    for i in range(args.runs):
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", "--module", args.module],
            cwd=REPO_ROOT,
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        results.append(r)
        print(
            "run %d: import %.3f s, RSS after import %.1f MB (interpreter alone %.1f MB)"
            % (i + 1, r["import_s"], r["rss_mb"], r["rss_before_mb"])
        )
    imp = statistics.median(r["import_s"] for r in results)
    rss = statistics.median(r["rss_mb"] for r in results)
    ok = imp >= MIN_IMPORT_S and rss >= MIN_RSS_MB
    print(
        "%s on Python %s: median import %.3f s (target >= %.1f), median RSS %.1f MB (target >= %.0f): %s"
        % (args.module, sys.version.split()[0], imp, MIN_IMPORT_S, rss, MIN_RSS_MB,
           "OK" if ok else "BELOW TARGET")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
