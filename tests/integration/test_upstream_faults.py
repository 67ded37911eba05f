"""Upstream trouble through a real server: a real registry behind a fault-injecting proxy."""

from __future__ import annotations

import sqlite3
import threading
import time

import httpx
import pytest

from infra.settings import OrgSettings, SecuritySettings, Settings, UpstreamSettings
from tests.support.clock import ManualClock
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import build_image, push_image
from tests.support.inprocess import InProcessServer

pytestmark = pytest.mark.integration
LANES = ("stale429", "stale503", "refused", "denied", "strict", "nocache", "ratelimit", "revalidate", "truncate",
         "corrupt", "stall", "disconnect", "moved", "negative")
SETTINGS = {
    "strict": {"on_upstream_denied": "refuse"},
    "ratelimit": {"rate_limit_floor": 5},
    "moved": {"staleness_seconds": 2},
}


class Lanes:
    """One org per test, each behind its own proxy, so a fault or a back-off stays in its test."""

    def __init__(self, upstream, server, proxies, clock: ManualClock) -> None:
        self.upstream, self.server, self.proxies, self.clock = upstream, server, proxies, clock

    def push(self, lane: str, seed: str, tag: str = "1", **options):
        image = build_image(f"{lane}-{seed}", **options)
        push_image(self.upstream.url, f"team/{lane}", tag, image)
        return image

    def get(self, lane: str, kind: str, ref: str, **kwargs) -> httpx.Response:
        return httpx.get(f"{self.server.url}/v2/{lane}/team/{lane}/{kind}/{ref}", timeout=30, **kwargs)

    def proxy_requests(self, lane: str, method: str, part: str) -> int:
        return len([r for r in self.proxies[lane].requests if r[0] == method and part in r[1]])


@pytest.fixture(scope="module")
def lanes(module_upstream_registry_factory, tmp_path_factory):
    upstream = module_upstream_registry_factory()
    proxies = {lane: FaultProxy(upstream.url).start() for lane in LANES}
    orgs = tuple(OrgSettings(**{"name": lane, "upstream": proxies[lane].url, "staleness_seconds": 0,
                                "max_stale_seconds": 3600, **SETTINGS.get(lane, {})}) for lane in LANES)
    settings = Settings(data_dir=str(tmp_path_factory.mktemp("entrepot") / "data"), organizations=orgs,
                        upstream=UpstreamSettings(read_timeout=1.0, failures_before_backoff=1000))
    clock = ManualClock()   # staleness passes when a test advances it, not after a sleep
    with InProcessServer(settings, clock=clock) as server:
        yield Lanes(upstream, server, proxies, clock)
    for proxy in proxies.values():
        proxy.stop()


def warning(response: httpx.Response) -> str:
    return response.headers.get("warning", "")


def code(response: httpx.Response) -> str:
    return response.json()["errors"][0]["code"]


def test_stale_tag_is_served_when_upstream_returns_429(lanes):
    image = lanes.push("stale429", "a")
    first = lanes.get("stale429", "manifests", "1")
    assert first.headers.get("x-cache") == "MISS", first.text
    lanes.proxies["stale429"].add(Fault(r"/manifests/1$", method="HEAD", status=429, headers={"Retry-After": "30"}))
    response = lanes.get("stale429", "manifests", "1")
    assert response.status_code == 200 and response.content == image.manifest_bytes
    assert response.headers["x-cache"] == "STALE" and "429" in warning(response)


def test_stale_tag_is_served_when_upstream_returns_503(lanes):
    image = lanes.push("stale503", "a")
    lanes.get("stale503", "manifests", "1")
    lanes.proxies["stale503"].add(Fault(r"/manifests/1$", method="HEAD", status=503))
    response = lanes.get("stale503", "manifests", "1")
    assert response.content == image.manifest_bytes and response.headers["x-cache"] == "STALE"
    assert "503" in warning(response)


def test_stale_tag_is_served_when_upstream_refuses_connections(lanes):
    image = lanes.push("refused", "a")
    lanes.get("refused", "manifests", "1")
    lanes.proxies["refused"].stop()
    response = lanes.get("refused", "manifests", "1")
    assert response.content == image.manifest_bytes and response.headers["x-cache"] == "STALE"
    assert "unavailable" in warning(response)
    missing = lanes.get("refused", "manifests", "never-cached")
    assert missing.status_code == 503 and code(missing) == "UNAVAILABLE"
    assert "127.0.0.1" in missing.json()["errors"][0]["message"]


