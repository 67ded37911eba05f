"""GET /metrics of a real `entrepot serve` in front of a real registry: exact counts per org, bounded series."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.images import build_image, push_image

pytestmark = pytest.mark.integration
ACCEPT = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"

Series = tuple[str, tuple[tuple[str, str], ...]]


def scrape(server) -> dict[Series, float]:
    response = httpx.get(f"{server.url}/metrics", timeout=10)   # no credentials: like /healthz
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: dict[Series, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def changes(before: dict[Series, float], after: dict[Series, float], name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def eventually(server, name: str, expected: float, timeout: float = 20.0, **labels: str) -> float:
    """A read-model gauge once the projections caught up (and the collector's few-second cache expired)."""
    deadline = time.monotonic() + timeout
    while True:
        got = value(scrape(server), name, **labels)
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.25)


def entrepot_series(samples: dict[Series, float]) -> set[Series]:
    # _created carries a timestamp per series: the same series set, so not worth comparing twice
    return {series for series in samples if series[0].startswith("entrepot_") and not series[0].endswith("_created")}


@pytest.fixture
def image(upstream_registry):
    image = build_image("metrics", layers=6, layer_size=20_000)
    push_image(upstream_registry.url, "library/alpine", "3.19", image)
    return image


@pytest.fixture
def server(upstream_registry, image, entrepot_server_factory):
    # Two orgs on one upstream; in "fresh" (staleness 0) every pull of a tag after the first asks upstream (a HEAD).
    # Counts what a client's own requests fetch: no prefetch of an image's blobs ([upstream] prefetch_blobs).
    return entrepot_server_factory([{"name": "hub", "upstream": upstream_registry.url},
                                    {"name": "fresh", "upstream": upstream_registry.url, "staleness_seconds": 0}],
                                   sections={"upstream": {"prefetch_blobs": 0}})


def test_a_miss_a_hit_and_a_blob_are_counted_exactly_for_the_org(server, image):
    manifest = f"{server.url}/v2/hub/library/alpine/manifests/3.19"
    layer = image.layers[0]
    blob = f"{server.url}/v2/hub/library/alpine/blobs/{layer.digest}"
    before = scrape(server)
    assert [httpx.get(manifest, headers={"Accept": ACCEPT}).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
    assert httpx.get(blob).content == layer.data
    after = scrape(server)

    assert changes(before, after, "entrepot_manifest_pulls_total", org="hub", result="miss") == 1
    assert changes(before, after, "entrepot_manifest_pulls_total", org="hub", result="hit") == 1
    assert changes(before, after, "entrepot_blob_pulls_total", org="hub", result="miss") == 1
    assert changes(before, after, "entrepot_served_bytes_total", org="hub", kind="blob") == len(layer.data)
    assert changes(before, after, "entrepot_served_bytes_total", org="hub", kind="manifest") == \
        2 * len(image.manifest_bytes)
    assert changes(before, after, "entrepot_upstream_fetched_bytes_total", org="hub", kind="blob") == len(layer.data)
    assert changes(before, after, "entrepot_upstream_fetched_bytes_total", org="hub", kind="manifest") == \
        len(image.manifest_bytes)
    assert changes(before, after, "entrepot_upstream_requests_total", org="hub", kind="manifest", outcome="2xx") == 1
    assert changes(before, after, "entrepot_upstream_requests_total", org="hub", kind="blob", outcome="2xx") == 1
    assert changes(before, after, "entrepot_upstream_request_duration_seconds_count", org="hub", kind="blob") == 1
    assert changes(before, after, "entrepot_fills_started_total", org="hub") == 1
    assert changes(before, after, "entrepot_http_requests_total", method="GET", route="manifest", status="200") == 2
    assert changes(before, after, "entrepot_http_requests_total", method="GET", route="blob", status="200") == 1

    # A hit is served again, never fetched again; the scrapes themselves are not pulls.
    assert httpx.get(blob).headers["x-cache"] == "HIT"
    again = scrape(server)
    assert changes(before, again, "entrepot_upstream_fetched_bytes_total", org="hub", kind="blob") == len(layer.data)
    assert changes(before, again, "entrepot_served_bytes_total", org="hub", kind="blob") == 2 * len(layer.data)
    # counted once the fill has recorded the blob, just after its last byte reached the client
    assert eventually(server, "entrepot_fills_completed_total", 1, org="hub") == 1
    assert changes(after, again, "entrepot_manifest_pulls_total", org="hub", result="hit") == 0
    assert not any(labels and dict(labels).get("org") == "fresh" for _, labels in entrepot_series(again))

    # The read model's view of the cluster: what is stored, and the pulls every replica recorded.
    assert eventually(server, "entrepot_org_blob_bytes", len(layer.data), org="hub") == len(layer.data)
    assert eventually(server, "entrepot_org_blobs", 1, org="hub") == 1
    assert eventually(server, "entrepot_org_manifests", 1, org="hub") == 1
    assert eventually(server, "entrepot_org_pulls_recorded_total", 1, org="hub", result="hit") == 1
    assert value(scrape(server), "entrepot_org_pulls_recorded_total", org="hub", result="miss") == 1


def test_an_unreachable_upstream_is_counted_as_an_upstream_error_and_a_stale_serve(server, upstream_registry):
    tag = f"{server.url}/v2/fresh/library/alpine/manifests/3.19"
    assert httpx.get(tag, headers={"Accept": ACCEPT}).headers["x-cache"] == "MISS"
    before = scrape(server)
    upstream_registry.stop()
    response = httpx.get(tag, headers={"Accept": ACCEPT})
    assert (response.status_code, response.headers["x-cache"]) == (200, "STALE")
    after = scrape(server)
    assert changes(before, after, "entrepot_upstream_requests_total", org="fresh", kind="head",
                   outcome="connect") == 1
    assert changes(before, after, "entrepot_stale_serves_total", org="fresh") == 1
    assert changes(before, after, "entrepot_manifest_pulls_total", org="fresh", result="stale") == 1
    assert eventually(server, "entrepot_org_tags", 1, org="fresh") == 1


def test_pulling_other_digests_adds_no_new_series(server, image):
    def pull(layer) -> None:
        assert httpx.get(f"{server.url}/v2/hub/library/alpine/blobs/{layer.digest}").status_code == 200

    pull(image.layers[0])
    assert httpx.get(f"{server.url}/v2/hub/library/alpine/manifests/3.19", headers={"Accept": ACCEPT}).is_success
    # Once the read model shows the hub's blob (the gauges exist), and a scrape was counted itself.
    assert eventually(server, "entrepot_org_blobs", 1, org="hub") == 1
    before = scrape(server)
    for layer in image.layers[1:6]:
        pull(layer)
    after = scrape(server)
    assert changes(before, after, "entrepot_blob_pulls_total", org="hub", result="miss") == 5
    assert entrepot_series(after) == entrepot_series(before)
