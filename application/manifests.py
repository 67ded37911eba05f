"""The manifest cache: stored manifests answered by freshness, revalidated upstream, served stale by policy,
fetched once on a miss, and upstream 404s remembered a while (the negative cache)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TLRUCache

from application.bounded_reads import BoundedReads
from application.errors import (EventStoreUnavailable, ManifestUnknown, ReadModelUnavailable, UpstreamBadContent,
                                UpstreamError, UpstreamNotFound)
from application.manifest_bytes import ManifestBytes
from application.orgs import OrgConfig
from application.ports import Clock, Ledger, ManifestRow, TagRow, Upstream
from application.ratelimits import RateLimits
from application.singleflight import AcrossReplicas, SingleFlight
from application.stale import failure_kind, stale_reason
from application.held_rows import HeldRows
from application.tag_lookup import TagLookup
from domain.manifest import InvalidManifest, read_manifest
from domain.names import Digest, Reference
from domain.policy import Freshness, may_serve_stale, tag_freshness
from domain.pull import PullResult
from domain.referrers import referrer_of

log = logging.getLogger(__name__)
RepoKey = tuple[str, str, str]  # (org, repository, reference)


@dataclass(frozen=True)
class ManifestAnswer:
    content: bytes
    media_type: str
    digest: str
    result: PullResult
    warning: str | None = None
    not_kept: str | None = None   # why the cache will not keep this image (it is served whole all the same)


class ManifestCache:
    def __init__(self, *, reads: BoundedReads, tags: TagLookup, content: ManifestBytes, upstream: Upstream,
                 ledger: Ledger, clock: Clock, replicas: AcrossReplicas, rate_limits: RateLimits,
                 max_entries: int = 50_000, row_seconds: float = 30.0,
                 prefetch: Callable[[OrgConfig, str, list[str], dict[str, int]], None] | None = None) -> None:
        """`prefetch(org, repository, digests, sizes)`: told the blobs of an image manifest a client GETs
        cold (and the sizes it declares), which its client asks for next (BlobFills.prefetch starts the
        fills of those that fit at once)."""
        self._reads, self._tags, self._content = reads, tags, content
        self._prefetch = prefetch
        self._upstream, self._ledger, self._clock = upstream, ledger, clock
        self._replicas, self.rate_limits = replicas, rate_limits
        self._flights: SingleFlight = SingleFlight()
        # Manifests by digest never change: held until the LRU bound pushes them out.
        # Fresh for `row_seconds`, then asked of the view again (an evicted manifest stops answering
        # within that bound, shorter than the blob grace period); held longer for a database outage.
        self._rows: HeldRows[RepoKey, ManifestRow] = HeldRows(max_entries, ttl=row_seconds)
        # Upstream 404s, each remembered until its org's negative_cache_seconds run out; bounded, so a
        # client asking for a million made-up names cannot grow it without end.
        self._missing: TLRUCache[RepoKey, float] = TLRUCache(
            maxsize=max_entries, ttu=lambda _key, until, _now: until, timer=clock.now)

    def held(self) -> dict[str, int]:
        """How many entries each in-process cache holds now (each has a bound)."""
        return {"manifest_rows": len(self._rows), "missing": len(self._missing), **self._tags.held()}

    async def manifest(self, org: OrgConfig, repository: str, reference: Reference,
                       accept: list[str], prefetch: bool = False) -> ManifestAnswer:
        """`prefetch`: a GET (not a HEAD): an image manifest fetched for it has its blobs prefetched."""
        if isinstance(reference, Digest):
            return await self._by_digest(org, repository, str(reference), accept, prefetch)
        return await self._by_tag(org, repository, str(reference), accept, prefetch)

    async def _by_digest(self, org: OrgConfig, repository: str, digest: str, accept: list[str],
                         prefetch: bool = False) -> ManifestAnswer:
        key = (org.name, repository, digest)
        row = self._rows.fresh(key)
        if row is None:
            try:
                row = await self._reads.manifest(*key)
            except ReadModelUnavailable:
                row = self._rows.held(key)   # the database is down: what we held still answers
                if row is None:
                    raise
            if row is not None:
                self._rows.put(key, row)
        if row is not None:
            content = await self._content.get(digest)
            if content is not None:
                return ManifestAnswer(content, row.media_type, digest, PullResult.HIT)
        # Never cached for this repository of this org (a pull by digest is immutable, so once
        # cached it is never checked upstream again).
        return await self._miss(org, repository, digest, accept, tag=None, prefetch=prefetch)

    async def _by_tag(self, org: OrgConfig, repository: str, tag: str, accept: list[str],
                      prefetch: bool = False) -> ManifestAnswer:
        row = await self._tags.get(org.name, repository, tag)
        if row is None:
            return await self._miss(org, repository, tag, accept, tag=tag, prefetch=prefetch)
        freshness = tag_freshness(row.checked_at, self._clock.now(), org.staleness_seconds, org.max_stale_seconds)
        if freshness is Freshness.FRESH:
            content = await self._content.get(row.digest)
            if content is not None:
                return ManifestAnswer(content, row.media_type, row.digest, PullResult.HIT)
            return await self._miss(org, repository, tag, accept, tag=tag, prefetch=prefetch)
        try:
            return await self._flights.run(("revalidate", org.name, repository, tag),
                                           lambda: self._revalidate(org, repository, tag, row, accept, prefetch))
        except (UpstreamError, ManifestUnknown) as error:
            return await self._stale_or_raise(org, repository, tag, row, freshness, error)

    async def _stale_or_raise(self, org: OrgConfig, repository: str, tag: str, row: TagRow,
                              freshness: Freshness, error: Exception) -> ManifestAnswer:
        """Revalidation failed: serve the cached copy when the org's policy allows, else the error."""
        if not may_serve_stale(failure_kind(error), freshness, org.on_upstream_denied):
            raise error
        content = await self._content.get(row.digest)
        if content is None:
            raise error
        reason = stale_reason(error)
        log.warning("serving %s/%s:%s stale: %s", org.name, repository, tag, reason)
        return ManifestAnswer(content, row.media_type, row.digest, PullResult.STALE, warning=reason)

    async def _revalidate(self, org: OrgConfig, repository: str, tag: str, row: TagRow,
                          accept: list[str], prefetch: bool = False) -> ManifestAnswer:
        """Past staleness: a HEAD upstream (not counted by Docker Hub) confirms or moves the tag."""
        try:
            head = await self._upstream.head_manifest(org.target(repository), tag, accept)
        except UpstreamNotFound:
            raise ManifestUnknown(f"tag {tag} of {org.name}/{repository} was deleted upstream",
                                  repository=repository, reference=tag) from None
        self.rate_limits.observe(org.name, head.rate_limit, self._clock.now())
        content = await self._content.get(row.digest) if head.digest == row.digest else None
        if content is None:
            self.rate_limits.check_floor(org.name, org.rate_limit_floor)
            return await self._fetch(org, repository, tag, accept, tag=tag, prefetch=prefetch)
        now = self._clock.now()
        try:
            await self._ledger.tag_checked(org.name, repository, tag, row.digest, row.media_type, now)
        except EventStoreUnavailable as error:
            # Upstream confirmed the bytes we hold: serve them; this process remembers the check, and
            # the next one after the outage records it.
            log.warning("revalidated %s/%s:%s but could not record it: %s", org.name, repository, tag, error.message)
        await self._tags.remember(org.name, repository, tag, TagRow(row.digest, row.media_type, now))
        return ManifestAnswer(content, row.media_type, row.digest, PullResult.REVALIDATED)

    async def _miss(self, org: OrgConfig, repository: str, reference: str, accept: list[str],
                    tag: str | None, prefetch: bool = False) -> ManifestAnswer:
        """Not cached: fetch it once however many clients ask, remembering upstream 404s for a while."""
        key = (org.name, repository, reference)
        if key in self._missing:
            raise ManifestUnknown(f"manifest {reference} of {org.name}/{repository} is unknown upstream "
                                  "(remembered)", repository=repository, reference=reference)
        try:
            return await self._flights.run(("manifest", *key), lambda: self._replicas.run(
                f"manifest:{org.name}/{repository}@{reference}",
                # One fetch for every client asking: the first one's `prefetch` holds for all of them.
                lambda: self._fetch(org, repository, reference, accept, tag=tag, prefetch=prefetch),
                lambda: self._fetched_by_another_replica(org, repository, reference, tag)))
        except ManifestUnknown:
            if org.negative_cache_seconds > 0:
                self._missing[key] = self._clock.now() + org.negative_cache_seconds
            raise

    async def _fetch(self, org: OrgConfig, repository: str, reference: str, accept: list[str],
                     tag: str | None, prefetch: bool = False) -> ManifestAnswer:
        """A miss: fetch, verify, store, record; answer with the bytes in hand."""
        try:
            fetched = await self._upstream.get_manifest(org.target(repository), reference, accept)
        except UpstreamNotFound:
            raise ManifestUnknown(f"manifest {reference} of {org.name}/{repository} is unknown upstream",
                                  repository=repository, reference=reference) from None
        self.rate_limits.observe(org.name, fetched.rate_limit, self._clock.now())
        try:
            content = read_manifest(fetched.content, fetched.media_type)
        except InvalidManifest as error:
            raise UpstreamBadContent(f"upstream sent an invalid manifest: {error}") from None
        # Storing the bytes (a file fsync) and recording the manifest (an event commit) overlap: one
        # after the other, the two disk flushes were 6-8 ms of a 12-15 ms cold manifest (bench/README,
        # "One cold client, per phase"). Neither needs the other: an event whose bytes did not make it
        # (a crash between) reads as "not held", and the next pull fetches them again (_by_digest,
        # _by_tag); the bytes are held in memory either way.
        not_kept = _not_kept(org, len(fetched.content), content)
        if prefetch and self._prefetch is not None and content.blobs and not content.children and not not_kept:
            # The client asks for these next: their fills start now, not once the manifest is stored,
            # recorded and answered, the client has read it and asked (a few at a time).
            self._prefetch(org, repository, list(content.blobs), dict(content.sizes))
        stored = asyncio.ensure_future(self._content.put(fetched.digest, fetched.content))
        self._missing.pop((org.name, repository, reference), None)
        now = self._clock.now()
        try:
            # The manifest and its tag in one transaction: one commit on the cold path, not two.
            await self._ledger.manifest_cached(org.name, repository, fetched.digest, content.media_type,
                                               len(fetched.content), content.blobs, content.children, now,
                                               tag=tag, referrer=referrer_of(content), sizes=content.sizes)
        finally:
            await stored
        # Read our own write: a pull by digest right after this one is a hit, not a second fetch
        # while the projection catches up (a client resolves a tag, then GETs it by digest).
        self._rows.put((org.name, repository, fetched.digest), ManifestRow(
            fetched.digest, content.media_type, len(fetched.content), list(content.blobs), list(content.children)))
        if tag is not None:
            await self._tags.remember(org.name, repository, tag, TagRow(fetched.digest, content.media_type, now))
        return ManifestAnswer(fetched.content, content.media_type, fetched.digest, PullResult.MISS, not_kept=not_kept)

    async def _fetched_by_another_replica(self, org: OrgConfig, repository: str, reference: str,
                                          tag: str | None) -> ManifestAnswer | None:
        """What the replica that held the fetch lock stored: the tag it shared, the bytes it stored.
        It fetched this very org/repository/reference, so serving its bytes here is a hit."""
        digest, media_type = reference, ""
        if tag is not None:
            shared = await self._tags.shared(org.name, repository, tag)
            if shared is None:
                return None
            digest, media_type = shared.digest, shared.media_type  # TagLookup reads it from there too
        content = await self._content.get(digest)
        if content is None:
            return None
        manifest = read_manifest(content, media_type)
        self._rows.put((org.name, repository, digest), ManifestRow(
            digest, manifest.media_type, len(content), list(manifest.blobs), list(manifest.children)))
        return ManifestAnswer(content, manifest.media_type, digest, PullResult.HIT)


def _not_kept(org: OrgConfig, size: int, content) -> str | None:
    """An image whose declared bytes exceed the whole quota is streamed and then evicted at once."""
    if org.quota_bytes and not content.children:
        declared = size + sum(content.sizes.values())
        if declared > org.quota_bytes:
            return f"image of {declared} bytes is larger than the quota of {org.quota_bytes}: served, not kept"
    return None
