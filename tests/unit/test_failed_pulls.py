"""Which failed manifest pulls the audit log records, and what it records of them, with fakes."""

from __future__ import annotations

import pytest
from eventsourcing.persistence import StoredEvent

from application.pull_through import Client
from application.errors import ManifestUnknown, OrgUnknown, UpstreamRateLimited, UpstreamUnavailable
from application.pulls import Pulls
from domain.manifest import DOCKER_MANIFEST
from domain.names import InvalidDigest
from domain.pull import Pull, PullResult
from tests.unit.fakes import BrokenPullRecorder, RecordsView, edge_cache
from tests.unit.test_pull_through_cache import POPO, World, run


def errors_recorded(w: World) -> list[tuple[int, str, str]]:
    return [(p.status, p.error_code, p.reference) for p in w.pulls_recorded() if p.result == PullResult.ERROR.value]


def test_a_missing_tag_is_recorded_as_an_error_pull_with_404_manifest_unknown():
    async def scenario(w: World):
        with pytest.raises(ManifestUnknown):
            await w.get("no-such-tag")
        [pull] = w.pulls_recorded()
        assert (pull.result, pull.status, pull.error_code, pull.digest) == ("error", 404, "MANIFEST_UNKNOWN", "")
        assert "no-such-tag" in pull.note
        assert (pull.org, pull.repository, pull.client, pull.user_agent) == ("hub", "library/alpine", "10.0.0.1", "test")
    run(scenario)


def test_a_negative_cache_hit_is_recorded_as_an_error_pull_too():
    async def scenario(w: World):
        for _ in range(2):
            with pytest.raises(ManifestUnknown):
                await w.get("no-such-tag")
        assert len([c for c in w.upstream.calls if c[2] == "no-such-tag"]) == 1   # the second was remembered
        assert errors_recorded(w) == [(404, "MANIFEST_UNKNOWN", "no-such-tag")] * 2
        assert "remembered" in w.pulls_recorded()[-1].note
    run(scenario)


def test_a_429_with_nothing_cached_is_recorded_with_toomanyrequests():
    async def scenario(w: World):
        w.upstream.error = UpstreamRateLimited("slow down", retry_after=30)
        with pytest.raises(UpstreamRateLimited):
            await w.get()
        assert errors_recorded(w) == [(429, "TOOMANYREQUESTS", "3.19")]
    run(scenario)


def test_upstream_down_with_nothing_cached_is_recorded_with_503_unavailable():
    async def scenario(w: World):
        w.upstream.down = True
        with pytest.raises(UpstreamUnavailable):
            await w.get(w.digest)
        assert errors_recorded(w) == [(503, "UNAVAILABLE", w.digest)]
        assert w.pulls_recorded()[0].note == "connection refused"
    run(scenario)


def test_an_unexpected_failure_is_recorded_as_500_unknown_without_its_internals():
    async def scenario(w: World):
        w.upstream.error = RuntimeError("secret internals")
        with pytest.raises(RuntimeError):
            await w.get()
        [pull] = w.pulls_recorded()
        assert (pull.status, pull.error_code, pull.note) == (500, "UNKNOWN", "internal error")
    run(scenario)


def test_served_pulls_record_status_200_and_no_error_code():
    async def scenario(w: World):
        await w.get()
        await w.get()
        assert [(p.result, p.status, p.error_code, p.note) for p in w.pulls_recorded()] == [
            ("miss", 200, "", ""), ("hit", 200, "", "")]
    run(scenario)


def test_bad_input_records_nothing():
    async def scenario(w: World):
        with pytest.raises(OrgUnknown):
            await w.cache.manifest("nobody", "library/alpine", "3.19", [DOCKER_MANIFEST], Client())
        with pytest.raises(InvalidDigest):
            await w.get("sha256:not-hex")
        assert w.pulls_recorded() == []
    run(scenario)


def test_a_failed_head_is_not_a_pull():
    async def scenario(w: World):
        with pytest.raises(ManifestUnknown):
            await w.get("no-such-tag", record=False)
        assert w.pulls_recorded() == []
    run(scenario)


def test_when_recording_a_failed_pull_fails_the_client_still_gets_the_original_error(caplog):
    async def scenario(w: World):
        cache = edge_cache(records=w.records, orgs=w.orgs, view=RecordsView(w.records), store=w.store,
                                 upstream=w.upstream, pulls=BrokenPullRecorder(), clock=w.clock)
        with pytest.raises(ManifestUnknown):
            await cache.manifest("hub", "library/alpine", "no-such-tag", [DOCKER_MANIFEST], Client())
    run(scenario)
    assert "could not record the failed pull of hub/library/alpine:no-such-tag (404 MANIFEST_UNKNOWN)" in caplog.text


def test_a_pull_event_stored_before_status_error_code_and_note_loads_with_their_defaults():
    pulls = Pulls(env=POPO)
    event = Pull(org="hub", repository="library/alpine", reference="3.19", digest="sha256:" + "1" * 64,
                 result="hit", client="10.0.0.1", user_agent="old", at=1.0).collect_events()[0]
    stored = pulls.mapper.to_stored_event(event)
    state = pulls.mapper.transcoder.decode(stored.state)
    for added_later in ("note", "status", "error_code"):
        del state[added_later]
    del state["class_version"]   # events from before these fields were stored without a version
    old = StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                      pulls.mapper.transcoder.encode(state))
    loaded = pulls.mapper.to_domain_event(old)
    assert (loaded.result, loaded.note, loaded.status, loaded.error_code) == ("hit", "", 200, "")
