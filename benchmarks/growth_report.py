"""The "Cost growth" section of docs/benchmarks.md and its chart, docs/benchmarks-growth.png.

Built from the results of growth.py (the ``growth`` piece of ``python -m
benchmarks``); every sentence's figures come from the same run.
``update_docs`` rewrites only this section of an existing report (and the
chart), for a run of growth.py alone.
"""

import datetime
import itertools
import os
import re

from benchmarks import report
from benchmarks.report import MiB, mib, ms, ratio_cell, spread, table

HEADING = "## Cost growth"
CHART = "benchmarks-growth.png"
LABELS = {"smart": "smartspawn smart", "stock-preload": "gunicorn --preload",
          "fork-floor": "bare os.fork() floor",
          "stock-preload-freeze": "gunicorn --preload + gc.freeze() recipe"}
COLORS = {"smart": "#1f77b4", "stock-preload": "#8c8c8c", "fork-floor": "#2ca02c",
          "stock-preload-freeze": "#8c8c8c"}


def size_label(mb):
    return "%g GiB" % (mb / 1024) if mb >= 1024 else "%d MiB" % mb


def _holder(p, size, variant="smart"):
    """The memory sample's reading of the process that holds the app."""
    for entry in p["memory"]:
        if entry["size_mb"] == size:
            r = entry["variants"].get(variant)
            return r["holder"] if r else None
    return None


def _busy_line(p, cpus):
    load = p.get("loadavg") or []
    peak = max((x[0] for x in load if x), default=None)
    if peak is None or not cpus or peak < 0.5 * cpus:
        return None
    return ("**Measured on a busy machine** (load average %.1f on %s CPUs during this piece): "
            "absolute times are inflated and noisy; compare the variants of one size (measured "
            "in the same rounds) and the trend across sizes, not single figures." % (peak, cpus))


def _spawn_table(p):
    variants = p["spawn_variants"]
    forks = any(e.get("smart_fork_ms") for e in p["spawn"])
    header = (["app size", "holder RSS¹", "page tables¹"] + [LABELS.get(v, v) for v in variants]
              + (["smart: fork in the preloader²"] if forks else []))
    keys = [k for k in ("smart/stock-preload", "smart/fork-floor")
            if any(k in e["ratios"] for e in p["spawn"])]
    header += [k.replace("stock-preload", "stock --preload").replace("fork-floor", "floor")
               for k in keys]
    rows = []
    for e in p["spawn"]:
        h = _holder(p, e["size_mb"]) or _holder(p, e["size_mb"], "stock-preload-freeze") or {}
        rows.append([size_label(e["size_mb"]), mib(h.get("rss")), mib(h.get("page_tables"))]
                    + [spread(e["summary"].get(v), ms) for v in variants]
                    + ([spread(e.get("smart_fork_ms"), ms, bold=False)] if forks else [])
                    + [ratio_cell(e["ratios"].get(k)) for k in keys])
    return table(header, rows)


def _memory_table(p):
    counts = sorted(p["workers"])
    steps = list(itertools.pairwise(counts))
    header = (["app size", "variant"] + ["total PSS, %d worker%s" % (n, "" if n == 1 else "s")
                                         for n in counts]
              + ["added per worker, %d → %d" % s for s in steps]
              + ["PSS of one worker at %d (median)" % counts[-1]])
    rows = []
    for e in p["memory"]:
        for v in p["memory_variants"]:
            r = e["variants"].get(v)
            if not r:
                rows.append([size_label(e["size_mb"]), LABELS.get(v, v)] + ["failed"]
                            + ["-"] * (len(header) - 3))
                continue
            pts = r["points"]
            rows.append([size_label(e["size_mb"]), LABELS.get(v, v)]
                        + [mib(x["total_pss"]) for x in pts]
                        + ["**%s**" % mib(x["added_per_worker"]) for x in pts[1:]]
                        + [mib(pts[-1]["worker_pss"])])
    return table(header, rows)


def _range(a, b):
    """'X' when both format alike, else 'X to Y'."""
    return mib(a) if mib(a) == mib(b) else "%s to %s" % (mib(a), mib(b))


