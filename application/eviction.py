"""The evictor: keeps each org under its quota and the store under [storage] max_bytes, then deletes
what no image references once the grace period has passed (the reaper). Runs off the request path.

Order, so that a process killed at any point leaves nothing the next run cannot finish:
1. plan on a retention view that has seen every CacheRecords event recorded so far;
2. record the evictions (CachedManifest.Evicted, TagResolution.Dropped): the views drop the images;
3. after `delete_grace_seconds`, record StoredBlob.Orphaned, delete from storage, record Deleted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio.to_thread

from application.ports import BlobStorageUnavailable, BlobStore, Clock
from domain.org_settings import OrgSettings
from domain.retention import SYSTEM_EVICTOR, Candidate, Victim, low_watermark, plan_eviction

log = logging.getLogger(__name__)
PAGE = 50   # candidates read per ranking query (ORDER BY ... LIMIT)


class RetentionReads(Protocol):
    """The retention view's queries the evictor uses (projections/retention.py)."""

    def ranking(self, org: str | None, policy: str, *, limit: int, offset: int = 0,
                victims_only: bool = True) -> list[Any]: ...
    def candidate(self, image: Any, scope_org: str | None) -> Candidate: ...
    def usage(self, org: str | None = None) -> int: ...
    def pinned_usage(self, org: str) -> int: ...
    def oversized(self, org: str, limit_bytes: int) -> list[Any]: ...
    def orphans_due(self, cutoff: float, limit: int = 500) -> list[tuple[str, int, float, str]]: ...
    def max_tracking_id(self, application_name: str) -> int | None: ...


@dataclass
class RoundReport:
    evicted: list[Victim] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    skipped: bool = False          # the view had not caught up: planning waits for the next round


