"""Replicas sharing S3 and Redis: one upstream fetch per cold blob, shared tag lookups, and life without Redis."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis
from litestar.testing import TestClient

from application.ports import TagRow
from infra.coordination import RedisCoordination
from infra.settings import OrgSettings, RedisSettings, Settings, StorageSettings
from interfaces.bootstrap import Container
from interfaces.http.app import create_app
from tests.support.images import build_image, push_image
from tests.support.processes import concurrently

pytestmark = pytest.mark.integration


def replica(tmp_path, name: str, upstream_registry, moto, bucket: str, redis_settings: RedisSettings) -> TestClient:
    """One replica: its own data dir (event store, views, spool); S3 and Redis shared with the others."""
    settings = Settings(data_dir=str(tmp_path / name),
                        organizations=(OrgSettings(name="hub", upstream=upstream_registry.url),),
                        storage=StorageSettings(backend="s3", bucket=bucket, endpoint_url=moto.endpoint_url),
                        redis=redis_settings)
    return TestClient(create_app(Container(settings)))


def blob_path(digest: str) -> str:
    return f"/v2/hub/library/alpine/blobs/{digest}"


def pull_everywhere(replicas, image) -> None:
    """Every replica pulls the image at the same time, blob by blob; all get the right bytes."""
    accept = {"Accept": image.media_type}
    for response in concurrently(*[lambda r=r: r.get("/v2/hub/library/alpine/manifests/3.19", headers=accept)
                                   for r in replicas]):
        assert response.status_code == 200 and response.content == image.manifest_bytes
    for digest, data in image.blobs.items():
        responses = concurrently(*[lambda r=r: r.get(blob_path(digest)) for r in replicas])
        assert [(r.status_code, r.content == data) for r in responses] == [(200, True)] * len(replicas)


@pytest.fixture
def image(upstream_registry):
    image = build_image("replicas", layers=3, layer_size=1_500_000)
    push_image(upstream_registry.url, "library/alpine", "3.19", image)
    upstream_registry.mark()
    return image


def test_two_replicas_pulling_the_same_cold_blobs_fetch_each_from_upstream_once(
        tmp_path, upstream_registry, image, moto_s3, s3_bucket, shared_redis_url, redis_prefix):
    shared = RedisSettings(url=shared_redis_url, key_prefix=redis_prefix)
    with replica(tmp_path, "a", upstream_registry, moto_s3, s3_bucket, shared) as a, \
            replica(tmp_path, "b", upstream_registry, moto_s3, s3_bucket, shared) as b:
        pull_everywhere([a, b], image)
        for digest in image.blobs:
            assert upstream_registry.count("GET", "/blobs/" + digest) == 1, digest
        assert a.get("/readyz").json()["redis"] == "ok"


def test_a_tag_one_replica_resolved_is_a_hit_on_another_before_its_read_model_has_it(
        tmp_path, upstream_registry, image, moto_s3, s3_bucket, shared_redis_url, redis_prefix):
    shared = RedisSettings(url=shared_redis_url, key_prefix=redis_prefix)
    manifest = "/v2/hub/library/alpine/manifests/3.19"
    with replica(tmp_path, "a", upstream_registry, moto_s3, s3_bucket, shared) as a, \
            replica(tmp_path, "b", upstream_registry, moto_s3, s3_bucket, shared) as b:
        assert a.get(manifest, headers={"Accept": image.media_type}).headers["x-cache"] == "MISS"
        # b has its own event store here, so only the shared tag lookup can tell it about the tag.
        answer = b.get(manifest, headers={"Accept": image.media_type})
        assert (answer.headers["x-cache"], answer.content) == ("HIT", image.manifest_bytes)
    assert upstream_registry.count("GET", "/manifests/") == 1


def test_a_replica_takes_over_a_fill_whose_holder_died(tmp_path, upstream_registry, image, moto_s3, s3_bucket,
                                                       shared_redis_url, redis_prefix):
    layer = image.layers[0]
    # A holder that died mid-fill: its lock is still there until its TTL runs out.
    redis.Redis.from_url(shared_redis_url).set(f"{redis_prefix}fill:{layer.digest}", "dead-holder", px=1500)
    shared = RedisSettings(url=shared_redis_url, key_prefix=redis_prefix)
    with replica(tmp_path, "a", upstream_registry, moto_s3, s3_bucket, shared) as a:
        response = a.get(blob_path(layer.digest))
    assert (response.status_code, response.headers["x-cache"], response.content) == (200, "MISS", layer.data)
    assert upstream_registry.count("GET", "/blobs/" + layer.digest) == 1


def test_a_replica_stops_waiting_for_a_stuck_fill_and_fetches_itself(tmp_path, upstream_registry, image, moto_s3,
                                                                      s3_bucket, shared_redis_url, redis_prefix):
    layer = image.layers[0]
    redis.Redis.from_url(shared_redis_url).set(f"{redis_prefix}fill:{layer.digest}", "stuck-holder", px=60_000)
    shared = RedisSettings(url=shared_redis_url, key_prefix=redis_prefix, fill_wait_seconds=0.5)
    with replica(tmp_path, "a", upstream_registry, moto_s3, s3_bucket, shared) as a:
        response = a.get(blob_path(layer.digest))
    assert (response.status_code, response.content) == (200, layer.data)
    assert upstream_registry.count("GET", "/blobs/" + layer.digest) == 1


def test_pulls_go_on_when_redis_dies_mid_run_and_readyz_reports_it(tmp_path, upstream_registry, moto_s3, s3_bucket,
                                                                    private_redis):
    first, second = build_image("before", layers=2, layer_size=300_000), build_image("after", layers=2)
    push_image(upstream_registry.url, "library/alpine", "3.19", first)
    settings = RedisSettings(url=private_redis.url)
    with replica(tmp_path, "a", upstream_registry, moto_s3, s3_bucket, settings) as a, \
            replica(tmp_path, "b", upstream_registry, moto_s3, s3_bucket, settings) as b:
        pull_everywhere([a, b], first)
        assert a.get("/readyz").json()["redis"] == "ok"

        private_redis.kill()
        push_image(upstream_registry.url, "library/alpine", "3.19", second)
        a.get("/v2/hub/library/alpine/manifests/3.19", headers={"Accept": second.media_type})  # past staleness or not
        for digest, data in second.blobs.items():  # cold blobs, no coordination: slower, never wrong
            responses = concurrently(lambda: a.get(blob_path(digest)), lambda: b.get(blob_path(digest)))
            assert [(r.status_code, r.content == data) for r in responses] == [(200, True), (200, True)]
        for replica_client in (a, b):
            ready = replica_client.get("/readyz")
            assert ready.status_code == 200
            assert (ready.json()["status"], ready.json()["redis"]) == ("degraded", "unavailable")

        private_redis.start()  # same port: coordination resumes by itself
        assert a.get("/readyz").json()["redis"] == "ok"


def test_shared_tag_entries_are_replaced_when_the_tag_moves_and_expire_soon(shared_redis_url, redis_prefix):
    async def scenario():
        tags = RedisCoordination(shared_redis_url, key_prefix=redis_prefix, tag_ttl_seconds=0.3)
        try:
            assert await tags.get("hub", "library/alpine", "3.19") is None
            await tags.put("hub", "library/alpine", "3.19", TagRow("sha256:" + "a" * 64, "m", 1.0))
            await tags.put("hub", "library/alpine", "3.19", TagRow("sha256:" + "b" * 64, "m", 2.0))  # moved
            assert await tags.get("hub", "library/alpine", "3.19") == TagRow("sha256:" + "b" * 64, "m", 2.0)
            await asyncio.sleep(0.4)
            assert await tags.get("hub", "library/alpine", "3.19") is None
            await tags.put("hub", "library/alpine", "3.19", TagRow("sha256:" + "c" * 64, "m", 3.0))
            await tags.forget("hub", "library/alpine", "3.19")
            assert await tags.get("hub", "library/alpine", "3.19") is None
        finally:
            await tags.aclose()
    asyncio.run(scenario())


def test_without_redis_every_call_degrades_to_in_process_and_it_is_logged_once(caplog):
    async def scenario():
        coordination = RedisCoordination("redis://127.0.0.1:1/0", retry_after=0)
        try:
            with caplog.at_level(logging.WARNING, logger="infra.coordination"):
                for _ in range(3):
                    lock = await coordination.claim("sha256:" + "d" * 64)
                    assert lock is not None  # granted: this replica fetches on its own
                    await lock.release()
                    assert await coordination.get("hub", "a", "b") is None
            assert coordination.state == "unavailable" and await coordination.check() == "unavailable"
        finally:
            await coordination.aclose()
    started = time.monotonic()
    asyncio.run(scenario())
    assert len([r for r in caplog.records if "redis unavailable" in r.getMessage()]) == 1
    assert time.monotonic() - started < 5


def test_a_fill_lock_is_held_while_renewed_and_a_lapsed_holder_never_releases_its_successor(
        shared_redis_url, redis_prefix):
    async def scenario():
        # A TTL long enough that a loaded 2-core machine still renews in time (every TTL/3).
        one = RedisCoordination(shared_redis_url, key_prefix=redis_prefix, lock_ttl_seconds=1.5)
        two = RedisCoordination(shared_redis_url, key_prefix=redis_prefix, lock_ttl_seconds=1.5)
        digest = "sha256:" + "e" * 64
        try:
            first = await one.claim(digest)
            assert first is not None
            await asyncio.sleep(3.2)                     # past twice the TTL: renewals keep it
            assert await two.claim(digest) is None
            await first.release()
            assert await two.wait_released(digest)
            second = await two.claim(digest)
            assert second is not None
            await first.release()                        # a late second release leaves the new holder's lock
            assert await one.claim(digest) is None
            await second.release()
            third = await one.claim(digest)
            assert third is not None
            await third.release()
        finally:
            await one.aclose()
            await two.aclose()
    asyncio.run(scenario())
