"""Turn the results of ``python -m benchmarks`` into docs/benchmarks.md and a PNG chart.

Everything in the report is computed from the results of the same run:
medians with min and max, ratios taken round by round, the targets of
issue 6 with PASS/MISS, and for every miss the shortfall and an explanation
built from the run's own figures.
"""

import datetime
import statistics

from benchmarks import harness, lead_targets

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
    out += evaluate_pool(results)
    out += lead_targets.evaluate(results)
    if "asgi" in results["pieces"]:  # only runs that asked for the ASGI piece
        out += [
            _at_least("asgi-spawn", "ASGI (%s): smart spawn at least 40× faster than direct"
                      % harness.ASGI_WORKER, results, "asgi", "spawn:direct-asgi/smart-asgi",
                      40, "direct / smart ="),
            _at_most("asgi-memory", "ASGI (%s): smart total PSS at most 0.5× direct (8 workers)"
                     % harness.ASGI_WORKER, results, "asgi", "memory:smart-asgi/direct-asgi",
                     0.5, "smart / direct ="),
        ]
    return out


# the dynamic pool's targets (surge_dynamic.py, wake.py)
SURGE_DYNAMIC_LIMIT_S = 0.2
SURGE_DYNAMIC_P99_LIMIT = 2.0


def evaluate_pool(results):
    sd = piece(results, "surge-dynamic")
    n = sd["clients"] if sd else 8
    text = ("surge (dynamic pool, no signals): smart reaches %d serving workers within %s of "
            "a step from 1 to %d clients" % (n, sec(SURGE_DYNAMIC_LIMIT_S), n))
    s = ((sd or {}).get("summary") or {}).get("smart-dynamic")
    if not s:
        out = [_target("surge-dynamic", text, _not_measured(results, "surge-dynamic"), None, "")]
    elif not s["until_all_serve_s"]:
        out = [_target("surge-dynamic", text, "never, in %d runs" % s["n"], False,
                       "%d workers never served" % n)]
    else:
        t = s["until_all_serve_s"]
        context = []
        for v, label in (("direct-dynamic", "direct"), ("uwsgi-cheaper-backlog", "uWSGI backlog"),
                         ("uwsgi-cheaper-busyness", "uWSGI busyness")):
            o = sd["summary"].get(v)
            if o and o["until_all_serve_s"]:
                context.append("%s %s%s" % (label, sec(o["until_all_serve_s"]["median"]),
                                            _grew_before(o)))
            elif o:
                context.append("%s never" % label)
        measured = "smart %s%s%s" % (
            spread(t, sec), "" if s["reached"] == s["n"] else
            " in the %d of %d runs that got there" % (s["reached"], s["n"]),
            " (%s)" % ", ".join(context) if context else "")
        ok = t["median"] <= SURGE_DYNAMIC_LIMIT_S
        out = [_target("surge-dynamic", text, measured, ok, "%s over the limit of %s" % (
            pct(t["median"] / SURGE_DYNAMIC_LIMIT_S - 1), sec(SURGE_DYNAMIC_LIMIT_S)),
            t["median"])]
    out.append(_at_most(
        "surge-dynamic-p99", "surge (dynamic pool): smart's p99 latency during the step at most "
        "%d× that of a fixed pool of %d smart workers" % (SURGE_DYNAMIC_P99_LIMIT, n),
        results, "surge-dynamic", "smart-dynamic/smart p99", SURGE_DYNAMIC_P99_LIMIT,
        "dynamic / fixed ="))
    out.append(_at_most(
        "wake-preloader", "wake from zero, preloader kept: within 3× of one smart spawn plus one "
        "warm request", results, "wake", "smart-zero", 3.0, "wake / (spawn + warm request) ="))
    out.append(_at_most(
        "wake-cold", "wake from zero, preloader idled out too: within 1.2× of the app's import "
        "plus one spawn", results, "wake", "smart-zero-cold", 1.2, "wake / (import + spawn) ="))
    return out


