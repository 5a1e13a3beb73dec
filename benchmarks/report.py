"""Turn the results of ``python -m benchmarks`` into docs/benchmarks.md and a PNG chart.

Everything in the report is computed from the results of the same run:
medians with min and max, ratios taken round by round, the targets of
issue 6 with PASS/MISS, and for every miss the shortfall and an explanation
built from the run's own figures.
"""

import datetime
import statistics

from benchmarks import harness

MiB = 1024 * 1024

LABELS = {name: v.label for name, v in harness.VARIANTS.items()}
LABELS.update({
    "smart-sync": "smartspawn smart, sync", "stock-sync": "gunicorn sync",
    "smart-gthread": "smartspawn smart, gthread x4", "stock-gthread": "gunicorn gthread x4",
    "direct-gthread": "smartspawn direct, gthread x4",
})


# --------------------------------------------------------------------------
# formatting


def ms(x):
    if x is None:
        return "-"
    if x >= 1000:
        return "%.2f s" % (x / 1000)
    if x >= 100:
        return "%.0f ms" % x
    if x >= 10:
        return "%.1f ms" % x
    return "%.2f ms" % x


def sec(x):
    return "-" if x is None else "%.2f s" % x


def mib(x):
    return "-" if x is None else "%.1f MiB" % (x / MiB)


def rps(x):
    return "-" if x is None else "%.0f/s" % x


def times(x):
    return "-" if x is None else ("%.1f×" % x if x >= 10 else "%.2f×" % x)


def spread(summary, fmt, bold=True):
    """'**median** (min–max)', or just the median when there was one run."""
    if not summary:
        return "-"
    med = fmt(summary["median"])
    med = "**%s**" % med if bold else med
    if summary.get("n", 1) <= 1 or summary["min"] == summary["max"]:
        return med
    return "%s (%s–%s)" % (med, fmt(summary["min"]), fmt(summary["max"]))


def ratio_cell(summary):
    if not summary:
        return "-"
    if summary.get("n", 1) <= 1:
        return "**%s**" % times(summary["median"])
    return "**%s** (%s–%s, %d rounds)" % (times(summary["median"]), times(summary["min"]),
                                          times(summary["max"]), summary["n"])


def table(header, rows):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def piece(results, name):
    p = results["pieces"].get(name)
    if not p or p.get("skipped") or p.get("error"):
        return None
    return p


def ratio(results, name, key):
    p = piece(results, name)
    return p["ratios"].get(key) if p else None


def pct(x):
    return "%.0f %%" % (abs(x) * 100) if abs(x) >= 0.1 else "%.1f %%" % (abs(x) * 100)


# --------------------------------------------------------------------------
# targets


def _target(tid, text, measured, ok, shortfall, value=None):
    return {"id": tid, "text": text, "measured": measured,
            "status": "n/a" if ok is None else ("PASS" if ok else "MISS"),
            "shortfall": shortfall if ok is False else "", "value": value}


def _not_measured(results, name):
    p = results["pieces"].get(name)
    if p is None:
        return "not run"
    if p.get("skipped"):
        return "skipped: " + p["skipped"]
    if p.get("error"):
        return "failed: " + p["error"]
    return "not measured in this run"


def _at_least(tid, text, results, name, key, goal, what):
    s = ratio(results, name, key)
    if not s:
        return _target(tid, text, _not_measured(results, name), None, "")
    v = s["median"]
    ok = v >= goal
    return _target(tid, text, "%s %s" % (what, ratio_cell(s)), ok,
                   "%s short of %s (%s below)" % (times(goal - v), times(goal), pct(1 - v / goal)), v)


def _at_most(tid, text, results, name, key, goal, what, strict=False):
    s = ratio(results, name, key)
    if not s:
        return _target(tid, text, _not_measured(results, name), None, "")
    v = s["median"]
    ok = v < goal if strict else v <= goal
    return _target(tid, text, "%s %s" % (what, ratio_cell(s)), ok,
                   "%s over the limit of %s" % (pct(v / goal - 1), times(goal)), v)


def evaluate(results):
    """The targets of issue 6, each PASS, MISS or n/a with the measured value."""
    out = [
        _at_least("spawn-direct", "spawn: smart at least 40× faster than direct",
                  results, "spawn", "direct/smart", 40, "direct / smart ="),
        _at_most("spawn-preload", "spawn: smart no slower than 1.2× stock `--preload`",
                 results, "spawn", "smart/stock-preload", 1.2, "smart / stock --preload ="),
        _at_most("spawn-floor", "spawn: smart within 3× of the bare fork floor",
                 results, "spawn", "smart/fork-floor", 3, "smart / fork floor ="),
        _at_most("boot-preload", "boot: all 4 workers serving no later than 1.1× stock `--preload`",
                 results, "boot", "smart/stock-preload", 1.1, "smart / stock --preload ="),
    ]
    boot = piece(results, "boot")
    if boot and boot["summary"].get("smart", {}).get("all"):
        s = boot["summary"]["smart"]
        n = s["all"]["n"]
        during, total = s["refused_during_load_total"], s["refused_total"]
        measured = ("%d refused while the app loaded, in %d boot%s (%d more before the master "
                    "had bound its socket, in the first %s)"
                    % (during, n, "" if n == 1 else "s", total - during,
                       sec(s["last_refused_s"]["max"]) if s["last_refused_s"] else "-"))
        out.append(_target("boot-refused", "boot: no refused connection during boot",
                           measured, during == 0,
                           "%d connection attempts refused while the app loaded" % during, during))
    else:
        out.append(_target("boot-refused", "boot: no refused connection during boot",
                           _not_measured(results, "boot"), None, ""))
    out += [
        _at_most("memory-direct", "memory: smart total PSS at most 0.5× direct (8 workers)",
                 results, "memory", "smart/direct", 0.5, "smart / direct ="),
        _at_most("memory-freeze", "memory: smart total PSS below stock `--preload` with the "
                 "`gc.freeze()` recipe", results, "memory", "smart/stock-preload-freeze", 1.0,
                 "smart / stock --preload + recipe =", strict=True),
        _at_least("overhead-sync", "overhead: smart requests/s at least 0.97× stock (sync)",
                  results, "overhead", "smart-sync/stock-sync", 0.97, "smart / stock ="),
        _at_least("overhead-gthread", "overhead: smart requests/s at least 0.97× stock "
                  "(gthread, 4 threads)", results, "overhead", "smart-gthread/stock-gthread",
                  0.97, "smart / stock ="),
        _at_least("surge", "surge: smart reaches 8 serving workers at least 10× sooner than direct",
                  results, "surge", "direct/smart", 10, "direct / smart ="),
    ]
    return out


