"""Both ways a preloader creates a worker: clone(CLONE_PARENT) and the double fork."""

from __future__ import annotations

import os
import signal

import pytest

from harness import SMART, import_count, read_stat


@pytest.mark.parametrize("fork", ["auto", "double-fork"])
def test_workers_are_children_of_the_master_either_way(server_factory, import_log, fork):
    server = server_factory(*SMART, "--smart-fork", fork, "-w", "2", "probe_app:app")
    workers = server.wait_workers(2)
    expected = "clone(CLONE_PARENT)" if fork == "auto" else "double fork"
    server.wait_log(f"workers by {expected}")
    assert all(read_stat(p)[1] == server.pid for p in workers)
    server.pids_answering(set(workers))
    os.kill(workers[0], signal.SIGKILL)  # reaped by the master, replaced from the preloader
    server.wait_workers(2, exclude=[workers[0]])
    assert len(import_count(import_log)) == 1


def test_native_thread_pool_in_the_preloader_keeps_working_in_workers(server_factory):
    pytest.importorskip("numpy")
    server = server_factory(*SMART, "-w", "2", "blas_app:app")
    workers = server.wait_workers(2, timeout=30)
    # the throwaway fork stopped OpenBLAS's pool, so the cheap path is taken
    server.wait_log("workers by clone(CLONE_PARENT)")
    answers = [server.get_json("/", timeout=10) for _ in range(6)]
    assert len({a["x"] for a in answers}) == 1  # a matrix product in each worker, same result
    assert {a["pid"] for a in answers} <= set(workers)