def _grew_before(summary):
    """' (already at N workers when the step came)' for a pool that grew before t0."""
    at = summary.get("workers_at_step") or {}
    if at and at.get("median", 1) > 1:
        return " (already %d workers at the step)" % at["median"]
    return ""


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
    if tid.startswith("lead-"):  # issue 15's targets: lead_targets judges and explains them
        return lead_targets.explain(tid, results)
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
    if tid in ("asgi-spawn", "asgi-memory"):
        return _explain_asgi(tid, results)
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
    if tid in ("surge-dynamic", "surge-dynamic-p99"):
        return _explain_surge_dynamic(tid, results)
    if tid in ("wake-preloader", "wake-cold"):
        return _explain_wake(tid, results)
    return ""


def _explain_asgi(tid, results):
    p = piece(results, "asgi")
    if not p:
        return ""
    if tid == "asgi-spawn":
        s = p["spawn"]["summary"]
        smart, direct, pre = (s.get(v) or {} for v in ("smart-asgi", "direct-asgi",
                                                       "stock-preload-asgi"))
        if not smart or not direct:
            return ""
        goal = direct["median"] / 40
        return ("Direct spawning imports the app in the new worker (median %s); 40× below "
                "that is %s, while a smart ASGI spawn took %s. Stock gunicorn `--preload` "
                "with the same worker class, whose worker also forks with the app already "
                "imported, took %s: most of a smart ASGI spawn is the request model's own "
                "start after the fork (a new event loop, uvicorn's server start-up, the first "
                "request through Django's ASGI handler and its thread), not the import, so a "
                "faster spawn needs a cheaper worker start, not a faster fork."
                % (ms(direct["median"]), ms(goal), ms(smart["median"]),
                   ms(pre.get("median"))))
    m = p["memory"]["summary"]
    smart, direct = m.get("smart-asgi"), m.get("direct-asgi")
    if not smart or not direct:
        return ""
    return ("Smart total PSS %s against direct %s; every worker's private memory (median "
            "%s smart) is what keeps the ratio up." % (
                mib(smart["total_pss"]["median"]), mib(direct["total_pss"]["median"]),
                mib(smart["worker_private"]["median"])))


def _ordinal(n):
    return "%d%s" % (n, "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th"))


