"""Per-org gauges read from the read model at scrape time: what the whole cluster has cached and recorded.

Unlike the process counters (infra/metrics.py), these come from the projections every replica
shares, so any one replica reports the cluster's numbers: do not sum them across replicas.
A few grouped queries per scrape, and their answer is kept for `ttl` seconds so that many
scrapers (or a scrape storm) do not turn into database load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class OrgTotals(Protocol):
    def org_totals(self) -> dict[str, tuple[int, int]]:
        """{org: (count, bytes)} (projections: BlobsView, ManifestsView)."""


class TagCounts(Protocol):
    def tag_counts(self) -> dict[str, int]: ...


class PullCounts(Protocol):
    def counts(self, org: str | None = None) -> dict[str, dict[str, int]]:
        """{org: {result: pulls}} (projections: CountersView)."""


@dataclass(frozen=True)
class Snapshot:
    blobs: dict[str, tuple[int, int]] = field(default_factory=dict)
    manifests: dict[str, tuple[int, int]] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)
    pulls: dict[str, dict[str, int]] = field(default_factory=dict)


class ReadModelCollector(Collector):
    def __init__(self, blobs: OrgTotals, manifests: OrgTotals, tags: TagCounts, counters: PullCounts,
                 ttl: float = 5.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._blobs, self._manifests, self._tags, self._counters = blobs, manifests, tags, counters
        self._ttl = ttl
        self._monotonic = monotonic
        self._lock = threading.Lock()  # concurrent scrapes wait for one read instead of each querying
        self._snapshot: Snapshot | None = None
        self._read_at = 0.0

    def snapshot(self) -> Snapshot | None:
        """The read model's totals, at most `ttl` seconds old; None when the read model cannot be read."""
        with self._lock:
            if self._snapshot is None or self._monotonic() - self._read_at >= self._ttl:
                try:
                    self._snapshot = Snapshot(self._blobs.org_totals(), self._manifests.org_totals(),
                                              self._tags.tag_counts(), self._counters.counts())
                except Exception as error:  # a scrape still gets the process metrics
                    log.warning("metrics: cannot read the read model: %s", error)
                    self._snapshot = None
                self._read_at = self._monotonic()
            return self._snapshot

    def describe(self) -> Iterable[Metric]:
        # Names only: registering the collector must not query the database.
        return self._families(Snapshot())

    def collect(self) -> Iterable[Metric]:
        snapshot = self.snapshot()
        return [] if snapshot is None else self._families(snapshot)

    @staticmethod
    def _families(s: Snapshot) -> Iterator[Metric]:
        def gauge(name: str, documentation: str, values: dict[str, int]) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, documentation, labels=["org"])
            for org, value in sorted(values.items()):
                family.add_metric([org], value)
            return family

        yield gauge("entrepot_org_blobs", "Blobs cached for the org (cluster-wide, from the read model).",
                    {org: count for org, (count, _) in s.blobs.items()})
        yield gauge("entrepot_org_blob_bytes", "Bytes of the blobs cached for the org (cluster-wide). Storage is "
                    "shared: a blob cached for two orgs counts in each.",
                    {org: size for org, (_, size) in s.blobs.items()})
        yield gauge("entrepot_org_manifests", "Manifests cached for the org (cluster-wide).",
                    {org: count for org, (count, _) in s.manifests.items()})
        yield gauge("entrepot_org_manifest_bytes", "Bytes of the manifests cached for the org (cluster-wide).",
                    {org: size for org, (_, size) in s.manifests.items()})
        yield gauge("entrepot_org_tags", "Tags cached for the org (cluster-wide).", s.tags)
        pulls = CounterMetricFamily("entrepot_org_pulls_recorded", "Manifest pulls in the audit record, by "
                                    "result: every replica's, since the event store began.", labels=["org", "result"])
        for org, results in sorted(s.pulls.items()):
            for result, count in sorted(results.items()):
                pulls.add_metric([org, result], count)
        yield pulls
