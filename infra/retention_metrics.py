"""Retention gauges and counters read from the views at scrape time: quotas, usage, evictions (cluster-wide)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from prometheus_client.registry import Collector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from domain.org_settings import OrgSettings

log = logging.getLogger(__name__)


class RetentionCollector(Collector):
    def __init__(self, retention, orgs, ttl: float = 5.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._retention, self._orgs, self._ttl, self._monotonic = retention, orgs, ttl, monotonic
        self._lock = threading.Lock()
        self._families: list[Metric] | None = None
        self._read_at = 0.0

    def describe(self) -> Iterable[Metric]:
        return self._build({}, {}, {})   # names only: registering must not query the database

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if self._families is None or self._monotonic() - self._read_at >= self._ttl:
                try:
                    # Only orgs with a quota: an org with no quota and nothing cached adds no series.
                    quotas = {row.name: quota for row in self._orgs.list_orgs()
                              if (quota := OrgSettings.from_stored(row.settings).quota_bytes)}
                    self._families = self._build(quotas, self._retention.org_usages(),
                                                 self._retention.all_eviction_totals())
                except Exception as error:   # a scrape still gets the process metrics
                    log.warning("metrics: cannot read the retention view: %s", error)
                    self._families = []
                self._read_at = self._monotonic()
            return list(self._families)

    @staticmethod
    def _build(quotas: dict, usages: dict, totals: dict) -> list[Metric]:
        quota = GaugeMetricFamily("entrepot_org_quota_bytes", "The org's quota_bytes (orgs without a quota: no sample).",
                                  labels=["org"])
        for org, value in sorted(quotas.items()):
            quota.add_metric([org], value)
        stored = GaugeMetricFamily("entrepot_org_stored_bytes", "Bytes of the distinct blobs and manifests the "
                                   "org's cached images reference: what its quota is compared with.", labels=["org"])
        for org, value in sorted(usages.items()):
            stored.add_metric([org], value)
        evictions = CounterMetricFamily("entrepot_evictions", "Images evicted, by org and reason (quota, oversize, "
                                        "capacity, flush), cluster-wide.", labels=["org", "reason"])
        evicted = CounterMetricFamily("entrepot_evicted_bytes", "Bytes the org's usage lost with evicted images.",
                                      labels=["org", "reason"])
        for (org, reason), (count, size) in sorted(totals.items()):
            evictions.add_metric([org, reason], count)
            evicted.add_metric([org, reason], size)
        return [quota, stored, evictions, evicted]
