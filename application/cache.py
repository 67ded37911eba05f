"""The pull-through cache: answer manifest and blob pulls from storage, fetching from upstream on a miss."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio.to_thread

from application.errors import (BlobUnknown, ManifestUnknown, OrgUnknown, UpstreamBadContent, UpstreamError,
                                UpstreamNotFound, UpstreamRateLimited)
from application.ratelimits import RateLimits
from application.row_cache import RowCache
from application.stale import failure_kind, stale_reason
from application.fills import BlobFills
from application.manifest_cache import ManifestBytes
from application.orgs import OrgConfig, OrgDirectory
from application.ports import (BlobNotFound, BlobStore, CacheView, Clock, FillCoordinator, ManifestRow, Metrics,
                               SharedTags, TagRow, Upstream, UpstreamTarget)
from application.pull_audit import Client, PullAudit
from application.pulls import GroupCommit
from application.registry import Registry
from application.singleflight import AcrossReplicas, InProcessOnly, SingleFlight
from domain.manifest import InvalidManifest, read_manifest
from domain.names import Digest, is_digest
from domain.policy import Freshness, may_serve_stale, tag_freshness
from domain.pull import PullResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ManifestAnswer:
    content: bytes
    media_type: str
    digest: str
    result: PullResult
    warning: str | None = None


@dataclass(frozen=True)
class BlobAnswer:
    digest: str
    size: int | None                                          # None: upstream sent no length
    result: PullResult
    open: Callable[[int, int | None], AsyncIterator[bytes]]   # bytes [start, end)
    path: str | None = None                                   # a published local file, if any
    redirect: str | None = None                               # a URL to send GET clients to (presigned S3)


class PullThroughCache:
    def __init__(self, *, registry: Registry, orgs: OrgDirectory, view: CacheView, store: BlobStore,
                 upstream: Upstream, pulls: GroupCommit, clock: Clock,
                 fill_coordinator: FillCoordinator | None = None, shared_tags: SharedTags | None = None,
                 metrics: Metrics | None = None) -> None:
        self._registry = registry
        self._orgs = orgs
        self._view = view
        self._store = store
        self._upstream = upstream
        self._clock = clock
        self._audit = PullAudit(pulls, clock)
        self._manifests = ManifestBytes(store)
        self._flights: SingleFlight = SingleFlight()
        self._replicas = AcrossReplicas(fill_coordinator or InProcessOnly())
        self.fills = BlobFills(store, upstream, self._blob_cached, self._fill_failed, fill_coordinator, metrics)
        self._shared_tags = shared_tags  # None: one replica, nothing to share
        self.rate_limits = RateLimits()
        self._missing: dict[tuple[str, str, str], float] = {}  # negative cache: key -> remembered until
        # View rows held briefly in-process: the warm path then costs no query (on PostgreSQL a
        # blocking round trip on the event loop). Tag rows for a second; manifests never change.
        self._tag_rows: RowCache[tuple[str, str, str], TagRow] = RowCache(ttl=1.0)
        self._manifest_rows: RowCache[tuple[str, str, str], ManifestRow] = RowCache()
        self._org_blobs: RowCache[tuple[str, str], bool] = RowCache()  # (org, digest) this org holds
        # Our own tag writes, so this process reads them before the projection catches up.
        self._recent_tags: dict[tuple[str, str, str], TagRow] = {}

    def org(self, name: str) -> OrgConfig:
        org = self._orgs.get(name)
        if org is None:
            raise OrgUnknown(f"no cache organization named {name!r}", org=name)
        return org

    # -- manifests -------------------------------------------------------------------------------
    async def manifest(self, org_name: str, repository: str, reference: str, accept: list[str],
                       client: Client | None, record: bool = True) -> ManifestAnswer:
        """Answer a manifest pull; `record` is False for HEAD, which is not a pull.

        A pull that fails is recorded too (result `error`), unless its input was bad.
        """
        org = self.org(org_name)
        try:
            if is_digest(reference):
                answer = await self._by_digest(org, repository, str(Digest.parse(reference)), accept)
            else:
                answer = await self._by_tag(org, repository, reference, accept)
        except Exception as error:
            if record:
                await self._audit.failed(org.name, repository, reference, client, error)
            raise
        if record:
            await self._audit.served(org.name, repository, reference, client, answer.digest, answer.result,
                                     note=answer.warning or "")
        return answer

    async def _by_digest(self, org: OrgConfig, repository: str, digest: str, accept: list[str]) -> ManifestAnswer:
        key = (org.name, repository, digest)
        row = self._manifest_rows.get(key)
        if row is None:
            row = self._view.get_manifest(org.name, repository, digest)
            if row is not None:
                self._manifest_rows.put(key, row)  # immutable: a manifest by digest never changes
        if row is not None:
            content = await self._manifests.get(digest)
            if content is not None:
                return ManifestAnswer(content, row.media_type, digest, PullResult.HIT)
        # Never cached for this repository of this org (a pull by digest is immutable, so once
        # cached it is never checked upstream again).
        return await self._miss(org, repository, digest, accept, tag=None)

    async def _by_tag(self, org: OrgConfig, repository: str, tag: str, accept: list[str]) -> ManifestAnswer:
        row = await self._tag_row(org.name, repository, tag)
        if row is None:
            return await self._miss(org, repository, tag, accept, tag=tag)
        freshness = tag_freshness(row.checked_at, self._clock.now(), org.staleness_seconds, org.max_stale_seconds)
        if freshness is Freshness.FRESH:
            content = await self._manifests.get(row.digest)
            if content is not None:
                return ManifestAnswer(content, row.media_type, row.digest, PullResult.HIT)
            return await self._miss(org, repository, tag, accept, tag=tag)
        try:
            return await self._flights.run(("revalidate", org.name, repository, tag),
                                           lambda: self._revalidate(org, repository, tag, row, accept))
        except (UpstreamError, ManifestUnknown) as error:
            return await self._stale_or_raise(org, repository, tag, row, freshness, error)

    async def _stale_or_raise(self, org: OrgConfig, repository: str, tag: str, row: TagRow,
                              freshness: Freshness, error: Exception) -> ManifestAnswer:
        """Revalidation failed: serve the cached copy when the org's policy allows, else the error."""
        if not may_serve_stale(failure_kind(error), freshness, org.on_upstream_denied):
            raise error
        content = await self._manifests.get(row.digest)
        if content is None:
            raise error
        reason = stale_reason(error)
        log.warning("serving %s/%s:%s stale: %s", org.name, repository, tag, reason)
        return ManifestAnswer(content, row.media_type, row.digest, PullResult.STALE, warning=reason)

    async def _tag_row(self, org: str, repository: str, tag: str) -> TagRow | None:
        key = (org, repository, tag)
        recent = self._recent_tags.get(key)
        row = self._tag_rows.get(key)
        if row is None:
            row = self._view.get_tag(org, repository, tag)
            if row is not None:
                self._tag_rows.put(key, row)
        if recent is not None:
            if row is not None and row.checked_at >= recent.checked_at:
                del self._recent_tags[key]  # the projection has caught up
            else:
                row = recent
        # Another replica's write that the read model has not caught up with yet: the newest wins.
        shared = await self._shared_tags.get(org, repository, tag) if self._shared_tags else None
        return shared if shared is not None and (row is None or shared.checked_at > row.checked_at) else row

    async def _revalidate(self, org: OrgConfig, repository: str, tag: str, row: TagRow,
                          accept: list[str]) -> ManifestAnswer:
        """Past staleness: a HEAD upstream (not counted by Docker Hub) confirms or moves the tag."""
        try:
            head = await self._upstream.head_manifest(org.target(repository), tag, accept)
        except UpstreamNotFound:
            raise ManifestUnknown(f"tag {tag} of {org.name}/{repository} was deleted upstream",
                                  repository=repository, reference=tag) from None
        self.rate_limits.observe(org.name, head.rate_limit, self._clock.now())
        content = await self._manifests.get(row.digest) if head.digest == row.digest else None
        if content is None:
            if self.rate_limits.at_floor(org.name, org.rate_limit_floor):
                reading = self.rate_limits.latest(org.name)
                raise UpstreamRateLimited(f"upstream pulls remaining ({reading.remaining}) reached the org's floor "
                                          f"({org.rate_limit_floor}); the moved tag is not fetched")
            return await self._fetch(org, repository, tag, accept, tag=tag)
        await self._record_tag(org.name, repository, tag, row.digest, row.media_type)
        return ManifestAnswer(content, row.media_type, row.digest, PullResult.REVALIDATED)

    async def _miss(self, org: OrgConfig, repository: str, reference: str, accept: list[str],
                    tag: str | None) -> ManifestAnswer:
        """Not cached: fetch it once however many clients ask, remembering upstream 404s for a while."""
        key = (org.name, repository, reference)
        known_missing = self._missing.get(key)
        if known_missing is not None and known_missing > self._clock.now():
            raise ManifestUnknown(f"manifest {reference} of {org.name}/{repository} is unknown upstream "
                                  "(remembered)", repository=repository, reference=reference)
        try:
            return await self._flights.run(("manifest", *key), lambda: self._replicas.run(
                f"manifest:{org.name}/{repository}@{reference}",
                lambda: self._fetch(org, repository, reference, accept, tag=tag),
                lambda: self._fetched_by_another_replica(org, repository, reference, tag)))
        except ManifestUnknown:
            if org.negative_cache_seconds > 0:
                self._missing[key] = self._clock.now() + org.negative_cache_seconds
            raise

    async def _fetch(self, org: OrgConfig, repository: str, reference: str, accept: list[str],
                     tag: str | None) -> ManifestAnswer:
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
        await self._manifests.put(fetched.digest, fetched.content)
        self._missing.pop((org.name, repository, reference), None)
        now = self._clock.now()
        # The manifest and its tag in one transaction: one commit on the cold path, not two.
        await anyio.to_thread.run_sync(lambda: self._registry.record_manifest(
            org.name, repository, fetched.digest, content.media_type, len(fetched.content),
            content.blobs, content.children, now, tag=tag))
        # Read our own write: a pull by digest right after this one is a hit, not a second fetch
        # while the projection catches up (a client resolves a tag, then GETs it by digest).
        self._manifest_rows.put((org.name, repository, fetched.digest), ManifestRow(
            fetched.digest, content.media_type, len(fetched.content), list(content.blobs), list(content.children)))
        if tag is not None:
            await self._remember_tag(org.name, repository, tag, TagRow(fetched.digest, content.media_type, now))
        return ManifestAnswer(fetched.content, content.media_type, fetched.digest, PullResult.MISS)

    async def _fetched_by_another_replica(self, org: OrgConfig, repository: str, reference: str,
                                          tag: str | None) -> ManifestAnswer | None:
        """What the replica that held the fetch lock stored: the tag it shared, the bytes it stored.
        It fetched this very org/repository/reference, so serving its bytes here is a hit."""
        digest, media_type = reference, ""
        if tag is not None:
            shared = await self._shared_tags.get(org.name, repository, tag) if self._shared_tags else None
            if shared is None:
                return None
            digest, media_type = shared.digest, shared.media_type  # _tag_row reads it from there too
        content = await self._manifests.get(digest)
        if content is None:
            return None
        manifest = read_manifest(content, media_type)
        self._manifest_rows.put((org.name, repository, digest), ManifestRow(
            digest, manifest.media_type, len(content), list(manifest.blobs), list(manifest.children)))
        return ManifestAnswer(content, manifest.media_type, digest, PullResult.HIT)

    async def _record_tag(self, org: str, repository: str, tag: str, digest: str, media_type: str) -> None:
        now = self._clock.now()
        await anyio.to_thread.run_sync(
            lambda: self._registry.record_tag(org, repository, tag, digest, media_type, now))
        await self._remember_tag(org, repository, tag, TagRow(digest, media_type, now))

    async def _remember_tag(self, org: str, repository: str, tag: str, row: TagRow) -> None:
        """After our own write: this process reads it before the projection catches up."""
        self._recent_tags[(org, repository, tag)] = row
        self._tag_rows.forget((org, repository, tag))
        if self._shared_tags:  # replaces the entry: a moved tag is seen moved by every replica
            await self._shared_tags.put(org, repository, tag, row)

    # -- blobs -----------------------------------------------------------------------------------
    async def blob(self, org_name: str, repository: str, digest: str) -> BlobAnswer:
        """A blob by digest: from storage when published, else joined to (or starting) its fill."""
        org = self.org(org_name)
        digest = str(Digest.parse(digest))
        while True:
            fill = self.fills.running(digest)
            if fill is None:
                size = await self._store.stat(digest)
                if size is not None:
                    await self._check_org_holds(org, repository, digest, size)
                    return self._stored_blob(digest, size, await self._store.redirect_url(digest))
                fill = await self.fills.join(org.target(repository), digest)
                if fill is None:
                    continue  # published while we looked: serve it from storage
            else:
                await fill.started.wait()
                if fill.org != org.name:
                    await self._check_org_holds(org, repository, digest, fill.size)
                if fill.error is not None and fill.readable == 0:
                    raise fill.error
            # A verified fill that storage is still publishing already holds the whole blob: a hit.
            return BlobAnswer(digest, fill.size, PullResult.HIT if fill.verified else PullResult.MISS, fill.read)

    async def blob_head(self, org_name: str, repository: str, digest: str) -> BlobAnswer:
        """HEAD of a blob: answered from storage, a running fill or an upstream HEAD; never starts a
        download (a client asking whether a blob exists should not cost a whole fetch)."""
        org = self.org(org_name)
        digest = str(Digest.parse(digest))
        if self.fills.running(digest) is None:
            size = await self._store.stat(digest)
            if size is not None:
                await self._check_org_holds(org, repository, digest, size)
                return self._stored_blob(digest, size)
            try:
                size = await self._upstream.head_blob(org.target(repository), digest)
            except UpstreamNotFound:
                raise BlobUnknown(f"blob {digest} is unknown upstream", digest=digest) from None
            return BlobAnswer(digest, size, PullResult.MISS, self._no_body)
        return await self.blob(org_name, repository, digest)

    @staticmethod
    async def _no_body(start: int, end: int | None) -> AsyncIterator[bytes]:
        return
        yield b""  # an async generator that yields nothing

    async def _check_org_holds(self, org: OrgConfig, repository: str, digest: str, size: int | None) -> None:
        """Storage is shared by every org: a blob another org brought in is served to this one only
        once this org's upstream confirms it has the blob (a HEAD), which is then recorded for it."""
        key = (org.name, digest)
        if self._org_blobs.get(key) or self.fills.just_published_for(digest) == org.name:
            return
        if not await anyio.to_thread.run_sync(self._registry.holds_blob, org.name, digest):
            target = org.target(repository)
            try:
                await self._upstream.head_blob(target, digest)
            except UpstreamNotFound:
                raise BlobUnknown(f"blob {digest} is unknown to {org.name}/{repository} upstream",
                                  digest=digest) from None
            if size is None:
                return  # known once the fill that brings it in has its size and records it
            await self._blob_cached(target, digest, size)
        self._org_blobs.put(key, True)

    def _stored_blob(self, digest: str, size: int, redirect: str | None = None) -> BlobAnswer:
        return BlobAnswer(digest, size, PullResult.HIT, lambda start, end: self._store.read(digest, start, end),
                          self._store.local_path(digest), redirect)

    async def _fill_failed(self, target: UpstreamTarget, digest: str, error: Exception) -> None:
        if isinstance(error, UpstreamBadContent):
            now = self._clock.now()
            await anyio.to_thread.run_sync(lambda: self._registry.record_corruption(
                target.org, target.repository, digest, error.message, now))

    async def _blob_cached(self, target: UpstreamTarget, digest: str, size: int) -> None:
        now = self._clock.now()
        await anyio.to_thread.run_sync(
            lambda: self._registry.record_blob(target.org, target.repository, digest, size, now))
        self._org_blobs.put((target.org, digest), True)

    # -- tags ------------------------------------------------------------------------------------
    async def tags(self, org_name: str, repository: str) -> list[str]:
        """Upstream's tag list when it answers; the tags we hold when it does not."""
        org = self.org(org_name)
        try:
            return sorted(await self._upstream.list_tags(org.target(repository)))
        except UpstreamNotFound:
            cached = self._view.list_tags(org.name, repository)
            if not cached:
                raise
            return sorted(cached)
        except UpstreamError:
            cached = self._view.list_tags(org.name, repository)
            if cached:
                return sorted(cached)
            raise


__all__ = ["BlobAnswer", "Client", "ManifestAnswer", "PullThroughCache", "BlobNotFound"]
