"""Blob traffic into the event log: in-memory counts the request path bumps, recorded every few seconds.

`TrafficMeter` is a decorator over the Metrics port: every count it passes on to Prometheus, and the
traffic counts (bytes served and fetched, blob pulls, fills and their durations) it also adds up per
org, in memory, with no I/O. `TrafficRecorder`, a background task, takes those sums every
`interval` seconds and at shutdown and records one `TrafficReport` per org in the Pulls application.

What a SIGKILL loses at most: the last `interval` seconds of this process's counts (and reports
kept while the event store was down). A report whose write timed out but committed is not counted
twice: it is retried with the same event ids, which the event store refuses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import Counter
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
from eventsourcing.persistence import IntegrityError

from application.background import cancel_and_wait
from application.ports import Clock, Metrics
from application.pulls import Pulls
from domain.traffic import FILL_SECONDS_BUCKETS, TrafficReport, fill_bucket

log = logging.getLogger(__name__)

MAX_REPOSITORIES = 1000     # per org and report; the rest are added up under OTHER
OTHER = "(other)"
MAX_KEPT_REPORTS = 10_000   # reports kept while the event store is down; the oldest go first


@dataclass
class OrgTraffic:
    """One org's traffic since the last report."""
    bytes_served: Counter = field(default_factory=Counter)    # kind -> bytes
    bytes_fetched: Counter = field(default_factory=Counter)   # kind -> bytes
    blob_pulls: Counter = field(default_factory=Counter)      # result -> n
    fills: int = 0
    fill_seconds: list[int] = field(default_factory=lambda: [0] * (len(FILL_SECONDS_BUCKETS) + 1))
    fills_failed: int = 0
    repositories: Counter = field(default_factory=Counter)    # repository -> bytes served

    def served(self, repository: str, size: int) -> None:
        if repository:
            if repository not in self.repositories and len(self.repositories) >= MAX_REPOSITORIES:
                repository = OTHER
            self.repositories[repository] += size


class TrafficMeter:
    """The Metrics port, passing every count on and keeping the traffic ones per org until taken."""

    def __init__(self, inner: Metrics) -> None:
        self._inner = inner
        self._orgs: dict[str, OrgTraffic] = {}

    def __getattr__(self, name: str) -> Any:
        # The port's other counts (upstream requests, pulls, backlog) go to Prometheus only. Kept on
        # the instance once looked up, so later calls on the request path skip this lookup.
        attribute = getattr(self._inner, name)
        setattr(self, name, attribute)
        return attribute

    def _org(self, org: str) -> OrgTraffic:
        traffic = self._orgs.get(org)
        if traffic is None:
            traffic = self._orgs[org] = OrgTraffic()
        return traffic

    def bytes_served(self, org: str, kind: str, size: int, repository: str = "") -> None:
        self._inner.bytes_served(org, kind, size, repository)
        traffic = self._org(org)
        traffic.bytes_served[kind] += size
        traffic.served(repository, size)

    def bytes_fetched(self, org: str, kind: str, size: int) -> None:
        self._inner.bytes_fetched(org, kind, size)
        self._org(org).bytes_fetched[kind] += size

    def blob_pulled(self, org: str, result: str) -> None:
        self._inner.blob_pulled(org, result)
        self._org(org).blob_pulls[result] += 1

    def fill_completed(self, org: str, seconds: float = 0.0) -> None:
        self._inner.fill_completed(org, seconds)
        traffic = self._org(org)
        traffic.fills += 1
        traffic.fill_seconds[fill_bucket(seconds)] += 1

    def fill_failed(self, org: str, reason: str) -> None:
        self._inner.fill_failed(org, reason)
        self._org(org).fills_failed += 1

    def take(self) -> dict[str, OrgTraffic]:
        """Every org's counts since the last take, and start again from zero (one event-loop step)."""
        taken, self._orgs = self._orgs, {}
        return taken


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def reports(taken: dict[str, OrgTraffic], since: float, until: float, process: str,
            generations: dict[str, int] | None = None) -> list:
    """One TrafficReport.Recorded per org with any traffic, for the org's generation given (else 1)."""
    events = []
    for org, t in sorted(taken.items()):
        report = TrafficReport(org=org, process=process, since=since, until=until,
                               bytes_served=dict(t.bytes_served), bytes_fetched=dict(t.bytes_fetched),
                               blob_pulls=dict(t.blob_pulls), fills=t.fills, fill_seconds=list(t.fill_seconds),
                               fills_failed=t.fills_failed, repositories=dict(t.repositories),
                               generation=(generations or {}).get(org, 1))
        events.extend(report.collect_events())
    return events


