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
