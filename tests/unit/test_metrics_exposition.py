"""The Prometheus side: labels from closed sets, per-app registries, and read-model gauges cached between scrapes."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from application.ports import RateLimit
from application.ratelimits import RateLimits
from infra.metrics import PrometheusMetrics, new_collector_registry
from infra.rate_limit_metrics import RateLimitCollector
from infra.read_model_metrics import ReadModelCollector
from interfaces.http.metrics import method_label, route_kind

DIGEST = "sha256:" + "a" * 64


def samples(registry) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.parametrize("path, kind", [
    ("/v2/", "base"), ("/v2", "base"),
    ("/v2/hub/library/alpine/manifests/3.19", "manifest"),
    (f"/v2/hub/a/b/c/manifests/{DIGEST}", "manifest"),
    (f"/v2/hub/library/alpine/blobs/{DIGEST}", "blob"),
    ("/v2/hub/library/alpine/tags/list", "tags"),
    ("/api/v1/organizations/hub", "admin"), ("/schema/openapi.json", "admin"),
    ("/healthz", "health"), ("/readyz", "health"), ("/metrics", "metrics"),
    ("/v2/_catalog", "other"), ("/favicon.ico", "other"),
])
def test_a_request_path_is_labelled_by_its_route_kind_never_by_what_it_names(path, kind):
    assert route_kind(path) == kind


def test_unknown_http_methods_share_one_label():
    assert [method_label(m) for m in ("GET", "HEAD", "BREW", "get")] == ["GET", "HEAD", "other", "other"]


def test_two_apps_in_one_process_count_in_their_own_registries():
    first, second = PrometheusMetrics(new_collector_registry()), PrometheusMetrics(new_collector_registry())
    first.manifest_pulled("hub", "miss")
    first.bytes_served("hub", "blob", 100)
    first.bytes_served("hub", "blob", 23)
    assert samples(first.registry)[("entrepot_manifest_pulls_total", (("org", "hub"), ("result", "miss")))] == 1
    assert samples(first.registry)[("entrepot_served_bytes_total", (("kind", "blob"), ("org", "hub")))] == 123
    assert not any(name.startswith("entrepot_manifest_pulls") for name, _ in samples(second.registry))


class Views:
    """The four read-model views the collector reads, counting how often they are queried."""

    def __init__(self) -> None:
        self.queries = 0
        self.blobs = {"hub": (2, 300)}
        self.fail = False

    def _query(self):
        self.queries += 1
        if self.fail:
            raise ConnectionError("database is down")

    def org_totals(self):
        self._query()
        return self.blobs

    def tag_counts(self):
        return {"hub": 1}

    def counts(self, org=None):
        return {"hub": {"hit": 5, "miss": 2}}


class Manifests:
    def org_totals(self):
        return {"hub": (1, 700)}


def collector(views: Views, now: list[float]) -> ReadModelCollector:
    return ReadModelCollector(views, Manifests(), views, views, ttl=5.0, monotonic=lambda: now[0])


def test_read_model_gauges_name_each_org_and_are_read_once_per_ttl():
    views, now = Views(), [100.0]
    registry = new_collector_registry()
    registry.register(collector(views, now))
    assert views.queries == 0  # registering does not query
    values = samples(registry)
    assert values[("entrepot_org_blob_bytes", (("org", "hub"),))] == 300
    assert values[("entrepot_org_blobs", (("org", "hub"),))] == 2
    assert values[("entrepot_org_manifests", (("org", "hub"),))] == 1
    assert values[("entrepot_org_manifest_bytes", (("org", "hub"),))] == 700
    assert values[("entrepot_org_tags", (("org", "hub"),))] == 1
    assert values[("entrepot_org_pulls_recorded_total", (("org", "hub"), ("result", "hit")))] == 5
    views.blobs = {"hub": (3, 400)}
    now[0] += 4.9
    assert samples(registry)[("entrepot_org_blob_bytes", (("org", "hub"),))] == 300  # within the ttl: cached
    now[0] += 0.1
    assert samples(registry)[("entrepot_org_blob_bytes", (("org", "hub"),))] == 400
    assert views.queries == 2


def test_an_unreadable_read_model_leaves_out_its_gauges_but_not_the_scrape(caplog):
    views, now = Views(), [0.0]
    views.fail = True
    metrics = PrometheusMetrics(new_collector_registry())
    metrics.registry.register(collector(views, now))
    metrics.manifest_pulled("hub", "hit")
    values = samples(metrics.registry)
    assert ("entrepot_manifest_pulls_total", (("org", "hub"), ("result", "hit"))) in values
    assert not any(name.startswith("entrepot_org_") for name, _ in values)
    assert "cannot read the read model" in caplog.text


def test_the_latest_upstream_rate_limit_reading_of_each_org_is_a_gauge():
    readings = RateLimits()
    registry = new_collector_registry()
    registry.register(RateLimitCollector(readings.all))
    assert not any(name.startswith("entrepot_upstream_ratelimit") for name, _ in samples(registry))
    readings.observe("hub", RateLimit(limit=100, remaining=7, window_seconds=21600), at=1_700_000_000.0)
    readings.observe("quay", RateLimit(limit=None, remaining=40, window_seconds=None), at=1_700_000_060.0)
    got = samples(registry)
    assert got[("entrepot_upstream_ratelimit_remaining", (("org", "hub"),))] == 7
    assert got[("entrepot_upstream_ratelimit_limit", (("org", "hub"),))] == 100
    assert got[("entrepot_upstream_ratelimit_window_seconds", (("org", "hub"),))] == 21600
    assert got[("entrepot_upstream_ratelimit_observed_timestamp_seconds", (("org", "quay"),))] == 1_700_000_060
    assert got[("entrepot_upstream_ratelimit_remaining", (("org", "quay"),))] == 40
    assert ("entrepot_upstream_ratelimit_limit", (("org", "quay"),)) not in got  # never sent: no sample