class Evictor:
    def __init__(self, records: Any, view: RetentionReads, store: BlobStore, clock: Clock,
                 orgs: Callable[[], list[tuple[str, OrgSettings]]], *, pulls: Any = None, max_bytes: int = 0,
                 grace_seconds: float = 60.0, metrics: Any = None, catch_up_seconds: float = 5.0) -> None:
        self._records, self._view, self._store, self._clock = records, view, store, clock
        self._apps = {"Registry": records, **({"Pulls": pulls} if pulls is not None else {})}
        self._orgs, self.max_bytes, self.grace_seconds = orgs, max_bytes, grace_seconds
        self._metrics = metrics
        self.over_quota: dict[str, int] = {}   # org -> pinned bytes, when pins alone exceed the quota
        self.planning_seconds: deque[float] = deque(maxlen=1000)   # each over-quota plan's time (bench/quota.py)
        self.catch_up_seconds = catch_up_seconds   # how long a round waits for the retention view
        self._interrupted = threading.Event()      # the process stops: a round waiting for the view gives up

    def interrupt(self) -> None:
        """Stop waiting: a round waiting for the view ends now (skipped), and later rounds do nothing."""
        self._interrupted.set()

    async def run_once(self) -> RoundReport:
        report = RoundReport()
        orgs = await anyio.to_thread.run_sync(self._orgs)
        limited = [(org, settings) for org, settings in orgs if settings.quota_bytes]
        for org, settings in orgs:
            if not settings.quota_bytes:
                self.over_quota.pop(org, None)
        if not limited and not self.max_bytes and not await anyio.to_thread.run_sync(self._orphans_due):
            # Nothing to plan and nothing to reap (most rounds, nudged by every fill, when no quota is set):
            # no wait for the view. An orphan the lagging view does not show yet is found next round.
            return report
        if not await anyio.to_thread.run_sync(self._caught_up):
            report.skipped = True
            return report
        for org, settings in limited:
            report.evicted += await anyio.to_thread.run_sync(self._within_quota, org, settings)
        if self.max_bytes:
            report.evicted += await anyio.to_thread.run_sync(self._within_capacity)
        report.deleted = await self.reap()
        return report

    def _orphans_due(self) -> bool:
        """Whether the view (caught up or not) shows a blob the reaper would delete now."""
        return bool(self._view.orphans_due(self._clock.now() - self.grace_seconds, limit=1))

    def _caught_up(self) -> bool:
        """Plans read the view: it must show every event recorded before the round began (an eviction
        already recorded would otherwise be planned twice, a new image's first pull missed)."""
        heads = {name: app.recorder.max_notification_id() or 0 for name, app in self._apps.items()}
        deadline = time.monotonic() + self.catch_up_seconds
        while any((self._view.max_tracking_id(name) or 0) < head for name, head in heads.items()):
            if time.monotonic() > deadline or self._interrupted.wait(0.02):
                return False
        return not self._interrupted.is_set()

    # -- eviction --------------------------------------------------------------------------------------
    def _within_quota(self, org: str, settings: OrgSettings) -> list[Victim]:
        quota = settings.quota_bytes
        usage = self._view.usage(org)
        forced = [self._view.candidate(image, org) for image in self._view.oversized(org, quota)]
        if usage <= quota and not forced:
            self.over_quota.pop(org, None)
            return []
        started = time.perf_counter()
        victims, left = plan_eviction(usage, low_watermark(quota), self._candidates(org, settings.eviction_policy),
                                      forced)
        self.planning_seconds.append(time.perf_counter() - started)
        self._record(victims, settings.eviction_policy, forced)
        if left > quota:
            pinned = self._view.pinned_usage(org)
            if org not in self.over_quota:
                log.warning("org %s: pinned images hold %d bytes, over its quota of %d; serving goes on",
                            org, pinned, quota)
            self.over_quota[org] = pinned
        else:
            self.over_quota.pop(org, None)
        return victims

    def _within_capacity(self) -> list[Victim]:
        usage = self._view.usage(None)
        if usage <= self.max_bytes:
            return []
        victims, left = plan_eviction(usage, low_watermark(self.max_bytes), self._candidates(None, "lru"))
        self._record(victims, "lru", [], reason="capacity")
        if left > self.max_bytes:
            log.warning("storage holds %d bytes of pinned images, over [storage] max_bytes %d", left, self.max_bytes)
        return victims

    def _candidates(self, org: str | None, policy: str) -> Iterator[Candidate]:
        offset = 0
        while True:
            page = self._view.ranking(org, policy, limit=PAGE, offset=offset)
            for image in page:
                yield self._view.candidate(image, org)
            if len(page) < PAGE:
                return
            offset += PAGE

    def _record(self, victims: list[Victim], policy: str, forced: list[Candidate], reason: str = "quota") -> None:
        now = self._clock.now()
        forced_keys = {(c.org, c.repository, c.digest) for c in forced}
        for victim in victims:
            c = victim.candidate
            why = "oversize" if (c.org, c.repository, c.digest) in forced_keys else reason
            if self._records.evict_image(c.org, c.repository, c.digest, children=c.children, tags=c.tags,
                                         bytes=victim.freed, reason=why, policy=policy, actor=SYSTEM_EVICTOR,
                                         at=now):
                log.info("evicted %s/%s@%s (%s, %s): %d bytes", c.org, c.repository, c.digest, why, policy,
                         victim.freed)
                if self._metrics is not None:
                    self._metrics.image_evicted(c.org, why, victim.freed)

    # -- deletion --------------------------------------------------------------------------------------
    async def reap(self) -> list[str]:
        """Delete what no image of any org has referenced for the grace period (or whose deletion a
        killed process left half done): the decision recorded first, then storage, then the fact."""
        now = self._clock.now()
        due = await anyio.to_thread.run_sync(self._view.orphans_due, now - self.grace_seconds)
        deleted = []
        for digest, size, since, state in due:
            if state == "waiting":
                await anyio.to_thread.run_sync(
                    lambda: self._records.orphan_blob(digest, size, since, SYSTEM_EVICTOR, now))
            try:
                await self._store.delete(digest)
            except BlobStorageUnavailable as error:
                log.warning("could not delete %s, next round retries: %s", digest, error)
                break
            await anyio.to_thread.run_sync(lambda: self._records.blob_deleted(digest, SYSTEM_EVICTOR, now))
            deleted.append(digest)
        return deleted
