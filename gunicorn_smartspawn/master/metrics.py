"""statsd metrics through gunicorn's logger: per-app gauges and histograms.

gunicorn's statsd logger turns a log record's ``metric`` extra into a
statsd line; with no statsd configured these are debug records and cost a
dict lookup. Gauges are sent only when their value changes.
"""

from __future__ import annotations

from typing import Any


class Metrics:
    def __init__(self, log: Any) -> None:
        self.log = log
        self._gauges: dict[str, int] = {}

    def gauge(self, metric: str, value: int) -> None:
        if self._gauges.get(metric) == value:
            return
        self._gauges[metric] = value
        if value == 0 and hasattr(self.log, "gauge"):
            self.log.gauge(metric, 0)  # gunicorn's metric extras skip a value of 0
        else:
            self.log.debug("", extra={"metric": metric, "value": value, "mtype": "gauge"})

    def histogram(self, metric: str, value: float) -> None:
        self.log.debug("", extra={"metric": metric, "value": value, "mtype": "histogram"})

    def pools(self, pools: Any) -> None:
        """The per-app gauges, after every loop turn."""
        for name, pool in pools.items():
            self.gauge(f"smartspawn.{name}.workers", len(pool.workers))
            self.gauge(f"smartspawn.{name}.preloader_up", int(pool.preloader is not None and pool.preloader.ready))
