"""The targets of issue 15: ahead of the best stock recipe on every figure.

Each target is judged from the same run's figures, round by round where the
piece keeps rounds. Where several smart variants were measured (plain,
with parked spares, with the built-in warm-up), each is reported and the
target is met when the variant a user can turn on meets it; the cell says
which variant that was.

A missed target is explained by :func:`explain` (the report puts the text
after the miss): the judged variant's figures from the same run, split as
far as the run measured them (the spawn's hooked steps, memory by role, CPU
per request against the rounds' spread, the boot's phases from the app's
import log). Where the run lacks a figure, the text says which one is
missing and what measures it; it never states a number the run did not
measure.
"""

from benchmarks import harness

SPAWN_FLOOR_LIMIT = 1.5       # smart spawn until the new worker answers / bare fork floor
MEMORY_RECIPE_LIMIT = 0.85    # total PSS / stock --preload + gc.freeze() recipe
PRIVATE_DIRECT_LIMIT = 0.20   # private memory per worker / a direct worker's
CPU_LIMIT = 1.00              # server CPU seconds per request / stock gunicorn's
BOOT_FIRST_LIMIT = 1.00       # first worker answering / stock --preload
BOOT_ALL_LIMIT = 1.05         # all workers answering / stock --preload

SMART_SPAWN = ("smart-spare-warm", "smart-spare", "smart")
SMART_MEMORY = ("smart-refork-ksm", "smart-ksm", "smart-refork", "smart-warm", "smart")


def _target(tid, text, measured, ok, shortfall, value=None, judged=None):
    """``judged``: the label of the candidate the status was decided on (what :func:`explain` explains)."""
    return {"id": tid, "text": text, "measured": measured,
            "status": "n/a" if ok is None else ("PASS" if ok else "MISS"),
            "shortfall": shortfall if ok is False else "", "value": value, "judged": judged}


def _piece(results, name):
    p = results["pieces"].get(name)
    return p if p and not p.get("skipped") and not p.get("error") else None


def _cell(s):
    return "**%.2f×** (%.2f×–%.2f×, %d round%s)" % (
        s["median"], s["min"], s["max"], s["n"], "" if s["n"] == 1 else "s")


def _at_most(tid, text, candidates, limit, every=False):
    """``candidates``: [(label, summary of ratios)]; met when the best median is within the limit
    (``every``: when all of them are)."""
    found = [(label, s) for label, s in candidates if s]
    if not found:
        return _target(tid, text, "not measured in this run", None, "")
    pick = max if every else min
    label, judged = pick(found, key=lambda c: c[1]["median"])
    measured = "; ".join("%s %s" % (name, _cell(s)) for name, s in found)
    v = judged["median"]
    return _target(tid, text, measured, v <= limit, "%s (%s) %.1f %% over the limit of %.2f×" % (
        "worst" if every else "best", label, (v / limit - 1) * 100, limit), v, label)


def _paired(p, a, b, key):
    if a not in p.get("variants", ()) or b not in p.get("variants", ()):
        return None
    return harness.paired_ratio(p.get("rounds") or [], a, b, key)


def _median_ratio(summary, a, b, key):
    """a/b of two medians (the piece keeps no rounds of this figure)."""
    x, y = (summary.get(a) or {}).get(key), (summary.get(b) or {}).get(key)
    if not x or not y:
        return None
    return {"median": x["median"] / y["median"], "min": x["min"] / y["max"],
            "max": x["max"] / y["min"], "n": min(x["n"], y["n"])}


def spawn(results):
    text = "spawn: a new worker answers within %.1f× the bare fork floor" % SPAWN_FLOOR_LIMIT
    p = _piece(results, "spawn")
    if p is None:
        return _target("lead-spawn", text, "not run", None, "")
    return _at_most("lead-spawn", text, [
        ("%s / fork floor" % v, p["ratios"].get("%s/fork-floor" % v) or _paired(p, v, "fork-floor", None))
        for v in SMART_SPAWN], SPAWN_FLOOR_LIMIT)


def memory(results):
    p = _piece(results, "memory")
    total = "memory: total PSS at most %.2f× stock `--preload` + `gc.freeze()` recipe" % MEMORY_RECIPE_LIMIT
    private = "memory: private memory per worker at most %d %% of a direct worker's" % (
        PRIVATE_DIRECT_LIMIT * 100)
    if p is None:
        return [_target("lead-memory", total, "not run", None, ""),
                _target("lead-private", private, "not run", None, "")]
    return [
        _at_most("lead-memory", total, [
            ("%s / recipe" % v, p["ratios"].get("%s/stock-preload-freeze" % v)
             or _paired(p, v, "stock-preload-freeze", "total_pss")) for v in SMART_MEMORY],
            MEMORY_RECIPE_LIMIT),
        _at_most("lead-private", private, [
            ("%s / direct" % v, _paired(p, v, "direct", "worker_private")) for v in SMART_MEMORY],
            PRIVATE_DIRECT_LIMIT),
    ]


