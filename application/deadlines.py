"""Many waits of one length under one timer: each pull's bounded wait for its record, without a timer per pull."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class Deadlines:
    """Futures that fail with `expired()` once `seconds` have passed since they were added, unless done by then.

    Every wait has the same length, so they expire in the order they were added: one timer, set for the
    oldest still pending, replaces a timer per wait (asyncio.timeout's was ~5 % of a warm pull's CPU).
    Futures done in time are dropped when the timer next fires; at most `seconds` worth are held.
    """

    def __init__(self, seconds: float, expired: Callable[[], BaseException]) -> None:
        self._seconds = seconds
        self._expired = expired
        self._waiting: deque[tuple[float, asyncio.Future]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, future: asyncio.Future) -> None:
        loop = future.get_loop()
        self._waiting.append((loop.time() + self._seconds, future))
        if self._timer is None:
            self._timer = loop.call_at(self._waiting[0][0], self._expire, loop)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        while self._waiting and (self._waiting[0][1].done() or self._waiting[0][0] <= now):
            _, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(self._expired())
        self._timer = loop.call_at(self._waiting[0][0], self._expire, loop) if self._waiting else None
