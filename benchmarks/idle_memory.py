"""Idle memory of several apps in one master: scaled to zero vs one worker each.

    python benchmarks/idle_memory.py [--runs 1] [--apps 3] [--requests 200]

One master serves N copies of the heavy app (an ``apps`` table, one port
each; every copy has its own preloader, so nothing is shared between them
but the master's own pages).  Configurations (each a server of its own):

  zero-preloaders  ``min_workers = 0``, ``worker_idle_timeout = 1``,
                   ``preloader_idle_timeout = 0``: once idle, no worker, the
                   preloaders (each holding its imported app) kept
  one-worker       a fixed pool of one worker per app (``workers = 1``),
                   preloaders kept: what an app costs that is always ready
  zero-all         ``min_workers = 0``, ``worker_idle_timeout = 1``,
                   ``preloader_idle_timeout = 1``: once idle, nothing but the
                   master (the first request then pays the import, see wake.py)

What one sample measures
------------------------
1. Write the configuration (``worker_class = "smartspawn.Worker"``, the
   ``apps`` table), start ``gunicorn -c CONF``; wait until every app answers
   ``GET /health`` on its port.
2. Send R requests to every app (default 200; memory_usage.py's mix of
   product pages, index, stats, customer look-ups and health checks, one
   client per app), as an app that served some traffic and then went quiet.
3. Wait for the idle state: zero-preloaders: no worker, N preloaders;
   one-worker: N workers, N preloaders; zero-all: master alone.  Then wait
   until the server is idle (no CPU for 100 ms).
4. Read the memory of the master and every process below it with the
   plugin's ``gunicorn_smartspawn.control.memory`` (``process_tree`` and
   ``memory_report``: ``/proc/PID/smaps_rollup``): total PSS, and PSS by
   role (master, preloaders, workers).
"""

import argparse
import dataclasses
import json
import os
import random
import sys
import threading
import time
from dataclasses import dataclass

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness, memory_usage  # noqa: E402
from benchmarks.harness import SampleError  # noqa: E402

MB = 1024 * 1024
CONFIGS = {
    # name: (per-app settings, preloaders left when idle, workers per app when idle)
    "zero-preloaders": ({"min_workers": 0, "max_workers": 1, "worker_idle_timeout": 1,
                         "preloader_idle_timeout": 0}, True, 0),
    "one-worker": ({"workers": 1, "preloader_idle_timeout": 0}, True, 1),
    "zero-all": ({"min_workers": 0, "max_workers": 1, "worker_idle_timeout": 1,
                  "preloader_idle_timeout": 1}, False, 0),
}
LABELS = {
    "zero-preloaders": "scaled to zero, preloaders kept",
    "one-worker": "one worker per app",
    "zero-all": "scaled to zero, preloaders idled out too",
}
DEFAULT_CONFIGS = ["zero-preloaders", "one-worker", "zero-all"]
RATIOS = [("zero-preloaders", "one-worker"), ("zero-all", "one-worker")]


@dataclass
class Options:
    app: str = harness.HEAVY_APP
    apps: int = 3
    requests: int = 200
    start_timeout: float = 120.0
    idle_timeout: float = 30.0
    isolate_stock: bool = True
    show_commands: bool = False


def write_conf(path, config, ports, app):
    settings, _, _ = CONFIGS[config]
    apps = {}
    for i, port in enumerate(ports):
        entry = {"app": app, "bind": "127.0.0.1:%d" % port, "workers": 1}
        entry.update(settings)
        apps["app%d" % (i + 1)] = entry
    with open(path, "w") as f:
        f.write("# idle_memory.py: %s\n" % config)
        f.write("worker_class = %r\nspawn_method = 'smart'\n" % "smartspawn.Worker")
        f.write("apps = %s\n" % json.dumps(apps, indent=4))
    return apps


