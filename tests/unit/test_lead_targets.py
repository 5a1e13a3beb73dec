# ruff: noqa: RUF001, RUF003  (the report writes × and –: the tests look for them)
"""benchmarks/lead_targets.py: issue 15's targets, and why a missed one was missed, from synthetic results.

Every reason must be built from the run's own figures: each test changes a figure and looks for
the new value in the text, and a run that lacks the figure a reason needs must say so.
"""

from __future__ import annotations

import copy
from typing import Any

from benchmarks import lead_targets, report

MiB = 1024 * 1024


def summ(median: float, lo: float | None = None, hi: float | None = None, n: int = 1) -> dict[str, float]:
    return {"median": median, "min": median if lo is None else lo, "max": median if hi is None else hi, "n": n}


def results(**pieces: Any) -> dict[str, Any]:
    meta = {"uwsgi": {"message": "-"}, "wrk": {"path": None, "message": "-"}}
    return {"meta": meta, "pieces": {name.replace("_", "-"): p for name, p in pieces.items()}}


def status(res: dict[str, Any], tid: str) -> str:
    [target] = [t for t in lead_targets.evaluate(res) if t["id"] == tid]
    return str(target["status"])


# -- spawn -------------------------------------------------------------------------------------


def spawn_piece(spare_ms: float = 20.0, floor_ms: float = 10.0, breakdown: bool = True) -> dict[str, Any]:
    steps = {"request -> released spare reads the request": summ(6.0),
             "first request in the new worker": summ(12.5),
             "response reaches the client": summ(0.5)}
    return {"variants": ["smart", "smart-spare", "stock-preload", "fork-floor"],
            "summary": {"smart": summ(35.0), "smart-spare": dict(summ(spare_ms), warm_request_ms=1.5),
                        "stock-preload": summ(30.0), "fork-floor": summ(floor_ms)},
            "ratios": {"smart/fork-floor": summ(35.0 / floor_ms),
                       "smart-spare/fork-floor": summ(spare_ms / floor_ms, 1.2, 2.4, 3)},
            "rounds": [{"smart-spare": 14.0, "fork-floor": 10.0}, {"smart-spare": 20.0, "fork-floor": 10.0},
                       {"smart-spare": 24.0, "fork-floor": 10.0}],
            "breakdown": {"smart-spare": steps} if breakdown else {}}


def test_a_missed_spawn_is_explained_by_the_best_variants_breakdown() -> None:
    res = results(spawn=spawn_piece())
    assert status(res, "lead-spawn") == "MISS"
    why = lead_targets.explain("lead-spawn", res)
    assert "`smart-spare`" in why and "10.0 ms" in why and "allows 15.0 ms" in why and "20.0 ms, 5.0 ms more" in why
    assert "1 of 3 rounds was within the limit" in why
    assert "request -> released spare reads the request 6.0 ms" in why and "0.60× of it" in why
    assert "The other 2 (13.0 ms together)" in why
    assert "12.5 ms in the new worker and 1.5 ms in a warm one: 11.0 ms" in why


def test_the_spawn_reason_follows_the_runs_figures() -> None:
    why = lead_targets.explain("lead-spawn", results(spawn=spawn_piece(spare_ms=30.0, floor_ms=12.0)))
    assert "12.0 ms" in why and "allows 18.0 ms" in why and "30.0 ms, 12.0 ms more" in why


def test_a_spawn_without_its_breakdown_says_what_is_missing() -> None:
    why = lead_targets.explain("lead-spawn", results(spawn=spawn_piece(breakdown=False)))
    assert "no breakdown of a `smart-spare` spawn" in why and "--breakdown N" in why


def test_a_met_target_and_an_unmeasured_one_have_no_reason() -> None:
    assert lead_targets.explain("lead-spawn", results(spawn=spawn_piece(spare_ms=12.0))) == ""
    assert lead_targets.explain("lead-spawn", results()) == ""
    assert lead_targets.explain("lead-nonesuch", results(spawn=spawn_piece())) == ""


# -- memory ------------------------------------------------------------------------------------