def cpu(results):
    p = _piece(results, "overhead")
    out = []
    for model in ("sync", "gthread"):
        text = ("request path: server CPU time per request at most %.2f× stock gunicorn's (%s)"
                % (CPU_LIMIT, model))
        if p is None:
            out.append(_target("lead-cpu-" + model, text, "not run", None, ""))
            continue
        ratios = p.get("cpu_ratios") or {}
        out.append(_at_most("lead-cpu-" + model, text, [
            ("smart / stock", ratios.get("smart-%s/stock-%s" % (model, model))),
            ("direct / stock", ratios.get("direct-%s/stock-%s" % (model, model))),
        ], CPU_LIMIT, every=True))  # both spawn methods must meet it
    return out


def boot(results):
    p = _piece(results, "boot")
    first = "boot: first worker answering no later than stock `--preload`"
    every = "boot: all workers answering within %.2f× stock `--preload`" % BOOT_ALL_LIMIT
    if p is None:
        return [_target("lead-boot-first", first, "not run", None, ""),
                _target("lead-boot-all", every, "not run", None, "")]
    summary = p.get("summary") or {}
    return [
        _at_most("lead-boot-first", first,
                 [("smart / stock --preload (medians)", _median_ratio(summary, "smart", "stock-preload", "first"))],
                 BOOT_FIRST_LIMIT),
        _at_most("lead-boot-all", every,
                 [("smart / stock --preload", p["ratios"].get("smart/stock-preload"))], BOOT_ALL_LIMIT),
    ]


def evaluate(results):
    """Issue 15's targets, each PASS, MISS or n/a with what was measured."""
    return [spawn(results), *memory(results), *cpu(results), *boot(results)]


# --------------------------------------------------------------------------
# why a target was missed, built from the same run's figures (as report.explain does for issue 6's)

MiB = 1024 * 1024
RECIPE = "stock-preload-freeze"


def _ms(x):
    return "%.1f ms" % x


def _mib(x):
    return "%.1f MiB" % (x / MiB)


def _sec(x):
    return "%.2f s" % x


def _x(x):
    return "%.2f×" % x


def _spread(s):
    return "%s–%s over %d round%s" % (_x(s["min"]), _x(s["max"]), s["n"], "" if s["n"] == 1 else "s")


def explain(tid, results):
    """Markdown: why issue 15's target ``tid`` was missed, from this run's own figures ("" unless it
    was missed). Where the run lacks a figure that would explain it, the text names the figure and
    the command that measures it, instead of a reason."""
    target = next((t for t in evaluate(results) if t["id"] == tid), None)
    if target is None or target["status"] != "MISS" or not target.get("judged"):
        return ""
    variant = target["judged"].split(" / ")[0]
    if tid == "lead-spawn":
        return _why_spawn(_piece(results, "spawn"), variant)
    if tid == "lead-memory":
        return _why_memory(_piece(results, "memory"), variant)
    if tid == "lead-private":
        return _why_private(_piece(results, "memory"), variant)
    if tid.startswith("lead-cpu-"):
        model = tid[len("lead-cpu-"):]
        return _why_cpu(_piece(results, "overhead"), "%s-%s" % (variant, model), "stock-" + model)
    if tid in ("lead-boot-first", "lead-boot-all"):
        return _why_boot(_piece(results, "boot"), "first" if tid == "lead-boot-first" else "all")
    return ""


