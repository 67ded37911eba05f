"""The pull-through cache's use cases, with fakes of upstream, storage and the read model."""

from __future__ import annotations

import asyncio
import json

import pytest

from application.breaker import BackoffPolicy, UpstreamBackoff
from application.pull_through import Client, Limits
from application.credentials import Credentials
from application.errors import BlobUnknown, ManifestUnknown, OrgUnknown, UpstreamBadContent, UpstreamUnavailable
from application.orgs import OrgDirectory
from application.pulls import GroupCommit, Pulls
from application.cache_records import CacheRecords
from domain.manifest import DOCKER_MANIFEST
from domain.pull import Pull, PullResult
from domain.names import Digest
from tests.unit.fakes import AsTheEdgeAsks, FakeClock, FakeUpstream, MemoryBlobStore, RecordsView, edge_cache, run_scenario

# These worlds pull one repository: its repeated failures put the upstream into back-off, as the
# back-off tests (test_upstream_trouble) expect; test_upstream_backoff covers the distinct-repository rule.
ONE_REPOSITORY = BackoffPolicy(repositories=1)

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


class World:
    def __init__(self, limits: Limits = Limits(), usage=None, **org_settings) -> None:
        self.clock = FakeClock()
        self.records = CacheRecords(env=POPO)
        self.pulls = Pulls(env=POPO)
        self.upstream = FakeUpstream()
        self.store = MemoryBlobStore()
        self.orgs = OrgDirectory(self.records, Credentials(env=POPO), ttl=0)
        self.orgs.apply("hub", {"upstream": "http://up.example", "staleness_seconds": 300,
                                "max_stale_seconds": 3600, **org_settings})
        self.group = GroupCommit(self.pulls)
        self.cache = edge_cache(records=self.records, orgs=self.orgs, view=RecordsView(self.records),
                                      store=self.store, upstream=UpstreamBackoff(self.upstream, self.clock, ONE_REPOSITORY), pulls=self.group, clock=self.clock,
                                      limits=limits, usage=usage)
        self.layer = self.upstream.put_blob(b"layer-bytes-" * 10)
        self.config = self.upstream.put_blob(b'{"config": true}')
        self.manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                                    "config": {"digest": self.config, "size": 16},
                                    "layers": [{"digest": self.layer, "size": 120}]}).encode()
        self.digest = self.upstream.put_manifest("library/alpine", "3.19", self.manifest, DOCKER_MANIFEST)

    def pulls_recorded(self) -> list[Pull.Recorded]:
        return [self.pulls.mapper.to_domain_event(n)
                for n in self.pulls.recorder.select_notifications(start=1, limit=1000)]

    async def get(self, ref: str = "3.19", record: bool = True):
        return await self.cache.manifest("hub", "library/alpine", ref, [DOCKER_MANIFEST], Client("10.0.0.1", "test"),
                                         record=record)

    async def read_blob(self, digest: str) -> bytes:
        answer = await self.cache.blob("hub", "library/alpine", digest)
        return b"".join([chunk async for chunk in answer.open(0, answer.size)])


def run(test, **org_settings):
    return run_scenario(lambda: World(**org_settings), test)


def test_first_pull_of_a_tag_is_a_miss_and_the_second_a_hit_without_upstream_contact():
    async def scenario(w: World):
        first = await w.get()
        calls = len(w.upstream.calls)
        second = await w.get()
        assert (first.result, second.result) == (PullResult.MISS, PullResult.HIT)
        assert first.content == second.content == w.manifest and first.digest == w.digest
        assert len(w.upstream.calls) == calls
        assert [p.result for p in w.pulls_recorded()] == ["miss", "hit"]
    run(scenario)


def test_head_of_a_manifest_is_not_recorded_as_a_pull():
    async def scenario(w: World):
        await w.get(record=False)
        assert w.pulls_recorded() == []
    run(scenario)


