"""The operator's INFO lines: one per event, naming org, repository and reason; repeats held back by the clock."""

from __future__ import annotations

import asyncio
import logging

import pytest

from application.breaker import BackoffPolicy, UpstreamBackoff
from application.errors import ManifestUnknown, UpstreamRateLimited, UpstreamUnavailable
from application.ops_log import OpsLog, RepeatLimit
from application.ports import UpstreamTarget
from tests.support.clock import ManualClock
from tests.unit.fakes import FakeUpstream

TARGET = UpstreamTarget("hub", "http://up.example", "team/app")


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger="entrepot")
    return lambda: [record.getMessage() for record in caplog.records if record.name == "entrepot"]


def test_a_repeated_line_is_written_once_a_minute_and_then_says_how_many_were_left_out():
    clock = ManualClock()
    limit = RepeatLimit(clock, seconds=60)
    assert limit.admit(("refused", "hub", "a")) == 0
    assert [limit.admit(("refused", "hub", "a")) for _ in range(5)] == [None] * 5
    assert limit.admit(("refused", "hub", "b")) == 0          # another repository is another line
    clock.advance(59)
    assert limit.admit(("refused", "hub", "a")) is None
    clock.advance(1)
    assert limit.admit(("refused", "hub", "a")) == 6
    assert limit.admit(("refused", "hub", "a")) is None


def test_upstream_failures_are_logged_once_per_minute_with_org_repository_and_reason(lines):
    clock = ManualClock()
    ops = OpsLog(clock)
    error = UpstreamUnavailable("cannot connect to upstream up.example: Name or service not known")
    for _ in range(3):
        ops.upstream_failed(TARGET, error)
    clock.advance(60)
    ops.upstream_failed(TARGET, error)
    assert lines() == [
        "upstream failure: org hub repository team/app: cannot connect to upstream up.example: Name or service "
        "not known",
        "upstream failure: org hub repository team/app: cannot connect to upstream up.example: Name or service "
        "not known (2 more like this not logged in the last 60s)"]


def test_a_fill_says_its_size_time_and_rate(lines):
    ops = OpsLog(ManualClock())
    digest = "sha256:" + "a" * 64
    ops.fill_started(TARGET, digest, 8 * 1024 * 1024)
    ops.fill_finished(TARGET, digest, 8 * 1024 * 1024, 2.0)
    assert lines() == [f"fill started: org hub repository team/app blob {digest} (8388608 bytes)",
                       f"fill finished: org hub repository team/app blob {digest}: 8388608 bytes in 2.00s "
                       "(4.0 MiB/s)"]


def test_a_plain_404_is_not_a_refusal_but_a_503_is(lines):
    ops = OpsLog(ManualClock())
    ops.refused("hub", "team/app", "1", ManifestUnknown("manifest unknown"))
    ops.refused("hub", "team/app", "1", UpstreamUnavailable("upstream up.example answered 503 for manifest 1"))
    assert lines() == ["refused: org hub repository team/app reference 1: 503 UNAVAILABLE: upstream up.example "
                       "answered 503 for manifest 1"]


@pytest.mark.parametrize("failure", [
    UpstreamUnavailable("upstream up.example answered 503 for manifest 1", status=503, upstream="up.example"),
    UpstreamRateLimited("upstream up.example answered 429 for manifest 1", retry_after=30, rate_limit=None,
                        upstream="up.example"),
])
def test_an_error_answered_during_back_off_has_the_detail_of_the_failure_that_opened_it(failure, lines):
    clock = ManualClock()
    upstream = FakeUpstream()
    upstream.error = failure
    backoff = UpstreamBackoff(upstream, clock, BackoffPolicy(failures=1, failure_ratio=0, repositories=1),
                              ops=OpsLog(clock))
    seen = []
    for _ in range(2):   # the first one asks upstream and fails; the second is answered by the back-off
        with pytest.raises(type(failure)) as raised:
            asyncio.run(backoff.get_manifest(TARGET, "1", []))
        seen.append(raised.value)
    assert seen[0] is failure and seen[1] is not failure   # the second one was not sent upstream
    assert seen[1].detail == failure.detail and failure.detail["upstream"] == "up.example"
    assert [line.split(":")[0] for line in lines()] == ["upstream failure", "upstream back-off"]


def test_a_stale_serve_says_why_once_a_minute_per_tag(lines):
    clock = ManualClock()
    ops = OpsLog(clock)
    for _ in range(4):
        ops.served_stale("hub", "team/app", "1", '110 - "upstream up.example answered 503"')
    ops.served_stale("hub", "team/app", "2", None)
    assert lines() == ['served stale: org hub repository team/app reference 1: 110 - "upstream up.example answered '
                       '503"', "served stale: org hub repository team/app reference 2: upstream failed"]