def _why_spawn(p, v):
    s = p["summary"]
    floor, own = (s.get("fork-floor") or {}).get("median"), (s.get(v) or {}).get("median")
    if not floor or not own:
        return "This run has no median of `%s` or of the fork floor to split the time." % v
    budget = floor * SPAWN_FLOOR_LIMIT
    parts = ["The bare `os.fork()` floor (to the child's first statement) took %s here, so the "
             "limit allows %s; a `%s` spawn (from the request to the new worker's first answer) "
             "took %s, %s more." % (_ms(floor), _ms(budget), v, _ms(own), _ms(own - budget))]
    rounds = [r for r in p.get("rounds") or [] if r.get(v) and r.get("fork-floor")]
    if rounds:
        within = sum(1 for r in rounds if r[v] / r["fork-floor"] <= SPAWN_FLOOR_LIMIT)
        parts.append("%d of %d rounds %s within the limit." % (
            within, len(rounds), "was" if within == 1 else "were"))
    steps = {k: st["median"] for k, st in ((p.get("breakdown") or {}).get(v) or {}).items() if st}
    if not steps:
        parts.append("The run recorded no breakdown of a `%s` spawn (the spawn piece's hooked "
                     "samples: `python benchmarks/spawn_time.py --breakdown N`), so which step "
                     "takes the time is not known from it." % v)
        return " ".join(parts)
    ref = (p.get("breakdown") or {}).get("stock-preload") or {}
    parts.append("Its hooked samples split it (medians): %s." % "; ".join(
        "%s %s%s" % (k, _ms(m), " (stock `--preload` %s)" % _ms(ref[k]["median"]) if ref.get(k) else "")
        for k, m in steps.items()))
    first, *rest = steps.items()
    parts.append("Only the first step (%s) is comparable with the floor: %s of it. The other "
                 "%d (%s together) come after it, in the new worker up to its answer, and the "
                 "floor includes none of them." % (first[0], _x(first[1] / floor), len(rest),
                                                  _ms(sum(m for _, m in rest))))
    fork = s[v].get("fork_ms")
    if fork:
        parts.append("The clone itself took %s by the plugin's log." % _ms(fork))
    warm, cold = s[v].get("warm_request_ms"), steps.get("first request in the new worker")
    if warm and cold:
        parts.append("The first request took %s in the new worker and %s in a warm one: %s of "
                     "first-time work in a new process (copy-on-write faults on the pages it "
                     "writes)." % (_ms(cold), _ms(warm), _ms(cold - warm)))
    return " ".join(parts)


def _mem_snapshots(p, v):
    """(after, boot, collected) of ``v``'s first memory round, or None."""
    runs = (p.get("runs") or {}).get(v) or []
    r = runs[0] if runs else None
    return (r["after"], r.get("boot"), r.get("collected")) if r and r.get("after") else None


def _by_role(snapshot, role):
    return sum(proc["pss"] for proc in snapshot.get("processes") or [] if proc["role"] == role)


def _why_memory(p, v):
    mine, rec = _mem_snapshots(p, v), _mem_snapshots(p, RECIPE)
    if not mine or not rec:
        return "This run has no `%s` round to compare with (memory piece, variant `%s`)." % (
            RECIPE if mine else v, RECIPE)
    a, b = mine[0], rec[0]
    n = a["n_workers"]
    goal = b["total_pss"] * MEMORY_RECIPE_LIMIT
    workers, rec_workers = _by_role(a, "worker"), _by_role(b, "worker")
    parts = ["Total PSS of `%s` %s against the recipe's %s (first round); %s× the recipe is %s, %s "
             "less than measured." % (v, _mib(a["total_pss"]), _mib(b["total_pss"]),
                                      "%.2f" % MEMORY_RECIPE_LIMIT, _mib(goal), _mib(a["total_pss"] - goal)),
             "By role: smart's master %s, which the recipe does not have (its master is its app "
             "holder); the preloader %s against the recipe's master %s; %d workers %s against %s "
             "(private per worker %s against %s)." % (
                 _mib(a["master_pss"]), _mib(a["preloader_pss"]), _mib(b["master_pss"]), n,
                 _mib(workers), _mib(rec_workers), _mib(a["worker_private"]["median"]),
                 _mib(b["worker_private"]["median"]))]
    without = (a["total_pss"] - a["master_pss"]) / b["total_pss"]
    parts.append("Without its master `%s` would be %s the recipe: %s." % (
        v, _x(without), "the master's PSS alone is more than the gap" if without <= MEMORY_RECIPE_LIMIT
        else "still over the limit, so the master is not the whole gap"))
    if mine[1]:
        boot = mine[1]["worker_private"]["median"]
        parts.append("Each worker held %s private right after boot; the requests added %s." % (
            _mib(boot), _mib(a["worker_private"]["median"] - boot)))
    parts.append("Whether those private pages still equal the preloader's (written and restored, "
                 "as a reference count is) is not measured by this run "
                 "(`python benchmarks/page_sharing.py WORKER PRELOADER`).")
    return " ".join(parts)


