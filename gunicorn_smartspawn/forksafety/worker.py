"""The worker: making the inheritance safe, right after fork."""

from __future__ import annotations

import os
from typing import Any

from gunicorn_smartspawn.forksafety.fencing import fence
from gunicorn_smartspawn.forksafety.findings import Findings, describe_socket
from gunicorn_smartspawn.forksafety.libraries import _RESETS

# -- the worker: making the inheritance safe -----------------------------------------------------------


def prepare_worker(findings: Findings, cfg: Any, log: Any) -> None:
    """Called in each forked worker before its events and hooks run."""
    if not findings:
        return
    done: list[str] = []
    if getattr(cfg, "fork_safety_libraries", True):
        for conn in findings.libraries:
            try:
                if _RESETS[conn.library](conn):
                    done.append(conn.label)
            except Exception as exc:
                log.error(
                    "fork safety: worker pid=%d could not reset %s (%s: %s); it may share the preloader's connection",
                    os.getpid(), conn.label, type(exc).__name__, exc,
                )
    fenced = []
    if getattr(cfg, "fork_safety", "warn") == "fence":
        for found in findings.sockets:
            if found.harmless is not None:
                continue
            try:
                if fence(found.fd, found.inode, found.type):
                    fenced.append(found.peer)
            except OSError as exc:  # out of descriptors, for one
                log.error("fork safety: worker pid=%d could not fence %s (%s)", os.getpid(), describe_socket(found), exc)
    if done or fenced:
        log.debug(
            "fork safety: worker pid=%d reset %s; fenced %s",
            os.getpid(), ", ".join(done) or "no library", ", ".join(fenced) or "no connection",
        )
