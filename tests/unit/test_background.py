"""Waits and stops of the background tasks never lose a cancellation (application/background.py)."""

from __future__ import annotations

import asyncio

import pytest

from application.background import cancel_and_wait, wait_set


@pytest.mark.parametrize("turns", range(4))
def test_a_cancellation_that_comes_as_the_event_is_set_is_not_lost(turns):
    # What asyncio.wait_for does on Python 3.11 at some of these points: the wait's result wins.
    async def scenario(wait) -> bool:
        event = asyncio.Event()
        waiting = asyncio.create_task(wait(event))
        await asyncio.sleep(0.01)
        event.set()
        for _ in range(turns):
            await asyncio.sleep(0)
        accepted = waiting.cancel()   # False once the wait has ended: nothing to cancel then
        await asyncio.wait({waiting})
        return not accepted or waiting.cancelled()

    assert asyncio.run(scenario(lambda event: wait_set(event, 3600)))


def test_wait_set_says_whether_the_event_came_in_time():
    async def scenario() -> tuple[bool, bool]:
        event = asyncio.Event()
        late = await wait_set(event, 0.01)
        event.set()
        return late, await wait_set(event, 0.01)

    assert asyncio.run(scenario()) == (False, True)


def test_a_deadline_on_the_waiter_reaches_it_even_when_the_task_lost_its_own_cancellation():
    # A task that swallows its first cancellation (as a loop in asyncio.wait_for did) ends only with the
    # second, the deadline's: a stop with `suppress(CancelledError)` returned then as if in time, and
    # the "took longer than" warning of the shutdown never showed.
    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass
        await asyncio.sleep(3600)

    async def scenario() -> None:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await cancel_and_wait(task)
        assert task.cancelled()

    asyncio.run(scenario())


def test_a_task_cancelled_by_its_stop_ends_quietly():
    async def scenario() -> bool:
        task = asyncio.create_task(asyncio.sleep(3600))
        await asyncio.sleep(0)
        await cancel_and_wait(task)
        return task.cancelled()

    assert asyncio.run(scenario())