def targets_text(results):
    lines = ["targets:"]
    for t in evaluate(results):
        lines.append("  %-4s %s: %s%s" % (t["status"], t["text"].replace("`", ""),
                                          t["measured"].replace("**", ""),
                                          " -- " + t["shortfall"] if t["shortfall"] else ""))
    return "\n".join(lines)


# --------------------------------------------------------------------------
# why a target was missed (built from the same run's figures)


def _mem_run(results, variant):
    p = piece(results, "memory")
    runs = p["runs"].get(variant) if p else None
    return runs[0] if runs else None


def explain(tid, results):
    """Markdown: why target ``tid`` was missed and what would close it."""
    spawn = piece(results, "spawn")
    if tid in ("spawn-floor", "spawn-preload", "spawn-direct") and spawn:
        s = spawn["summary"]
        smart = s.get("smart") or {}
        warm = smart.get("warm_request_ms")
        floor = (s.get("fork-floor") or {}).get("median")
        pre = s.get("stock-preload") or {}
        parts = []
        if tid == "spawn-floor" and floor:
            parts.append(
                "The floor is a bare `os.fork()` up to the child's first statement (median "
                "%s); a spawn sample runs from SIGTTIN to the new worker's first HTTP answer "
                "(smart median %s)." % (ms(floor), ms(smart.get("median"))))
            bd = spawn.get("breakdown") or {}
            if bd.get("smart"):
                steps = list(bd["smart"])
                other = bd.get("stock-preload") or {}

                def step(i):
                    a = bd["smart"][steps[i]]["median"]
                    b = other.get(steps[i], {}).get("median") if other else None
                    return "%s%s" % (ms(a), " (stock `--preload` %s)" % ms(b) if b else "")

                parts.append(
                    "Hooked samples (see the breakdown table) split it: %s until the new "
                    "worker runs (`post_fork`: the master's signal handling, the "
                    "`SpawnWorker` message, the clone%s, fork-safety and re-parenting); %s of "
                    "gunicorn's worker initialisation; %s until it reads the first request; "
                    "%s for that first request; %s for the answer to reach the client."
                    % (step(0), " itself %s by the plugin's log" % ms(smart["fork_ms"])
                       if smart.get("fork_ms") else "", step(1), step(2), step(3), step(4)))
                if warm:
                    parts.append(
                        "A warm worker answers the same request in %s: the first request in "
                        "a new process pays a copy-on-write fault for every shared page it "
                        "writes to (reference counts, caches)." % ms(warm))
                parts.append(
                    "Only the first step is comparable with the floor (%s); the rest is a "
                    "gunicorn worker's start-up and first request, which stock `--preload` "
                    "pays too (%s in the same rounds, %s the floor). Closing the gap is not "
                    "a matter of the fork: it would take a cheaper first request in a new "
                    "process (fewer shared pages written) and a leaner worker start."
                    % (times(bd["smart"][steps[0]]["median"] / floor),
                       ms(pre.get("median")), times(pre["median"] / floor)
                       if pre.get("median") else "-"))
            elif warm:
                parts.append("The probe request alone takes %s on a warm worker." % ms(warm))
        elif tid == "spawn-preload" and pre.get("median"):
            parts.append(
                "Smart's path has two steps more than stock's `fork()` in the master: the "
                "`SpawnWorker` message to the preloader and its answer, and the worker "
                "checking that the master is its parent before it serves. Measured: smart "
                "%s vs stock `--preload` %s; the spread of the per-round ratios (%s) shows "
                "how much of the gap is noise on this machine."
                % (ms(smart.get("median")), ms(pre["median"]),
                   ratio_cell(spawn["ratios"].get("smart/stock-preload"))))
        elif tid == "spawn-direct":
            direct = s.get("direct") or {}
            parts.append(
                "A direct spawn is a fork plus the app's import in the new worker (%s in a "
                "fresh interpreter here; direct spawn median %s); a smart spawn is dominated "
                "not by its clone but by the new worker's start-up and first request (see "
                "the breakdown in the spawn section; median %s). The ratio is about the "
                "app's import time over that start-up: with this app's import it lands "
                "near 40×, and the per-round ratios (%s) show how far noise moves it. What "
                "would close it is a faster start of a forked worker, the same steps as "
                "for the fork-floor target."
                % (sec(results["meta"].get("app_import_s")), ms(direct.get("median")),
                   ms(smart.get("median")), ratio_cell(spawn["ratios"].get("direct/smart"))))
        return " ".join(parts)
    if tid == "memory-freeze":
        smart, rec = _mem_run(results, "smart"), _mem_run(results, "stock-preload-freeze")
        if not smart or not rec:
            return ""
        a, b = smart["after"], rec["after"]
        nw = a["n_workers"]
        master_priv = sum(p["private"] for p in a["processes"] if p["role"] == "master")
        master_shared = sum(p["shared"] for p in a["processes"] if p["role"] == "master")
        worker_diff = a["worker_private"]["median"] - b["worker_private"]["median"]
        total_diff = a["total_pss"] - b["total_pss"]
        text = (
            "Smart runs one process more than stock `--preload`: a master that never "
            "imports the app. Here it holds %s PSS: its own interpreter, gunicorn and the "
            "plugin, %s of it still shared with the preloader and the workers, %s private "
            "(pages written after the preloader was forked, by the master itself or by the "
            "preloader's import: copy-on-write leaves each side its own copy). Stock's "
            "master is its app holder, the counterpart of smart's preloader (%s PSS vs "
            "smart's preloader %s). Per worker, smart holds %s private vs %s for the recipe "
            "(%s%s each, × %d workers = %s). Together: smart %s vs recipe %s, %s more. "
            % (mib(a["master_pss"]), mib(master_shared), mib(master_priv), mib(b["master_pss"]),
               mib(a["preloader_pss"]), mib(a["worker_private"]["median"]),
               mib(b["worker_private"]["median"]), "+" if worker_diff >= 0 else "-",
               mib(abs(worker_diff)), nw, mib(worker_diff * nw),
               mib(a["total_pss"]), mib(b["total_pss"]), mib(total_diff)))
        text += ("After one full collection in every worker (both freeze): smart %s vs "
                 "recipe %s. " % (mib(smart["collected"]["total_pss"]),
                                  mib(rec["collected"]["total_pss"])))
        warm = _mem_run(results, "smart-warm")
        if warm:
            text += ("With a warm-up in the preloader (`smart-warm`, see below) smart reaches "
                     "%s, %s the recipe. " % (mib(warm["after"]["total_pss"]),
                                             times(warm["after"]["total_pss"] / b["total_pss"])))
        text += (
            "The master is the price of the design's clean master (reloads with new code "
            "and still copy-on-write sharing, which `--preload` cannot do). What would "
            "close the gap, without giving that up: a smaller master (import less of "
            "gunicorn and the plugin before the preloader is forked, and start the "
            "preloader before the master builds anything else), and finding what each "
            "smart worker dirties at start beyond a stock worker (the per-worker private "
            "figure right after boot: smart %s vs recipe %s)."
            % (mib(smart["boot"]["worker_private"]["median"]),
               mib(rec["boot"]["worker_private"]["median"])))
        return text
    if tid == "memory-direct":
        smart, direct = _mem_run(results, "smart"), _mem_run(results, "direct")
        if not smart or not direct:
            return ""
        return ("Direct: %s total PSS, %s private per worker; smart: %s total, %s per worker. "
                "After the requests each smart worker has written to (and so copied) that "
                "much of the shared image: reference counts, Django's and pandas' lazily "
                "built caches, and whatever the collector touches in young objects."
                % (mib(direct["after"]["total_pss"]),
                   mib(direct["after"]["worker_private"]["median"]),
                   mib(smart["after"]["total_pss"]),
                   mib(smart["after"]["worker_private"]["median"])))
    if tid.startswith("overhead"):
        p = piece(results, "overhead")
        key = "smart-sync/stock-sync" if tid == "overhead-sync" else "smart-gthread/stock-gthread"
        s = p["ratios"].get(key) if p else None
        if not s:
            return ""
        load = p.get("loadavg") or [None, None]
        text = ("Per request, the plugin's worker adds its scoreboard update around the "
                "request (a `struct.pack_into` into shared memory at start and end, under a "
                "lock with threads), for the future autoscaler; everything else is "
                "gunicorn's own worker. ")
        if s["max"] >= 1.0:
            text += ("The per-round ratios range %s–%s and include parity: wrk and the "
                     "server share the 2 cores%s, and %d rounds cannot separate a cost of a "
                     "few percent from that noise. " % (
                         times(s["min"]), times(s["max"]),
                         " with other work on the machine (load average %.1f before this "
                         "piece)" % load[0][0] if load[0] else "", s["n"]))
        else:
            text += ("Every round was below parity (%s–%s): the cost is real. "
                     % (times(s["min"]), times(s["max"])))
        c = (p.get("cpu_ratios") or {}).get(key)
        if c:
            text += ("The server's CPU time per request, which other load moves less, "
                     "was %s of stock's: %s " % (
                         ratio_cell(c),
                         "the plugin's worker costs more per request." if c["median"] > 1.03
                         else "no higher than stock's, so the shortfall in requests/s is not "
                              "a cost per request but contention for the cores."))
        d = p["ratios"].get("direct-gthread/stock-gthread")
        if tid == "overhead-gthread" and d:
            text += ("The plugin's gthread worker without a preloader (`direct`) measured %s "
                     "of stock in the same rounds: %s " % (
                         ratio_cell(d),
                         "a similar shortfall, so whatever it is lies in the plugin's worker "
                         "class (its threaded request path), not in being forked from a "
                         "preloader." if d["median"] < 0.97 else
                         "at parity, so the worker class alone is not the cause."))
        text += ("Settling it takes longer runs on a quiet machine and a profile of the "
                 "plugin worker's request path (`Worker.handle_request`, the scoreboard).")
        return text
    if tid == "boot-preload":
        b = piece(results, "boot")
        if not b:
            return ""
        sm, pr = b["summary"]["smart"], b["summary"]["stock-preload"]
        text = ("Smart boots in %s (first answer %s), stock `--preload` in %s (first answer "
                "%s). " % (sec(sm["all"]["median"]), sec(sm["first"]["median"]),
                           sec(pr["all"]["median"]), sec(pr["first"]["median"])))
        if sm["load_start_s"] and pr["load_start_s"]:
            text += ("The app's import begins %s after start in smart's preloader and %s "
                     "after start in stock's master: smart's master first imports the "
                     "plugin, binds, sets up its control socket and scoreboard and forks the "
                     "preloader. " % (sec(sm["load_start_s"]["median"]),
                                      sec(pr["load_start_s"]["median"])))
        text += ("After the import, smart forks its workers back to back while stock sleeps a "
                 "random 0–100 ms after each fork, which wins part of it back. Closing the "
                 "rest: fork the preloader earlier in the master's start-up (before the "
                 "control socket and other set-up that the preloader does not need), and "
                 "import less in the master before that fork.")
        return text
    if tid == "surge":
        return ("The surge figure for smart is the time of seven spawns in a row, each "
                "waiting for the master to handle its signal.")
    return ""


