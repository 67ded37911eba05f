"""Pulls served while the event store is down are kept, bounded, and recorded once it is back: in order, once each."""

import asyncio
import logging
import threading
import time

import pytest

from application.errors import EventStoreUnavailable, PullKept
from application.pulls import GroupCommit, Pulls
from domain.pull import Pull
from tests.unit.fakes import FakeMetrics

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


class FlakyPulls(Pulls):
    """The Pulls application over an event store that can refuse writes, or commit and then not answer."""

    def __init__(self) -> None:
        super().__init__(env=POPO)
        self.down = False
        self.hang_after_commit = 0.0   # seconds a write sleeps after it committed (a timed-out commit)
        self.writes: list[int] = []

    def write(self, events) -> None:
        self.writes.append(len(events))
        if self.down:
            raise EventStoreUnavailable("the event store (PostgreSQL) is unavailable; try again shortly")
        super().write(events)
        if self.hang_after_commit:
            hang, self.hang_after_commit = self.hang_after_commit, 0.0
            time.sleep(hang)

    def stored(self) -> list[float]:
        """The `at` of every stored pull, in the event store's order."""
        notifications = self.recorder.select_notifications(1, 10_000)
        return [self.mapper.to_domain_event(n).at for n in notifications]


def pull(n: int) -> Pull:
    return Pull(org="hub", repository="r", reference=str(n), digest="sha256:x", result="hit", client="",
                user_agent="", at=float(n))


async def record(group: GroupCommit, n: int) -> str:
    try:
        await group.record(pull(n))
        return "stored"
    except PullKept:
        return "kept"


async def drained(group: GroupCommit, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while group.backlog and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert group.backlog == 0


def test_pulls_served_while_the_event_store_is_down_are_recorded_in_order_once_it_is_back():
    pulls = FlakyPulls()
    metrics = FakeMetrics()

    async def main():
        group = GroupCommit(pulls, metrics=metrics)
        await group.start()
        assert await record(group, 0) == "stored"
        pulls.down = True
        outcomes = [await record(group, n) for n in range(1, 6)]
        started = time.monotonic()
        assert await record(group, 6) == "kept"
        assert time.monotonic() - started < 0.05      # with a backlog, a pull is not held at all
        pulls.down = False
        await drained(group)
        assert await record(group, 7) == "stored"
        await group.stop()
        return outcomes

    assert asyncio.run(main()) == ["kept"] * 5
    assert pulls.stored() == [float(n) for n in range(8)]
    assert len(metrics.of("manifest_pulled")) == 8      # each counted once, when durable
    assert metrics.of("pulls_unrecorded") == []


def test_a_full_backlog_drops_its_oldest_pulls_counts_them_and_keeps_serving():
    pulls = FlakyPulls()
    metrics = FakeMetrics()

    async def main():
        group = GroupCommit(pulls, metrics=metrics, max_backlog=5)
        await group.start()
        pulls.down = True
        outcomes = [await record(group, n) for n in range(8)]
        await asyncio.sleep(0.05)
        pulls.down = False
        await drained(group)
        await group.stop()
        return outcomes

    assert asyncio.run(main()) == ["kept"] * 8
    assert pulls.stored() == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert sum(count for count, reason in metrics.of("pulls_unrecorded") if reason == "backlog_full") == 3
    assert metrics.of("pull_backlog")[-1] == (0,)


def test_a_batch_that_timed_out_but_committed_is_not_stored_twice():
    pulls = FlakyPulls()

    async def main():
        group = GroupCommit(pulls, write_timeout=0.1, wait_timeout=1.0)
        await group.start()
        pulls.hang_after_commit = 0.3           # the batch commits, then its answer never comes in time
        first = await asyncio.gather(*(record(group, n) for n in range(3)))
        later = [await record(group, n) for n in range(3, 5)]   # kept behind them, not yet written
        await drained(group)
        await group.stop()
        return first, later

    first, later = asyncio.run(main())
    assert first == ["kept"] * 3 and later == ["kept"] * 2
    assert pulls.stored() == [0.0, 1.0, 2.0, 3.0, 4.0]   # each once: the retry skipped the committed three
    assert pulls.writes[-5:] == [1, 1, 1, 1, 1]           # the batch of five refused, then one by one


def test_a_stop_while_the_event_store_is_down_gives_up_within_its_bound_and_counts_what_is_lost(caplog):
    pulls = FlakyPulls()
    metrics = FakeMetrics()

    async def main():
        group = GroupCommit(pulls, metrics=metrics)
        await group.start()
        pulls.down = True
        for n in range(4):
            await record(group, n)
        started = time.monotonic()
        await group.stop(timeout=0.3)
        return time.monotonic() - started

    with caplog.at_level(logging.ERROR, logger="application.pulls"):
        took = asyncio.run(main())
    assert took < 1.0
    assert metrics.of("pulls_unrecorded") == [(4, "shutdown")]
    assert "stopping with 4 pulls not recorded" in caplog.text


def test_a_stop_writes_the_backlog_when_the_event_store_takes_writes_again():
    pulls = FlakyPulls()

    async def main():
        group = GroupCommit(pulls)
        await group.start()
        pulls.down = True
        for n in range(4):
            await record(group, n)
        threading.Timer(0.2, lambda: setattr(pulls, "down", False)).start()
        await group.stop(timeout=3.0)

    asyncio.run(main())
    assert pulls.stored() == [0.0, 1.0, 2.0, 3.0]


def test_a_failure_that_is_not_an_outage_is_not_kept():
    pulls = FlakyPulls()

    def broken(events):
        raise RuntimeError("a bug")
    pulls.write = broken

    async def main():
        group = GroupCommit(pulls)
        await group.start()
        with pytest.raises(RuntimeError):
            await group.record(pull(1))
        assert group.backlog == 0
        await group.stop()

    asyncio.run(main())
