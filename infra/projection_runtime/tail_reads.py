"""Shared reads of a log's tail: the projection workers following one log read each new page once, not once each.

Nine workers follow Registry and six follow Pulls, each through its own application instance. A commit
woke all of a log's workers, and each then selected and decoded the same few new notifications: during
a cold pull the projections spent as much CPU as the fill threads, most of it in those selects
(bench/results/2026-11-30-cold-s9.md). Here the first worker to read a log's tail keeps the page, its
events decoded once, and the log's other workers take it while it is still the tail.

When a kept page is still the tail: no commit to its log was signalled since its select began
(`COMMITS.generation`, which this process's writers and the PostgreSQL NOTIFY listener move on), and it
is younger than SHARE_SECONDS, which bounds how much later a worker sees what another process wrote
and nobody signalled (SQLite has no NOTIFY; the workers' fallback polls find it). A taken page is
never wrong, only at most that much older than a select would have been; each worker still tracks and
writes its own view, so each view stays exactly-once.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from infra.commit_signals import COMMITS

SHARE_SECONDS = 0.25   # the oldest kept page another worker may take (see the module docstring)


class _Page:
    """One select's answer: the notifications after `start` (at most `limit`), with their events once decoded."""

    def __init__(self, start: int, limit: int, generation: int, read_at: float, notifications: Sequence[Any]) -> None:
        self.start, self.limit, self.generation = start, limit, generation
        self.read_at = read_at   # when its select began: the page shows the log as it was then
        self.notifications = list(notifications)
        self.ids = [n.id for n in self.notifications]
        self._events: list[Any] | None = None
        self._decoding = threading.Lock()

    def after(self, start: int, limit: int) -> tuple[list[Any], int] | None:
        """(notifications after `start`, at most `limit`, index of the first in this page), if this page
        holds them all: `start` within it, and either the page was the whole tail or it has `limit` of them."""
        if start < self.start or (self.ids and start > self.ids[-1]) or (not self.ids and start != self.start):
            return None
        first = bisect.bisect_right(self.ids, start)
        taken = self.notifications[first:first + limit]
        if len(taken) < limit and len(self.notifications) >= self.limit:
            return None   # this page was cut at its own limit: what follows it is unknown
        return taken, first

    def events(self, decode: Callable[[Any], Any]) -> list[Any]:
        """The page's notifications decoded, once for all the workers that take it."""
        with self._decoding:
            if self._events is None:
                self._events = [decode(n) for n in self.notifications]
            return self._events


class TailPage:
    """What a worker read: the notifications, and their decoded events on demand (shared with the log's
    other workers when the page was shared)."""

    def __init__(self, page: _Page, notifications: list[Any], first: int) -> None:
        self._page, self.notifications, self._first = page, notifications, first

    def __len__(self) -> int:
        return len(self.notifications)

    def __bool__(self) -> bool:
        return bool(self.notifications)

    @property
    def last_id(self) -> int:
        return self.notifications[-1].id

    def events(self, decode: Callable[[Any], Any]) -> list[Any]:
        return self._page.events(decode)[self._first:self._first + len(self.notifications)]


class TailReads:
    """The last tail page read of each log, in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[Hashable, threading.Lock] = {}
        self._pages: dict[Hashable, _Page] = {}

    def read(self, log: Hashable, app_name: str, select: Callable[[int, int], Sequence[Any]], start: int,
             limit: int, since: float = 0.0) -> TailPage:
        """The notifications of `log` (application `app_name`'s) after `start`, at most `limit`: a kept page's
        if it is still the tail and holds them, else `select(start, limit)`'s. Near the tail, one worker
        selects at a time, so the workers a commit woke together wait for one select instead of each
        making its own. Pages are kept by log and application both: one application's events must never
        reach another's views, even if two logs were ever given the same key.

        `since` (time.monotonic()): take no page selected before then. A worker passes its start: a page
        read before it began may predate what was done to the store or the view meanwhile (a view cleared
        for a rebuild over an edited or archived store), which only a select of its own sees."""
        key = (log, app_name)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
            kept = self._pages.get(key)
        if kept is not None and start < kept.start:
            # A worker behind the tail (catching up, or rebuilding) reads its own pages, neither waiting
            # for the tail's readers nor replacing their page.
            return self._select(key, select, start, limit, keep=False)
        with lock:
            kept = self._pages.get(key)
            if (kept is not None and kept.generation == COMMITS.generation(log) and kept.read_at >= since
                    and time.monotonic() - kept.read_at < SHARE_SECONDS):
                found = kept.after(start, limit)
                if found is not None:
                    return TailPage(kept, *found)
            return self._select(key, select, start, limit, keep=True)

    def _select(self, key: tuple[Hashable, str], select: Callable[[int, int], Sequence[Any]], start: int,
                limit: int, keep: bool) -> TailPage:
        generation = COMMITS.generation(key[0])   # before the select: a commit during it makes the page stale
        read_at = time.monotonic()
        page = _Page(start, limit, generation, read_at, select(start, limit))
        if keep:
            with self._lock:
                self._pages[key] = page
        return TailPage(page, page.notifications, 0)


# One per process, as COMMITS: the workers of one log find each other's pages here.
TAILS = TailReads()
