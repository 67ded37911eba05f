"""UpstreamBackoff opens on a failure ratio over a window, across repositories; no single client can trip it."""

from __future__ import annotations

import asyncio

import pytest

from application.breaker import BackoffPolicy, UpstreamBackoff
from application.errors import (UpstreamBadContent, UpstreamNotFound, UpstreamRateLimited, UpstreamUnauthorized,
                                UpstreamUnavailable)
from application.ports import UpstreamTarget
from tests.unit.fakes import FakeClock, FakeUpstream

BASE = "http://up.example"
POLICY = BackoffPolicy(failures=3, failure_ratio=0.5, repositories=2, window_seconds=30, backoff_seconds=15)


class World:
    def __init__(self, policy: BackoffPolicy = POLICY) -> None:
        self.clock = FakeClock()
        self.upstream = FakeUpstream()
        self.backoff = UpstreamBackoff(self.upstream, self.clock, policy)
        for repository in ("team/a", "team/b", "team/c", "team/ok"):
            self.upstream.put_manifest(repository, "1", b"{}", "application/json")

    def pull(self, repository: str, tag: str = "1"):
        target = UpstreamTarget("hub", BASE, repository)
        return asyncio.run(self.backoff.get_manifest(target, tag, []))

    def outcome(self, repository: str, tag: str = "1") -> str:
        """What the caller saw: 'ok', 'sent:<error>' (the upstream was asked) or 'backoff' (it was not)."""
        before = len(self.upstream.calls)
        try:
            self.pull(repository, tag)
        except Exception as error:  # noqa: BLE001 - the test reads the kind of answer
            return f"sent:{type(error).__name__}" if len(self.upstream.calls) > before else "backoff"
        return "ok"


def test_one_repository_failing_again_and_again_never_puts_the_upstream_into_back_off():
    w = World()
    w.upstream.down = True
    assert {w.outcome("team/a") for _ in range(50)} == {"sent:UpstreamUnavailable"}


def test_failures_for_several_repositories_put_the_upstream_into_back_off_for_the_configured_time():
    w = World()
    w.upstream.down = True
    assert [w.outcome(repo) for repo in ("team/a", "team/b", "team/a")] == ["sent:UpstreamUnavailable"] * 3
    assert w.outcome("team/c") == "backoff"
    with pytest.raises(UpstreamUnavailable, match="treated as unavailable for 15s more after 3 failures"):
        w.pull("team/ok")
    w.clock.advance(14)
    assert w.outcome("team/ok") == "backoff"
    w.clock.advance(1)
    w.upstream.down = False
    assert w.outcome("team/ok") == "ok"


def test_after_the_back_off_one_failure_reopens_it_and_one_success_closes_it():
    w = World()
    w.upstream.down = True
    for repo in ("team/a", "team/b", "team/c"):
        w.outcome(repo)
    w.clock.advance(15)
    assert w.outcome("team/a") == "sent:UpstreamUnavailable"   # the probe failed: at once back in back-off
    assert w.outcome("team/b") == "backoff"
    w.clock.advance(15)
    w.upstream.down = False
    assert w.outcome("team/a") == "ok"
    w.upstream.down = True
    assert w.outcome("team/a") == "sent:UpstreamUnavailable"   # closed again: one failure is not enough
    assert w.outcome("team/b") == "sent:UpstreamUnavailable"


def test_failures_below_the_ratio_of_requests_in_the_window_do_not_open_it():
    w = World()
    for _ in range(4):
        assert w.outcome("team/ok") == "ok"
    w.upstream.down = True
    for repo in ("team/a", "team/b", "team/c"):   # 3 of 7 requests failed: under half
        assert w.outcome(repo) == "sent:UpstreamUnavailable"
    assert w.outcome("team/a") == "sent:UpstreamUnavailable"  # 4 of 8: half, so now it opens
    assert w.outcome("team/b") == "backoff"


def test_failures_older_than_the_window_are_forgotten():
    w = World()
    w.upstream.down = True
    w.outcome("team/a")
    w.outcome("team/b")
    w.clock.advance(31)
    assert w.outcome("team/c") == "sent:UpstreamUnavailable"  # only one failure left in the window
    assert w.outcome("team/a") == "sent:UpstreamUnavailable"


@pytest.mark.parametrize("error", [UpstreamNotFound("unknown", status=404), UpstreamUnauthorized("no", status=401),
                                   UpstreamBadContent("bad request", status=400)])
def test_4xx_answers_never_count_as_failures(error):
    w = World()
    w.upstream.error = error
    for _ in range(10):
        for repo in ("team/a", "team/b", "team/c"):
            assert w.outcome(repo) == f"sent:{type(error).__name__}"


def test_a_404_for_a_missing_tag_counts_as_an_answer_not_a_failure():
    w = World()
    for repo in ("team/a", "team/b", "team/c"):
        assert w.outcome(repo, "nope") == "sent:UpstreamNotFound"
    assert w.outcome("team/a") == "ok"


def test_a_429_stops_requests_to_that_upstream_until_retry_after():
    w = World()
    w.upstream.error = UpstreamRateLimited("slow down", retry_after=20)
    assert w.outcome("team/a") == "sent:UpstreamRateLimited"
    with pytest.raises(UpstreamRateLimited) as raised:
        w.pull("team/b")
    assert raised.value.retry_after == 20
    w.upstream.error = None
    w.clock.advance(20)
    assert w.outcome("team/b") == "ok"


def test_each_upstream_has_its_own_back_off():
    w = World()
    w.upstream.down = True
    for repo in ("team/a", "team/b", "team/c"):
        w.outcome(repo)
    other = UpstreamTarget("hub", "http://other.example", "team/a")
    w.upstream.down = False
    w.upstream.put_manifest("team/a", "1", b"{}", "application/json")
    assert asyncio.run(w.backoff.get_manifest(other, "1", [])).content == b"{}"
