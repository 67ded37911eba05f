"""The referrers use case with fakes: upstream's referrers API, else its fallback tag, merged with the
manifests with a subject the cache holds; cached like a tag, served stale, audited as its own kind."""

from __future__ import annotations

import json

import pytest

from application.breaker import BackoffPolicy, UpstreamBackoff
from application.credentials import Credentials
from application.errors import UpstreamUnavailable
from application.orgs import OrgDirectory
from application.pull_through import Client, Limits
from application.pulls import GroupCommit, Pulls
from application.cache_records import CacheRecords
from domain.manifest import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST
from domain.pull import PullResult
from domain.referrers import Descriptor, fallback_tag, referrers_index
from tests.unit.fakes import FakeClock, FakeUpstream, MemoryBlobStore, RecordsReferrers, RecordsView, edge_cache, run_scenario

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
REPO = "team/app"
SIG_TYPE, SBOM_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json", "application/spdx+json"


class World:
    def __init__(self, limits: Limits = Limits()) -> None:
        self.clock = FakeClock()
        self.records = CacheRecords(env=POPO)
        self.pulls = Pulls(env=POPO)
        self.upstream = FakeUpstream()
        self.orgs = OrgDirectory(self.records, Credentials(env=POPO), ttl=0)
        self.orgs.apply("hub", {"upstream": "http://up.example", "staleness_seconds": 300, "max_stale_seconds": 3600})
        self.group = GroupCommit(self.pulls)
        self.cache = edge_cache(records=self.records, orgs=self.orgs, view=RecordsView(self.records),
                                store=MemoryBlobStore(), pulls=self.group, clock=self.clock,
                                upstream=UpstreamBackoff(self.upstream, self.clock, BackoffPolicy(failures=1000)),
                                referrers=RecordsReferrers(self.records), limits=limits)
        empty = self.upstream.put_blob(b"{}")
        self.image = self.upstream.put_manifest(REPO, "1", json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": OCI_EMPTY, "digest": empty, "size": 2},
             "layers": []}).encode(), OCI_MANIFEST)
        self.empty = empty

    def artifact(self, artifact_type: str, tag: str | None = None, note: str = "") -> Descriptor:
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                           "config": {"mediaType": OCI_EMPTY, "digest": self.empty, "size": 2}, "layers": [],
                           "subject": {"mediaType": OCI_MANIFEST, "digest": self.image, "size": 1},
                           "annotations": {"note": note}}).encode()
        digest = self.upstream.put_manifest(REPO, tag, body, OCI_MANIFEST)
        return Descriptor(OCI_MANIFEST, digest, len(body), artifact_type, {"note": note})

    def fallback_index(self, *descriptors: Descriptor) -> None:
        self.upstream.put_manifest(REPO, fallback_tag(self.image), referrers_index(descriptors), OCI_INDEX)

    async def referrers(self):
        return await self.cache.referrers("hub", REPO, self.image, Client("10.0.0.9", "cosign/2"))

    def audited(self) -> list[tuple[str, str]]:
        return [(e.reference, e.result) for e in (self.pulls.mapper.to_domain_event(n)
                for n in self.pulls.recorder.select_notifications(start=1, limit=100))]


def run(test):
    return run_scenario(World, test)


def test_an_upstream_without_the_api_is_read_through_its_fallback_tag_and_cached_like_a_tag():
    async def scenario(w: World):
        sig, sbom = w.artifact(SIG_TYPE, note="s"), w.artifact(SBOM_TYPE, note="b")
        w.fallback_index(sig, sbom)
        first = await w.referrers()
        calls = len(w.upstream.calls)
        second = await w.referrers()
        assert first.descriptors == second.descriptors == [sig, sbom]
        assert (first.result, second.result) == (PullResult.MISS, PullResult.HIT)
        assert len(w.upstream.calls) == calls                       # held for the org's staleness
        assert ("GET", REPO, fallback_tag(w.image)) in w.upstream.calls
        assert w.audited() == [(f"referrers:{w.image}", "miss"), (f"referrers:{w.image}", "hit")]
    run(scenario)


def test_past_staleness_with_upstream_down_the_list_is_served_stale_with_a_warning():
    async def scenario(w: World):
        sig = w.artifact(SIG_TYPE)
        w.fallback_index(sig)
        await w.referrers()
        w.clock.advance(301)
        w.upstream.down = True
        answer = await w.referrers()
        assert answer.descriptors == [sig] and answer.result is PullResult.STALE and "unavailable" in answer.warning
        w.clock.advance(3600)                                     # past max_stale: never without upstream
        with pytest.raises(UpstreamUnavailable):
            await w.referrers()
    run(scenario)


def test_the_upstream_referrers_api_is_used_when_it_answers_and_merged_with_what_the_cache_holds():
    async def scenario(w: World):
        w.upstream.referrers_api = True
        sig = w.artifact(SIG_TYPE)
        w.upstream.referrers[(REPO, w.image)] = [sig]
        sbom = w.artifact(SBOM_TYPE, tag="sbom")               # pulled through the cache: the cache knows it
        await w.cache.manifest("hub", REPO, "sbom", [OCI_MANIFEST])
        answer = await w.referrers()
        assert answer.descriptors == [sig, sbom] and answer.result is PullResult.MISS
        assert fallback_tag(w.image) not in [call[2] for call in w.upstream.calls]
    run(scenario)