def _explain_surge_dynamic(tid, results):
    p = piece(results, "surge-dynamic")
    s = (p or {}).get("summary", {}).get("smart-dynamic")
    if not s:
        return ""
    n = p["clients"]

    def med(key, fmt=sec):
        return fmt(s[key]["median"]) if s.get(key) else "-"

    parts = []
    if tid == "surge-dynamic-p99":
        ref = p["summary"].get(p["reference"])
        parts.append(
            "p99 %s (p50 %s) for the dynamic pool vs %s (p50 %s) for the fixed pool of %d. "
            "Until the new workers serve, the %d clients queue behind the one worker, each "
            "request waiting for up to %d others of %d ms; the growth took %s here (see the "
            "previous target), and those first few hundred ms hold more than 1 %% of the %s "
            "requests of the window, so the p99 is the growth time itself: it comes down with "
            "a faster decision and faster spawning."
            % (med("p99_ms", ms), med("p50_ms", ms),
               ms(ref["p99_ms"]["median"]) if ref else "-",
               ms(ref["p50_ms"]["median"]) if ref else "-", n, n, n - 1, p["view_ms"],
               med("until_all_serve_s"), "%.0f" % s["requests_in_window"]["median"]))
        return " ".join(parts)
    decided = s.get("first_new_process_s")
    procs = s.get("until_all_processes_s")
    lines = sorted({line for r in p["runs"]["smart-dynamic"] for line in r["scale_lines"]})
    parts.append(
        "Medians of %d round%s: the first new worker process exists %s after the step (the "
        "master's decision plus one spawn), %d worker processes at %s, the first new worker "
        "answers at %s and the %s distinct worker at %s. The master logged: %s."
        % (s["n"], "" if s["n"] == 1 else "s", med("first_new_process_s"), n,
           med("until_all_processes_s"), med("first_new_serves_s"), _ordinal(n),
           med("until_all_serve_s"),
           "; ".join("`%s`" % line for line in lines[:4]) or "no scale line"))
    if decided and decided["max"] <= 0.1:
        parts.append(
            "The decision was quick (the first new worker process at most %s after the step "
            "in every round, its spawn included) "
            "because the one client before the step kept the only worker busy nearly all the "
            "time: the master had seen the pool saturated and was already sampling it every "
            "20 ms. A step that finds the pool idle waits for the master's next pass, up to "
            "a second (`python benchmarks/surge_dynamic.py --pre 0` measures that case)."
            % sec(decided["max"]))
    if decided and decided["max"] > 0.1:
        parts.append(
            "**The decision is late**: the first new worker appeared %s after the step "
            "(%s–%s over the rounds), not tens of ms. While the pool is not saturated the "
            "master samples the accept queue once per pass of its loop, about once a second "
            "(the 20 ms sampling starts only once it has seen saturation), and nothing wakes "
            "it when a queue forms behind busy workers, so the step waits 0–1 s for the next "
            "pass. Closing this: sample a dynamic app's queue more often than every second "
            "(a `TCP_INFO` read per listener costs microseconds), or wake the master when a "
            "worker starts a request with every other worker busy."
            % (sec(decided["median"]), sec(decided["min"]), sec(decided["max"])))
    if decided and procs and n > 2:
        per = (procs["median"] - decided["median"]) / (n - 2)
        spawn = (piece(results, "spawn") or {}).get("summary", {}).get("smart") or {}
        one = spawn.get("median")
        if one is None:  # the wake piece's reference spawns, same run
            one = ((((piece(results, "wake") or {}).get("summary") or {}).get("spawn") or {})
                   .get("ms") or {}).get("median")
        parts.append(
            "**The spawns come one after another**, %s apart: the preloader serves spawn "
            "requests one at a time (each a fork of a process of some 150 MiB; the plugin's "
            "own fork time was %s median here), then each new worker starts and takes its "
            "first request, on 2 cores shared with %d clients and the rest of the machine. "
            "%sWhat would close it: fork the whole batch at once in the preloader (a fork "
            "is a few ms; the workers' start-ups would then overlap)."
            % (ms(per * 1000), ms(s["fork_ms"]["median"]) if s.get("fork_ms") else "-", n,
               ("One spawn took %s elsewhere in this run (a single spawn, with no request load on "
                "the server), so %d in a row take about %s even when decided at once. "
                % (ms(one), n - 1, sec(one / 1000 * (n - 1)))) if one else ""))
    most = s.get("most_workers")
    if most and most["max"] > n:
        parts.append(
            "**The pool overshot**: it grew to %d worker processes (most in one round) for "
            "%d clients, i.e. more than can ever be busy at once; see the log lines above "
            "(\"scale up\" while workers it had just spawned were not ready yet)." % (most["max"], n))
    return " ".join(parts)


def _explain_wake(tid, results):
    p = piece(results, "wake")
    if not p:
        return ""
    part = "smart-zero" if tid == "wake-preloader" else "smart-zero-cold"
    w = p["summary"].get(part)
    ref = p["references"].get(part)
    if not w or not ref:
        return ""
    text = "Wake median %s vs reference %s (same rounds). " % (ms(w["wake_ms"]["median"]),
                                                              ms(ref["median"]))
    if part == "smart-zero":
        text += ("A wake with the preloader alive is the master noticing the connection "
                 "(it watches the listener of an app at zero), one spawn and the request; "
                 "the extra over a spawn is the master's wake-up and its pass over the "
                 "pools before it asks the preloader.")
    else:
        text += ("A cold wake is a new preloader (forked from the master), the app's import "
                 "in it, the preloader's `gc.collect()` and `gc.freeze()`, one spawn and the "
                 "request. The import in a fresh interpreter is the reference; the rest is "
                 "the preloader's own start and the collection over a freshly imported heap, "
                 "which the reference does not pay. Noise: imports on this machine vary by "
                 "tens of percent between runs when other work competes for the 2 cores.")
    return text


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
        steps = list(dict.fromkeys(label for v in vs for label in bd[v]))  # a spare's steps differ
        n = max(s["n"] for v in vs for s in bd[v].values())
        out += ["", "Where the time of a spawn goes: %d extra samples of each, with gunicorn "
                "hooks that log when the new worker reaches `post_fork`, `post_worker_init` "
                "and its first `pre_request`/`post_request` (`benchmarks/conf/"
                "spawn_breakdown.py`); medians:" % n, ""]
        rows = [[label] + [ms(bd[v][label]["median"]) if bd[v].get(label) else "-" for v in vs]
                for label in steps]
        rows.append(["total (sum of the medians)"] + [
            ms(sum(s["median"] for s in bd[v].values())) for v in vs])
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
            "- **Warming the app in the preloader** (`smart-warm`: `preloader_warmup` "
            "sends %d requests through the WSGI app in-process, then closes the "
            "database connections, before the preloader collects, freezes and forks; "
            "`benchmarks/conf/smart_warm.py`): after the requests it %s (%s vs %s; private "
            "per worker %s vs %s); right after boot the total is %s vs %s."
            % (_warm_count(), _effect(warm["after"]["total_pss"], smart["after"]["total_pss"]),
               mib(warm["after"]["total_pss"]), mib(smart["after"]["total_pss"]),
               mib(warm["after"]["worker_private"]["median"]),
               mib(smart["after"]["worker_private"]["median"]),
               mib(warm["boot"]["total_pss"]), mib(smart["boot"]["total_pss"])))
    out += _ksm_findings(results)
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