def _growth_text(p):
    """Sentences on the trend, from the figures: spawn time and the PSS each
    worker adds, from the smallest to the largest size."""
    out = []
    spawn = [e for e in p["spawn"] if any(e["summary"].values())]
    if len(spawn) >= 2:
        out.append(_spawn_trend(p, spawn[0], spawn[-1]))
    added = {}
    for v in p["memory_variants"]:
        vals = [x["added_per_worker"] for e in p["memory"] if e["variants"].get(v)
                for x in e["variants"][v]["points"][1:]]
        if vals:
            added[v] = (min(vals), max(vals))
            out.append("%s: each added worker costs %s of PSS, for apps from %s to %s "
                       "and from %s to %s workers: the app's pages are counted once, in the "
                       "process that holds them, however many workers share them."
                       % (LABELS.get(v, v), _range(min(vals), max(vals)),
                          size_label(p["sizes"][0]), size_label(p["sizes"][-1]),
                          min(p["workers"]), max(p["workers"])))
    if "smart" in added and len(added) == 2:
        other = next(v for v in added if v != "smart")
        masters = [e["variants"]["smart"]["points"][0]["master_pss"] for e in p["memory"]
                   if e["variants"].get("smart")]
        out.append("Smart's workers add %s more each than those of %s, and its totals "
                   "include a master of its own (%s of PSS) that stock gunicorn does without: "
                   "its master is the process that holds the app."
                   % (_range(added["smart"][0] - added[other][0],
                             added["smart"][1] - added[other][1]),
                      "`%s`" % LABELS.get(other, other), _range(min(masters), max(masters))))
    return out


def _spawn_trend(p, lo, hi):
    parts = []
    for v in p["spawn_variants"]:
        a, b = lo["summary"].get(v), hi["summary"].get(v)
        if a and b:
            parts.append("%s %s → %s (%+.0f ms)" % (LABELS.get(v, v), ms(a["median"]),
                                                    ms(b["median"]), b["median"] - a["median"]))
    ha, hb = _holder(p, lo["size_mb"]) or {}, _holder(p, hi["size_mb"]) or {}
    pte = ""
    if ha.get("page_tables") and hb.get("page_tables"):
        pte = (" (page tables of the forking process %s → %s)"
               % (mib(ha["page_tables"]), mib(hb["page_tables"])))
    text = ("From %s to %s%s, the median spawn time went: %s. Each is a fork, which copies "
            "the parent's page tables and takes a reference on every page it maps, so each "
            "grows with the app." % (size_label(lo["size_mb"]), size_label(hi["size_mb"]), pte,
                                     "; ".join(parts)))
    fa, fb = lo.get("smart_fork_ms"), hi.get("smart_fork_ms")
    if fa and fb:
        text += (" The clone inside smart's preloader, by the plugin's own log, went %s → %s."
                 % (ms(fa["median"]), ms(fb["median"])))
    return text


def section(results, chart=None, heading=None):
    """The section's markdown lines."""
    out = [heading or "%s: spawn time and memory vs app size and worker count" % HEADING, ""]
    skip = report._skipped_line(results, "growth")
    if skip:
        return out + [skip]
    p = results["pieces"]["growth"]
    report._CPUS[0] = report._CPUS[0] or results.get("meta", {}).get("cpus")
    busy = _busy_line(p, results.get("meta", {}).get("cpus"))
    if busy:
        out += [busy, ""]
    out.append("A synthetic app (`benchmarks/sized_app.py`) that allocates its size at import, "
               "half Python objects, half raw buffers."
               + (" Spawn: SIGTTIN until a new worker answers, as in the spawn section, median "
                  "(min–max) of %d; ratios round by round." % p["runs"] if p["spawn"] else ""))
    if p["spawn"]:
        out += ["", _spawn_table(p), "",
                "¹ RSS and page tables (VmPTE) of the smart preloader, the process that forks "
                "(stock `--preload`: its master holds the same)."
                + (" ² The plugin's own figure for the clone (\"forked in X ms\" in the "
                   "master's log), part of the smart spawn time." if any(
                       e.get("smart_fork_ms") for e in p["spawn"]) else "")]
    if p["memory"]:
        out += ["", "Total PSS of the server (master, preloader, workers) grown from 1 worker "
                "by SIGTTIN, idle workers (no requests: what a fork itself costs; the memory "
                "section has what requests add):", "", _memory_table(p)]
    for sentence in _growth_text(p):
        out += ["", sentence]
    if chart:
        out += ["", "![cost growth](%s)" % chart]
    out += ["", report._notes(p), report._failures(p)]
    return out


