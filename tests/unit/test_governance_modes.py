"""allow/deny and the pull-through modes as the use cases see them, with a fake upstream and a fake clock."""

from __future__ import annotations

import json

import pytest

from application.errors import RepositoryDenied, UpstreamNotAsked
from application.governance import GovernedUpstream, explicit_fill
from application.credentials import Credentials
from application.orgs import OrgDirectory
from application.pull_through import Client
from application.pulls import GroupCommit, Pulls
from application.cache_records import CacheRecords
from domain.manifest import DOCKER_MANIFEST
from domain.pull import Pull
from tests.unit.fakes import FakeClock, FakeUpstream, MemoryBlobStore, RecordsView, edge_cache, run_scenario

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


class World:
    def __init__(self, mode: str = "on", **org_settings) -> None:
        self.clock = FakeClock()
        self.records = CacheRecords(env=POPO)
        self.pulls = Pulls(env=POPO)
        self.upstream = FakeUpstream()
        self.governed = GovernedUpstream(self.upstream, mode)
        self.orgs = OrgDirectory(self.records, Credentials(env=POPO), ttl=0)
        self.orgs.apply("hub", {"upstream": "http://up.example", "staleness_seconds": 300,
                                "max_stale_seconds": 3600, **org_settings})
        self.group = GroupCommit(self.pulls)
        self.cache = edge_cache(records=self.records, orgs=self.orgs, view=RecordsView(self.records),
                                store=MemoryBlobStore(), upstream=self.governed, pulls=self.group,
                                clock=self.clock)
        self.layer = self.upstream.put_blob(b"layer-bytes-" * 10)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                               "config": {"digest": self.layer, "size": 120}, "layers": []}).encode()
        for repository in ("library/alpine", "library/busybox"):
            self.upstream.put_manifest(repository, "1", manifest, DOCKER_MANIFEST)

    def results(self) -> list[tuple[str, str]]:
        events = [self.pulls.mapper.to_domain_event(n) for n in self.pulls.recorder.select_notifications(1, 1000)]
        return [(e.result, e.note) for e in events if isinstance(e, Pull.Recorded)]

    async def get(self, repository: str = "library/alpine"):
        return await self.cache.manifest("hub", repository, "1", [DOCKER_MANIFEST], Client("10.0.0.1", "test"))

    async def blob(self, repository: str = "library/alpine"):
        return await self.cache.blob("hub", repository, self.layer)


def run(test, mode: str = "on", **org_settings):
    return run_scenario(lambda: World(mode, **org_settings), test)


def test_a_denied_repository_never_reaches_upstream_and_is_recorded_as_denied():
    async def scenario(w: World):
        with pytest.raises(RepositoryDenied):
            await w.get("library/busybox")
        with pytest.raises(RepositoryDenied):
            await w.blob("library/busybox")
        assert w.upstream.calls == []
        [(result, note)] = w.results()
        assert result == "denied" and "deny pattern 'library/busybox'" in note
    run(scenario, deny=["library/busybox"])


def test_with_pull_through_off_a_miss_is_denied_without_upstream_contact():
    async def scenario(w: World):
        with pytest.raises(UpstreamNotAsked):
            await w.get()
        assert w.upstream.calls == []
        assert [result for result, _ in w.results()] == ["denied"]
    run(scenario, mode="off")


def test_with_pull_through_off_a_cached_tag_past_staleness_is_served_stale_without_asking_upstream():
    async def scenario(w: World):
        with explicit_fill():
            await w.get()                    # prewarmed
        calls = len(w.upstream.calls)
        w.clock.advance(600)                 # past staleness, within max_stale
        answer = await w.get()
        assert answer.result.value == "stale" and "pull-through is off" in answer.warning
        assert len(w.upstream.calls) == calls
    run(scenario, mode="off")


def test_with_pull_through_allow_list_only_the_allow_list_is_fetched_on_a_miss():
    async def scenario(w: World):
        assert (await w.get("library/alpine")).result.value == "miss"
        w.governed.mode = "allow-list"
        w.orgs.apply("hub", {"upstream": "http://up.example"})     # no allow list: nothing fetched on demand
        with pytest.raises(UpstreamNotAsked):
            await w.get("library/busybox")
    run(scenario, mode="allow-list", allow=["library/alp*"])
