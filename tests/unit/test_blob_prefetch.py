"""A client that GETs an image manifest the cache fetches cold asks for its blobs next: their fills start
at once (`[upstream] prefetch_blobs`), one upstream fetch each, and the client's requests join them."""

from __future__ import annotations

import asyncio
import json

from application.pull_through import Client, Limits
from domain.manifest import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST
from domain.pull import PullResult
from tests.unit.fakes import run_scenario
from tests.unit.test_pull_through_cache import World as PullThroughWorld


class World(PullThroughWorld):
    """The pull-through cache's unit world with prefetch on, and a manifest list of the image."""

    def __init__(self, prefetch_blobs: int = 8) -> None:
        super().__init__(limits=Limits(prefetch_blobs=prefetch_blobs))
        index = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": [
            {"digest": self.digest, "mediaType": DOCKER_MANIFEST, "size": len(self.manifest),
             "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
        self.upstream.put_manifest("library/alpine", "multi", index, DOCKER_MANIFEST_LIST)

    async def get(self, ref: str = "3.19", record: bool = True):
        return await self.cache.manifest("hub", "library/alpine", ref, [DOCKER_MANIFEST, DOCKER_MANIFEST_LIST],
                                         Client("10.0.0.1", "test"), record=record)

    def blob_gets(self) -> list[str]:
        return [call[2] for call in self.upstream.calls if call[0] == "GET" and call[2] in (self.config, self.layer)]

    async def settle(self, seconds: float = 0.05) -> None:
        await asyncio.sleep(seconds)


def run(test, **options):
    return run_scenario(lambda: World(**options), test)


def test_a_cold_image_manifest_get_fetches_its_blobs_before_the_client_asks_once_each():
    async def scenario(w: World):
        answer = await w.get()
        assert answer.result is PullResult.MISS
        for _ in range(200):
            if w.config in w.store.objects and w.layer in w.store.objects:
                break
            await asyncio.sleep(0.005)
        assert sorted(w.blob_gets()) == sorted([w.config, w.layer])
        blob = await w.cache.blob("hub", "library/alpine", w.layer)   # the client asks: served from storage
        assert b"".join([chunk async for chunk in blob.open(0, blob.size)]) == b"layer-bytes-" * 10
        assert sorted(w.blob_gets()) == sorted([w.config, w.layer])   # still one upstream GET each
    run(scenario)


def test_a_head_of_a_manifest_prefetches_nothing():
    async def scenario(w: World):
        await w.get(record=False)
        await w.settle()
        assert w.blob_gets() == [] and w.store.objects.keys().isdisjoint({w.config, w.layer})
    run(scenario)


def test_a_manifest_list_prefetches_nothing_and_its_platform_manifest_does():
    async def scenario(w: World):
        await w.get("multi")
        await w.settle()
        assert w.blob_gets() == []
        await w.get(w.digest)
        for _ in range(200):
            if len(w.blob_gets()) == 2:
                break
            await asyncio.sleep(0.005)
        assert sorted(w.blob_gets()) == sorted([w.config, w.layer])
    run(scenario)


def test_with_prefetch_blobs_0_a_blob_is_fetched_only_when_asked():
    async def scenario(w: World):
        await w.get()
        await w.settle()
        assert w.blob_gets() == []
        await w.cache.blob("hub", "library/alpine", w.config)
        assert w.blob_gets() == [w.config]
    run(scenario, prefetch_blobs=0)
