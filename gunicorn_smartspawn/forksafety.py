"""Fork safety: what a preloader hands its workers, found and handled.

(Being written: detection of inherited connections and threads, fencing, and
known libraries. See docs/fork-safety.md.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Findings:
    """What a preloader found in itself after importing its app."""

    sockets: tuple[Any, ...] = ()
    threads: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def inspect_preloader(log: Any, app_name: str, generation: int, cfg: Any, exclude_fds: list[int]) -> Findings:
    """Called in the preloader once the app is imported, before the first fork."""
    return Findings()


def prepare_worker(findings: Findings, cfg: Any, log: Any) -> None:
    """Called in each forked worker before its events and hooks run."""