# --------------------------------------------------------------------------
# the markdown


def _duration(seconds):
    m, s = divmod(int(round(seconds)), 60)
    return "%d min %02d s" % (m, s) if m else "%d s" % s


def _machine(results):
    m = results["meta"]
    rows = [
        ("CPU", "%s, %s logical CPUs (%s usable)" % (m.get("cpu_model"), m.get("cpus"),
                                                     m.get("cpus_usable"))),
        ("memory", mib(m.get("memory_bytes")).replace(" MiB", " MiB total")),
        ("kernel / platform", "%s / %s" % (m.get("kernel"), m.get("platform"))),
        ("Python", "%s %s (`%s`)" % (m.get("python_implementation"), m.get("python"),
                                     m.get("python_executable"))),
        ("gunicorn", m.get("gunicorn")),
        ("gunicorn-smartspawn", m.get("gunicorn_smartspawn")),
        ("Django / numpy / pandas", "%s / %s / %s" % (m.get("django"), m.get("numpy"),
                                                     m.get("pandas"))),
        ("uWSGI (pyuwsgi)", m["uwsgi"]["message"]),
        ("wrk", ("%s (%s)" % (m["wrk"]["version"], m["wrk"]["message"])) if m["wrk"]["path"]
         else m["wrk"]["message"]),
        ("heavy app import", "%s in a fresh interpreter" % sec(m.get("app_import_s"))),
        ("load average (1 min) at start / end", "%s / %s" % (
            (m.get("loadavg_start") or ["?"])[0], (m.get("loadavg_end") or ["?"])[0])),
        ("stock gunicorn", "unmodified (the plugin's .pth hook removed by the launcher)"
         if m.get("isolate_stock") else "with the plugin's .pth hook loaded"),
    ]
    return table(["", ""], rows)


