"""Every in-process cache of the pull path has a size bound: a client asking for a million made-up
names cannot grow memory without end."""

from __future__ import annotations

import asyncio
import threading

import pytest

from application.blobs import Holdings
from application.bounded_reads import BoundedReads
from application.errors import ManifestUnknown
from application.manifest_bytes import ManifestBytes
from application.manifests import ManifestCache
from application.ports import TagRow
from application.ratelimits import RateLimits
from application.held_rows import HeldRows
from application.singleflight import AcrossReplicas, InProcessOnly
from application.tag_lookup import TagLookup
from domain.names import Tag
from tests.unit.fakes import FakeClock, FakeUpstream, MemoryBlobStore, RecordingLedger, run_scenario
from tests.unit.test_pull_through_cache import World


class EmptyView:
    def get_tag(self, org, repository, tag):
        return None

    def get_manifest(self, org, repository, digest):
        return None

    def list_tags(self, org, repository):
        return []


def manifest_cache(max_entries: int, upstream: FakeUpstream | None = None) -> tuple[ManifestCache, TagLookup]:
    reads = BoundedReads(EmptyView(), lambda org, digest: False)
    tags = TagLookup(reads, max_tags=max_entries)
    store, clock = MemoryBlobStore(), FakeClock()
    cache = ManifestCache(reads=reads, tags=tags, content=ManifestBytes(store), upstream=upstream or FakeUpstream(),
                          ledger=RecordingLedger(), clock=clock, replicas=AcrossReplicas(InProcessOnly()),
                          rate_limits=RateLimits(), max_entries=max_entries)
    return cache, tags


def test_the_negative_cache_of_unknown_names_holds_at_most_its_bound():
    async def scenario(w: World):
        cache, _ = manifest_cache(max_entries=50)
        org = await w.cache.pull.org("hub")
        for n in range(500):   # 500 made-up repositories, each a 404 upstream and remembered
            with pytest.raises(ManifestUnknown):
                await cache.manifest(org, f"made-up/{n}", Tag("latest"), [])
        assert cache.held()["missing"] == 50
    run_scenario(lambda: World(negative_cache_seconds=300), scenario)


def test_manifest_rows_tag_rows_and_recent_tag_writes_hold_at_most_their_bound():
    async def scenario(w: World):
        cache, tags = manifest_cache(max_entries=20, upstream=w.upstream)
        org = await w.cache.pull.org("hub")
        for n in range(100):   # 100 distinct tags fetched: each leaves a manifest row and a recent write
            w.upstream.put_manifest("library/alpine", f"t{n}", w.manifest, "application/vnd.docker.distribution"
                                    ".manifest.v2+json")
            await cache.manifest(org, "library/alpine", Tag(f"t{n}"), [])
        held = cache.held()
        assert held["recent_tags"] == 20 and held["manifest_rows"] <= 20 and held["tag_rows"] <= 20
    run_scenario(World, scenario)


def test_held_rows_keep_at_most_their_bound_and_serve_an_expired_row_only_when_asked_for_a_held_one():
    now = [0.0]
    rows: HeldRows[int, str] = HeldRows(max_entries=3, ttl=1.0, timer=lambda: now[0])
    for n in range(10):
        rows.put(n, f"row {n}")
    assert len(rows) == 3 and rows.fresh(0) is None and rows.fresh(9) == "row 9"
    now[0] = 5.0
    assert rows.fresh(9) is None and rows.held(9) == "row 9"


def test_manifest_bytes_hold_at_most_their_byte_budget():
    async def scenario():
        content = ManifestBytes(MemoryBlobStore(), budget_bytes=10_000)
        for n in range(100):
            await content.put(f"sha256:{n:064x}", bytes(1000))
        held = content.held_bytes
        assert held <= 10_000
        await content.put("sha256:" + "f" * 64, bytes(20_000))  # larger than the budget: stored, not held
        assert content.held_bytes == held
    asyncio.run(scenario())


def test_the_blobs_known_held_per_org_hold_at_most_their_bound():
    holdings = Holdings(max_entries=100)
    for n in range(1000):
        holdings.note(f"org{n % 7}", f"sha256:{n:064x}")
    assert len(holdings) == 100 and holdings.knows(f"org{999 % 7}", f"sha256:{999:064x}")


def test_recent_tag_writes_give_way_to_the_view_once_it_catches_up():
    async def scenario():
        view_rows: dict = {}

        class View(EmptyView):
            def get_tag(self, org, repository, tag):
                return view_rows.get((org, repository, tag))
        tags = TagLookup(BoundedReads(View(), lambda org, digest: False), max_tags=10, row_seconds=0.0)
        await tags.remember("hub", "r", "t", TagRow("sha256:" + "1" * 64, "m", 10.0))
        assert (await tags.get("hub", "r", "t")).checked_at == 10.0 and tags.held()["recent_tags"] == 1
        view_rows[("hub", "r", "t")] = TagRow("sha256:" + "1" * 64, "m", 10.0)
        await tags.get("hub", "r", "t")
        assert tags.held()["recent_tags"] == 0
    asyncio.run(scenario())


def test_concurrent_pulls_of_a_tag_whose_row_expired_share_one_view_read():
    async def scenario():
        reads, gate = [], threading.Event()

        class View(EmptyView):
            def get_tag(self, org, repository, tag):
                reads.append((org, repository, tag))
                gate.wait(5)   # held until every pull has asked
                return TagRow("sha256:" + "1" * 64, "m", 10.0)
        tags = TagLookup(BoundedReads(View(), lambda org, digest: False), row_seconds=0.0)
        pulls = [asyncio.ensure_future(tags.get("hub", "r", "t")) for _ in range(20)]
        await asyncio.sleep(0.05)
        gate.set()
        rows = await asyncio.gather(*pulls)
        assert reads == [("hub", "r", "t")]
        assert {row.checked_at for row in rows} == {10.0}
        assert len(await asyncio.gather(tags.get("hub", "r", "t"))) == 1 and len(reads) == 2   # a later pull reads again
    asyncio.run(scenario())
