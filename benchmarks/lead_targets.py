"""The targets of issue 15: ahead of the best stock recipe on every figure.

Each target is judged from the same run's figures, round by round where the
piece keeps rounds. Where several smart variants were measured (plain,
with parked spares, with the built-in warm-up), each is reported and the
target is met when the variant a user can turn on meets it; the cell says
which variant that was.
"""

from benchmarks import harness

SPAWN_FLOOR_LIMIT = 1.5       # smart spawn until the new worker answers / bare fork floor
MEMORY_RECIPE_LIMIT = 0.85    # total PSS / stock --preload + gc.freeze() recipe
PRIVATE_DIRECT_LIMIT = 0.20   # private memory per worker / a direct worker's
CPU_LIMIT = 1.00              # server CPU seconds per request / stock gunicorn's
BOOT_FIRST_LIMIT = 1.00       # first worker answering / stock --preload
BOOT_ALL_LIMIT = 1.05         # all workers answering / stock --preload

SMART_SPAWN = ("smart-spare", "smart")
SMART_MEMORY = ("smart-refork-ksm", "smart-ksm", "smart-refork", "smart-warm", "smart")


def _target(tid, text, measured, ok, shortfall, value=None):
    return {"id": tid, "text": text, "measured": measured,
            "status": "n/a" if ok is None else ("PASS" if ok else "MISS"),
            "shortfall": shortfall if ok is False else "", "value": value}


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
        "worst" if every else "best", label, (v / limit - 1) * 100, limit), v)


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