def test_after_staleness_a_head_revalidates_an_unchanged_tag():
    async def scenario(w: World):
        await w.get()
        w.clock.advance(301)
        answer = await w.get()
        assert answer.result is PullResult.REVALIDATED
        assert w.upstream.calls[-1][0] == "HEAD"
        w.clock.advance(10)
        assert (await w.get()).result is PullResult.HIT
    run(scenario)


def test_after_staleness_a_moved_tag_is_retargeted_to_the_new_manifest():
    async def scenario(w: World):
        await w.get()
        new = w.manifest.replace(b"schemaVersion", b"schemaVersion", 1) + b"\n"
        new_digest = w.upstream.put_manifest("library/alpine", "3.19", new, DOCKER_MANIFEST)
        w.clock.advance(100)
        assert (await w.get()).digest == w.digest  # within staleness: the old digest
        w.clock.advance(201)
        answer = await w.get()
        assert (answer.digest, answer.result) == (new_digest, PullResult.MISS)
    run(scenario)


def test_a_cached_tag_is_served_stale_when_upstream_is_down_until_max_stale():
    async def scenario(w: World):
        await w.get()
        w.upstream.down = True
        w.clock.advance(400)
        answer = await w.get()
        assert answer.result is PullResult.STALE and answer.content == w.manifest and answer.warning
        w.clock.advance(3600)
        with pytest.raises(UpstreamUnavailable):
            await w.get()
    run(scenario)


def test_a_pull_by_digest_never_contacts_upstream_once_cached():
    async def scenario(w: World):
        await w.get(w.digest)
        w.upstream.down = True
        w.clock.advance(10**7)
        assert (await w.get(w.digest)).result is PullResult.HIT
    run(scenario)


def test_unknown_manifest_and_unknown_org_are_named_errors():
    async def scenario(w: World):
        with pytest.raises(ManifestUnknown):
            await w.get("nope")
        with pytest.raises(OrgUnknown):
            await w.cache.manifest("nosuch", "a", "latest", [], None)
    run(scenario)


def test_concurrent_pulls_of_a_cold_blob_share_one_upstream_fetch():
    async def scenario(w: World):
        w.upstream.gate = asyncio.Event()
        readers = [asyncio.create_task(w.read_blob(w.layer)) for _ in range(20)]
        await asyncio.sleep(0.01)
        w.upstream.gate.set()
        results = await asyncio.gather(*readers)
        assert all(r == w.upstream.blobs[w.layer] for r in results)
        assert [c for c in w.upstream.calls if c[2] == w.layer] == [("GET", "library/alpine", w.layer)]
        assert await w.store.stat(w.layer) == 120
        assert (await w.cache.blob("hub", "library/alpine", w.layer)).result is PullResult.HIT
    run(scenario)


def test_a_client_that_goes_away_does_not_stop_the_fill():
    async def scenario(w: World):
        answer = await w.cache.blob("hub", "library/alpine", w.layer)
        stream = answer.open(0, answer.size)
        await stream.__anext__()
        await stream.aclose()  # the client disconnects after one chunk
        for _ in range(100):
            if await w.store.stat(w.layer):
                break
            await asyncio.sleep(0.001)
        assert w.store.objects[w.layer] == w.upstream.blobs[w.layer]
    run(scenario)


def test_a_corrupt_blob_is_never_published_nor_received_whole():
    async def scenario(w: World):
        w.upstream.corrupt.add(w.layer)
        received = bytearray()
        with pytest.raises(UpstreamBadContent):
            answer = await w.cache.blob("hub", "library/alpine", w.layer)
            async for chunk in answer.open(0, answer.size):
                received += chunk
        assert len(received) < 120
        assert await w.store.stat(w.layer) is None and w.store.spools[-1].discarded
        w.upstream.corrupt.clear()
        assert await w.read_blob(w.layer) == w.upstream.blobs[w.layer]
    run(scenario)


