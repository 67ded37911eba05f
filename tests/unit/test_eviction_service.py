"""The evictor's background task stops when told, whenever that is: while a nudge wakes it, while a round
waits for the retention view, and within the deadline its caller puts on the stop. Bounds here are
generous: only a loop that outlives its stop (the teardown hangs this was written for) reaches them."""

from __future__ import annotations

import asyncio

import pytest

from application.eviction import Evictor, RoundReport
from application.eviction_service import EvictionService
from domain.org_settings import OrgSettings
from tests.support.clock import ManualClock

HANG = 20.0   # seconds: a stop that returns at all returns in milliseconds here


class FreeLock:
    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class CountingEvictor:
    """Rounds that do nothing, counted."""

    def __init__(self) -> None:
        self.rounds = 0

    async def run_once(self) -> RoundReport:
        self.rounds += 1
        return RoundReport()

    def interrupt(self) -> None:
        pass


class _Recorder:
    def __init__(self, head: int) -> None:
        self.head = head

    def max_notification_id(self) -> int:
        return self.head


class _Records:
    def __init__(self, head: int) -> None:
        self.recorder = _Recorder(head)


class LaggingView:
    """A retention view that never catches up, with no orphan and usage of one byte."""

    def __init__(self) -> None:
        self.tracking_reads = 0

    def max_tracking_id(self, application_name: str) -> int:
        self.tracking_reads += 1
        return 0

    def orphans_due(self, cutoff: float, limit: int = 500) -> list:
        return []

    def usage(self, org: str | None = None) -> int:
        return 1

    def oversized(self, org: str, limit_bytes: int) -> list:
        return []


def evictor(view: LaggingView, quota: int) -> Evictor:
    settings = OrgSettings.parse({"upstream": "http://127.0.0.1:1", "quota_bytes": quota})
    return Evictor(_Records(head=10), view, store=None, clock=ManualClock(), orgs=lambda: [("hub", settings)],
                   catch_up_seconds=600)


@pytest.mark.parametrize("turns", range(4))
def test_a_stop_that_comes_while_a_nudge_wakes_the_loop_ends_it(turns):
    # asyncio.wait_for (Python 3.11) lost the cancellation when it came in the loop iteration in which
    # the nudge's wake-up completed: the loop ran on and stop() waited for it (for ever, before stops had
    # a deadline). Each `turns` puts the stop at another point of that wake-up.
    async def scenario() -> int:
        rounds = CountingEvictor()
        service = EvictionService(rounds, FreeLock(), interval=3600)
        await service.start()
        await asyncio.sleep(0.01)   # the loop waits for a nudge
        service.nudge()
        for _ in range(turns):
            await asyncio.sleep(0)
        async with asyncio.timeout(HANG) as deadline:
            await service.stop()
        # A stop that lost the cancellation returned only when the deadline cancelled the loop again
        # (and, swallowing that too, as if in time).
        assert not deadline.expired()
        return rounds.rounds

    assert asyncio.run(scenario()) <= 1   # the nudged round at most, never a loop that goes on


def test_a_round_with_no_quota_no_capacity_and_no_orphan_does_not_wait_for_the_view():
    view = LaggingView()
    report = asyncio.run(evictor(view, quota=0).run_once())
    assert report == RoundReport() and view.tracking_reads == 0


def test_stop_interrupts_a_round_waiting_for_the_view():
    view = LaggingView()

    async def scenario() -> None:
        service = EvictionService(evictor(view, quota=1000), FreeLock(), interval=3600)
        await service.start()
        service.nudge()
        while view.tracking_reads == 0:   # the round waits for the view (for up to 600 s)
            await asyncio.sleep(0.01)
        async with asyncio.timeout(HANG) as deadline:
            await service.stop()
        assert not deadline.expired()
        # The waiting round has given up: nothing polls the view any more (a round that went on waiting
        # in its thread would, for 600 s, on views a stopping server closes).
        async with asyncio.timeout(HANG):
            while True:
                reads = view.tracking_reads
                await asyncio.sleep(0.2)
                if view.tracking_reads == reads:
                    break

    asyncio.run(scenario())