def snapshot(master: float, preloader: float, workers: list[tuple[float, float]]) -> dict[str, Any]:
    """(pss, private) MiB per worker."""
    procs = [{"role": "master", "pss": master * MiB}]
    if preloader:
        procs.append({"role": "preloader", "pss": preloader * MiB})
    procs += [{"role": "worker", "pss": pss * MiB, "private": private * MiB} for pss, private in workers]
    private = sorted(p for _, p in workers)
    return {"total_pss": sum(p["pss"] for p in procs), "master_pss": master * MiB, "preloader_pss": preloader * MiB,
            "worker_private": summ(private[len(private) // 2] * MiB), "n_workers": len(workers), "processes": procs}


def memory_piece(master: float = 20.0, preloader: float = 50.0) -> dict[str, Any]:
    runs = {
        "smart": {"boot": snapshot(master, preloader, [(30.0, 5.0)] * 2),
                  "after": snapshot(master, preloader, [(40.0, 25.0)] * 2),
                  "collected": snapshot(master, preloader, [(42.0, 27.0)] * 2)},
        "stock-preload-freeze": {"boot": snapshot(60.0, 0, [(28.0, 3.0)] * 2),
                                 "after": snapshot(60.0, 0, [(35.0, 20.0)] * 2)},
        "direct": {"boot": snapshot(20.0, 0, [(150.0, 140.0)] * 2),
                   "after": snapshot(20.0, 0, [(160.0, 150.0)] * 2)},
    }
    total = {v: r["after"]["total_pss"] for v, r in runs.items()}
    return {"variants": list(runs), "runs": {v: [r] for v, r in runs.items()},
            "ratios": {"smart/stock-preload-freeze": summ(total["smart"] / total["stock-preload-freeze"])},
            "rounds": [{v: {"total_pss": total[v], "worker_private": r["after"]["worker_private"]["median"]}
                        for v, r in runs.items()}]}


def test_a_missed_total_pss_is_split_by_role_against_the_recipe() -> None:
    res = results(memory=memory_piece())
    assert status(res, "lead-memory") == "MISS"
    why = lead_targets.explain("lead-memory", res)
    # smart 20 + 50 + 2 x 40 = 150 MiB; recipe 60 + 2 x 35 = 130 MiB; 0.85 x 130 = 110.5 MiB
    assert "`smart` 150.0 MiB against the recipe's 130.0 MiB" in why and "110.5 MiB, 39.5 MiB less" in why
    assert "smart's master 20.0 MiB" in why and "preloader 50.0 MiB against the recipe's master 60.0 MiB" in why
    assert "2 workers 80.0 MiB against 70.0 MiB (private per worker 25.0 MiB against 20.0 MiB)" in why
    assert "Without its master `smart` would be 1.00× the recipe: still over the limit" in why
    assert "5.0 MiB private right after boot; the requests added 20.0 MiB" in why
    assert "page_sharing.py" in why  # what the run does not measure


def test_a_master_bigger_than_the_gap_is_named_as_such() -> None:
    res = results(memory=memory_piece(master=25.0, preloader=20.0))  # 125 MiB: 0.96× the recipe, 0.77× without the master
    assert status(res, "lead-memory") == "MISS"
    why = lead_targets.explain("lead-memory", res)
    assert "smart's master 25.0 MiB" in why and "would be 0.77× the recipe: the master's PSS alone is more than the gap" in why


def test_a_missed_private_memory_compares_boot_requests_and_collection() -> None:
    piece = memory_piece()
    for name in ("boot", "after", "collected"):
        for proc in piece["runs"]["direct"][0].get(name, {}).get("processes", []):
            proc["private"] = 90 * MiB
        if name in piece["runs"]["direct"][0]:
            piece["runs"]["direct"][0][name]["worker_private"] = summ(90 * MiB)
    piece["rounds"][0]["direct"]["worker_private"] = 90 * MiB
    res = results(memory=piece)
    assert status(res, "lead-private") == "MISS"
    why = lead_targets.explain("lead-private", res)
    assert "`smart` 25.0 MiB, direct 90.0 MiB; 20 % of direct is 18.0 MiB" in why
    assert "held 5.0 MiB; the requests added 20.0 MiB, over the limit by themselves" in why
    assert "After one full collection in every worker: 27.0 MiB" in why


# -- CPU ---------------------------------------------------------------------------------------


def overhead_piece(ratio: dict[str, float], **extra: Any) -> dict[str, Any]:
    return {"cpu_ratios": {"smart-sync/stock-sync": ratio, "direct-sync/stock-sync": summ(0.98, 0.9, 1.05, 10)},
            "cpu_us_per_request": {"smart-sync": summ(310.0, n=10), "stock-sync": summ(300.0, n=10)},
            "loadavg": [[3.5, 1, 1], [3.0, 1, 1]], **extra}


def test_a_cpu_miss_inside_the_spread_says_the_run_cannot_tell_it_from_noise() -> None:
    res = results(overhead=overhead_piece(summ(1.03, 0.8, 1.4, 10)))
    assert status(res, "lead-cpu-sync") == "MISS"
    why = lead_targets.explain("lead-cpu-sync", res)
    assert "`smart-sync` 310 µs, `stock-sync` 300 µs, +10.0 µs" in why
    assert "0.80×–1.40× over 10 rounds" in why and "is 20× the median's excess (0.03×)" in why
    assert "load average 3.5" in why
    assert "not counted in this run" in why and "--syscalls N" in why
    assert "wrapper's own cost was not measured" in why


def test_a_cpu_miss_in_every_round_uses_syscalls_and_the_wrapper_when_measured() -> None:
    extra = {"syscalls_per_request": {"smart-sync": {"per_request": 17.0}, "stock-sync": {"per_request": 16.0}},
             "syscall_diffs": {"smart-sync-stock-sync": {"per_request": 1.0, "by_name": {"getpid": 1.0}}},
             "wrapper_cost": {"bare_us": 2.0, "sync_us": 2.5, "gthread_us": 3.0}}
    why = lead_targets.explain("lead-cpu-sync", results(overhead=overhead_piece(summ(1.05, 1.02, 1.08, 10), **extra)))
    assert "Every round was over the limit (1.02×–1.08× over 10 rounds): the excess is not" in why
    assert "17.00 vs 16.00 (getpid +1.00)" in why
    assert "adds 2.50 µs to a request, 25 % of the difference above" in why


# -- boot --------------------------------------------------------------------------------------


def boot_variant(first: float, every: float, start: float | None, end: float, after: float) -> dict[str, Any]:
    split = {"load_start_s": summ(start), "load_end_s": summ(end), "first_after_load_s": summ(after)} if start else {}
    return {"first": summ(first), "all": summ(every), **split}


def boot_piece(with_log: bool = True) -> dict[str, Any]:
    start = 0.4 if with_log else None
    return {"workers": 4, "ratios": {"smart/stock-preload": summ(1.1, 0.9, 1.3, 5),
                                     "first answer: smart/stock-preload": summ(1.12, 0.8, 1.5, 5)},
            "summary": {"smart": boot_variant(1.5, 1.6, start, 1.35, 0.15),
                        "stock-preload": boot_variant(1.3, 1.45, 0.15 if with_log else None, 1.25, 0.05)}}


def test_a_late_first_worker_is_split_by_the_import_log() -> None:
    res = results(boot=boot_piece())
    assert status(res, "lead-boot-first") == "MISS"
    why = lead_targets.explain("lead-boot-first", res)
    assert "first worker answered at 1.50 s, stock `--preload`'s at 1.30 s" in why
    assert "1.12× (0.80×–1.50× over 5 rounds)" in why
    assert "until the import began 0.40 s vs 0.15 s; the import 0.95 s vs 1.10 s" in why
    assert "The largest difference is until the import began, +250 ms (smart: the master's start-up" in why


def test_a_boot_without_the_import_log_says_so() -> None:
    res = results(boot=boot_piece(with_log=False))
    for tid in ("lead-boot-first", "lead-boot-all"):
        assert status(res, tid) == "MISS"
        assert "no split of the boot" in lead_targets.explain(tid, res)
    assert "From the first answer to the last: smart 0.10 s, stock `--preload` 0.15 s" in lead_targets.explain(
        "lead-boot-all", res)


# -- the report --------------------------------------------------------------------------------


def test_the_report_follows_each_missed_target_with_its_reason() -> None:
    res = results(spawn=spawn_piece(), memory=memory_piece(), overhead=overhead_piece(summ(1.03, 0.8, 1.4, 10)),
                  boot=boot_piece())
    missed = report.missed_targets(lead_targets.evaluate(res), copy.deepcopy(res))
    reasons = {t["text"]: lead_targets.explain(t["id"], res) for t in lead_targets.evaluate(res) if t["status"] == "MISS"}
    assert len(reasons) == 5  # spawn, total PSS, CPU (sync), boot first and all; gthread not measured
    for target, why in reasons.items():
        [line] = [line for line in missed if line.startswith(f"- **{target}**")]
        assert why and line.endswith(why)