def _failures(p):
    if not p or not p.get("failures"):
        return ""
    lines = ["", "Failed samples (left out of the figures):", ""]
    for f in p["failures"]:
        lines.append("- %s, round %s: %s" % (f["variant"], f["round"],
                                              f["error"].splitlines()[0][:300]))
    return "\n".join(lines)


def _notes(p):
    notes = list(p.get("notes", []))
    load = p.get("loadavg")
    if load and load[0] and load[1]:
        notes.append("load average (1 min) of the machine before / after this piece: "
                     "%.2f / %.2f, on %s CPUs; this piece took %s"
                     % (load[0][0], load[1][0], _CPUS[0], _duration(p.get("seconds", 0))))
    return "\n".join("- " + n for n in notes)


_CPUS = [None]


def _skipped_line(results, name):
    p = results["pieces"].get(name)
    if p is None:
        return "Not run (not in `--pieces`)."
    if p.get("skipped"):
        return "**Skipped:** %s." % p["skipped"]
    if p.get("error"):
        return "**Failed:** %s." % p["error"]
    return None


def section_spawn(results):
    out = ["## Spawn time: one extra worker", ""]
    skip = _skipped_line(results, "spawn")
    if skip:
        return out + [skip]
    p = results["pieces"]["spawn"]
    rows = []
    for v in p["variants"]:
        s = p["summary"][v]
        rows.append(["`%s`" % v, LABELS.get(v, v), spread(s, ms),
                     ms(s.get("warm_request_ms")) if s else "-",
                     ms(s.get("fork_ms")) if s else "-", s["n"] if s else 0])
    out.append("Time from the request for one more worker (SIGTTIN; uWSGI: `+` on its master "
               "FIFO) until a new worker has answered an HTTP request; heavy app; median "
               "(min–max).")
    out.append("")
    out.append(table(["variant", "", "spawn time", "warm request¹", "fork²", "runs"], rows))
    out.append("")
    out.append("¹ GET /health on a new connection to the existing, warm worker: the part of "
               "each spawn sample that is the probe request itself. ² The plugin's own "
               "figure for creating the worker (its \"forked in\" log line; smart: the "
               "preloader's clone).")
    out += ["", "Ratios, computed round by round (median, min–max):", ""]
    out.append(table(["ratio", "value"], [[k, ratio_cell(s)] for k, s in p["ratios"].items()]))
    bd = p.get("breakdown") or {}
    if bd:
        vs = list(bd)
        steps = list(bd[vs[0]])
        n = max(s["n"] for v in vs for s in bd[v].values())
        out += ["", "Where the time of a spawn goes: %d extra samples of each, with gunicorn "
                "hooks that log when the new worker reaches `post_fork`, `post_worker_init` "
                "and its first `pre_request`/`post_request` (`benchmarks/conf/"
                "spawn_breakdown.py`); medians:" % n, ""]
        rows = [[label] + [ms(bd[v][label]["median"]) if bd[v].get(label) else "-" for v in vs]
                for label in steps]
        rows.append(["total (sum of the medians)"] + [
            ms(sum(bd[v][label]["median"] for label in steps)) for v in vs])
        out.append(table(["step"] + [LABELS.get(v, v) for v in vs], rows))
    out += ["", _notes(p), _failures(p)]
    return out