def test_a_blob_cut_off_mid_transfer_is_not_kept_and_the_next_pull_fetches_again():
    async def scenario(w: World):
        w.upstream.fail_after = 40
        with pytest.raises(UpstreamUnavailable):
            await w.read_blob(w.layer)
        assert await w.store.stat(w.layer) is None
        w.upstream.fail_after = None
        assert await w.read_blob(w.layer) == w.upstream.blobs[w.layer]
    run(scenario)


def test_a_blob_unknown_upstream_is_blob_unknown():
    async def scenario(w: World):
        with pytest.raises(BlobUnknown):
            await w.read_blob(str(Digest.of(b"nothing")))
    run(scenario)


def test_a_blob_another_org_cached_is_served_only_once_this_orgs_upstream_confirms_it():
    async def scenario(w: World):
        w.orgs.apply("mirror", {"upstream": "http://mirror.example"})
        w.orgs.apply("elsewhere", {"upstream": "http://elsewhere.example"})
        w.upstream.blobless.add("http://elsewhere.example")
        await w.read_blob(w.layer)  # brought in by hub
        with pytest.raises(BlobUnknown):
            await w.cache.blob("elsewhere", "library/alpine", w.layer)
        answer = await w.cache.blob("mirror", "library/alpine", w.layer)
        assert answer.result is PullResult.HIT
        assert w.upstream.calls.count(("HEAD", "library/alpine", w.layer)) == 2
        assert w.records.holds_blob("mirror", w.layer) and not w.records.holds_blob("elsewhere", w.layer)
        await w.cache.blob("mirror", "library/alpine", w.layer)
        assert w.upstream.calls.count(("HEAD", "library/alpine", w.layer)) == 2  # confirmed once is enough
        await w.cache.blob("hub", "library/alpine", w.layer)
        assert w.upstream.calls.count(("HEAD", "library/alpine", w.layer)) == 2  # hub brought it in
    run(scenario)


def test_a_head_of_a_cold_blob_asks_upstream_and_starts_no_download():
    async def scenario(w: World):
        answer = await w.cache.blob_head("hub", "library/alpine", w.layer)
        assert (answer.size, answer.result) == (120, PullResult.MISS)
        assert [c[0] for c in w.upstream.calls if c[2] == w.layer] == ["HEAD"]
        assert await w.store.stat(w.layer) is None
        await w.read_blob(w.layer)
        assert (await w.cache.blob_head("hub", "library/alpine", w.layer)).result is PullResult.HIT
        with pytest.raises(BlobUnknown):
            await w.cache.blob_head("hub", "library/alpine", str(Digest.of(b"nothing")))
    run(scenario)


class LaggingView(RecordsView):
    """A read model that has not caught up yet: it shows no manifest at all."""

    def get_manifest(self, org: str, repository: str, digest: str):
        return None


def test_a_pull_by_digest_right_after_the_miss_is_a_hit_while_the_read_model_lags():
    async def scenario(w: World):
        w.cache = edge_cache(records=w.records, orgs=w.orgs, view=LaggingView(w.records), store=w.store,
                             upstream=UpstreamBackoff(w.upstream, w.clock, ONE_REPOSITORY), pulls=w.group, clock=w.clock)
        first = await w.get()
        calls = list(w.upstream.calls)
        by_digest = await w.get(w.digest)
        assert (first.result, by_digest.result) == (PullResult.MISS, PullResult.HIT)
        assert by_digest.content == w.manifest
        assert w.upstream.calls == calls  # no second fetch, not even a HEAD
    run(scenario)


class EventCoordinator:
    """Replicas' shared locks (Redis in production): claim, wait for release, release."""

    def __init__(self) -> None:
        self.locks: dict[str, asyncio.Event] = {}

    async def claim(self, key: str):
        if key in self.locks:
            return None
        self.locks[key] = asyncio.Event()
        coordinator = self

        class Lock:
            async def release(self) -> None:
                coordinator.locks.pop(key).set()
        return Lock()

    async def wait_released(self, key: str) -> bool:
        held = self.locks.get(key)
        if held is not None:
            await held.wait()
        return True


