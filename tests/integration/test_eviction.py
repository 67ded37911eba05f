"""Quotas against a real upstream registry, pulled with skopeo: LRU and LFU victims, pins, an image
larger than the quota, and the bytes leaving storage after the grace period (ManualClock, no sleeps)."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from infra.settings import OrgSettings, SecuritySettings, Settings, StorageSettings
from tests.support.clock import ManualClock
from tests.support.components import require
from tests.support.images import Image, build_image, push_image
from tests.support.inprocess import InProcessServer
from tests.support.retention import REPO, Cache, image_bytes

pytestmark = pytest.mark.integration
GRACE = 60.0


@pytest.fixture(scope="module")
def images() -> dict[str, Image]:
    built = {tag: build_image(f"quota-{tag}", layers=2, layer_size=60_000) for tag in ("1", "2", "3")}
    built["big"] = build_image("quota-big", layers=3, layer_size=150_000)
    return built


@pytest.fixture
def cache_factory(upstream_registry, images, tmp_path):
    require("skopeo")
    for tag, image in images.items():
        push_image(upstream_registry.url, REPO, tag, image)
    opened = []

    def make(*, quota: int, policy: str = "lru", other_org: bool = False, through_api: bool = False) -> Cache:
        """`through_api`: hub is created through the admin API, so the API may change its quota later
        (an org of the config file it may not); on loopback, which the operator then allows."""
        orgs = [OrgSettings(name="hub", upstream=upstream_registry.url, quota_bytes=quota, eviction_policy=policy)]
        if other_org:
            orgs.append(OrgSettings(name="other", upstream=upstream_registry.url))
        settings = Settings(data_dir=str(tmp_path / "data"), organizations=() if through_api else tuple(orgs),
                            storage=StorageSettings(delete_grace_seconds=GRACE),
                            security=SecuritySettings(allowed_upstream_networks=("127.0.0.0/8",)))
        clock = ManualClock()
        server = InProcessServer(settings, clock=clock).__enter__()
        opened.append(server)
        cache = Cache(server, clock, tmp_path)
        if through_api:
            for org in orgs:
                created = cache.api("POST", "/organizations", json={
                    key: value for key, value in msgspec.structs.asdict(org).items() if key != "password"})
                assert created.status_code == 201, created.text
        return cache

    yield make
    for server in opened:
        server.__exit__()


def two_and_a_half(images) -> int:
    """Room for two of the three images, and a low watermark (90 %) that one eviction reaches."""
    sizes = [image_bytes(images[tag]) for tag in ("1", "2", "3")]
    quota = int(2.5 * max(sizes))
    assert 3 * min(sizes) > quota and 2 * max(sizes) <= 0.9 * quota
    return quota


def pull_sequence(cache: Cache) -> None:
    """1 three times long ago, then 2 once, then 3 once: LRU and LFU disagree on the victim."""
    for _ in range(3):
        cache.pull("1")
    cache.pull("2")
    cache.pull("3")
    cache.settle()


def test_lru_evicts_the_least_recently_pulled_image_and_the_others_stay_hits(cache_factory, images):
    cache = cache_factory(quota=two_and_a_half(images), policy="lru")
    pull_sequence(cache)
    assert cache.held() == {images["2"].digest, images["3"].digest}
    assert cache.retention.usage("hub") <= two_and_a_half(images)
    assert cache.x_cache("2") == "HIT" and cache.x_cache("3") == "HIT"
    [entry] = cache.retention.log(org="hub", kind="eviction")
    assert (entry.digest, entry.tags, entry.reason, entry.policy, entry.actor) == (
        images["1"].digest, "1", "quota", "lru", "system:evictor")
    metrics = httpx.get(f"{cache.server.url}/metrics", timeout=10).text
    assert 'entrepot_evictions_total{org="hub",reason="quota"} 1.0' in metrics
    assert f'entrepot_evicted_bytes_total{{org="hub",reason="quota"}} {float(entry.bytes)}' in metrics
    assert f'entrepot_org_quota_bytes{{org="hub"}} {float(two_and_a_half(images))}' in metrics
    assert f'entrepot_org_stored_bytes{{org="hub"}} {float(cache.retention.usage("hub"))}' in metrics


def test_lfu_evicts_the_least_often_pulled_image_instead(cache_factory, images):
    cache = cache_factory(quota=two_and_a_half(images), policy="lfu")
    pull_sequence(cache)
    assert cache.held() == {images["1"].digest, images["3"].digest}   # 2: as few pulls as 3, and older
    assert cache.x_cache("1") == "HIT" and cache.x_cache("3") == "HIT"


def test_a_pinned_image_survives_though_least_recently_pulled(cache_factory, images):
    cache = cache_factory(quota=two_and_a_half(images), policy="lru")
    cache.pull("1")
    cache.container.records.set_pin("hub", REPO, images["1"].digest, pinned=True, tag="1", actor="admin",
                                     at=cache.clock.now())
    cache.pull("2")
    cache.pull("3")
    cache.settle()
    assert cache.held() == {images["1"].digest, images["3"].digest}


def test_pinned_images_over_the_quota_are_reported_and_still_served(cache_factory, images):
    cache = cache_factory(quota=0, through_api=True)
    for tag in ("1", "2"):
        cache.pull(tag)
        assert cache.api("POST", "/organizations/hub/pins", json={"repository": REPO, "tag": tag}).status_code == 200
    lowered = cache.api("PATCH", "/organizations/hub", json={"quota_bytes": image_bytes(images["1"])})
    assert lowered.status_code == 200 and lowered.json()["quota_bytes"] == image_bytes(images["1"])
    cache.settle()
    assert cache.held() == {images["1"].digest, images["2"].digest}   # nothing evictable
    ready = httpx.get(f"{cache.server.url}/readyz").json()
    assert ready["status"] == "ready" and ready["quota"] == "pinned_over_quota"
    assert ready["pinned_over_quota"]["hub"] == image_bytes(images["1"]) + image_bytes(images["2"])
    shown = cache.api("GET", "/organizations/hub").json()
    assert shown["pinned_over_quota"] is True and shown["pinned_bytes"] == shown["bytes_stored"]
    assert cache.x_cache("1") == "HIT" and cache.x_cache("2") == "HIT"


def test_an_image_larger_than_the_quota_is_pulled_whole_and_not_kept(cache_factory, images):
    cache = cache_factory(quota=two_and_a_half(images))
    cache.pull("1")
    big = images["big"]
    assert image_bytes(big) > two_and_a_half(images)
    response = httpx.get(f"{cache.server.url}/v2/hub/{REPO}/manifests/big", timeout=30,
                         headers={"Accept": big.media_type})
    assert "larger than the quota" in response.headers["X-Entrepot-Not-Kept"]
    pulled = cache.pull("big")
    assert pulled.manifest == big.manifest_bytes and pulled.blobs == big.blobs
    cache.settle()
    assert cache.held() == {images["1"].digest}          # only the oversized image went
    assert cache.retention.usage("hub") <= two_and_a_half(images)
    [entry] = cache.retention.log(org="hub", kind="eviction")
    assert (entry.digest, entry.reason) == (big.digest, "oversize")
    audited = cache.api("GET", "/audit?org=hub").json()["items"]
    assert any("larger than the quota" in row["note"] for row in audited if row["reference"] == "big")


def test_after_the_grace_period_evicted_bytes_leave_storage_but_a_blob_another_org_holds_stays(
        cache_factory, images):
    cache = cache_factory(quota=two_and_a_half(images), other_org=True)
    cache.pull("1", org="other")          # the same content, cached for another org
    pull_sequence(cache)
    first = images["1"]
    assert first.digest not in cache.held()
    assert all(cache.stored(digest) for digest in first.blobs)     # within the grace period
    cache.clock.advance(GRACE + 1)
    cache.settle()
    assert all(cache.stored(digest) for digest in first.blobs)     # "other" still references them
    assert cache.held("other") == {first.digest}
    assert cache.x_cache("1", org="other") == "HIT"


def test_after_the_grace_period_an_evicted_image_is_gone_from_storage_and_pulled_again_whole(
        cache_factory, images):
    cache = cache_factory(quota=two_and_a_half(images))
    pull_sequence(cache)
    first = images["1"]
    cache.clock.advance(GRACE + 1)
    cache.settle()
    assert not any(cache.stored(digest) for digest in [first.digest, *first.blobs])
    assert cache.retention.orphans_due(cutoff=cache.clock.now()) == []
    pulled = cache.pull("1")                               # a fresh fetch from upstream, whole
    assert pulled.manifest == first.manifest_bytes and pulled.blobs == first.blobs


def test_a_pull_racing_an_eviction_gets_the_whole_image(cache_factory, images):
    cache = cache_factory(quota=0)
    first = images["1"]
    cache.pull("1")
    base = f"{cache.server.url}/v2/hub/{REPO}"
    manifest = httpx.get(f"{base}/manifests/1", headers={"Accept": first.media_type}, timeout=30)
    assert manifest.headers["X-Cache"] == "HIT"        # the client holds the manifest...
    layer, rest = first.layers[0], [first.config, *first.layers[1:]]
    with httpx.stream("GET", f"{base}/blobs/{layer.digest}", timeout=30) as streaming:
        chunks = streaming.iter_raw(1024)
        received = next(chunks)
        assert cache.api("POST", "/organizations/hub/flush", json={}).json()["images"] == 1   # ...then it goes
        cache.clock.advance(GRACE + 1)
        cache.settle()
        assert not cache.stored(layer.digest)
        received += b"".join(chunks)
    assert received == layer.data                       # a send already started completes whole
    for blob in rest:                                    # blobs asked for after the deletion: upstream again
        response = httpx.get(f"{base}/blobs/{blob.digest}", timeout=30)
        assert (response.status_code, response.content, response.headers["X-Cache"]) == (200, blob.data, "MISS")
