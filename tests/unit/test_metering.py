"""What the cache counts through the Metrics port: pulls, fills, upstream requests and bytes, with a fake port."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from application.breaker import BackoffPolicy, UpstreamBackoff
from application.pull_through import Client
from application.credentials import Credentials
from application import errors
from application.metering import MeteredUpstream, fill_failure, upstream_outcome
from application.orgs import OrgDirectory
from application.pulls import GroupCommit, Pulls
from application.cache_records import CacheRecords
from domain.manifest import DOCKER_MANIFEST
from infra.upstream.errors import transport_errors
from tests.unit.fakes import FakeClock, FakeMetrics, FakeUpstream, MemoryBlobStore, RecordsView, edge_cache, run_scenario

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
LAYER = b"layer-bytes-" * 10


class World:
    """The cache as the composition root wires it: UpstreamBackoff(MeteredUpstream(upstream)), metered pulls."""

    def __init__(self, **org_settings) -> None:
        self.clock = FakeClock()
        self.metrics = FakeMetrics()
        self.records = CacheRecords(env=POPO)
        self.upstream = FakeUpstream()
        self.orgs = OrgDirectory(self.records, Credentials(env=POPO), ttl=0)
        self.orgs.apply("hub", {"upstream": "http://up.example", "staleness_seconds": 300,
                                "max_stale_seconds": 3600, **org_settings})
        self.group = GroupCommit(Pulls(env=POPO), metrics=self.metrics)
        backoff = UpstreamBackoff(MeteredUpstream(self.upstream, self.metrics), self.clock,
                                  BackoffPolicy(failures=2, repositories=1))
        self.cache = edge_cache(records=self.records, orgs=self.orgs, view=RecordsView(self.records),
                                store=MemoryBlobStore(), upstream=backoff, pulls=self.group, clock=self.clock,
                                      metrics=self.metrics)
        self.layer = self.upstream.put_blob(LAYER)
        self.manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                                    "config": {"digest": self.layer, "size": len(LAYER)},
                                    "layers": [{"digest": self.layer, "size": len(LAYER)}]}).encode()
        self.upstream.put_manifest("library/alpine", "3.19", self.manifest, DOCKER_MANIFEST)

    async def get(self, ref: str = "3.19"):
        return await self.cache.manifest("hub", "library/alpine", ref, [DOCKER_MANIFEST], Client("10.0.0.1", "t"))

    async def read_blob(self, digest: str) -> bytes:
        answer = await self.cache.blob("hub", "library/alpine", digest)
        return b"".join([chunk async for chunk in answer.open(0, answer.size)])


async def counted(metrics: FakeMetrics, name: str, timeout: float = 2.0) -> list[tuple]:
    """The calls of `name` once there are some: a fill is counted completed after it recorded the blob,
    which happens after its readers got the last byte."""
    for _ in range(int(timeout / 0.01)):
        if metrics.of(name):
            break
        await asyncio.sleep(0.01)
    return metrics.of(name)


def run(test, **org_settings):
    return run_scenario(lambda: World(**org_settings), test)


def test_a_miss_then_a_hit_are_counted_as_recorded_pulls_with_one_upstream_request():
    async def scenario(w: World):
        await w.get()
        await w.get()
        assert w.metrics.of("manifest_pulled") == [("hub", "miss"), ("hub", "hit")]
        assert w.metrics.of("upstream_answered") == [("hub", "manifest", "2xx")]
        assert w.metrics.total("bytes_fetched", "hub", "manifest") == len(w.manifest)
    run(scenario)


def test_a_head_of_a_manifest_is_not_counted_as_a_pull():
    async def scenario(w: World):
        await w.cache.manifest("hub", "library/alpine", "3.19", [DOCKER_MANIFEST], None, record=False)
        assert w.metrics.of("manifest_pulled") == []
    run(scenario)


def test_a_stale_serve_is_counted_with_the_failed_revalidation():
    async def scenario(w: World):
        await w.get()
        w.upstream.error = errors.UpstreamUnreachable("connection refused")
        w.clock.advance(400)
        await w.get()
        assert w.metrics.of("manifest_pulled")[-1] == ("hub", "stale")
        assert w.metrics.of("upstream_answered")[-1] == ("hub", "head", "connect")
        assert w.metrics.of("stale_served") == [("hub",)]   # counted by the application, not the edge
    run(scenario)


def test_a_blob_get_is_counted_as_a_pull_by_its_result_and_a_head_is_not():
    async def scenario(w: World):
        await w.read_blob(w.layer)
        await w.cache.blob_head("hub", "library/alpine", w.layer)
        await w.read_blob(w.layer)
        assert w.metrics.of("blob_pulled") == [("hub", "miss"), ("hub", "hit")]
    run(scenario)


def test_a_blob_fill_is_counted_started_and_completed_and_its_bytes_fetched_once():
    async def scenario(w: World):
        assert await w.read_blob(w.layer) == LAYER
        assert await w.read_blob(w.layer) == LAYER
        assert await counted(w.metrics, "fill_completed") == [("hub",)]
        assert w.metrics.of("fill_started") == [("hub",)]
        assert w.metrics.of("fill_failed") == []
        assert w.metrics.total("bytes_fetched", "hub", "blob") == len(LAYER)
        assert w.metrics.of("upstream_answered") == [("hub", "blob", "2xx")]
    run(scenario)


def test_a_corrupt_blob_fill_is_counted_as_failed_corrupt():
    async def scenario(w: World):
        w.upstream.corrupt.add(w.layer)
        with pytest.raises(errors.UpstreamBadContent):
            await w.read_blob(w.layer)
        assert w.metrics.of("fill_started") == [("hub",)]
        assert w.metrics.of("fill_failed") == [("hub", "corrupt")]
        assert w.metrics.of("fill_completed") == []
    run(scenario)


def test_a_blob_shorter_than_upstream_declared_is_counted_as_failed_truncated():
    class ShortUpstream(FakeUpstream):
        async def open_blob(self, target, digest):
            blob = await super().open_blob(target, digest)
            blob.size += 10   # upstream declares more than it sends
            return blob

    async def scenario(w: World):
        w.upstream.__class__ = ShortUpstream
        with pytest.raises(errors.UpstreamBadContent):
            await w.read_blob(w.layer)
        assert w.metrics.of("fill_failed") == [("hub", "truncated")]
    run(scenario)


def test_a_blob_unknown_upstream_is_a_failed_fill_and_a_4xx_answer():
    async def scenario(w: World):
        with pytest.raises(errors.BlobUnknown):
            await w.read_blob("sha256:" + "0" * 64)
        assert w.metrics.of("fill_failed") == [("hub", "not_found")]
        assert w.metrics.of("upstream_answered") == [("hub", "blob", "4xx")]
    run(scenario)


def test_requests_refused_by_the_back_off_are_not_counted_as_sent_upstream():
    async def scenario(w: World):
        w.upstream.error = errors.UpstreamUnavailable("upstream answered 503", status=503)
        for _ in range(4):  # two failures open the breaker; the next two never reach upstream
            with pytest.raises(errors.UpstreamUnavailable):
                await w.get()
        assert w.metrics.of("upstream_answered") == [("hub", "manifest", "5xx")] * 2
    run(scenario)


@pytest.mark.parametrize("error, outcome", [
    (errors.UpstreamTimeout("timed out"), "timeout"),
    (errors.UpstreamUnreachable("refused"), "connect"),
    (errors.UpstreamUnavailable("reset"), "transport"),
    (errors.UpstreamUnavailable("bad gateway", status=502), "5xx"),
    (errors.UpstreamRateLimited("slow down"), "4xx"),
    (errors.UpstreamNotFound("unknown", status=404), "4xx"),
    (errors.UpstreamBadContent("digest mismatch"), "bad_content"),
    (errors.ManifestTooLarge("5 MiB"), "bad_content"),
])
def test_an_upstream_failure_reads_as_a_status_class_or_a_failure_kind(error, outcome):
    assert upstream_outcome(error) == outcome


@pytest.mark.parametrize("error, reason", [
    (errors.BlobCorrupt("bad digest"), "corrupt"),
    (errors.BlobTruncated("short"), "truncated"),
    (errors.UpstreamNotFound("gone", status=404), "not_found"),
    (errors.UpstreamTimeout("slow"), "upstream"),
    (asyncio.CancelledError(), "cancelled"),
    (OSError("disk full"), "other"),
])
def test_a_fill_failure_reads_as_a_reason(error, reason):
    assert fill_failure(error) == reason


@pytest.mark.parametrize("transport_error, expected", [
    (httpx.ConnectTimeout("connect timed out"), errors.UpstreamTimeout),
    (httpx.ReadTimeout("read timed out"), errors.UpstreamTimeout),
    (httpx.ConnectError("connection refused"), errors.UpstreamUnreachable),
    (httpx.RemoteProtocolError("peer closed"), errors.UpstreamUnavailable),
])
def test_the_upstream_client_tells_timeouts_and_refused_connections_apart(transport_error, expected):
    with pytest.raises(errors.UpstreamUnavailable) as raised:
        with transport_errors("registry.example"):
            raise transport_error
    assert type(raised.value) is expected