def section_boot(results):
    out = ["## Boot time: until %s workers all answer" % (
        results["pieces"].get("boot", {}).get("workers", 4)), ""]
    skip = _skipped_line(results, "boot")
    if skip:
        return out + [skip]
    p = results["pieces"]["boot"]
    rows = []
    for v in p["variants"]:
        s = p["summary"][v]
        if not s["all"]:
            rows.append(["`%s`" % v, LABELS.get(v, v)] + ["-"] * 5)
            continue
        rows.append(["`%s`" % v, LABELS.get(v, v), spread(s["all"], sec),
                     spread(s["first"], sec, bold=False),
                     sec(s["load_start_s"]["median"]) if s["load_start_s"] else "-",
                     "**%d**" % s["refused_during_load_total"],
                     "%d" % (s["refused_total"] - s["refused_during_load_total"])])
    out.append("From starting the server process until the last of the workers has answered. "
               "Refused connection attempts are counted over all runs: while the app loaded "
               "(from the moment the first process began importing it), and before that, "
               "while the interpreter and the server itself were starting and nothing was "
               "bound yet (the same for any server started cold; socket activation avoids it).")
    out.append("")
    out.append(table(["variant", "", "all workers answer", "first answer", "app import begins",
                      "refused while the app loaded", "refused before"], rows))
    out += ["", "Ratios, round by round:", ""]
    out.append(table(["ratio", "value"], [[k, ratio_cell(s)] for k, s in p["ratios"].items()]))
    out += ["", _notes(p), _failures(p)]
    return out


def section_memory(results):
    out = ["## Memory: master + preloader + workers after the requests", ""]
    skip = _skipped_line(results, "memory")
    if skip:
        return out + [skip]
    p = results["pieces"]["memory"]
    totals, workers = [], []
    for v in p["variants"]:
        s = p["summary"][v]
        if not s:
            totals.append(["`%s`" % v, LABELS.get(v, v)] + ["-"] * 4)
            workers.append(["`%s`" % v] + ["-"] * 5)
            continue
        totals.append([
            "`%s`" % v, LABELS.get(v, v), mib(s["total_pss_boot"]["median"]),
            spread(s["total_pss"], mib), mib(s["total_pss_collected"]["median"]),
            "%s / %s" % (mib(s["master_pss"]["median"]),
                         mib(s["preloader_pss"]["median"]) if s["preloader_pss"]["median"] else "-"),
        ])
        workers.append([
            "`%s`" % v, mib(s["worker_private_boot"]["median"]),
            "**%s** (%s–%s)" % (mib(s["worker_private"]["median"]), mib(s["worker_private_min"]),
                                mib(s["worker_private_max"])),
            mib(s["worker_private_collected"]["median"]),
            "%d–%d" % (s["served_min"], s["served_max"]), s.get("full_gcs", "?"),
        ])
    out.append("%d workers. Memory is read three times: right after boot; after every worker "
               "served at least %d requests of the heavy app (**the figure the targets use**); "
               "and after every worker then ran one full `gc.collect()`, as each does sooner or "
               "later. Total PSS sums master, preloader and workers." % (p["workers"], p["requests"]))
    out.append("")
    out.append(table(["variant", "", "total PSS at boot", "after the requests",
                      "after a full collection", "of which master / preloader"], totals))
    out += ["", "Private memory per worker (median over the workers; least–most after the "
                "requests):", ""]
    out.append(table(["variant", "at boot", "after the requests", "after a full collection",
                      "requests served per worker", "full collections per worker during "
                      "the requests"], workers))
    out += ["", "Ratios of total PSS after the requests, round by round:", ""]
    out.append(table(["ratio", "value"], [[k, ratio_cell(s)] for k, s in p["ratios"].items()]))
    out += ["", _notes(p), _failures(p)]
    out += ["", "### gc.freeze(), gc.collect() before freezing, warming the app before the "
                "first fork", ""]
    out += _gc_findings(results)
    return out


def _effect(a, b):
    """'lowers it by 3.1 % (x MiB)' from totals a (with) and b (without)."""
    d = a / b - 1
    if abs(d) < 0.01:
        return "makes no measurable difference (%+.1f %%, %s)" % (d * 100, mib(a - b))
    return "%s it by %s (%s)" % ("lowers" if d < 0 else "raises", pct(d), mib(abs(a - b)))


def _gc_findings(results):
    out = []
    col, rec = _mem_run(results, "stock-preload-freeze-collect"), _mem_run(results, "stock-preload-freeze")
    smart, warm = _mem_run(results, "smart"), _mem_run(results, "smart-warm")
    nofreeze, pre = _mem_run(results, "smart-no-freeze"), _mem_run(results, "stock-preload")
    if nofreeze and smart:
        out.append(
            "- **`gc.freeze()` at all** (`smart` vs `smart --no-gc-freeze`): after the "
            "requests %s vs %s, with %s full collections per worker during them: the "
            "collector's full passes are what un-share unfrozen objects, and these workers had "
            "not run one yet. After one full collection in every worker: %s frozen vs %s not "
            "(private per worker %s vs %s): freezing %s."
            % (mib(smart["after"]["total_pss"]), mib(nofreeze["after"]["total_pss"]),
               _gcs(smart, nofreeze), mib(smart["collected"]["total_pss"]),
               mib(nofreeze["collected"]["total_pss"]),
               mib(smart["collected"]["worker_private"]["median"]),
               mib(nofreeze["collected"]["worker_private"]["median"]),
               _effect(smart["collected"]["total_pss"], nofreeze["collected"]["total_pss"])))
    if pre and rec:
        out.append(
            "- The same for stock `--preload` with and without the recipe: after the "
            "requests %s vs %s; after a full collection in every worker %s vs %s."
            % (mib(rec["after"]["total_pss"]), mib(pre["after"]["total_pss"]),
               mib(rec["collected"]["total_pss"]), mib(pre["collected"]["total_pss"])))
    if col and rec:
        out.append(
            "- **`gc.collect()` before `gc.freeze()`** (stock `--preload` + recipe, with vs "
            "without one collection in `when_ready`): after the requests it %s (%s vs %s); "
            "right after boot it %s; after a full collection in every worker it %s. The "
            "plugin's preloader always collects before it freezes, so this pair measures that "
            "choice."
            % (_effect(col["after"]["total_pss"], rec["after"]["total_pss"]),
               mib(col["after"]["total_pss"]), mib(rec["after"]["total_pss"]),
               _effect(col["boot"]["total_pss"], rec["boot"]["total_pss"]),
               _effect(col["collected"]["total_pss"], rec["collected"]["total_pss"])))
    if warm and smart:
        out.append(
            "- **Warming the app in the preloader** (`smart-warm`: a `preloader_loaded` "
            "callback sends %d requests through the WSGI app in-process, then closes the "
            "database connections, before the preloader collects, freezes and forks; "
            "`benchmarks/conf/smart_warm.py`): after the requests it %s (%s vs %s; private "
            "per worker %s vs %s); right after boot the total is %s vs %s."
            % (_warm_count(), _effect(warm["after"]["total_pss"], smart["after"]["total_pss"]),
               mib(warm["after"]["total_pss"]), mib(smart["after"]["total_pss"]),
               mib(warm["after"]["worker_private"]["median"]),
               mib(smart["after"]["worker_private"]["median"]),
               mib(warm["boot"]["total_pss"]), mib(smart["boot"]["total_pss"])))
    if not out:
        out.append("Not measured in this run (the variants were not run).")
    out.append("")
    out.append("One run per variant: a memory sample takes about half a minute (16,000+ "
               "requests), and the full run must stay within 15 minutes on 2 cores. Differences "
               "of 1–2 % between two variants are within what repeated runs move; "
               "`python benchmarks/memory_usage.py --runs 3` repeats them.")
    sugg = _suggestions(results)
    if sugg:
        out += ["", "Suggestions for the plugin (not changed by this benchmark):", ""] + sugg
    return out