def test_upstream_401_serves_the_cached_copy_by_default(lanes):
    image = lanes.push("denied", "a")
    lanes.get("denied", "manifests", "1")
    lanes.proxies["denied"].add(Fault(r"/manifests/1$", method="HEAD", status=401, times=None))
    response = lanes.get("denied", "manifests", "1")
    assert response.content == image.manifest_bytes and response.headers["x-cache"] == "STALE"
    assert "denied (401)" in warning(response)


def test_upstream_401_is_refused_when_the_org_chooses_refuse(lanes):
    lanes.push("strict", "a")
    lanes.get("strict", "manifests", "1")
    lanes.proxies["strict"].add(Fault(r"/manifests/1$", method="HEAD", status=401, times=None))
    response = lanes.get("strict", "manifests", "1")
    assert response.status_code == 502 and code(response) == "DENIED"


def test_without_a_cached_copy_a_429_is_toomanyrequests_with_retry_after(lanes):
    lanes.proxies["nocache"].add(Fault(r"/manifests/", status=429, headers={"Retry-After": "17"}))
    response = lanes.get("nocache", "manifests", "1")
    assert response.status_code == 429 and code(response) == "TOOMANYREQUESTS"
    assert response.headers["retry-after"] == "17"


def test_rate_limit_readings_are_kept_and_the_floor_serves_stale_instead_of_spending_pulls(lanes):
    old = lanes.push("ratelimit", "a")
    lanes.proxies["ratelimit"].add(Fault(r"/manifests/", method="GET", headers={
        "ratelimit-limit": "100;w=21600", "ratelimit-remaining": "3;w=21600"}))
    lanes.get("ratelimit", "manifests", "1")
    lanes.push("ratelimit", "a", revision=1)  # the tag moves upstream
    response = lanes.get("ratelimit", "manifests", "1")
    assert response.headers["x-cache"] == "STALE" and response.content == old.manifest_bytes
    assert "floor" in warning(response)
    assert lanes.proxy_requests("ratelimit", "GET", "/manifests/1") == 1
    token = (lanes.server.data_dir / "admin.token").read_text().strip()
    shown = httpx.get(f"{lanes.server.url}/api/v1/organizations/ratelimit",
                      headers={"Authorization": f"Bearer {token}"}).json()
    reading = shown["upstream_rate_limit"]
    assert (reading["limit"], reading["remaining"], reading["window_seconds"]) == (100, 3, 21600)
    scraped = httpx.get(f"{lanes.server.url}/metrics").text  # and for Prometheus
    assert 'entrepot_upstream_ratelimit_remaining{org="ratelimit"} 3.0' in scraped
    assert 'entrepot_upstream_ratelimit_limit{org="ratelimit"} 100.0' in scraped


def test_revalidation_uses_head_and_gets_the_manifest_only_when_the_digest_changed(lanes):
    lanes.push("revalidate", "a")
    lanes.get("revalidate", "manifests", "1")
    assert lanes.get("revalidate", "manifests", "1").headers["x-cache"] == "REVALIDATED"
    assert (lanes.proxy_requests("revalidate", "HEAD", "/manifests/1"),
            lanes.proxy_requests("revalidate", "GET", "/manifests/1")) == (1, 1)
    new = lanes.push("revalidate", "a", revision=1)
    response = lanes.get("revalidate", "manifests", "1")
    assert response.content == new.manifest_bytes and response.headers["x-cache"] == "MISS"
    assert (lanes.proxy_requests("revalidate", "HEAD", "/manifests/1"),
            lanes.proxy_requests("revalidate", "GET", "/manifests/1")) == (2, 2)


def test_upstream_closing_the_connection_mid_blob_fails_the_transfer_and_the_next_pull_succeeds(lanes):
    image = lanes.push("truncate", "a", layers=1, layer_size=3_000_000)
    layer = image.layers[0]
    lanes.proxies["truncate"].add(Fault(rf"/blobs/{layer.digest}", truncate_after=2_000_000))
    with pytest.raises(httpx.HTTPError):
        lanes.get("truncate", "blobs", layer.digest)
    again = lanes.get("truncate", "blobs", layer.digest)
    assert again.content == layer.data and again.headers["x-cache"] == "MISS"
    small = image.config  # cut before any byte was released: an OCI error instead of a cut transfer
    lanes.proxies["truncate"].add(Fault(rf"/blobs/{small.digest}", truncate_after=100))
    refused = lanes.get("truncate", "blobs", small.digest)
    assert refused.status_code in (502, 503) and code(refused) in ("UNAVAILABLE", "DIGEST_INVALID")
    assert lanes.get("truncate", "blobs", small.digest).content == small.data
    assert lanes.get("truncate", "blobs", layer.digest).headers["x-cache"] == "HIT"