def test_a_subject_known_only_from_cached_manifests_lists_them_and_nothing_else_when_upstream_is_down():
    async def scenario(w: World):
        sig = w.artifact(SIG_TYPE, tag="sig")
        await w.cache.manifest("hub", REPO, "sig", [OCI_MANIFEST])
        assert (await w.referrers()).descriptors == [sig]       # no fallback tag upstream: ours only
        w.upstream.down = True
        w.clock.advance(301)
        answer = await w.referrers()
        assert answer.descriptors == [sig] and answer.result is PullResult.STALE
    run(scenario)


def test_nothing_known_anywhere_is_an_empty_list_and_upstream_down_with_nothing_known_is_an_error():
    async def scenario(w: World):
        assert (await w.referrers()).descriptors == []
        w.clock.advance(4000)
        w.upstream.down = True
        with pytest.raises(UpstreamUnavailable):
            await w.referrers()
        assert w.audited()[-1] == (f"referrers:{w.image}", "error")
    run(scenario)


def test_a_fallback_tag_that_is_not_an_index_means_no_referrers():
    async def scenario(w: World):
        w.upstream.put_manifest(REPO, fallback_tag(w.image), b'{"schemaVersion": 2, "layers": []}', OCI_MANIFEST)
        assert (await w.referrers()).descriptors == []
    run(scenario)


def test_a_list_larger_than_the_in_process_bound_is_answered_whole_and_asked_again_next_time():
    async def scenario(w: World):
        w.fallback_index(*(w.artifact(SIG_TYPE, note=str(i)) for i in range(3)))
        first, second = await w.referrers(), await w.referrers()
        assert len(first.descriptors) == len(second.descriptors) == 3
        assert (first.result, second.result) == (PullResult.MISS, PullResult.HIT)   # the fallback tag is stored
        assert w.upstream.calls.count(("GET", REPO, f"referrers/{w.image}")) == 1     # no API: remembered
    run_scenario(lambda: World(Limits(max_referrers=2)), scenario)


# -- the upstream's list recorded as events (ReferrersList), read back after a restart ----------------

def listing_events(w: World) -> list[str]:
    return [type(e).__qualname__ for e in (w.records.mapper.to_domain_event(n)
            for n in w.records.recorder.select_notifications(start=1, limit=1000)) if type(e).__module__ ==
            "domain.referrers_list"]


def restarted(w: World) -> World:
    """A new process on the same event store: nothing held in memory, the upstream down."""
    again = World.__new__(World)
    again.__dict__.update(w.__dict__)
    again.cache = edge_cache(records=w.records, orgs=w.orgs, view=RecordsView(w.records), store=MemoryBlobStore(),
                             pulls=w.group, clock=w.clock, upstream=w.upstream, referrers=RecordsReferrers(w.records))
    return again


def test_the_upstream_list_is_recorded_once_and_after_a_restart_with_upstream_down_served_like_a_tag():
    async def scenario(w: World):
        w.upstream.referrers_api = True
        sig = w.artifact(SIG_TYPE)
        w.upstream.referrers[(REPO, w.image)] = [sig]
        for _ in range(5):                                      # one event, however many requests
            await w.referrers()
        assert listing_events(w) == ["ReferrersList.Listed"]
        w.upstream.down = True
        later = restarted(w)
        fresh = await later.referrers()                         # inside staleness: no upstream contact at all
        assert fresh.descriptors == [sig] and fresh.result is PullResult.HIT
        w.clock.advance(301)
        stale = await later.referrers()
        assert stale.descriptors == [sig] and stale.result is PullResult.STALE and "unavailable" in stale.warning
        w.clock.advance(3600)                                   # past max_stale: never without upstream
        with pytest.raises(UpstreamUnavailable):
            await later.referrers()
    run(scenario)


def test_an_unchanged_list_past_staleness_is_revalidated_and_a_changed_one_recorded_whole():
    async def scenario(w: World):
        w.upstream.referrers_api = True
        sig = w.artifact(SIG_TYPE)
        w.upstream.referrers[(REPO, w.image)] = [sig]
        await w.referrers()
        w.clock.advance(301)
        assert (await w.referrers()).result is PullResult.REVALIDATED
        sbom = w.artifact(SBOM_TYPE)
        w.upstream.referrers[(REPO, w.image)] = [sig, sbom]
        w.clock.advance(301)
        assert (await w.referrers()).descriptors == [sig, sbom]
        assert listing_events(w) == ["ReferrersList.Listed", "ReferrersList.Revalidated", "ReferrersList.Changed"]
        w.upstream.down = True
        assert (await restarted(w).referrers()).descriptors == [sig, sbom]
    run(scenario)


def test_a_fallback_tag_list_is_recorded_too_so_a_restart_without_upstream_still_serves_it():
    async def scenario(w: World):
        sig = w.artifact(SIG_TYPE)
        w.fallback_index(sig)
        await w.referrers()
        w.upstream.down = True
        w.clock.advance(301)
        answer = await restarted(w).referrers()   # the restarted process does not know the upstream has no API
        assert answer.descriptors == [sig] and answer.result is PullResult.STALE
    run(scenario)
