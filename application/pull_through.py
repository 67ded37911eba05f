"""The pull-through cache assembled: a manifest cache (audited), a blob cache and the tag list, sharing
one bounded view reader, one ledger and the org lookup every request starts with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from application.blobs import BlobAnswer, BlobCache, Holdings, NotingLedger
from application.bounded_reads import BoundedReads
from application.errors import OrgUnknown
from application.fills import BlobFills
from application.governance import AllowedBlobs, AllowedManifests, AllowedReferrers, AllowedTags
from application.ops_log import NoOpsLog, OpsLog
from application.manifest_bytes import ManifestBytes
from application.manifests import ManifestAnswer, ManifestCache
from application.orgs import OrgConfig, OrgDirectory
from application.ports import (BlobStore, TagsAndManifests, Clock, FillCoordinator, Ledger, Metrics, NoMetrics,
                               ReferrersRead, SharedTags, Upstream)
from application.pull_audit import Client, PullAudit
from application.pull_metrics import CountedBlobs, CountedManifests
from application.pulls import GroupCommit
from application.ratelimits import RateLimits
from application.cache_records import CacheRecords
from application.records_ledger import RecordsLedger
from application.referrers import ReferrersCache
from application.singleflight import AcrossReplicas, InProcessOnly
from application.tag_list import TagList
from application.tag_lookup import TagLookup


@dataclass(frozen=True)
class Limits:
    """The in-process bounds and the longest wait on the database, set at the composition root."""
    read_timeout: float = 3.0          # seconds a view / event-store read may take before a 503
    record_timeout: float = 5.0        # seconds a pull may wait for its audit (or ledger) record before a 503
    max_reads_in_flight: int = 32      # database reads still running (a hung database) before new ones fail fast
    tag_row_seconds: float = 1.0       # how long a tag row read from the view is trusted
    # How long this process's own tag writes and manifest rows answer without the view: bounds how long
    # an evicted image is still answered here (shorter than [storage] delete_grace_seconds).
    recent_tag_seconds: float = 5.0
    manifest_row_seconds: float = 30.0
    max_rows: int = 50_000             # tag rows, recent tag writes, manifest rows, negative-cache entries
    max_holdings: int = 100_000        # (org, blob) pairs known held
    max_referrers: int = 200_000       # descriptors of upstream referrers lists held in process, over all subjects
    manifest_bytes: int = 64 * 1024 * 1024
    prefetch_blobs: int = 0            # blob fills a cold image manifest's GET starts at once, per process (0: off)


@dataclass(frozen=True)
class PullThrough:
    manifests: CountedManifests
    blobs: CountedBlobs
    tag_list: TagList
    rate_limits: RateLimits
    orgs: OrgDirectory
    tags: TagLookup | None = None
    referrers: ReferrersCache | None = None

    def forget(self, org: str, repository: str | None = None) -> None:
        """Flushed: this process's tag entries and referrers lists of the org (or repository) stop answering
        now; other replicas' within their bounds (tag rows 1 s, own writes and Redis entries 5 s)."""
        if self.tags is not None:
            self.tags.forget(org, repository)
        if self.referrers is not None:
            self.referrers.forget(org, repository)

    async def org(self, name: str) -> OrgConfig:
        """An org by name, for callers that were not routed (the router's lookup gives the edge its org)."""
        org = await self.orgs.lookup(name)
        if org is None:
            raise OrgUnknown(f"no cache organization named {name!r}", org=name)
        return org


def pull_through(*, records: CacheRecords, orgs: OrgDirectory, view: TagsAndManifests, store: BlobStore, upstream: Upstream,
                 pulls: GroupCommit, clock: Clock, fill_coordinator: FillCoordinator | None = None,
                 shared_tags: SharedTags | None = None, metrics: Metrics | None = None,
                 ledger: Ledger | None = None, limits: Limits = Limits(), ops: OpsLog | None = None,
                 referrers: ReferrersRead | None = None, usage: Callable[[str], int] | None = None) -> PullThrough:
    """`usage(org)`: the bytes an org's images hold as its quota counts them (the retention view), so
    that prefetches stay within an org's quota; without it only the prefetches under way are counted."""
    ledger = ledger or RecordsLedger(records, timeout=limits.record_timeout)
    metrics = metrics or NoMetrics()
    ops = ops or NoOpsLog()
    reads = BoundedReads(view, records.holds_blob, timeout=limits.read_timeout,
                         max_in_flight=limits.max_reads_in_flight, referrers=referrers)
    rate_limits = RateLimits()
    tags = TagLookup(reads, shared_tags, max_tags=limits.max_rows, row_seconds=limits.tag_row_seconds,
                     recent_seconds=limits.recent_tag_seconds)
    holdings = Holdings(limits.max_holdings)
    fills = BlobFills(store, upstream, NotingLedger(ledger, holdings), clock, fill_coordinator, metrics, ops,
                      prefetch_at_once=limits.prefetch_blobs, usage=usage)
    manifests = ManifestCache(reads=reads, tags=tags, content=ManifestBytes(store, limits.manifest_bytes),
                              upstream=upstream, ledger=ledger, clock=clock,
                              replicas=AcrossReplicas(fill_coordinator or InProcessOnly()),
                              rate_limits=rate_limits, max_entries=limits.max_rows,
                              row_seconds=limits.manifest_row_seconds,
                              prefetch=fills.prefetch_for if limits.prefetch_blobs > 0 else None)
    blobs = BlobCache(store=store, upstream=upstream, fills=fills, reads=reads, ledger=ledger, clock=clock,
                      holdings=holdings)
    referrers_cache = ReferrersCache(manifests=manifests, upstream=upstream, reads=reads, ledger=ledger, clock=clock,
                                     rate_limits=rate_limits, max_descriptors=limits.max_referrers,
                                     recent_seconds=limits.recent_tag_seconds)
    # The allow/deny lists sit inside the audit (a refusal is recorded as `denied`) and in front of
    # every cache, so a refused repository never reaches the upstream.
    audited = PullAudit(AllowedManifests(manifests), pulls, clock, limits.record_timeout,
                        referrers=AllowedReferrers(referrers_cache))
    return PullThrough(CountedManifests(audited, metrics, ops), CountedBlobs(AllowedBlobs(blobs), metrics, ops),
                       AllowedTags(TagList(upstream, reads)), rate_limits, orgs, tags, referrers_cache)


__all__ = ["BlobAnswer", "Client", "Limits", "ManifestAnswer", "PullThrough", "pull_through"]