def multi_app_server(config, opts, tmpdir):
    """A harness.Server whose command is ``gunicorn -c CONF`` with an apps table."""
    variant = dataclasses.replace(harness.VARIANTS["smart"], name="apps-" + config, args=())
    server = harness.Server(variant, opts.app, workers=1, tmpdir=tmpdir)
    ports = [server.port] + [harness.free_port() for _ in range(opts.apps - 1)]
    conf = os.path.join(tmpdir, "idle-%s-%d.conf.py" % (config, server.port))
    write_conf(conf, config, ports, opts.app)
    cmd = ["-c", conf]
    # keep the per-server control socket paths of the harness's command
    for flag in ("--control-socket", "--smartspawn-socket"):
        if flag in server.cmd:
            cmd += [flag, server.cmd[server.cmd.index(flag) + 1]]
    server.cmd = [sys.executable, "-m", "gunicorn", *cmd]
    return server, ports


def drive_app(port, requests, seed, errors):
    paths = memory_usage.request_paths(random.Random(seed))
    for _ in range(requests):
        path = next(paths)
        try:
            status, _, _ = harness.get(port, path, timeout=30)
        except OSError as e:
            errors.append("%d %s: %r" % (port, path, e))
            continue
        if status != 200:
            errors.append("%d %s: status %d" % (port, path, status))


def wait_ready_all(server, ports, timeout):
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            server.check_alive("starting")
            try:
                status, pid, _ = harness.probe(port, timeout=max(0.1, deadline - time.monotonic()))
                if status == 200 and pid:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SampleError("%s: port %d did not answer within %.0f s"
                                  % (server.name, port, timeout), server.log())
            time.sleep(harness.POLL_INTERVAL)


def wait_idle_state(server, config, apps, timeout):
    _, preloaders_kept, workers_each = CONFIGS[config]
    want = (workers_each * apps, apps if preloaders_kept else 0)
    deadline = time.monotonic() + timeout
    while True:
        server.check_alive("going idle")
        got = (len(server.worker_pids()), len(server.preloader_pids()))
        if got == want:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise SampleError("%s: %d workers and %d preloaders after %.0f s, expected %d and %d"
                              % (config, got[0], got[1], timeout, want[0], want[1]),
                              server.log())
        time.sleep(0.05)


def idle_sample(config, opts, tmpdir):
    from gunicorn_smartspawn.control import memory

    server, ports = multi_app_server(config, opts, tmpdir)
    if opts.show_commands:
        print("  $ " + server.shown_command())
    try:
        server.start()
        wait_ready_all(server, ports, opts.start_timeout)
        errors = []
        clients = [threading.Thread(target=drive_app, args=(port, opts.requests, 7 + i, errors),
                                    daemon=True) for i, port in enumerate(ports)]
        t = time.monotonic()
        for c in clients:
            c.start()
        for c in clients:
            c.join(timeout=300)
        drive_s = time.monotonic() - t
        if errors:
            raise SampleError("%s: %d failed requests, e.g. %s" % (config, len(errors), errors[:3]),
                              server.log())
        quiet_from = time.monotonic()
        idle_at = wait_idle_state(server, config, opts.apps, opts.idle_timeout)
        server.settle()
        report = memory.memory_report(memory.process_tree(server.pid))
        server.check_undisturbed([])
    finally:
        server.stop()
    by_role = {}
    for p in report["processes"]:
        role = "master" if p["pid"] == server.pid else p["role"]
        entry = by_role.setdefault(role, {"n": 0, "pss": 0, "private": 0})
        entry["n"] += 1
        entry["pss"] += p["pss"]
        entry["private"] += p["private"]
    return {"total_pss": report["totals"]["pss"], "total_rss": report["totals"]["rss"],
            "by_role": by_role, "by_app_pss": {a: v["pss"] for a, v in report["by_app"].items()},
            "idle_after_s": idle_at - quiet_from, "drive_s": drive_s,
            "processes": report["processes"], "master_pid": server.pid}


