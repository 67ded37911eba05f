"""Pulls served while the event store could not take them: kept in order, bounded, written once it takes writes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from application.ports import Metrics, NoMetrics
from domain.pull import Pull

log = logging.getLogger(__name__)


@dataclass(eq=False)
class PendingPull:
    """A pull on its way to the event store. Its events are collected once, when it is handed over,
    so that a write that failed (or timed out and may have committed) can write the same events again:
    a second write of an event already stored then fails on its (originator_id, version) instead of
    storing it twice."""

    pull: Pull | Pull.Recorded   # the aggregate, or just its event (Pull.recorded): both say org, result, ...
    events: list = field(default_factory=list)
    future: asyncio.Future | None = None   # None: nobody waits (handed over during an outage)

    @classmethod
    def of(cls, pull: Pull | Pull.Recorded, future: asyncio.Future | None = None) -> PendingPull:
        return cls(pull, [pull] if isinstance(pull, Pull.Recorded) else pull.collect_events(), future)


class PullBacklog:
    """The pulls the event store did not take, oldest first, at most `max_pulls` of them.

    When full, the oldest are dropped and counted (`Metrics.pulls_unrecorded`, reason
    `backlog_full`), with a log line at most every `log_every` seconds: memory stays bounded and
    serving goes on. Retries back off from `first_retry` to `max_retry` seconds, so a database that
    comes back is written to within about a second, and a dead one is not hammered.
    Only the group commit's writer task touches it (one event loop, no locks).
    """

    def __init__(self, max_pulls: int = 100_000, metrics: Metrics | None = None, first_retry: float = 0.05,
                 max_retry: float = 1.0, log_every: float = 10.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._pending: deque[PendingPull] = deque()
        self._max_pulls = max_pulls
        self._metrics = metrics or NoMetrics()
        self._first_retry, self._max_retry = first_retry, max_retry
        self._delay = first_retry
        self._log_every = log_every
        self._monotonic = monotonic
        self._retry_at = 0.0
        self._dropped_since_log = 0
        self._last_drop_log = float("-inf")
        self.last_error = ""

    def __len__(self) -> int:
        return len(self._pending)

    def keep(self, entries: Iterable[PendingPull]) -> None:
        """Behind the older ones, in the order served; the oldest make room when it is full."""
        dropped = 0
        for entry in entries:
            if len(self._pending) >= self._max_pulls:
                self._pending.popleft()
                dropped += 1
            self._pending.append(entry)
        if dropped:
            self._dropped(dropped)
        self._metrics.pull_backlog(len(self._pending))

    def oldest(self, count: int) -> list[PendingPull]:
        return [self._pending[i] for i in range(min(count, len(self._pending)))]

    def written(self, count: int) -> None:
        """The `count` oldest are in the event store: forget them, and retry at once next time."""
        for _ in range(count):
            self._pending.popleft()
        self._delay = self._first_retry
        self._retry_at = 0.0
        self._metrics.pull_backlog(len(self._pending))

    def failed(self, error: BaseException) -> None:
        """A write failed: the next try waits, twice as long each time up to `max_retry`."""
        self.last_error = str(error) or error.__class__.__name__
        self._retry_at = self._monotonic() + self._delay
        self._delay = min(self._delay * 2, self._max_retry)

    def seconds_to_retry(self) -> float:
        return max(0.0, self._retry_at - self._monotonic())

    def lose_all(self, reason: str) -> int:
        """Gives up on every kept pull (a shutdown that ran out of time): counted, and how many returned."""
        lost = len(self._pending)
        self._pending.clear()
        if lost:
            self._metrics.pulls_unrecorded(lost, reason)
        self._metrics.pull_backlog(0)
        return lost

    def _dropped(self, count: int) -> None:
        self._metrics.pulls_unrecorded(count, "backlog_full")
        self._dropped_since_log += count
        now = self._monotonic()
        if now - self._last_drop_log >= self._log_every:   # one line per interval, however fast pulls come
            log.error("the event store has been unavailable for a while and %d pulls are kept in memory, the "
                      "most allowed: %d of the oldest were dropped unrecorded since the last report",
                      len(self._pending), self._dropped_since_log)
            self._dropped_since_log = 0
            self._last_drop_log = now