class SharedTagsInMemory:
    def __init__(self) -> None:
        self.rows = {}

    async def get(self, org, repository, tag):
        return self.rows.get((org, repository, tag))

    async def put(self, org, repository, tag, row) -> None:
        self.rows[(org, repository, tag)] = row

    async def forget(self, org, repository, tag) -> None:
        self.rows.pop((org, repository, tag), None)


def test_replicas_fetch_a_cold_manifest_once_and_the_waiting_one_serves_what_the_other_stored():
    async def scenario(w: World):
        w.upstream.manifest_gate = asyncio.Event()
        coordinator, shared = EventCoordinator(), SharedTagsInMemory()

        def replica() -> AsTheEdgeAsks:  # shares event store, storage, locks and tags; its own memory
            return edge_cache(records=w.records, orgs=w.orgs, view=LaggingView(w.records), store=w.store,
                                    upstream=UpstreamBackoff(w.upstream, w.clock, ONE_REPOSITORY), pulls=w.group, clock=w.clock,
                                    fill_coordinator=coordinator, shared_tags=shared)
        a, b = replica(), replica()
        pull = lambda cache, ref="3.19": cache.manifest("hub", "library/alpine", ref, [DOCKER_MANIFEST],  # noqa: E731
                                                        Client("10.0.0.1", "test"))
        first = asyncio.create_task(pull(a))
        await w.upstream.manifest_asked.wait()   # a holds the lock and is fetching
        second = asyncio.create_task(pull(b))
        await asyncio.sleep(0.01)                 # b is waiting for a, not asking upstream
        w.upstream.manifest_gate.set()
        answers = await asyncio.gather(first, second)
        assert [x.result for x in answers] == [PullResult.MISS, PullResult.HIT]
        assert answers[0].content == answers[1].content == w.manifest
        assert [c for c in w.upstream.calls if c[0] == "GET"] == [("GET", "library/alpine", "3.19")]
        by_digest = await pull(b, w.digest)       # b remembers the manifest a stored, by digest too
        assert by_digest.result == PullResult.HIT and len(w.upstream.calls) == 1
    run(scenario)


def test_a_replica_whose_peer_failed_the_fetch_fetches_it_itself():
    async def scenario(w: World):
        coordinator, shared = EventCoordinator(), SharedTagsInMemory()
        await coordinator.claim("manifest:hub/library/alpine@3.19")  # a peer that will give up

        async def give_up() -> None:  # lets go a moment later, with nothing stored
            await asyncio.sleep(0.01)
            coordinator.locks.pop("manifest:hub/library/alpine@3.19").set()
        w.cache = edge_cache(records=w.records, orgs=w.orgs, view=LaggingView(w.records), store=w.store,
                                   upstream=UpstreamBackoff(w.upstream, w.clock, ONE_REPOSITORY), pulls=w.group, clock=w.clock,
                                   fill_coordinator=coordinator, shared_tags=shared)
        peer = asyncio.create_task(give_up())
        answer = await w.get()
        await peer
        assert answer.result == PullResult.MISS and answer.content == w.manifest
        assert [c for c in w.upstream.calls if c[0] == "GET"] == [("GET", "library/alpine", "3.19")]
    run(scenario)


def test_a_stored_blob_deleted_between_its_stat_and_its_read_is_fetched_again_whole():
    async def scenario(w: World):
        first = await w.read_blob(w.layer)
        answer = await w.cache.blob("hub", "library/alpine", w.layer)
        assert answer.result is PullResult.HIT
        await w.store.delete(w.layer)          # the reaper, just after the stat
        assert b"".join([chunk async for chunk in answer.open(0, answer.size)]) == first
        assert [c for c in w.upstream.calls if c[2] == w.layer] == [("GET", "library/alpine", w.layer)] * 2
        assert await w.store.stat(w.layer) == 120   # stored again
    run(scenario)