def write_chart(results, path):
    """Two panels: spawn time vs app size, total PSS vs worker count; None or why not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return "matplotlib is not installed (%s)" % e
    p = report.piece(results, "growth")
    if not p or not (p["spawn"] or p["memory"]):
        return "no growth results to draw"
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    _spawn_panel(left, p)
    _memory_panel(right, p)
    m = results.get("meta", {})
    load = max((x[0] for x in p.get("loadavg") or [] if x), default=None)
    fig.suptitle("Cost growth: gunicorn-smartspawn %s, gunicorn %s, Python %s, %s CPUs%s"
                 % (m.get("gunicorn_smartspawn"), m.get("gunicorn"), m.get("python"),
                    m.get("cpus"), " (busy machine: load %.1f)" % load
                    if load and m.get("cpus") and load >= 0.5 * m["cpus"] else ""), fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def _spawn_panel(ax, p):
    if not p["spawn"]:
        ax.axis("off")
        return
    sizes = [e["size_mb"] for e in p["spawn"]]
    for v in p["spawn_variants"]:
        pts = [(e["size_mb"], e["summary"][v]) for e in p["spawn"] if e["summary"].get(v)]
        if not pts:
            continue
        xs, meds = [x for x, _ in pts], [s["median"] for _, s in pts]
        err = [[m - s["min"] for m, (_, s) in zip(meds, pts, strict=True)],
               [s["max"] - m for m, (_, s) in zip(meds, pts, strict=True)]]
        ax.errorbar(xs, meds, yerr=err, marker="o", capsize=3, label=LABELS.get(v, v),
                    color=COLORS.get(v), linestyle="--" if v.startswith("stock") else "-")
    forks = [(e["size_mb"], e["smart_fork_ms"]["median"]) for e in p["spawn"]
             if e.get("smart_fork_ms")]
    if forks:
        ax.plot([x for x, _ in forks], [y for _, y in forks], marker=".", linestyle=":",
                color=COLORS["smart"], label="smart: the clone alone (plugin's log)")
    ax.set_xscale("log")
    ax.set_xticks(sizes)
    labels = []
    for s in sizes:
        h = _holder(p, s) or {}
        labels.append(size_label(s) + ("\nPTE %s" % mib(h["page_tables"])
                                       if h.get("page_tables") else ""))
    ax.set_xticklabels(labels, fontsize=8)
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_xlabel("app size (allocated at import); page tables of the forking process")
    ax.set_ylabel("ms, SIGTTIN → new worker's first answer (median, min–max)")
    ax.set_title("Spawn one extra worker vs app size", fontsize=10)
    ax.legend(fontsize=8)


def _memory_panel(ax, p):
    if not p["memory"]:
        ax.axis("off")
        return
    cmap = ["#9ecae1", "#3182bd", "#08306b", "#6baed6", "#08519c"]
    for i, e in enumerate(p["memory"]):
        for v in p["memory_variants"]:
            r = e["variants"].get(v)
            if not r:
                continue
            xs = [x["workers"] for x in r["points"]]
            ys = [x["total_pss"] / MiB for x in r["points"]]
            stock = v.startswith("stock")
            ax.plot(xs, ys, marker="s" if stock else "o", linestyle="--" if stock else "-",
                    color=cmap[i % len(cmap)],
                    label="%s, %s" % (size_label(e["size_mb"]), LABELS.get(v, v)))
            last = r["points"][-1]
            if not stock and "added_per_worker" in last:
                ax.annotate("+%.1f MiB/worker" % (last["added_per_worker"] / MiB),
                            (xs[-1], ys[-1]), textcoords="offset points", xytext=(-90, 6),
                            fontsize=7)
    ax.set_xticks(sorted(p["workers"]))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("workers (idle)")
    ax.set_ylabel("total PSS, MiB (master + preloader + workers)")
    ax.set_title("Total PSS vs worker count, per app size", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(0.0, 0.62))


def update_docs(results, out_dir):
    """Write the chart and replace (or add, before "## Commands") the Cost growth
    section of ``out_dir``/benchmarks.md; returns what was written."""
    png = os.path.join(out_dir, CHART)
    error = write_chart(results, png)
    started = results.get("meta", {}).get("started") or datetime.date.today().isoformat()
    heading = ("%s: spawn time and memory vs app size and worker count (separate run, %s, "
               "`python benchmarks/growth.py --update-docs`)" % (HEADING, started[:10]))
    body = "\n".join(line for line in section(results, None if error else CHART, heading)
                     if line is not None).rstrip() + "\n"
    md = os.path.join(out_dir, "benchmarks.md")
    text = "# Benchmarks\n"
    if os.path.exists(md):
        with open(md) as f:
            text = f.read()
    pattern = re.compile(r"^%s.*?(?=^## |\Z)" % re.escape(HEADING), re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: body + "\n", text, count=1)
    elif "\n## Commands" in text:
        text = text.replace("\n## Commands", "\n" + body + "\n## Commands", 1)
    else:
        text = text.rstrip() + "\n\n" + body
    with open(md, "w") as f:
        f.write(text)
    return "wrote %s%s" % (md, " and " + png if not error else " (chart not written: %s)" % error)
