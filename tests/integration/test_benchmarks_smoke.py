"""The benchmarks' smoke mode (``python -m benchmarks --quick``) runs end to end.

The benchmarks are not tests and CI does not run them; this runs every piece
once with tiny numbers so that they do not rot. It needs the benchmarks'
Python packages (``benchmarks/requirements.txt``) but neither wrk nor uWSGI:
the quick run skips those parts, and says so, where they are missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO

for _module in ("django", "numpy", "pandas", "matplotlib"):
    pytest.importorskip(_module, reason="pip install -r benchmarks/requirements.txt")


@pytest.mark.timeout(420)
def test_quick_benchmarks_write_report_chart_and_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN_", "UWSGI_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-install",
         "--out-dir", str(out), "--json", str(out / "results.json")],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=400,
    )
    shown = f"stdout:\n{proc.stdout[-8000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, shown

    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["mode"] == "quick"
    assert results["leftovers"] == [], shown
    for name in ("spawn", "boot", "memory", "surge"):
        piece = results["pieces"][name]
        assert not piece.get("error") and not piece["failures"], (name, piece.get("error"), shown)
        assert all(piece["summary"][v] for v in piece["variants"]), (name, shown)
    spawn = results["pieces"]["spawn"]["summary"]
    assert 0 < spawn["smart"]["median"] < spawn["direct"]["median"], shown
    memory = results["pieces"]["memory"]["summary"]
    assert memory["smart"]["total_pss"]["median"] < memory["direct"]["total_pss"]["median"], shown
    overhead = results["pieces"]["overhead"]
    assert overhead.get("skipped") or all(overhead["summary"][c] for c in overhead["variants"]), shown
    # the dynamic pool's pieces: the pool grew by itself, woke from zero, and
    # three ways of idling were read
    for name in ("surge-dynamic", "wake", "idle-memory"):
        piece = results["pieces"][name]
        assert not piece.get("error") and not piece["failures"], (name, piece.get("error"), shown)
    surge_dynamic = results["pieces"]["surge-dynamic"]["summary"]["smart-dynamic"]
    assert surge_dynamic["until_all_serve_s"] and surge_dynamic["errors"] == 0, shown
    wake = results["pieces"]["wake"]["summary"]
    assert 0 < wake["smart-zero"]["wake_ms"]["median"] < wake["smart-zero-cold"]["wake_ms"]["median"], shown
    idle = results["pieces"]["idle-memory"]["summary"]
    assert idle["zero-preloaders"]["workers"]["median"] == 0, shown
    assert idle["zero-preloaders"]["total_pss"]["median"] < idle["one-worker"]["total_pss"]["median"], shown

    # cost growth: a small synthetic app spawned and measured at two worker counts
    growth = results["pieces"]["growth"]
    assert not growth.get("error") and not growth["failures"], (growth.get("error"), shown)
    smart_spawn = growth["spawn"][0]["summary"]["smart"]
    assert smart_spawn and smart_spawn["median"] > 0, shown
    points = growth["memory"][0]["variants"]["smart"]["points"]
    assert [p["workers"] for p in points] == growth["workers"], shown
    assert 0 < points[0]["total_pss"] < points[-1]["total_pss"], shown

    report = (out / "benchmarks.md").read_text()
    for heading in ("## Targets", "## Machine and versions", "## Spawn time", "## Boot time",
                    "## Memory", "## Request overhead", "## Surge", "## Surge on a dynamic pool",
                    "## Wake from zero", "## Idle memory", "## Cost growth"):
        assert heading in report, heading
    assert "--quick" in report and ("**PASS**" in report or "**MISS**" in report)
    assert (out / "benchmarks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "benchmarks-growth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