def _why_private(p, v):
    mine, direct = _mem_snapshots(p, v), _mem_snapshots(p, "direct")
    if not mine or not direct:
        return "This run has no `%s` round to compare with (memory piece)." % ("direct" if mine else v)
    w, d = mine[0]["worker_private"]["median"], direct[0]["worker_private"]["median"]
    parts = ["Private memory per worker (median, first round): `%s` %s, direct %s; %d %% of "
             "direct is %s." % (v, _mib(w), _mib(d), PRIVATE_DIRECT_LIMIT * 100,
                                _mib(d * PRIVATE_DIRECT_LIMIT))]
    if mine[1]:
        boot = mine[1]["worker_private"]["median"]
        parts.append("Right after boot a `%s` worker held %s; the requests added %s%s." % (
            v, _mib(boot), _mib(w - boot), ", over the limit by themselves"
            if w - boot > d * PRIVATE_DIRECT_LIMIT else ""))
    if mine[2]:
        parts.append("After one full collection in every worker: %s." % _mib(
            mine[2]["worker_private"]["median"]))
    parts.append("Which of those pages still equal the preloader's is not measured by this run "
                 "(`python benchmarks/page_sharing.py WORKER PRELOADER`).")
    return " ".join(parts)


def _why_cpu(p, config, stock):
    ratio = (p.get("cpu_ratios") or {}).get("%s/%s" % (config, stock))
    cpu = p.get("cpu_us_per_request") or {}
    if not ratio or not cpu.get(config) or not cpu.get(stock):
        return "This run has no CPU time per request of `%s` and `%s` to compare." % (config, stock)
    mine, theirs = cpu[config]["median"], cpu[stock]["median"]
    load = (p.get("loadavg") or [None])[0]
    method = p.get("cpu_method") or {}
    bursts = ("%d interleaved rounds of %d requests each" % (cpu[config]["n"], method["requests"])
              if method.get("fixed_count") and method.get("requests") else "%d bursts" % cpu[config]["n"])
    parts = ["Server CPU time per request (user + system of all the server's processes, median "
             "of %s): `%s` %.0f µs, `%s` %.0f µs, %+.1f µs." % (
                 bursts, config, mine, stock, theirs, mine - theirs)]
    over, width = ratio["median"] - CPU_LIMIT, ratio["max"] - ratio["min"]
    if ratio["min"] <= CPU_LIMIT:
        parts.append("The round-by-round ratios (%s) include rounds at or below %s: their spread "
                     "(%s) is %.0f× the median's excess (%s), so this run cannot tell a cost of "
                     "that size from noise%s." % (
                         _spread(ratio), _x(CPU_LIMIT), _x(width), width / over if over > 0 else 0,
                         _x(over), " (load average %.1f before the piece)" % load[0] if load else ""))
    else:
        parts.append("Every round was over the limit (%s)%s." % (
            _spread(ratio), ", too few rounds to rule out noise" if ratio["n"] < 5
            else ": the excess is not round-to-round noise"))
    calls = p.get("syscalls_per_request") or {}
    if calls.get(config) and calls.get(stock):
        diff = ((p.get("syscall_diffs") or {}).get("%s-%s" % (config, stock)) or {}).get("by_name") or {}
        parts.append("System calls per request (`strace -c`): %.2f vs %.2f%s." % (
            calls[config]["per_request"], calls[stock]["per_request"],
            " (%s)" % ", ".join("%s %+.2f" % kv for kv in sorted(
                diff.items(), key=lambda kv: -abs(kv[1]))[:4]) if diff else ""))
    else:
        parts.append("System calls per request were not counted in this run "
                     "(`python benchmarks/overhead.py --syscalls N`, with strace).")
    model = config.rsplit("-", 1)[1]
    wrapper = (p.get("wrapper_cost") or {}).get(model + "_us")
    if wrapper is not None:
        parts.append("In-process, the plugin's request wrapper adds %.2f µs to a request%s." % (
            wrapper, ", %.0f %% of the difference above" % (wrapper / (mine - theirs) * 100)
            if mine > theirs else ""))
        net = _net_in_process(p, model, wrapper, calls, config, stock)
        if net:
            parts.append(net)
    else:
        parts.append("The wrapper's own cost was not measured in this run "
                     "(`python benchmarks/overhead.py --wrapper-cost`).")
    return " ".join(parts)