def _gcs(*runs):
    counts = [n for r in runs for n in (r.get("full_gcs") or [])]
    if not counts:
        return "an unknown number of"
    lo, hi = min(counts), max(counts)
    return str(lo) if lo == hi else "%d–%d" % (lo, hi)


def _warm_count():
    from benchmarks.warmup import WARM_PATHS
    return len(WARM_PATHS)


def _suggestions(results):
    out = []
    col, rec = _mem_run(results, "stock-preload-freeze-collect"), _mem_run(results, "stock-preload-freeze")
    smart, warm = _mem_run(results, "smart"), _mem_run(results, "smart-warm")
    if col and rec:
        d = col["after"]["total_pss"] / rec["after"]["total_pss"] - 1
        if d > 0.01:
            out.append("- The collection before freezing cost memory here (%s more after the "
                       "requests): a setting to skip the preloader's `gc.collect()` (freeze "
                       "only, as the gc documentation advises) is worth measuring on more "
                       "apps." % pct(d))
        elif d < -0.01:
            out.append("- The collection before freezing saved memory here (%s): keep the "
                       "preloader's `gc.collect()`." % pct(d))
        else:
            out.append("- The collection before freezing made no measurable difference "
                       "here (%+.1f %%): nothing to change." % (d * 100))
    if warm and smart:
        d = warm["after"]["total_pss"] / smart["after"]["total_pss"] - 1
        if d < -0.01:
            out.append("- Warming in the preloader saved %s (%s): document the "
                       "`preloader_loaded` warm-up pattern (send a few requests through the "
                       "app in-process, then close database connections), or offer a "
                       "`preloader_warmup` setting that takes a list of paths."
                       % (pct(d), mib(smart["after"]["total_pss"] - warm["after"]["total_pss"])))
        else:
            out.append("- Warming in the preloader did not lower memory here (%+.1f %%): "
                       "nothing to add to the plugin for it." % (d * 100))
    if smart and rec:
        extra = (smart["boot"]["worker_private"]["median"]
                 - rec["boot"]["worker_private"]["median"])
        if extra > 0.5 * MiB:
            out.append("- Each smart worker starts with %s more private memory than a stock "
                       "`--preload` worker with the recipe (%s vs %s right after boot, %d "
                       "workers: %s); the same app modules are loaded in both, so it is "
                       "written by the worker's own start-up or by the preloader between "
                       "forks: worth finding with a per-mapping diff of two workers' "
                       "`smaps`." % (mib(extra), mib(smart["boot"]["worker_private"]["median"]),
                                     mib(rec["boot"]["worker_private"]["median"]),
                                     smart["after"]["n_workers"],
                                     mib(extra * smart["after"]["n_workers"])))
        master_priv = sum(p["private"] for p in smart["after"]["processes"]
                          if p["role"] == "master")
        if smart["after"]["total_pss"] >= rec["after"]["total_pss"]:
            out.append("- The smart master holds %s private memory, a cost stock `--preload` "
                       "does not have (its master is the app holder). A leaner master "
                       "(fewer modules imported before the preloader is forked) is the main "
                       "lever left for the \"below the recipe\" target." % mib(master_priv))
    return out


def section_overhead(results):
    out = ["## Request overhead: hello world under wrk", ""]
    skip = _skipped_line(results, "overhead")
    if skip:
        return out + [skip]
    p = results["pieces"]["overhead"]
    cpu = p.get("cpu_us_per_request") or {}
    rows = [["`%s`" % c, "`%s`" % p["commands"].get(c, "-"),
             spread(p["summary"][c], rps),
             spread(cpu.get(c), lambda x: "%.0f µs" % x, bold=False)] for c in p["variants"]]
    out.append(table(["configuration", "server command", "requests/s", "server CPU per request"],
                     rows))
    out += ["", "Ratios, cycle by cycle (requests/s, and server CPU time per request):", ""]
    cpu_ratios = p.get("cpu_ratios") or {}
    out.append(table(["ratio", "requests/s", "CPU per request"],
                     [[k, ratio_cell(s), ratio_cell(cpu_ratios.get(k))]
                      for k, s in p["ratios"].items()]))
    out += ["", _notes(p), _failures(p)]
    return out