def _ksm_findings(results):
    """The ksm variants against the same variants without it, or why they did not run."""
    p = piece(results, "memory")
    skipped = (p or {}).get("skipped_variants") or {}
    if skipped:
        return ["- **KSM** (`--ksm`) was not measured: %s." % "; ".join(sorted(set(skipped.values())))]
    out = []
    for with_ksm, without in (("smart-ksm", "smart"), ("smart-refork-ksm", "smart-refork")):
        a, b = _mem_run(results, with_ksm), _mem_run(results, without)
        if not (a and b):
            continue
        merged = a.get("ksm") or {}
        out.append(
            "- **KSM** (`%s` vs `%s`): after the requests it %s (%s vs %s; private per worker %s "
            "vs %s); KSM's daemon, scanning fast, took %.0f s for %d full scans, after which %d page "
            "mappings (%s, `pages_sharing`) pointed to %d merged pages (`pages_shared`)."
            % (with_ksm, without, _effect(a["after"]["total_pss"], b["after"]["total_pss"]),
               mib(a["after"]["total_pss"]), mib(b["after"]["total_pss"]),
               mib(a["after"]["worker_private"]["median"]), mib(b["after"]["worker_private"]["median"]),
               merged.get("seconds", 0), merged.get("scans", 0), merged.get("pages_sharing", 0),
               mib(merged.get("pages_sharing", 0) * 4096), merged.get("pages_shared", 0)))
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
            out.append("- Warming in the preloader saved %s (%s): set `preloader_warmup` "
                       "to a few paths of each kind of page (docs/configuration.md)."
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
    method = p.get("cpu_method") or {}
    if method.get("fixed_count") and method.get("rounds") and method.get("requests"):
        how = ("requests/s cycle by cycle; server CPU time per request round by round, over %d "
               "rounds of %d requests per server (%d connections, one wrk thread)"
               % (method["rounds"], method["requests"], method["connections"]))
    else:
        how = "cycle by cycle: requests/s, and server CPU time per request over the same bursts"
    out += ["", "Ratios (%s):" % how, ""]
    cpu_ratios = p.get("cpu_ratios") or {}
    out.append(table(["ratio", "requests/s", "CPU per request"],
                     [[k, ratio_cell(s), ratio_cell(cpu_ratios.get(k))]
                      for k, s in p["ratios"].items()]))
    out += ["", _notes(p), _failures(p)]
    return out


def section_asgi(results):
    p = results["pieces"].get("asgi")
    if p is None:
        return []  # not asked for: no section
    out = ["## ASGI: spawn time and memory (heavy app over ASGI)", ""]
    skip = _skipped_line(results, "asgi")
    if skip:
        return out + [skip]
    mem = p["memory"]
    rows = []
    for v in p["variants"]:
        s, m = p["spawn"]["summary"].get(v), mem["summary"].get(v)
        rows.append(["`%s`" % v, "`%s`" % p["commands"][v].split(" -w ")[0],
                     spread(s, ms), spread(m and m["total_pss"], mib),
                     spread(m and m["worker_private"], mib)])
    out.append(table(["variant", "command", "spawn one worker",
                      "total PSS, %d workers" % mem["workers"], "worker private"], rows))
    if p["ratios"]:
        out += ["", "Ratios, round by round:", ""]
        out.append(table(["ratio", "value"],
                         [[k, ratio_cell(s)] for k, s in p["ratios"].items()]))
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


def section_surge_dynamic(results):
    p = results["pieces"].get("surge-dynamic")
    n = p.get("clients", 8) if p else 8
    out = ["## Surge on a dynamic pool: from 1 to %d clients, no signals" % n, ""]
    skip = _skipped_line(results, "surge-dynamic")
    if skip:
        return out + [skip]
    out.append("One client of a %d ms view (`GET /_bench/sleep?ms=%d`), then, from t0, %d clients; the "
               "dynamic pools start with one worker and must grow by themselves (no signal, "
               "no command). Time from t0 until %d distinct workers have answered, and the "
               "latency of every request started in the first %.0f s after t0; median "
               "(min–max) over the rounds." % (p["view_ms"], p["view_ms"], n, n, p["window_s"]))
    out.append("")
    rows = []
    for v in p["variants"]:
        s = p["summary"][v]
        label = (LABELS.get(v, v) if v != p["reference"]
                 else "%s, fixed pool of %d (reference)" % (LABELS.get(v, v), n))
        if not s:
            rows.append(["`%s`" % v, label] + ["-"] * 7)
            continue
        until = spread(s["until_all_serve_s"], sec) if s["until_all_serve_s"] else "never"
        if s["until_all_serve_s"] and s["reached"] < s["n"]:
            until += " (%d of %d runs; never in the others)" % (s["reached"], s["n"])
        at = s["workers_at_step"]
        rows.append(["`%s`" % v, label, until,
                     spread(s["until_all_processes_s"], sec, bold=False)
                     if s["until_all_processes_s"] else "-",
                     spread(s["p99_ms"], ms), spread(s["p50_ms"], ms, bold=False),
                     _count(at), _count(s.get("most_workers")), "%d" % s["errors"]])
    out.append(table(["variant", "", "until %d serve" % n, "until %d worker processes" % n,
                      "p99 latency", "p50 latency", "workers at the step",
                      "most workers seen", "failed requests"],
                     rows))
    out += ["", "Ratios, round by round:", ""]
    out.append(table(["ratio", "value"], [[k, ratio_cell(s)] for k, s in p["ratios"].items()]))
    lines = {}
    for v in p["variants"]:
        for r in p["runs"].get(v, []):
            for line in r.get("scale_lines", []):
                lines.setdefault(v, set()).add(line)
    if lines:
        out += ["", "The plugin's master logged (all rounds):", ""]
        for v, ls in lines.items():
            out.append("- `%s`: %s" % (v, "; ".join("`%s`" % line for line in sorted(ls)[:6])))
    grew = []
    for v in p["variants"]:
        runs = p["runs"].get(v) or []
        early = [r for r in runs if r["workers_at_step"] > 1]
        if v != p["reference"] and early:
            grew.append("`%s` in %d of %d rounds (%s workers)" % (
                v, len(early), len(runs), ", ".join("%d" % r["workers_at_step"] for r in early)))
    if grew:
        out += ["", "Grown before the step: %s. The single client before the step (one %d ms "
                "request after the other) keeps one worker busy nearly all the time, which "
                "uWSGI's busyness algorithm can take for overload; such a round measures a pool "
                "that was already full, not one growing from one worker."
                % ("; ".join(grew), p["view_ms"])]
    best = []
    for v in ("uwsgi-cheaper-backlog", "uwsgi-cheaper-busyness"):
        runs = [r for r in p["runs"].get(v) or [] if r["workers_at_step"] == 1
                and r["until_all_serve_s"] is not None]
        if runs:
            best.append((statistics.median(r["until_all_serve_s"] for r in runs),
                         statistics.median(r["p99_ms"] for r in runs), v, len(runs)))
    if best:
        best.sort()
        out += ["", "uWSGI's cheaper algorithms, rounds that started from one worker only: %s; "
                "the better one here: `%s`." % (
                    "; ".join("`%s` %s until %d serve, p99 %s (%d round%s)" % (
                        v, sec(t), n, ms(q), k, "" if k == 1 else "s") for t, q, v, k in best),
                    best[0][2])]
    over = [v for v in p["variants"] if p["summary"].get(v) and p["summary"][v].get("most_workers")
            and p["summary"][v]["most_workers"]["max"] > n]
    if over:
        out += ["", "Overshoot: %s grew beyond the %d clients (most workers seen: %s): more "
                "workers than requests that can ever be in flight." % (
                    ", ".join("`%s`" % v for v in over), n,
                    ", ".join("%d" % p["summary"][v]["most_workers"]["max"] for v in over))]
    out += ["", "Commands (port 8000 for the real free port):", ""]
    out += ["- `%s`: `%s`" % (v, c) for v, c in p.get("commands", {}).items()]
    out += ["", _notes(p), _failures(p)]
    return out


def _count(summary):
    if not summary:
        return "-"
    if summary["min"] == summary["max"]:
        return "%d" % summary["median"]
    return "%g (%d–%d)" % (summary["median"], summary["min"], summary["max"])


def section_wake(results):
    out = ["## Wake from zero: the first connection to an app with no worker", ""]
    skip = _skipped_line(results, "wake")
    if skip:
        return out + [skip]
    p = results["pieces"]["wake"]
    s = p["summary"]
    rows = []
    for v in ("smart-zero", "smart-zero-cold"):
        if v not in p["variants"]:
            continue
        w, ref, r = s.get(v), p["references"].get(v), p["ratios"].get(v)
        rows.append(["`%s`" % v, LABELS.get(v, v),
                     spread(w["wake_ms"], ms) if w else "-",
                     spread(ref, ms, bold=False) if ref else "-",
                     ratio_cell(r), "%.1f×" % p["targets"][v],
                     spread(w["zero_after_s"], sec, bold=False) if w else "-"])
    out.append("Time from a new connection's `GET /health` to an app at zero workers until "
               "its complete response, from the worker the connection woke; median (min–max) "
               "over all wakes (%d per server and round)." % p["cycles"])
    out.append("")
    out.append(table(["variant", "", "wake", "reference¹", "wake / reference", "target",
                      "back at zero after²"], rows))
    out.append("")
    refs = []
    if s.get("spawn"):
        refs.append("one smart spawn %s, a warm request %s" % (
            spread(s["spawn"]["ms"], ms, bold=False),
            spread(s["spawn"]["warm_request_ms"], ms, bold=False)))
    elif (p.get("fallback") or {}).get("spawn"):
        f = p["fallback"]["spawn"]
        refs.append("one smart spawn %s (warm request %s; from the spawn piece)"
                    % (ms(f["ms"]), ms(f["warm_request_ms"])))
    if s.get("import"):
        refs.append("the app's import in a fresh interpreter %s"
                    % spread(s["import"]["import_s"], sec, bold=False))
    elif (p.get("fallback") or {}).get("import"):
        refs.append("the app's import in a fresh interpreter %s (timed at the start of the "
                    "run)" % sec(p["fallback"]["import"]["import_s"]))
    out.append("¹ `smart-zero`: one smart spawn plus one warm request; `smart-zero-cold`: the "
               "app's import plus one smart spawn; per round, then median (min–max). Measured: "
               "%s. ² From the last answer until the worker (cold: and the preloader) had "
               "idled out with `--worker-idle-timeout 1` (`--preloader-idle-timeout 1`)."
               % ("; ".join(refs) or "-"))
    out += ["", "Commands (port 8000 for the real free port):", ""]
    out += ["- `%s`: `%s`" % (v, c) for v, c in p.get("commands", {}).items()]
    out += ["", _notes(p), _failures(p)]
    return out


def section_idle_memory(results):
    p = results["pieces"].get("idle-memory")
    n = p.get("apps", 3) if p else 3
    out = ["## Idle memory: %d apps in one master, scaled to zero vs one worker each" % n, ""]
    skip = _skipped_line(results, "idle-memory")
    if skip:
        return out + [skip]
    rows = []
    for c in p["variants"]:
        s = p["summary"][c]
        if not s:
            rows.append(["`%s`" % c, "-"] + ["-"] * 5)
            continue
        rows.append(["`%s`" % c, _idle_label(c), spread(s["total_pss"], mib),
                     mib(s["master_pss"]["median"]),
                     "%d: %s" % (s["preloaders"]["median"], mib(s["preloader_pss"]["median"])),
                     "%d: %s" % (s["workers"]["median"], mib(s["worker_pss"]["median"])),
                     "`%s`" % ", ".join("%s=%s" % kv for kv in p["settings"][c].items())])
    out.append("Total PSS of the master and everything below it once the server is idle; "
               "PSS by role (count: sum).")
    out.append("")
    out.append(table(["configuration", "", "total PSS", "master", "preloaders", "workers",
                      "per-app settings"], rows))
    if p["ratios"]:
        out += ["", "Ratios of total PSS, round by round:", ""]
        out.append(table(["ratio", "value"], [[k, ratio_cell(s)] for k, s in p["ratios"].items()]))
    z, o = p["summary"].get("zero-preloaders"), p["summary"].get("one-worker")
    if z and o:
        saved = o["total_pss"]["median"] - z["total_pss"]["median"]
        out += ["", "Scaling to zero with live preloaders saves %s for %d apps (%s per app): a "
                "worker forked from a preloader shares most of its pages with it, so stopping it "
                "frees about its private memory, and the preloader then carries the pages they "
                "shared (preloaders %s with workers, %s without). Only idling the preloaders out "
                "too frees the apps themselves, at the price of an import on the next request "
                "(see the wake section)." % (
                    mib(saved), n, mib(saved / n), mib(o["preloader_pss"]["median"]),
                    mib(z["preloader_pss"]["median"]))]
    out += ["", _notes(p), _failures(p)]
    return out


def _idle_label(config):
    from benchmarks.idle_memory import LABELS as IDLE_LABELS
    return IDLE_LABELS.get(config, config)


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
    sd = piece(results, "surge-dynamic")
    if sd:
        def until(v):
            s = sd["summary"].get(v)
            if not s:
                return "-"
            return sec(s["until_all_serve_s"]["median"]) if s["until_all_serve_s"] else "never"

        rows.append(["dynamic pool, 1 → %d clients: until %d serve (no signals)"
                     % (sd["clients"], sd["clients"]), until("smart-dynamic"), "-",
                     until("direct-dynamic"), "-",
                     "cheaper: backlog %s / busyness %s" % (until("uwsgi-cheaper-backlog"),
                                                            until("uwsgi-cheaper-busyness"))])
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


def missed_targets(targets, results):
    """One line per missed target: its shortfall, then why it was missed (:func:`explain`)."""
    out = []
    for t in targets:
        if t["status"] == "MISS":
            why = explain(t["id"], results)
            out.append("- **%s** — %s.%s" % (t["text"], t["shortfall"], " " + why if why else ""))
    return out


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
    misses = missed_targets(targets, results)
    if misses:
        out += ["", "### Missed targets: by how much, why, what would close it", ""] + misses
    skipped = results.get("skipped") or {}
    if skipped:
        out += ["", "Skipped in this run:", ""] + ["- %s" % s for s in skipped.values()]
    out += ["", "## Machine and versions", "", _machine(results), ""]
    out.append("Other processes on the machine compete for its cores: each section gives the "
               "load average before and after it; every comparison is made within one round, "
               "variants interleaved.")
    for section in (section_spawn, section_boot, section_memory, section_overhead, section_surge,
                    section_surge_dynamic, section_wake, section_idle_memory, section_asgi):
        out += [""] + section(results)
    out += [""] + section_growth(results)
    if results.get("leftovers"):
        out += ["", "**Processes left behind by this run (killed at the end):** %s"
                % results["leftovers"]]
    out += ["", "## Commands", "", "The server variants (port, control sockets and worker "
            "count vary per piece):", ""]
    out += _commands()
    return "\n".join(line for line in out if line is not None).rstrip() + "\n"


def section_growth(results):
    """Cost growth (growth.py); the section is built in growth_report.py."""
    from benchmarks import growth_report
    chart = results.get("growth_chart")
    return growth_report.section(
        results, chart=chart if chart == growth_report.CHART else None)


def _commands():
    out = []
    for name, v in harness.VARIANTS.items():
        if v.kind == "floor":
            continue
        s = harness.Server(v, harness.variant_app(name), workers=4, tmpdir="/tmp", port=8000)
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