class TrafficRecorder:
    """Records the meter's counts every `interval` seconds and at stop(), off the request path."""

    def __init__(self, pulls: Pulls, meter: TrafficMeter, clock: Clock, interval: float = 5.0,
                 write_timeout: float = 5.0, process: str | None = None,
                 generation_of: Callable[[str], int | None] | None = None) -> None:
        self._pulls, self._meter, self._clock = pulls, meter, clock
        # Which generation of an org (domain.org.CacheOrg.Recreated) its traffic counts for: the one
        # current when the report is written (a report spans a few seconds; a re-creation inside them
        # counts that report to the new org). The last answer per org stands in when a lookup fails.
        self._generation_of = generation_of
        self._generations: dict[str, int] = {}
        self._interval, self._write_timeout = interval, write_timeout
        self._process = process or this_process()
        self._since = clock.now()
        self._kept: list = []     # recorded events not yet in the event store, oldest first
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        # One writer thread of its own: a write hung on a dead database holds it, not anyio's shared pool.
        self._thread = anyio.CapacityLimiter(1)

    @property
    def kept(self) -> int:
        return len(self._kept)

    async def start(self) -> None:
        self._since = self._clock.now()
        self._task = asyncio.create_task(self._run(), name="traffic-recorder")

    async def stop(self, timeout: float = 2.0) -> None:
        """The last report, waited for at most `timeout` seconds: a dead database must not hold up a shutdown."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self.record(write_timeout=timeout)
        if self._kept:
            log.error("stopping with %d traffic reports not recorded: the event store did not take them", len(self._kept))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.record()
            except Exception:   # the recorder must outlive any one failed write
                log.exception("recording traffic failed")

    async def record(self, write_timeout: float | None = None) -> None:
        """Take the meter's counts and write them, with any kept earlier, in one transaction."""
        timeout = write_timeout or self._write_timeout
        async with self._lock:
            now = self._clock.now()
            taken = self._meter.take()
            generations = await self._current_generations(list(taken), timeout) if taken else {}
            self._kept.extend(reports(taken, self._since, now, self._process, generations))
            self._since = now
            if len(self._kept) > MAX_KEPT_REPORTS:
                log.error("dropping %d traffic reports: the event store has been down too long",
                          len(self._kept) - MAX_KEPT_REPORTS)
                del self._kept[:len(self._kept) - MAX_KEPT_REPORTS]
            if not self._kept:
                return
            try:
                await self._write(self._kept, timeout)
            except IntegrityError:
                # An earlier write that timed out had committed some of them: the rest one at a time.
                for one in list(self._kept):
                    try:
                        await self._write([one], timeout)
                    except IntegrityError:
                        pass
            except Exception as error:
                log.warning("traffic reports kept to retry (%d): %s", len(self._kept), error)
                return
            self._kept = []

    async def _current_generations(self, orgs: list[str], timeout: float) -> dict[str, int]:
        if self._generation_of is None:
            return {}
        lookup = self._generation_of

        def current() -> dict[str, int]:
            for org in orgs:
                try:
                    generation = lookup(org)
                except Exception as error:   # the org store down: the last known generation, counted all the same
                    log.warning("traffic report: generation of org %r unknown (%s), using the last known", org, error)
                    continue
                if generation is not None:
                    self._generations[org] = generation
            return {org: self._generations.get(org, 1) for org in orgs}
        with anyio.move_on_after(timeout):   # a hung org store must not hold the reports up
            return await anyio.to_thread.run_sync(current, abandon_on_cancel=True)
        return {org: self._generations.get(org, 1) for org in orgs}

    async def _write(self, events: list, timeout: float) -> None:
        with anyio.fail_after(timeout):
            await anyio.to_thread.run_sync(self._pulls.write, list(events), abandon_on_cancel=True,
                                           limiter=self._thread)