def run(configs, runs, opts=None, tmpdir=None):
    opts = opts or Options()
    started = time.monotonic()

    def describe(prefix, r):
        roles = r["by_role"]
        print("%s total PSS %6.1f MiB: master %5.1f, %d preloaders %6.1f, %d workers %6.1f MiB "
              "(idle state reached %.1f s after the last request)"
              % (prefix, r["total_pss"] / MB, roles.get("master", {}).get("pss", 0) / MB,
                 roles.get("preloader", {}).get("n", 0),
                 roles.get("preloader", {}).get("pss", 0) / MB,
                 roles.get("worker", {}).get("n", 0), roles.get("worker", {}).get("pss", 0) / MB,
                 r["idle_after_s"]))
        return {"total_pss": r["total_pss"]}

    rounds, failures, detail = harness.interleaved_rounds(
        "idle-memory", configs, runs, lambda config, tmp: idle_sample(config, opts, tmp),
        describe, tmpdir, width=16)
    summary = {}
    for c in configs:
        rs = detail[c]
        if not rs:
            summary[c] = None
            continue

        def role(name, key="pss"):
            return harness.summarize([r["by_role"].get(name, {}).get(key, 0) for r in rs])

        summary[c] = {"total_pss": harness.summarize([r["total_pss"] for r in rs]),
                      "master_pss": role("master"), "preloader_pss": role("preloader"),
                      "worker_pss": role("worker"), "preloaders": role("preloader", "n"),
                      "workers": role("worker", "n"),
                      "idle_after_s": harness.summarize([r["idle_after_s"] for r in rs])}
    ratios = {}
    for a, b in RATIOS:
        if a in configs and b in configs:
            s = harness.paired_ratio(rounds, a, b, "total_pss")
            if s:
                ratios["%s/%s" % (a, b)] = s
    return {"piece": "idle-memory", "variants": configs, "apps": opts.apps,
            "requests": opts.requests, "rounds": rounds, "summary": summary, "ratios": ratios,
            "failures": failures, "runs": detail,
            "settings": {c: CONFIGS[c][0] for c in configs},
            "notes": [
                "one master, an `apps` table of %d copies of the heavy app on %d ports (each "
                "its own preloader); every app first served %d requests (memory_usage.py's "
                "mix, one client per app), then the server was left idle until it reached "
                "the configuration's idle state and used no CPU for 100 ms"
                % (opts.apps, opts.apps, opts.requests),
                "total PSS of the master and every process below it, from "
                "gunicorn_smartspawn.control.memory (smaps_rollup); %d round%s"
                % (runs, "" if runs == 1 else "s"),
            ],
            "seconds": time.monotonic() - started}


def print_table(result):
    print()
    print("%-18s %12s %10s %14s %12s" % ("configuration", "total PSS", "master", "preloaders",
                                         "workers"))
    for c in result["variants"]:
        s = result["summary"][c]
        if not s:
            print("%-18s %12s" % (c, "-"))
            continue
        print("%-18s %8.1f MiB %6.1f MiB %2d: %6.1f MiB %2d: %6.1f MiB" % (
            c, s["total_pss"]["median"] / MB, s["master_pss"]["median"] / MB,
            s["preloaders"]["median"], s["preloader_pss"]["median"] / MB,
            s["workers"]["median"], s["worker_pss"]["median"] / MB))
    for k, s in result["ratios"].items():
        print("  %-30s %.2fx" % (k, s["median"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--apps", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="per app, before going idle")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    parser.add_argument("--show-commands", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    if any(c not in CONFIGS for c in configs) or args.runs < 1 or args.apps < 1:
        parser.error("bad --configs (%s), --runs or --apps" % ", ".join(CONFIGS))
    harness.prepare_app(harness.HEAVY_APP)
    result = run(configs, args.runs, Options(apps=args.apps, requests=args.requests,
                                             show_commands=args.show_commands))
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
