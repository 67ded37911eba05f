"""The blob cache: stored blobs answered from storage, cold ones joined to their fill, and a blob another
org brought in served only once this org's upstream confirms it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from cachetools import LRUCache

from application.bounded_reads import BoundedReads
from application.errors import BlobUnknown, UpstreamNotFound
from application.fills import BlobFills
from application.orgs import OrgConfig
from application.ports import BlobNotFound, BlobStore, Clock, Ledger, Upstream
from domain.names import Digest
from domain.pull import PullResult


@dataclass(frozen=True)
class BlobAnswer:
    digest: str
    size: int | None                                          # None: upstream sent no length
    result: PullResult
    open: Callable[[int, int | None], AsyncIterator[bytes]]   # bytes [start, end)
    path: str | None = None                                   # a published local file, if any
    redirect: str | None = None                               # a URL to send GET clients to (presigned S3)


async def no_body(start: int, end: int | None) -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


class Holdings:
    """(org, digest) pairs known to be held for that org, in-process: bounded, and re-read from the
    event store when pushed out."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._known: LRUCache[tuple[str, int, str], bool] = LRUCache(maxsize=max_entries)

    # `generation`: which org of that name (CacheOrg.Recreated); a new one holds nothing of the old one's.
    def note(self, org: str, digest: str, generation: int = 1) -> None:
        self._known[(org, generation, digest)] = True

    def knows(self, org: str, digest: str, generation: int = 1) -> bool:
        return self._known.get((org, generation, digest), False)

    def __len__(self) -> int:
        return len(self._known)


class NotingLedger:
    """What BlobFills reports to: the Ledger, plus noting that a blob recorded for an org is known held
    in-process (so its next pull costs no event-store read)."""

    def __init__(self, ledger: Ledger, holdings: Holdings) -> None:
        self._ledger = ledger
        self._holdings = holdings

    async def blob_cached(self, org: str, repository: str, digest: str, size: int, at: float,
                          generation: int = 1) -> None:
        await self._ledger.blob_cached(org, repository, digest, size, at, generation=generation)
        self._holdings.note(org, digest, generation)

    async def blob_corrupt(self, org: str, repository: str, digest: str, reason: str, at: float) -> None:
        await self._ledger.blob_corrupt(org, repository, digest, reason, at)


class BlobCache:
    def __init__(self, *, store: BlobStore, upstream: Upstream, fills: BlobFills, reads: BoundedReads,
                 ledger: Ledger, clock: Clock, holdings: Holdings) -> None:
        self._store, self._upstream, self.fills = store, upstream, fills
        self._reads, self._ledger, self._clock = reads, ledger, clock
        self._holdings = holdings

    def held(self) -> dict[str, int]:
        return {"holdings": len(self._holdings)}

    async def blob(self, org: OrgConfig, repository: str, digest: Digest) -> BlobAnswer:
        """A blob by digest: from storage when published, else joined to (or starting) its fill."""
        name = str(digest)
        while True:
            fill = self.fills.running(name)
            if fill is None:
                size = await self._store.stat(name)
                if size is not None:
                    await self._check_org_holds(org, repository, name, size)
                    return self._stored(name, size, await self._store.redirect_url(name), org, repository)
                fill = await self.fills.join(org.target(repository), name)
                if fill is None:
                    continue  # published while we looked: serve it from storage
            else:
                await fill.started.wait()
                if fill.org != org.name:
                    await self._check_org_holds(org, repository, name, fill.size)
                if fill.refused:
                    raise fill.error
            # A verified fill that storage is still publishing already holds the whole blob: a hit.
            return BlobAnswer(name, fill.size, PullResult.HIT if fill.verified else PullResult.MISS, fill.read)

    async def blob_head(self, org: OrgConfig, repository: str, digest: Digest) -> BlobAnswer:
        """HEAD of a blob: answered from storage, a running fill or an upstream HEAD; never starts a
        download (a client asking whether a blob exists should not cost a whole fetch)."""
        name = str(digest)
        if self.fills.running(name) is not None:
            return await self.blob(org, repository, digest)
        size = await self._store.stat(name)
        if size is not None:
            await self._check_org_holds(org, repository, name, size)
            return self._stored(name, size)
        try:
            size = await self._upstream.head_blob(org.target(repository), name)
        except UpstreamNotFound:
            raise BlobUnknown(f"blob {name} is unknown upstream", digest=name) from None
        return BlobAnswer(name, size, PullResult.MISS, no_body)

    async def _check_org_holds(self, org: OrgConfig, repository: str, digest: str, size: int | None) -> None:
        """Storage is shared by every org: a blob another org brought in is served to this one only
        once this org's upstream confirms it has the blob (a HEAD), which is then recorded for it."""
        if self._holdings.knows(org.name, digest, org.generation) or \
                self.fills.just_published_for(digest) == org.name:
            return
        if not await self._reads.holds_blob(org.name, digest, org.generation):
            target = org.target(repository)
            try:
                await self._upstream.head_blob(target, digest)
            except UpstreamNotFound:
                raise BlobUnknown(f"blob {digest} is unknown to {org.name}/{repository} upstream",
                                  digest=digest) from None
            if size is None:
                return  # known once the fill that brings it in has its size and records it
            # recorded under the upstream repository name, as a fill records it
            await self._ledger.blob_cached(org.name, target.repository, digest, size, self._clock.now(),
                                           generation=org.generation)
        self._holdings.note(org.name, digest, org.generation)

    def _stored(self, digest: str, size: int, redirect: str | None = None, org: OrgConfig | None = None,
                repository: str = "") -> BlobAnswer:
        def open_(start: int, end: int | None) -> AsyncIterator[bytes]:
            if org is None:
                return self._store.read(digest, start, end)
            return self._stored_or_fetched(org, repository, digest, start, end)
        return BlobAnswer(digest, size, PullResult.HIT, open_, self._store.local_path(digest), redirect)

    async def _stored_or_fetched(self, org: OrgConfig, repository: str, digest: str, start: int,
                                 end: int | None) -> AsyncIterator[bytes]:
        """The stored bytes; if the reaper deleted them between the stat and the open (an evicted
        image's blob past its grace period), the same bytes fetched again from upstream. Once open,
        a file outlives its deletion and an S3 GET under way completes: never a truncated body."""
        chunks = self._store.read(digest, start, end)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            return
        except BlobNotFound:
            while (fill := await self.fills.join(org.target(repository), digest)) is None:
                if await self._store.stat(digest) is not None:   # published again meanwhile
                    async for chunk in self._store.read(digest, start, end):
                        yield chunk
                    return
            async for chunk in fill.read(start, end):
                yield chunk
            return
        yield first
        async for chunk in chunks:
            yield chunk
