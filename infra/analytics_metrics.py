"""Scrape-time series for the Grafana board that the process counters do not have: projection lag and evictions.

`entrepot_projection_lag` is per projection this process runs (take the max across replicas);
`entrepot_org_images_evicted` is cluster-wide, from the analytics view (do not sum across replicas).
Both are read at most every `ttl` seconds, whatever the number of scrapers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from domain.analytics import ALL_GENERATIONS, DAY

log = logging.getLogger(__name__)
ALL_TIME = (DAY, 0, 2**40)   # every day bucket there is


class AnalyticsTotals(Protocol):
    def totals(self, pieces: list[tuple[int, int, int]], org: str | None = None,
               by_start: bool = False, distinct: bool = True, generation: int | None = None,
               parts: tuple[str, ...] = ("pulls", "traffic", "fills")) -> dict[Any, Any]: ...


class AnalyticsCollector(Collector):
    def __init__(self, statuses: Callable[[], list], analytics: AnalyticsTotals, ttl: float = 5.0) -> None:
        self._statuses, self._analytics, self._ttl = statuses, analytics, ttl
        self._lock = threading.Lock()
        self._families: list[Metric] = []
        self._read_at = float("-inf")

    def describe(self) -> Iterable[Metric]:
        return self._build([], {})   # names only: registering must not query the database

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if time.monotonic() - self._read_at >= self._ttl:
                self._read_at = time.monotonic()
                try:
                    # Every generation of the name: a Prometheus counter must not fall when an org is re-created.
                    # Only the traffic sums, which hold the evictions: not the distinct members of all time.
                    evictions = {org: totals.traffic.get("evictions", 0) for org, totals in self._analytics.totals(
                        [ALL_TIME], generation=ALL_GENERATIONS, distinct=False, parts=("traffic",)).items()}
                    self._families = self._build(self._statuses(), evictions)
                except Exception as error:   # a scrape still gets every other series
                    log.warning("metrics: cannot read projection lag or evictions: %s", error)
                    self._families = []
            return list(self._families)

    @staticmethod
    def _build(statuses: list, evictions: dict[str, int]) -> list[Metric]:
        lag = GaugeMetricFamily("entrepot_projection_lag", "Events of an application a projection this process "
                                "runs has not processed yet.", labels=["projection", "application"])
        for s in statuses:
            lag.add_metric([s.projection, s.application], s.lag)
        evicted = CounterMetricFamily("entrepot_org_images_evicted", "Images evicted from the org's cache "
                                      "(cluster-wide, from the analytics view).", labels=["org"])
        for org, n in sorted(evictions.items()):
            evicted.add_metric([org], n)
        return [lag, evicted]
