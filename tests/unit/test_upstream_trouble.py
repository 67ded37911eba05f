"""Serve-stale, back-off, negative cache, rate-limit floor and the 401 policy, with fakes."""

from __future__ import annotations

import pytest

from application.errors import (ManifestUnknown, UpstreamBadContent, UpstreamRateLimited, UpstreamUnauthorized,
                                UpstreamUnavailable)
from application.ports import RateLimit
from domain.pull import PullResult
from tests.unit.test_pull_through_cache import World, run


def upstream_calls(w: World, method: str = "") -> int:
    return len([c for c in w.upstream.calls if not method or c[0] == method])


def test_a_cached_tag_is_served_stale_with_the_reason_when_upstream_answers_429():
    async def scenario(w: World):
        await w.get()
        w.upstream.error = UpstreamRateLimited("too many requests", retry_after=60)
        w.clock.advance(301)
        answer = await w.get()
        assert answer.result is PullResult.STALE and answer.content == w.manifest
        assert "429" in answer.warning and "rate-limited" in answer.warning
        assert w.pulls_recorded()[-1].result == "stale" and "429" in w.pulls_recorded()[-1].note
    run(scenario)


def test_without_a_cached_copy_a_429_reaches_the_client_with_retry_after():
    async def scenario(w: World):
        w.upstream.error = UpstreamRateLimited("too many requests", retry_after=42)
        with pytest.raises(UpstreamRateLimited) as raised:
            await w.get()
        assert raised.value.retry_after == 42
    run(scenario)


def test_after_repeated_failures_upstream_is_not_contacted_during_the_back_off_and_recovers():
    async def scenario(w: World):
        await w.get()
        w.upstream.down = True
        w.clock.advance(301)
        for _ in range(3):
            assert (await w.get()).result is PullResult.STALE
        before = upstream_calls(w)
        answer = await w.get()
        assert answer.result is PullResult.STALE and "treated as unavailable" in answer.warning
        assert upstream_calls(w) == before  # no request waited on the dead upstream
        with pytest.raises(UpstreamUnavailable):
            await w.get("other-tag")  # nothing cached: a fast, clear error
        w.upstream.down = False
        w.clock.advance(16)
        assert (await w.get()).result is PullResult.REVALIDATED
        assert upstream_calls(w) == before + 1
    run(scenario)


def test_a_429_stops_upstream_requests_until_retry_after():
    async def scenario(w: World):
        await w.get()
        w.clock.advance(301)
        w.upstream.error = UpstreamRateLimited("slow down", retry_after=20)
        await w.get()
        before = upstream_calls(w)
        assert (await w.get()).result is PullResult.STALE
        assert upstream_calls(w) == before
        w.upstream.error = None
        w.clock.advance(21)
        assert (await w.get()).result is PullResult.REVALIDATED
    run(scenario)


def test_upstream_401_serves_the_cached_copy_by_default():
    async def scenario(w: World):
        await w.get()
        w.upstream.error = UpstreamUnauthorized("credentials refused", status=401)
        w.clock.advance(301)
        answer = await w.get()
        assert answer.result is PullResult.STALE and "denied (401)" in answer.warning
    run(scenario)


def test_upstream_401_is_refused_when_the_org_says_so():
    async def scenario(w: World):
        await w.get()
        w.upstream.error = UpstreamUnauthorized("credentials refused", status=401)
        w.clock.advance(301)
        with pytest.raises(UpstreamUnauthorized):
            await w.get()
    run(scenario, on_upstream_denied="refuse")


def test_a_missing_tag_is_remembered_for_the_negative_cache_period():
    async def scenario(w: World):
        for _ in range(5):
            with pytest.raises(ManifestUnknown):
                await w.get("missing")
        assert upstream_calls(w, "GET") == 1
        w.clock.advance(31)
        with pytest.raises(ManifestUnknown):
            await w.get("missing")
        assert upstream_calls(w, "GET") == 2
    run(scenario)


def test_a_negative_cache_of_zero_asks_upstream_every_time():
    async def scenario(w: World):
        for _ in range(3):
            with pytest.raises(ManifestUnknown):
                await w.get("missing")
        assert upstream_calls(w, "GET") == 3
    run(scenario, negative_cache_seconds=0)


def test_a_tag_that_appears_upstream_is_found_once_the_negative_cache_expires():
    async def scenario(w: World):
        with pytest.raises(ManifestUnknown):
            await w.get("soon")
        w.upstream.put_manifest("library/alpine", "soon", w.manifest, w.upstream.manifests[("library/alpine", "3.19")][1])
        with pytest.raises(ManifestUnknown):
            await w.get("soon")
        w.clock.advance(31)
        assert (await w.get("soon")).result is PullResult.MISS
    run(scenario)


def test_at_the_rate_limit_floor_a_moved_tag_is_served_stale_instead_of_fetched():
    async def scenario(w: World):
        w.upstream.rate_limit = RateLimit(100, 5, 21600)
        await w.get()
        assert w.cache.rate_limits.latest("hub").remaining == 5
        w.upstream.put_manifest("library/alpine", "3.19", w.manifest + b" ", "application/vnd.docker.distribution.manifest.v2+json")
        w.clock.advance(301)
        answer = await w.get()
        assert answer.result is PullResult.STALE and answer.digest == w.digest and "floor" in answer.warning
        assert upstream_calls(w, "HEAD") == 1 and upstream_calls(w, "GET") == 1
    run(scenario, rate_limit_floor=10)


def test_a_tag_deleted_upstream_is_served_until_max_stale():
    async def scenario(w: World):
        await w.get()
        del w.upstream.manifests[("library/alpine", "3.19")]
        w.clock.advance(301)
        answer = await w.get()
        assert answer.result is PullResult.STALE and "not-found" in answer.warning
        w.clock.advance(3600)
        with pytest.raises(ManifestUnknown):
            await w.get()
    run(scenario)


def test_a_corrupt_blob_from_upstream_is_recorded_as_an_event():
    async def scenario(w: World):
        w.upstream.corrupt.add(w.layer)
        with pytest.raises(UpstreamBadContent):
            await w.read_blob(w.layer)
        events = [w.records.mapper.to_domain_event(n)
                  for n in w.records.recorder.select_notifications(start=1, limit=100)]
        corrupt = [e for e in events if type(e).__name__ == "Detected"]
        assert [(e.org, e.digest) for e in corrupt] == [("hub", w.layer)]
    run(scenario)
