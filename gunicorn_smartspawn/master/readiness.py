"""Readiness that tells the truth: systemd's notify protocol, and the ``ready`` control command.

Stock gunicorn sends ``READY=1`` when its arbiter has bound its sockets,
before any app is loaded. The master here knows when each app serves, so it
holds ``READY=1`` back until every app has a worker of its current
generation serving, or has failed (``STATUS=`` then says which), and says:

* ``RELOADING=1`` (with ``MONOTONIC_USEC``, as ``Type=notify-reload`` wants)
  when a HUP starts, and ``READY=1`` again once the new generations serve;
* ``STOPPING=1`` when the master stops;
* ``STATUS=`` lines a person can read in ``systemctl status``, when they change.

The same judgement answers ``smartspawn ready`` (a container's readiness
probe): exit 0 only once every app serves.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gunicorn import systemd

#: Longest STATUS= text sent.
MAX_STATUS = 400


def app_state(pool: Any, removed: bool = False) -> tuple[bool, str]:
    """(settled, words) for one app: settled once all its workers serve in its current generation, or it failed."""
    if removed:
        return True, "removed, draining"
    serving = sum(1 for w in pool.workers.values() if w.ready and not w.retiring and w.generation == pool.generation)
    switching = pool.reload_requested or pool.candidate is not None
    if serving and serving >= pool.target and not switching:  # all its workers, not the first one
        return True, f"{serving} worker{'s' if serving != 1 else ''} serving"
    if pool.failures and not switching:
        if serving:
            return True, f"{serving} of {pool.target} workers serving, failing: {pool.last_error or 'see the log'}"
        return True, f"failed: {pool.last_error or 'see the log'}"
    if pool.target == 0 and not pool.workers and not switching:
        return True, "no worker (scaled to zero)"
    return False, "reloading" if switching else "starting"


def summary(master: Any) -> tuple[bool, str, dict[str, str]]:
    """(every app settled, one status line, app -> words)."""
    states = {name: app_state(pool, master.apps.specs[name].removed) for name, pool in master.apps.pools.items()}
    line = "; ".join(f"{name}: {words}" for name, (_, words) in states.items())
    return all(ok for ok, _ in states.values()), line[:MAX_STATUS], {n: w for n, (_, w) in states.items()}


class Readiness:
    """Sends the notify messages of one master (nothing at all without ``NOTIFY_SOCKET``)."""

    def __init__(self, master: Any) -> None:
        self.master = master
        self.ready_sent = False
        self.last_status = ""

    @property
    def enabled(self) -> bool:
        return bool(os.environ.get("NOTIFY_SOCKET"))

    def _send(self, state: str) -> None:
        systemd.sd_notify(state, self.master.log)

    def tick(self) -> None:
        if not self.enabled:
            return
        settled, status, _ = summary(self.master)
        if settled and not self.ready_sent:
            self.ready_sent = True
            self.last_status = status
            self._send(f"READY=1\nSTATUS={status}")
        elif status != self.last_status:
            self.last_status = status
            self._send(f"STATUS={status}")

    def reloading(self) -> None:
        self.ready_sent = False
        if self.enabled:
            usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading")

    def stopping(self) -> None:
        if self.enabled:
            self._send("STOPPING=1\nSTATUS=stopping")


@contextmanager
def quiet_notify() -> Iterator[None]:
    """No notify message from gunicorn's own code inside (its READY=1 at start comes too early)."""
    addr = os.environ.pop("NOTIFY_SOCKET", None)
    try:
        yield
    finally:
        if addr is not None:
            os.environ["NOTIFY_SOCKET"] = addr
