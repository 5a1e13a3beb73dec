"""The kernel's KSM daemon for the ``ksm`` variants: started for one sample, then put back.

KSM is machine-wide state (``/sys/kernel/mm/ksm``): a variant with ``--ksm``
only marks its processes mergeable, and merging needs the daemon running.
:class:`Daemon` starts it (root only) for the duration of one sample, and
:meth:`Daemon.converge` lets it scan at a higher rate until three full scans
have passed since the call, so that the memory read next is the steady state
a machine reaches at the default rate after a few minutes. Every setting it
changed is restored on exit.
"""

import os
import time

from gunicorn_smartspawn import _linux

KSM = "/sys/kernel/mm/ksm/"
SCANS = 3            # a page is merged on the scan after the one that found it unchanged
FAST_PAGES = 20000   # pages per wake-up while converging (the kernel's default is 100)


def unavailable():
    """Why the ksm variants cannot run here (None: they can)."""
    problem = _linux.memory_merge_supported()
    if problem:
        return problem
    if not os.path.exists(KSM + "run"):
        return "this kernel has no KSM"
    if not os.access(KSM + "run", os.W_OK):
        return "starting KSM needs root (%s is not writable)" % (KSM + "run")
    return None


def _read(name):
    with open(KSM + name) as f:
        return int(f.read().split()[0])


def _write(name, value):
    with open(KSM + name, "w") as f:
        f.write(str(value))


class Daemon:
    def __init__(self):
        self.saved = {}

    def __enter__(self):
        self.saved = {name: _read(name) for name in ("run", "pages_to_scan")}
        _write("run", 1)
        return self

    def __exit__(self, *exc):
        for name, value in self.saved.items():
            _write(name, value)

    def converge(self, timeout=180.0):
        """Scan fast until SCANS full scans passed; {seconds, scans, pages_sharing, pages_shared}."""
        start, t0 = _read("full_scans"), time.monotonic()
        _write("pages_to_scan", FAST_PAGES)
        try:
            while _read("full_scans") < start + SCANS and time.monotonic() - t0 < timeout:
                time.sleep(0.2)
        finally:
            _write("pages_to_scan", self.saved.get("pages_to_scan", 100))
        return {"seconds": time.monotonic() - t0, "scans": _read("full_scans") - start,
                "pages_sharing": _read("pages_sharing"), "pages_shared": _read("pages_shared")}