def _net_in_process(p, model, wrapper, calls, config, stock):
    """The plugin's own per-request code against gunicorn's, both timed in one process (minimum of
    many timings): the wrapper against what the worker's loop saves; None if the loop was not timed."""
    loop, gthread = p.get("loop_cost") or {}, p.get("gthread_cost") or {}
    if model == "sync" and loop.get("saved_us") is not None:
        net = wrapper - loop["saved_us"]
        return ("The sync loop's own work around a connection (heartbeat, accept, the listener's "
                "address, close) takes %.2f µs in gunicorn's code and %.2f µs in the plugin's: with "
                "the wrapper, the plugin's code on a request costs %.2f µs %s than gunicorn's, "
                "timed in one process." % (loop["stock_us"], loop["plugin_us"], abs(net),
                                            "less" if net < 0 else "more"))
    if model == "gthread" and gthread.get("saved_us") is not None and loop.get("notify_stock_us"):
        diff = ((p.get("syscall_diffs") or {}).get("%s-%s" % (config, stock)) or {}).get("by_name") or {}
        beats = -diff.get("utimensat", 0.0) if diff else None
        beat_saved = loop["notify_stock_us"] - loop["notify_plugin_us"]
        text = ("The gthread worker's own work around a kept-alive request (the poller, the "
                "blocking-mode calls, two parent checks) takes %.2f µs with gunicorn's parent check "
                "and %.2f µs with the plugin's; a heartbeat costs %.2f µs in gunicorn's code and "
                "%.2f µs in the plugin's" % (gthread["stock_us"], gthread["plugin_us"],
                                              loop["notify_stock_us"], loop["notify_plugin_us"]))
        if beats is None or beats <= 0:
            return text + "."
        net = wrapper - gthread["saved_us"] - beats * beat_saved
        return text + (", and gunicorn's worker writes %.2f more heartbeats per request (strace "
                       "above): with the wrapper, the plugin's code on a request costs %.2f µs %s "
                       "than gunicorn's, timed in one process." % (
                           beats, abs(net), "less" if net < 0 else "more"))
    return None


#: The boot's phases as heavy_app's import log splits them (medians of the boot piece's figures),
#: each with what runs in it.
BOOT_PHASES = {
    "until the import began": "smart: the master's start-up, then the preloader's fork and start; "
                              "stock: its master's start-up",
    "the import": "the app's import, in smart's preloader and in stock's master",
    "from the import's end to the first answer": "smart: the preloader's work after the import, its "
                                                 "fork of the worker, the worker's start and first "
                                                 "request; stock: its master's fork of the worker, "
                                                 "the worker's start and first request",
}


def _phases(s):
    """{label: median seconds} of one variant's boot summary, or None without the import log."""
    if not all(s.get(k) for k in ("load_start_s", "load_end_s", "first_after_load_s")):
        return None
    start, end = s["load_start_s"]["median"], s["load_end_s"]["median"]
    return dict(zip(BOOT_PHASES, (start, end - start, s["first_after_load_s"]["median"])))


def _why_boot(p, figure):
    s = p.get("summary") or {}
    sm, pr = s.get("smart") or {}, s.get("stock-preload") or {}
    if not sm.get(figure) or not pr.get(figure):
        return "This run has no boot of both smart and stock `--preload` to compare."
    parts = ["Medians: smart's first worker answered at %s, stock `--preload`'s at %s; all %d at "
             "%s vs %s." % (_sec(sm["first"]["median"]), _sec(pr["first"]["median"]),
                            p.get("workers", 0), _sec(sm["all"]["median"]), _sec(pr["all"]["median"]))]
    paired = (p.get("ratios") or {}).get("first answer: smart/stock-preload")
    if figure == "first" and paired:
        parts.append("Round by round the first answer's ratio was %s (%s)." % (
            _x(paired["median"]), _spread(paired)))
    mine, theirs = _phases(sm), _phases(pr)
    if not mine or not theirs:
        parts.append("The run has no split of the boot (heavy_app's import log: when the import "
                     "began and ended), so where the time goes is not known from it.")
    else:
        parts.append("Split by the app's import log (smart's preloader, stock's master): %s." % "; ".join(
            "%s %s vs %s" % (k, _sec(mine[k]), _sec(theirs[k])) for k in BOOT_PHASES))
        worst = max(BOOT_PHASES, key=lambda k: mine[k] - theirs[k])
        if mine[worst] > theirs[worst]:
            parts.append("The largest difference is %s, %+.0f ms (%s). The boot piece records no "
                         "finer split of that phase, so which of these costs the time is not "
                         "measured by this run." % (worst, (mine[worst] - theirs[worst]) * 1000,
                                                   BOOT_PHASES[worst]))
        else:
            parts.append("No phase's median is longer in smart: the gap lies in how single rounds "
                         "combine, not in one phase.")
    if figure == "all":
        parts.append("From the first answer to the last: smart %s, stock `--preload` %s." % (
            _sec(sm["all"]["median"] - sm["first"]["median"]),
            _sec(pr["all"]["median"] - pr["first"]["median"])))
    return " ".join(parts)