def corruption_events(lanes) -> int:
    with sqlite3.connect(lanes.server.data_dir / "registry.db") as db:
        return db.execute("SELECT count(*) FROM stored_events WHERE topic LIKE '%CorruptBlob%'").fetchone()[0]


def test_a_blob_whose_bytes_do_not_match_its_digest_is_never_stored_nor_served_whole(lanes):
    image = lanes.push("corrupt", "a", layers=2, layer_size=3_000_000)
    small, large = image.config, image.layers[0]
    lanes.proxies["corrupt"].add(Fault(rf"/blobs/{small.digest}", corrupt=True))
    refused = lanes.get("corrupt", "blobs", small.digest)
    assert refused.status_code == 502 and code(refused) == "DIGEST_INVALID"
    lanes.proxies["corrupt"].add(Fault(rf"/blobs/{large.digest}", corrupt=True))
    with pytest.raises(httpx.HTTPError):
        lanes.get("corrupt", "blobs", large.digest)  # the held-back tail never arrives
    assert corruption_events(lanes) == 2
    for blob in (small, large):
        again = lanes.get("corrupt", "blobs", blob.digest)
        assert again.content == blob.data and again.headers["x-cache"] == "MISS"


def test_a_stalled_upstream_fails_cleanly_after_the_read_timeout_and_the_next_pull_succeeds(lanes):
    image = lanes.push("stall", "a", layers=1, layer_size=3_000_000)
    layer = image.layers[0]
    lanes.proxies["stall"].add(Fault(rf"/blobs/{layer.digest}", stall_after=2_000_000, stall_seconds=4))
    started = time.monotonic()
    with pytest.raises(httpx.HTTPError):
        lanes.get("stall", "blobs", layer.digest)
    assert time.monotonic() - started < 4  # failed on our read timeout, not on the upstream's stall
    assert lanes.get("stall", "blobs", layer.digest).content == layer.data


def test_a_client_disconnecting_mid_stream_does_not_stop_the_fill(lanes):
    image = lanes.push("disconnect", "a", layers=1, layer_size=3_000_000)
    layer = image.layers[0]
    lanes.proxies["disconnect"].add(Fault(rf"/blobs/{layer.digest}", chunk_delay=0.02, chunk_size=65_536))
    url = f"{lanes.server.url}/v2/disconnect/team/disconnect/blobs/{layer.digest}"
    with httpx.stream("GET", url, timeout=30) as response:
        next(response.iter_raw())  # read a little, then hang up
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        head = httpx.head(url, timeout=5)
        if head.headers.get("x-cache") == "HIT":
            break
        time.sleep(0.1)
    answer = httpx.get(url, timeout=30)
    assert answer.headers["x-cache"] == "HIT" and answer.content == layer.data
    assert lanes.proxy_requests("disconnect", "GET", layer.digest) == 1


def test_a_tag_moved_upstream_while_its_old_digest_streams_completes_with_the_old_bytes(lanes):
    old = lanes.push("moved", "a", layers=1, layer_size=800_000)
    lanes.get("moved", "manifests", "1")
    layer = old.layers[0]
    lanes.proxies["moved"].add(Fault(rf"/blobs/{layer.digest}", chunk_delay=0.03, chunk_size=32_768))
    result = {}
    reader = threading.Thread(target=lambda: result.update(r=lanes.get("moved", "blobs", layer.digest)))
    reader.start()
    new = lanes.push("moved", "a", revision=1)
    lanes.clock.advance(2.1)  # past staleness: the tag is revalidated and retargeted while the old layer streams
    moved = lanes.get("moved", "manifests", "1")
    assert moved.content == new.manifest_bytes
    reader.join(30)
    assert result["r"].content == layer.data


def test_a_tag_overwritten_upstream_is_served_old_within_staleness_and_new_after_it(lanes):
    lanes.proxies["moved"].clear()
    old = lanes.push("moved", "b", tag="2")
    assert lanes.get("moved", "manifests", "2").content == old.manifest_bytes
    new = lanes.push("moved", "b", tag="2", revision=1)
    assert lanes.get("moved", "manifests", "2").content == old.manifest_bytes
    lanes.clock.advance(2.1)
    after = lanes.get("moved", "manifests", "2")
    assert after.content == new.manifest_bytes and after.headers["docker-content-digest"] == new.manifest_digest
    with sqlite3.connect(lanes.server.data_dir / "registry.db") as db:
        moves = db.execute("SELECT count(*) FROM stored_events WHERE topic LIKE '%TagResolution.Retargeted'").fetchone()
    assert moves[0] >= 1


