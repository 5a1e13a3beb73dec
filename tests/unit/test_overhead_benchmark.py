"""benchmarks/overhead.py: the parts of the request-overhead benchmark that need no server (reading
``strace -c``'s table, the fixed-count script, the in-process wrapper cost)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import overhead

# strace 6.1's summary (-c -f), as it wrote it on this project's machine: with and without errors
TABLE = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 28.08    0.055981          12      4612           sendto
 15.21    0.030321          13      2307           shutdown
  8.05    0.016057           2      6918           getpid
  7.77    0.015492           3      4614         1 recvfrom
  0.02    0.000044          44         1           pselect6
------ ----------- ----------- --------- --------- ----------------
100.00    0.199345           4     41526         1 total
"""


def test_the_strace_table_reads_as_calls_by_name() -> None:
    assert overhead.parse_strace_summary(TABLE) == {
        "sendto": 4612, "shutdown": 2307, "getpid": 6918, "recvfrom": 4614, "pselect6": 1}


def test_lines_that_are_not_rows_are_left_out() -> None:
    text = "strace: Process 4372 attached\n" + TABLE + "strace: Process 4372 detached\n"
    assert sum(overhead.parse_strace_summary(text).values()) == 18452  # the total row is not a syscall


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_real_strace_table_counts_a_known_number_of_calls(tmp_path: Path) -> None:
    out = tmp_path / "summary.txt"
    code = "import os\nfor _ in range(300): os.getppid()\n"
    subprocess.run(["strace", "-c", "-f", "-o", str(out), sys.executable, "-c", code], check=True, timeout=120)
    calls = overhead.parse_strace_summary(out.read_text())
    assert calls.get("getppid", 0) >= 300


def test_the_fixed_count_script_stops_wrk_at_the_count(tmp_path: Path) -> None:
    path = overhead.write_script(str(tmp_path))
    script = Path(path).read_text()
    assert os.path.basename(path) == "fixed_count.lua"
    assert "seen >= limit" in script and "os.exit(0)" in script
    assert overhead.FIXED_RE.search("fixed-count-done 2000\n").group(1) == "2000"  # type: ignore[union-attr]


def test_the_wrapper_cost_is_measured_against_the_bare_app() -> None:
    cost = overhead.wrapper_cost(repeats=2, number=200)
    assert set(cost) == {"bare_us", "sync_us", "gthread_us"}
    assert cost["bare_us"] > 0
    assert all(abs(v) < 1000 for v in cost.values())


def test_the_sync_loop_cost_compares_gunicorns_code_with_the_plugins() -> None:
    cost = overhead.loop_cost(repeats=1, number=20)
    assert set(cost) == {"stock_us", "plugin_us", "saved_us", "notify_stock_us", "notify_plugin_us"}
    assert cost["stock_us"] > 0 and cost["plugin_us"] > 0 and cost["notify_stock_us"] > 0
    assert cost["saved_us"] == cost["stock_us"] - cost["plugin_us"]


def test_the_cpu_rounds_are_fixed_counts_interleaved_with_the_order_rotated(monkeypatch) -> None:
    bursts = []

    def fake_burst(server, duration, opts, fixed=None):
        bursts.append((server, fixed))
        return {"cpu_us_per_request": 100.0 + len(bursts), "requests": fixed[0], "rps": 1000.0,
                "command": "wrk -t1 -c%d" % fixed[1]}

    monkeypatch.setattr(overhead, "run_wrk_on", fake_burst)
    opts = overhead.Options(cpu_rounds=3, cpu_requests=500, cpu_connections=4)
    group = ["smart-gthread", "stock-gthread", "direct-gthread"]
    rounds, detail = [{} for _ in range(3)], {c: [] for c in group}
    assert overhead.cpu_phase(group, {c: c for c in group}, opts, rounds, detail) == []
    assert {fixed for _, fixed in bursts} == {(500, 4)}  # every burst the same count, same client
    order = [server for server, _ in bursts]
    assert [order[i * 3] for i in range(3)] == ["smart-gthread", "stock-gthread", "direct-gthread"]
    assert all(set(r) == set(group) for r in rounds)
    method = overhead.cpu_method(opts, 10, detail)
    assert method == {"fixed_count": True, "rounds": 3, "requests": 500, "connections": 4,
                      "command": "wrk -t1 -c4"}
    text = " ".join(overhead.notes(opts, 10, "wrk -t2 -c16 -d2s", detail))
    assert "3 rounds of one fixed-count burst per server" in text and "one wrk thread" in text


def test_without_cpu_rounds_the_cpu_figure_comes_from_the_timed_bursts() -> None:
    opts = overhead.Options(cpu_rounds=0)
    assert overhead.cpu_method(opts, 8, {})["fixed_count"] is False
    assert "during each requests/s burst" in " ".join(overhead.notes(opts, 8, None, {}))


def test_the_gthread_cost_compares_gunicorns_parent_check_with_the_plugins() -> None:
    cost = overhead.gthread_cost(repeats=1, number=20)
    assert set(cost) == {"stock_us", "plugin_us", "saved_us"}
    assert cost["stock_us"] > 0 and cost["plugin_us"] > 0
    assert cost["saved_us"] == cost["stock_us"] - cost["plugin_us"]
