"""A client that GETs an image manifest the cache fetches cold asks for its blobs next: their fills start
at once (`[upstream] prefetch_blobs`), one upstream fetch each, and the client's requests join them."""

from __future__ import annotations

import asyncio
import json
import threading

from application import fills

from application.pull_through import Client, Limits
from domain.manifest import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST
from domain.pull import PullResult
from tests.unit.fakes import run_scenario
from tests.unit.test_pull_through_cache import World as PullThroughWorld


class World(PullThroughWorld):
    """The pull-through cache's unit world with prefetch on, and a manifest list of the image."""

    def __init__(self, prefetch_blobs: int = 8, **options) -> None:
        super().__init__(limits=Limits(prefetch_blobs=prefetch_blobs), **options)
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


# The image's config is 16 bytes, its layer 120 (the pull-through World's image).

async def prefetched(w: World, expected: list[str]) -> list[str]:
    """The blobs fetched before the client asked: once they are `expected` (or 2 s have passed), and a
    moment longer for any the prefetch should not have started."""
    for _ in range(400):
        if sorted(w.blob_gets()) == sorted(expected):
            break
        await asyncio.sleep(0.005)
    await w.settle(0.05)
    return sorted(w.blob_gets())


def test_a_prefetch_takes_no_more_than_the_room_above_low_free_bytes_and_the_client_fills_the_rest():
    async def scenario(w: World):
        w.store.free_room = 100   # the config fits, the layer would take free space below low_free_bytes
        await w.get()
        assert await prefetched(w, [w.config]) == [w.config]
        assert await w.read_blob(w.layer) == b"layer-bytes-" * 10   # the client's own GET still fills it
        assert sorted(w.blob_gets()) == sorted([w.config, w.layer]) and w.layer in w.store.objects
    run(scenario)


def test_with_no_room_left_above_low_free_bytes_nothing_is_prefetched():
    async def scenario(w: World):
        w.store.free_room = -1
        await w.get()
        assert await prefetched(w, []) == []
    run(scenario)


def test_with_room_for_every_blob_each_is_prefetched():
    async def scenario(w: World):
        w.store.free_room = 136
        await w.get()
        assert await prefetched(w, [w.config, w.layer]) == sorted([w.config, w.layer])
    run(scenario)


def test_an_org_with_a_quota_gets_no_more_prefetched_than_its_headroom():
    usage = {"hub": 99_900}   # of a 100,000-byte quota: 100 bytes left, room for the config only
    async def scenario(w: World):
        await w.get()
        assert await prefetched(w, [w.config]) == [w.config]
        assert await w.read_blob(w.layer) == b"layer-bytes-" * 10
    run_scenario(lambda: World(usage=usage.__getitem__, quota_bytes=100_000), scenario)


def test_an_org_whose_quota_has_room_for_the_image_gets_all_of_it_prefetched():
    async def scenario(w: World):
        await w.get()
        assert await prefetched(w, [w.config, w.layer]) == sorted([w.config, w.layer])
    run_scenario(lambda: World(usage={"hub": 99_800}.__getitem__, quota_bytes=100_000), scenario)


def test_a_blob_stored_already_takes_none_of_the_room():
    async def scenario(w: World):
        w.store.objects[w.config] = b'{"config": true}'   # brought by another image
        w.store.free_room = 16 + 120   # less the stored config: room for the layer alone
        await w.get()
        assert await prefetched(w, [w.layer]) == [w.layer]
    run(scenario)


def test_a_quota_usage_read_that_hangs_skips_the_prefetch_and_the_next_one_is_not_held_behind_it(monkeypatch):
    monkeypatch.setattr(fills, "PLANNING_SECONDS", 0.05)
    released = threading.Event()
    reads: list[str] = []

    def usage(org: str) -> int:
        reads.append(org)
        if len(reads) == 1:
            released.wait(5)   # a database that does not answer
        return 0

    async def scenario(w: World):
        other = w.upstream.put_blob(b"other-layer-" * 10)
        w.upstream.put_manifest("library/alpine", "3.20", json.dumps({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": {"digest": w.config, "size": 16},
            "layers": [{"digest": other, "size": 120}]}).encode(), DOCKER_MANIFEST)
        try:
            await w.get()
            await asyncio.sleep(0.2)
            assert w.blob_gets() == []   # skipped: the room was not known in time
            assert await w.read_blob(w.layer) == b"layer-bytes-" * 10   # the client's GET fills it
            await w.get("3.20")          # the next image's prefetch is not held behind the hung read
            for _ in range(100):
                if other in w.store.objects:
                    break
                await asyncio.sleep(0.005)
            assert other in w.store.objects and reads == ["hub", "hub"]
        finally:
            released.set()
    run_scenario(lambda: World(usage=usage, quota_bytes=100_000), scenario)


def test_the_fills_under_way_count_against_the_room_until_they_are_written():
    async def scenario(w: World):
        other = w.upstream.put_blob(b"other-layer-" * 10)
        second = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                             "config": {"digest": w.config, "size": 16},
                             "layers": [{"digest": other, "size": 120}]}).encode()
        w.upstream.put_manifest("library/alpine", "3.20", second, DOCKER_MANIFEST)
        w.upstream.gate = asyncio.Event()   # bodies stall: the first image's fills have written nothing yet
        # Room for the first manifest and one image's blobs (136 bytes), not two images' (256). (The
        # second manifest is stored after its prefetch has weighed the room: it takes none of it here.)
        w.store.free_room = len(w.manifest) + 200
        await w.get()
        assert await prefetched(w, [w.config, w.layer]) == sorted([w.config, w.layer])
        await w.get("3.20")
        await w.settle(0.1)
        assert [call for call in w.upstream.calls if call[0] == "GET" and call[2] == other] == []
        w.upstream.gate.set()
        assert await w.read_blob(other) == b"other-layer-" * 10   # the client's own GET fills it
    run(scenario)
