"""Group commit: every pull is durable before record() returns, and many share one transaction."""

import asyncio

from application.pulls import GroupCommit, Pulls
from domain.pull import Pull


class CountingPulls(Pulls):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.batches: list[int] = []

    def write(self, events) -> None:
        self.batches.append(len(events))   # one event per pull
        super().write(events)


def pull(n: int) -> Pull:
    return Pull(org="hub", repository="r", reference=str(n), digest="sha256:x", result="hit", client="", user_agent="",
                at=float(n))


def test_concurrent_pulls_are_durable_when_record_returns_and_share_transactions():
    pulls = CountingPulls(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})

    async def main():
        group = GroupCommit(pulls)
        await group.start()

        async def one(n: int) -> int:
            await group.record(pull(n))
            return pulls.recorder.max_notification_id()
        positions = await asyncio.gather(*(one(n) for n in range(200)))
        await group.stop()
        return positions

    positions = asyncio.run(main())
    assert pulls.recorder.max_notification_id() == 200
    assert all(p is not None and p >= 1 for p in positions)
    assert sum(pulls.batches) == 200 and len(pulls.batches) < 200


def test_the_window_closes_once_as_many_pulls_are_in_as_the_last_batch_had():
    # The clients the last write answered come back one by one; the window (a minute here) does not
    # wait for more than their number, nor does it close before they are all in.
    pulls = CountingPulls(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})

    async def main():
        group = GroupCommit(pulls, max_delay=60.0)
        await group.start()
        await asyncio.gather(*(group.record(pull(n)) for n in range(4)))   # queued together: one batch of 4

        async def after(delay: float, n: int) -> None:
            await asyncio.sleep(delay)
            await group.record(pull(n))
        async with asyncio.timeout(10):
            await asyncio.gather(*(after(0.01 * n, 10 + n) for n in range(4)))
        await group.stop()

    asyncio.run(main())
    assert pulls.batches == [4, 4]


def test_a_failed_batch_reaches_every_waiting_request_and_the_writer_keeps_going():
    pulls = CountingPulls(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    failing = {"on": True}
    original = pulls.write

    def flaky(events):
        if failing["on"]:
            raise RuntimeError("database down")   # not an outage error: a bug, not kept for later
        original(events)
    pulls.write = flaky

    async def main():
        group = GroupCommit(pulls)
        await group.start()
        results = await asyncio.gather(*(group.record(pull(n)) for n in range(5)), return_exceptions=True)
        failing["on"] = False
        await group.record(pull(99))
        await group.stop()
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert pulls.recorder.max_notification_id() == 1


def test_a_hung_event_store_fails_pulls_with_event_store_unavailable_instead_of_holding_them():
    import threading
    import time

    from application.errors import EventStoreUnavailable

    pulls = CountingPulls(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    released = threading.Event()
    entered: list[int] = []
    # A database call that never returns by itself.
    pulls.write = lambda events: (entered.append(len(events)), released.wait(30))

    async def main():
        group = GroupCommit(pulls, write_timeout=0.2, wait_timeout=0.5, writer_threads=1)
        await group.start()
        started = time.monotonic()
        first = await asyncio.gather(*(group.record(pull(n)) for n in range(3)), return_exceptions=True)
        first_took = time.monotonic() - started
        started = time.monotonic()
        # The only writer thread is still stuck: the next batch is refused at once, not queued behind it.
        second = await asyncio.gather(group.record(pull(9)), return_exceptions=True)
        second_took = time.monotonic() - started
        await asyncio.sleep(0.3)   # the writer retries its backlog meanwhile, and finds its only thread stuck
        stop_started = time.monotonic()
        await group.stop(timeout=0.5)
        stop_took = time.monotonic() - stop_started
        released.set()
        return first, first_took, second, second_took, stop_took, group

    first, first_took, second, second_took, stop_took, group = asyncio.run(main())
    assert all(isinstance(r, EventStoreUnavailable) for r in first + second)
    assert first_took < 1.0 and second_took < 0.2 and stop_took < 1.0
    # The stuck writer thread was never joined by a second one: later writes were refused as "stuck".
    assert entered == [3]
    assert "stuck" in group._backlog.last_error


def test_a_full_queue_refuses_a_pull_at_once():
    import pytest

    from application.errors import EventStoreUnavailable

    pulls = CountingPulls(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})

    async def main():
        group = GroupCommit(pulls, max_queued=0)   # not started: nothing drains the queue
        with pytest.raises(EventStoreUnavailable, match="waiting for the event store"):
            await group.record(pull(1))

    asyncio.run(main())