def section_surge(results):
    p = results["pieces"].get("surge")
    out = ["## Surge: from 1 worker to %s" % (p.get("target", 8) if p else 8), ""]
    skip = _skipped_line(results, "surge")
    if skip:
        return out + [skip]
    rows = []
    for v in p["variants"]:
        s = p["summary"][v]
        first = [r["answers_s"][0] for r in p["runs"][v]]
        rows.append(["`%s`" % v, LABELS.get(v, v), spread(s, sec),
                     sec(statistics.median(first)) if first else "-"])
    out.append(table(["variant", "", "until all serve", "first new worker serves"], rows))
    out += ["", "Ratios, round by round:", ""]
    out.append(table(["ratio", "value"], [[k, ratio_cell(s)] for k, s in p["ratios"].items()]))
    out += ["", _notes(p), _failures(p)]
    return out


def _headline(results):
    rows = []
    spawn, boot, mem = piece(results, "spawn"), piece(results, "boot"), piece(results, "memory")
    ov, sg = piece(results, "overhead"), piece(results, "surge")

    def med(p, v, key=None, fmt=str):
        if not p or not p["summary"].get(v):
            return "-"
        s = p["summary"][v]
        s = s[key] if key else s
        return fmt(s["median"]) if s else "-"

    if spawn:
        rows.append(["spawn one worker", med(spawn, "smart", fmt=ms),
                     med(spawn, "stock-preload", fmt=ms), med(spawn, "direct", fmt=ms),
                     med(spawn, "stock", fmt=ms),
                     "%s / %s" % (med(spawn, "uwsgi", fmt=ms), med(spawn, "uwsgi-lazy", fmt=ms))])
    if boot:
        rows.append(["boot, %d workers answer" % boot["workers"], med(boot, "smart", "all", sec),
                     med(boot, "stock-preload", "all", sec), med(boot, "direct", "all", sec),
                     med(boot, "stock", "all", sec),
                     "%s / %s" % (med(boot, "uwsgi", "all", sec),
                                  med(boot, "uwsgi-lazy", "all", sec))])
    if mem:
        rows.append(["total PSS, %d workers after %d requests each" % (mem["workers"], mem["requests"]),
                     "%s (warmed: %s)" % (med(mem, "smart", "total_pss", mib),
                                          med(mem, "smart-warm", "total_pss", mib)),
                     "%s (recipe: %s)" % (med(mem, "stock-preload", "total_pss", mib),
                                          med(mem, "stock-preload-freeze", "total_pss", mib)),
                     med(mem, "direct", "total_pss", mib), med(mem, "stock", "total_pss", mib),
                     "%s / %s" % (med(mem, "uwsgi", "total_pss", mib),
                                  med(mem, "uwsgi-lazy", "total_pss", mib))])
    if sg:
        rows.append(["surge 1 → %d workers" % sg["target"], med(sg, "smart", fmt=sec),
                     med(sg, "stock-preload", fmt=sec), med(sg, "direct", fmt=sec), "-", "-"])
    if ov:
        rows.append(["hello world requests/s, %d sync / gthread workers" % ov["workers"],
                     "%s / %s" % (med(ov, "smart-sync", fmt=rps), med(ov, "smart-gthread", fmt=rps)),
                     "-", "-",
                     "%s / %s" % (med(ov, "stock-sync", fmt=rps), med(ov, "stock-gthread", fmt=rps)),
                     "-"])
    if not rows:
        return []
    return [table(["", "smart", "stock `--preload`", "direct", "stock gunicorn",
                   "uWSGI / `--lazy-apps`"], rows)]


def build_markdown(results, chart=None):
    m = results["meta"]
    _CPUS[0] = m.get("cpus")
    when = m.get("started", datetime.datetime.now(datetime.timezone.utc).isoformat())
    out = ["# Benchmarks", ""]
    out.append("Generated by `python -m benchmarks%s` on %s, in %s (%s run). Do not edit by "
               "hand: run the command again. The code and what exactly each figure measures: "
               "[`benchmarks/`](../benchmarks/) (module docstrings)."
               % (" --quick" if m.get("mode") == "quick" else "", when,
                  _duration(m.get("seconds", 0)), m.get("mode")))
    if m.get("mode") == "quick":
        out += ["", "**Smoke run (`--quick`): tiny numbers, not results.**"]
    out.append("")
    head = _headline(results)
    if head:
        out += ["## Headline (medians)", ""] + head + [""]
    if chart:
        out += ["![spawn time and memory](%s)" % chart, ""]
    out += ["## Targets", ""]
    targets = evaluate(results)
    out.append(table(["target", "measured", "result"],
                     [[t["text"], t["measured"] + (" — " + t["shortfall"] if t["shortfall"] else ""),
                       "**%s**" % t["status"]] for t in targets]))
    misses = [t for t in targets if t["status"] == "MISS"]
    if misses:
        out += ["", "### Missed targets: by how much, why, what would close it", ""]
        for t in misses:
            why = explain(t["id"], results)
            out.append("- **%s** — %s.%s" % (t["text"], t["shortfall"], " " + why if why else ""))
    skipped = results.get("skipped") or {}
    if skipped:
        out += ["", "Skipped in this run:", ""] + ["- %s" % s for s in skipped.values()]
    out += ["", "## Machine and versions", "", _machine(results), ""]
    out.append("Other processes on the machine compete for its cores: each section gives the "
               "load average before and after it; every comparison is made within one round, "
               "variants interleaved.")
    for section in (section_spawn, section_boot, section_memory, section_overhead, section_surge):
        out += [""] + section(results)
    if results.get("leftovers"):
        out += ["", "**Processes left behind by this run (killed at the end):** %s"
                % results["leftovers"]]
    out += ["", "## Commands", "", "The server variants (port, control sockets and worker "
            "count vary per piece):", ""]
    out += _commands()
    return "\n".join(line for line in out if line is not None).rstrip() + "\n"


