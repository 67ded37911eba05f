"""The Metrics port over prometheus_client: this process's counters and histograms, in a registry of its own.

Every series is labelled by org and a few closed sets (result, kind, outcome, reason, route): never by
repository, tag or digest, so the number of series does not grow with what is pulled. These
counters count what *this process* did; with several replicas Prometheus sums them. The
cluster-wide numbers read from the read model are in infra/read_model_metrics.py.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, Histogram, ProcessCollector

from domain.traffic import FILL_SECONDS_BUCKETS

# Upstream answers range from a few ms (a local mirror) to the read timeout (30 s by default).
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# An HTTP request lasts until its body is sent: a blob download can take minutes.
HTTP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Series:
    """A labelled metric's series by label values, from a dict: prometheus_client's labels() checks and
    converts the values and takes a lock on every call (a few % of a warm pull with three calls per
    request). It holds the same children the metric holds, so it is bounded as the metric is."""

    def __init__(self, metric: Counter | Histogram) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


def new_collector_registry() -> CollectorRegistry:
    """A registry per app (not prometheus_client's global one), with the usual process_* series."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class PrometheusMetrics:
    """Implements application.ports.Metrics, plus the HTTP edge's request counts (http_answered)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def counter(name: str, documentation: str, labels: tuple[str, ...]) -> Series:
            return Series(Counter(name, documentation, labels, registry=registry))

        self._manifest_pulls = counter(
            "entrepot_manifest_pulls", "Manifest pulls (GET) recorded by this process, by result.", ("org", "result"))
        self._blob_pulls = counter(
            "entrepot_blob_pulls", "Blob GETs answered by this process: hit (stored) or miss (streamed from "
            "an upstream fill).", ("org", "result"))
        self._stale_serves = counter(
            "entrepot_stale_serves", "Manifests (GET or HEAD) served from the cache because upstream failed.",
            ("org",))
        self._served_bytes = counter(
            "entrepot_served_bytes", "Bytes sent to clients by this process (redirects to object storage excluded).",
            ("org", "kind"))
        self._fetched_bytes = counter(
            "entrepot_upstream_fetched_bytes", "Bytes received from upstream by this process.", ("org", "kind"))
        self._upstream_requests = counter(
            "entrepot_upstream_requests", "Requests sent upstream, by kind (manifest, blob, head, tags, referrers) and "
            "outcome (status class, or timeout, connect, transport, bad_content).", ("org", "kind", "outcome"))
        self._upstream_seconds = Series(Histogram(
            "entrepot_upstream_request_duration_seconds", "Time until upstream answered (for a blob: its headers).",
            ("org", "kind"), buckets=UPSTREAM_BUCKETS, registry=registry))
        self._fills_started = counter(
            "entrepot_fills_started", "Blob fills (upstream downloads into storage) started by this process.",
            ("org",))
        self._fills_completed = counter(
            "entrepot_fills_completed", "Blob fills verified and published.", ("org",))
        self._fill_seconds = Series(Histogram(
            "entrepot_fill_duration_seconds", "Time from a fill's start to its blob verified and published.",
            ("org",), buckets=FILL_SECONDS_BUCKETS, registry=registry))
        self._fills_failed = counter(
            "entrepot_fills_failed", "Blob fills that failed, by reason (corrupt, truncated, not_found, upstream, "
            "cancelled, storage, other).", ("org", "reason"))
        self._pulls_unrecorded = counter(
            "entrepot_pulls_unrecorded", "Manifest pulls served but never recorded in the audit log, by reason: "
            "backlog_full (the oldest pulls kept during an event store outage made room), queue_full, shutdown "
            "(the event store still down when the process stopped).", ("reason",))
        self._pull_backlog = Gauge(
            "entrepot_pull_backlog", "Manifest pulls served while the event store was unavailable, kept in this "
            "process until it takes writes again.", registry=registry)
        self._http_requests = counter(
            "entrepot_http_requests", "HTTP requests answered, by method, route kind and status.",
            ("method", "route", "status"))
        self._http_seconds = Series(Histogram(
            "entrepot_http_request_duration_seconds", "Time from request to the end of the response body.",
            ("method", "route"), buckets=HTTP_BUCKETS, registry=registry))

    # -- application.ports.Metrics ---------------------------------------------------------------
    def manifest_pulled(self, org: str, result: str) -> None:
        self._manifest_pulls(org, result).inc()

    def blob_pulled(self, org: str, result: str) -> None:
        self._blob_pulls(org, result).inc()

    def stale_served(self, org: str) -> None:
        self._stale_serves(org).inc()

    def bytes_served(self, org: str, kind: str, size: int, repository: str = "") -> None:
        self._served_bytes(org, kind).inc(size)

    def bytes_fetched(self, org: str, kind: str, size: int) -> None:
        self._fetched_bytes(org, kind).inc(size)

    def upstream_answered(self, org: str, kind: str, outcome: str, seconds: float) -> None:
        self._upstream_requests(org, kind, outcome).inc()
        self._upstream_seconds(org, kind).observe(seconds)

    def fill_started(self, org: str) -> None:
        self._fills_started(org).inc()

    def fill_completed(self, org: str, seconds: float = 0.0) -> None:
        self._fills_completed(org).inc()
        self._fill_seconds(org).observe(seconds)

    def fill_failed(self, org: str, reason: str) -> None:
        self._fills_failed(org, reason).inc()

    def pulls_unrecorded(self, count: int, reason: str) -> None:
        self._pulls_unrecorded(reason).inc(count)

    def pull_backlog(self, size: int) -> None:
        self._pull_backlog.set(size)

    # -- the HTTP edge ---------------------------------------------------------------------------
    def http_answered(self, method: str, route: str, status: int, seconds: float) -> None:
        self._http_requests(method, route, str(status)).inc()
        self._http_seconds(method, route).observe(seconds)