def test_a_missing_tag_is_remembered_by_the_negative_cache(lanes):
    for _ in range(4):
        response = lanes.get("negative", "manifests", "nope")
        assert response.status_code == 404 and code(response) == "MANIFEST_UNKNOWN"
    assert lanes.proxy_requests("negative", "GET", "/manifests/nope") == 1


def test_after_repeated_failures_upstream_is_in_back_off_then_recovers(upstream_registry, tmp_path):
    image = build_image("backoff")
    push_image(upstream_registry.url, "team/app", "1", image)
    clock = ManualClock()
    with FaultProxy(upstream_registry.url) as proxy, InProcessServer(Settings(
            data_dir=str(tmp_path / "data"), organizations=(OrgSettings(name="org", upstream=proxy.url),),
            upstream=UpstreamSettings(failures_before_backoff=2, backoff_seconds=2, backoff_repositories=1)),
            clock=clock) as server:
        proxy.add(Fault(r"/manifests/", status=503, times=2))
        url = f"{server.url}/v2/org/team/app/manifests/1"
        assert [httpx.get(url).status_code for _ in range(2)] == [503, 503]
        seen = len(proxy.requests)
        during = httpx.get(url)
        assert during.status_code == 503 and "treated as unavailable" in during.json()["errors"][0]["message"]
        assert len(proxy.requests) == seen  # answered without waiting on the upstream
        clock.advance(2.2)
        assert httpx.get(url).content == image.manifest_bytes


def test_sigkill_during_a_fill_leaves_no_partial_blob_and_the_next_pull_fetches_again(upstream_registry,
                                                                                      entrepot_server_factory):
    image = build_image("sigkill", layers=1, layer_size=3_000_000)
    layer = image.layers[0]
    push_image(upstream_registry.url, "team/app", "1", image)
    with FaultProxy(upstream_registry.url) as proxy:
        proxy.add(Fault(rf"/blobs/{layer.digest}", chunk_delay=0.03, chunk_size=65_536))
        server = entrepot_server_factory([{"name": "org", "upstream": proxy.url}])
        base = f"{server.url}/v2/org/team/app"
        assert httpx.get(f"{base}/manifests/1").status_code == 200
        spool = server.data_dir / "storage" / "spool"
        with httpx.stream("GET", f"{base}/blobs/{layer.digest}", timeout=30) as response:
            next(response.iter_raw())
            assert any(spool.iterdir())  # a fill is under way
            server.kill()
        assert any(spool.iterdir())  # the killed process left its partial download
        server.start()
        assert not any(spool.iterdir())  # cleaned at start
        assert httpx.head(f"{base}/manifests/1").status_code == 200  # the event log survived
        again = httpx.get(f"{base}/blobs/{layer.digest}", timeout=30)
        assert again.content == layer.data and again.headers["x-cache"] == "MISS"
        status = server.cli("projections", "status", "--json")
        assert status.returncode == 0, status.stderr


def test_stale_tag_is_served_when_the_upstream_host_name_does_not_resolve(upstream_registry, tmp_path):
    image = build_image("dns")
    push_image(upstream_registry.url, "team/app", "1", image)
    token = "dns-test-admin-token"
    admin = {"Authorization": f"Bearer {token}"}
    with InProcessServer(Settings(data_dir=str(tmp_path / "data"), admin_token=token, organizations=(),
                                  security=SecuritySettings(allowed_upstream_networks=("127.0.0.0/8",)))) as server:
        # Created through the API, so the API may move it (an org of the config file it may not).
        created = httpx.post(f"{server.url}/api/v1/organizations", headers=admin,
                             json={"name": "org", "upstream": upstream_registry.url, "staleness_seconds": 0})
        assert created.status_code == 201, created.text
        url = f"{server.url}/v2/org/team/app/manifests"
        assert httpx.get(f"{url}/1").headers["x-cache"] == "MISS"
        moved = httpx.patch(f"{server.url}/api/v1/organizations/org", headers=admin,
                            json={"upstream": "http://registry.no-such-host.invalid:5000"})  # .invalid never resolves
        assert moved.status_code == 200, moved.text
        response = httpx.get(f"{url}/1")
        assert response.content == image.manifest_bytes and response.headers["x-cache"] == "STALE"
        assert "registry.no-such-host.invalid" in warning(response)
        missing = httpx.get(f"{url}/never-cached")
        assert missing.status_code == 503 and code(missing) == "UNAVAILABLE"
        assert "registry.no-such-host.invalid" in missing.json()["errors"][0]["message"]
