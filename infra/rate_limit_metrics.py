"""The latest upstream rate-limit reading per org (`ratelimit-limit` / `ratelimit-remaining`), as gauges.

Docker Hub counts pulls per client IP or account; an operator wants to see the remaining budget
before it runs out, and whether the org's `rate_limit_floor` is what keeps tags stale. The
reading is this process's latest (each replica talks to upstream on its own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from application.ratelimits import RateLimitReading


class RateLimitCollector(Collector):
    def __init__(self, readings: Callable[[], dict[str, RateLimitReading]]) -> None:
        self._readings = readings

    def describe(self) -> Iterable[Metric]:
        return self._families({})

    def collect(self) -> Iterable[Metric]:
        return self._families(self._readings())

    @staticmethod
    def _families(readings: dict[str, RateLimitReading]) -> Iterator[Metric]:
        fields = (("limit", "entrepot_upstream_ratelimit_limit",
                   "Pulls the upstream allows per window (its latest ratelimit-limit header)."),
                  ("remaining", "entrepot_upstream_ratelimit_remaining",
                   "Pulls left in the upstream's window (its latest ratelimit-remaining header)."),
                  ("window_seconds", "entrepot_upstream_ratelimit_window_seconds",
                   "Length of the upstream's rate-limit window (the w= of its headers)."),
                  ("observed_at", "entrepot_upstream_ratelimit_observed_timestamp_seconds",
                   "When this process last read the org's rate-limit headers (Unix time)."))
        for attribute, name, documentation in fields:
            family = GaugeMetricFamily(name, documentation, labels=["org"])
            for org, reading in sorted(readings.items()):
                value = getattr(reading, attribute)
                if value is not None:  # an upstream may send a limit without a window, or none at all
                    family.add_metric([org], value)
            yield family