def _commands():
    out = []
    for name, v in harness.VARIANTS.items():
        if v.kind == "floor":
            continue
        s = harness.Server(v, harness.HEAVY_APP, workers=4, tmpdir="/tmp", port=8000)
        out.append("- `%s`: `%s`" % (name, s.display_command()))
    out.append("- `fork-floor`: a Python process that imported the app calls `os.fork()`; "
               "time to the child's first statement")
    out.append("")
    out.append("The configuration files: [`benchmarks/conf/`](../benchmarks/conf/). The "
               "pieces add what they need: uWSGI's spawn samples run in cheaper mode "
               "(`--cheaper-algo manual --cheaper 1 --cheaper-initial 1 --cheaper-overload 1 "
               "--processes 16 --master-fifo PATH`), gthread runs add `--threads 4` (stock: "
               "`-k gthread`), and every gunicorn server gets private `--control-socket` and "
               "`--smartspawn-socket` paths so that concurrent servers never collide.")
    return out


def write_markdown(results, path, chart=None):
    with open(path, "w") as f:
        f.write(build_markdown(results, chart))


# --------------------------------------------------------------------------
# the chart


def write_chart(results, path):
    """Spawn time, boot time and memory as one PNG; returns None, or why it could not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError as e:
        return "matplotlib is not installed (%s)" % e
    spawn, boot, mem = piece(results, "spawn"), piece(results, "boot"), piece(results, "memory")
    if not spawn and not mem:
        return "neither spawn nor memory results to draw"
    fig, grid = plt.subplots(2, 2, figsize=(14, 10))
    smart_color, other_color, boot_color = "#1f77b4", "#8c8c8c", "#c6dbef"

    def color(v):
        return smart_color if v.startswith("smart") else other_color

    def hbars(ax, vs, summaries, fmt, title, xlabel, log=False):
        meds = [summaries[v]["median"] for v in vs]
        lo = [m - summaries[v]["min"] for v, m in zip(vs, meds)]
        hi = [summaries[v]["max"] - m for v, m in zip(vs, meds)]
        y = list(range(len(vs)))
        ax.barh(y, meds, xerr=[lo, hi], color=[color(v) for v in vs], capsize=3)
        ax.set_yticks(y)
        ax.set_yticklabels([LABELS.get(v, v) for v in vs], fontsize=8)
        ax.invert_yaxis()
        if log:
            ax.set_xscale("log")
            ax.set_xlim(right=max(meds) * 10)
        else:
            ax.set_xlim(right=max(summaries[v]["max"] for v in vs) * 1.25)
        for i, m in enumerate(meds):
            ax.text(summaries[vs[i]]["max"] * (1.12 if log else 1.02), i, fmt(m),
                    va="center", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)

    ax = grid[0][0]
    if spawn:
        vs = [v for v in spawn["variants"] if spawn["summary"].get(v)]
        hbars(ax, vs, spawn["summary"], ms, "Spawn one extra worker (heavy app)",
              "time to the new worker's first answer, log scale (median, min–max)", log=True)
    else:
        ax.axis("off")
    ax = grid[0][1]
    if boot:
        vs = [v for v in boot["variants"] if boot["summary"][v]["all"]]
        hbars(ax, vs, {v: boot["summary"][v]["all"] for v in vs}, sec,
              "Boot until %d workers answer" % boot["workers"], "seconds (median, min–max)")
    else:
        ax.axis("off")
    if mem:
        vs = [v for v in mem["variants"] if mem["summary"].get(v)]
        y = list(range(len(vs)))
        h = 0.27
        for ax, key, title in ((grid[1][0], "total_pss", "Total PSS, %d workers" % mem["workers"]),
                               (grid[1][1], "worker_private", "Private memory per worker")):
            at_boot = [mem["summary"][v][key + "_boot"]["median"] / MiB for v in vs]
            after = [mem["summary"][v][key]["median"] / MiB for v in vs]
            gc_all = [mem["summary"][v][key + "_collected"]["median"] / MiB for v in vs]
            ax.barh([i - h for i in y], at_boot, height=h, color=boot_color)
            ax.barh(y, after, height=h, color=[color(v) for v in vs])
            ax.barh([i + h for i in y], gc_all, height=h, color="white",
                    edgecolor=[color(v) for v in vs], hatch="///")
            ax.set_yticks(y)
            ax.set_yticklabels([LABELS.get(v, v) for v in vs], fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel("MiB")
            ax.set_title(title, fontsize=10)
            top = max(after + at_boot + gc_all)
            ax.set_xlim(right=top * 1.2)
            for i, (a, c) in enumerate(zip(after, gc_all)):
                ax.text(a + top * 0.01, i, "%.0f" % a if a >= 10 else "%.1f" % a,
                        va="center", fontsize=7)
                if abs(c - a) / max(a, 1e-9) > 0.02:
                    ax.text(c + top * 0.01, i + h, "%.0f" % c if c >= 10 else "%.1f" % c,
                            va="center", fontsize=7)
        fig.legend(handles=[
            Patch(color=boot_color, label="memory right after boot"),
            Patch(color=smart_color, label="after %d requests per worker "
                  "(smart spawning)" % mem["requests"]),
            Patch(color=other_color, label="after %d requests per worker "
                  "(other variants)" % mem["requests"]),
            Patch(facecolor="white", edgecolor=other_color, hatch="///",
                  label="then after one full gc.collect() in every worker")],
            fontsize=8, loc="lower center", ncol=4, frameon=False)
    else:
        grid[1][0].axis("off")
        grid[1][1].axis("off")
    m = results["meta"]
    fig.suptitle("gunicorn-smartspawn %s, gunicorn %s, Python %s, %s CPUs%s"
                 % (m.get("gunicorn_smartspawn"), m.get("gunicorn"), m.get("python"),
                    m.get("cpus"), " (--quick smoke run: not results)"
                    if m.get("mode") == "quick" else ""), fontsize=11)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
