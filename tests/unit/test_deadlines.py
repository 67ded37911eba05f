"""Deadlines: many waits of one length under one timer; each fails once its time is up, unless done before."""

from __future__ import annotations

import asyncio

import pytest

from application.deadlines import Deadlines


class Late(Exception):
    pass


def test_a_wait_done_in_time_keeps_its_result_and_a_late_one_fails():
    async def scenario():
        deadlines = Deadlines(0.05, Late)
        loop = asyncio.get_running_loop()
        on_time, late = loop.create_future(), loop.create_future()
        deadlines.add(on_time)
        deadlines.add(late)
        on_time.set_result("recorded")
        with pytest.raises(Late):
            await late
        assert on_time.result() == "recorded"
        deadlines.close()
    asyncio.run(scenario())


def test_waits_added_after_the_timer_fired_get_their_own_full_wait():
    async def scenario():
        deadlines = Deadlines(0.05, Late)
        loop = asyncio.get_running_loop()
        first = loop.create_future()
        deadlines.add(first)
        with pytest.raises(Late):
            await first
        second = loop.create_future()
        deadlines.add(second)
        started = loop.time()
        with pytest.raises(Late):
            await second
        assert loop.time() - started >= 0.04   # never cut short by the first wait's timer
        deadlines.close()
    asyncio.run(scenario())


def test_a_cancelled_wait_is_left_alone():
    async def scenario():
        deadlines = Deadlines(0.02, Late)
        loop = asyncio.get_running_loop()
        gone = loop.create_future()
        deadlines.add(gone)
        gone.cancel()
        await asyncio.sleep(0.05)
        assert gone.cancelled()
        deadlines.close()
    asyncio.run(scenario())
