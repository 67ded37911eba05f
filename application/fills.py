"""Blob fills: one upstream fetch per cold blob, streamed to every waiting client while it is stored."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from application.errors import BlobCorrupt, BlobTruncated, BlobUnknown, UpstreamBadContent, UpstreamNotFound
from application.metering import fill_failure
from application.ports import (BlobStore, Clock, FillCoordinator, FillLock, Ledger, Metrics, NoMetrics, Spool, Upstream,
                               UpstreamTarget)
from application.singleflight import InProcessOnly
from domain.names import Digest

log = logging.getLogger(__name__)
READ_CHUNK = 256 * 1024
ADVANCE_STEP = 1024 * 1024


class Fill:
    """One blob being fetched into a spool. Readers follow `readable`, which trails `written` by the
    last chunk until the digest is verified: a corrupt blob can never be received complete."""

    def __init__(self, digest: str, spool: Spool) -> None:
        self.digest = digest
        self.spool = spool
        self.size: int | None = None
        self.readable = 0
        self.done = False
        self.verified = False  # every byte is in the spool and matched the digest
        self.org = ""          # the org whose pull started the fill
        self.error: Exception | None = None
        self.stored: BlobStore | None = None  # set when another replica published the blob first
        self.started = asyncio.Event()
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def advance(self, readable: int) -> None:
        self.readable = readable
        self._notify()

    def finish(self, readable: int) -> None:
        self.readable, self.done = readable, True
        self.started.set()
        self._notify()

    def serve_stored(self, store: BlobStore, size: int) -> None:
        """Another replica fetched and published the blob: readers get it from shared storage."""
        self.stored, self.size = store, size
        self.finish(0)

    def fail(self, error: Exception) -> None:
        self.error = error
        self.started.set()
        self._notify()

    async def read(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes [start, end) as they arrive; raises the fill's error if it fails before `end`."""
        if self.stored is not None:
            async for chunk in self.stored.read(self.digest, start, end):
                yield chunk
            return
        offset = start
        while end is None or offset < end:
            if offset < self.readable:
                limit = self.readable if end is None else min(end, self.readable)
                size = min(READ_CHUNK, limit - offset)
                chunk = self.spool.read_at(offset, size)
                offset += len(chunk)
                yield chunk
                continue
            if self.error is not None:
                raise self.error
            if self.done:
                return
            await self._changed.wait()


class BlobFills:
    """Keeps at most one running fill per digest in this process, and (through the coordinator)
    one per cluster of replicas sharing blob storage. What a fill brings in (or finds corrupt) is
    reported to the ledger."""

    def __init__(self, store: BlobStore, upstream: Upstream, ledger: Ledger, clock: Clock,
                 coordinator: FillCoordinator | None = None, metrics: Metrics | None = None) -> None:
        self._coordinator = coordinator or InProcessOnly()
        self._metrics = metrics or NoMetrics()
        self._store = store
        self._upstream = upstream
        self._ledger = ledger
        self._clock = clock
        self._fills: dict[str, Fill] = {}
        self._tasks: set[asyncio.Task] = set()

    def running(self, digest: str) -> Fill | None:
        fill = self._fills.get(digest)
        # a done fill is published (read storage); a failed one is retried by a new fill
        return None if fill is None or fill.done or fill.error is not None else fill

    def just_published_for(self, digest: str) -> str | None:
        """The org of a fill that has published `digest` and is still recording it, else None."""
        fill = self._fills.get(digest)
        return fill.org if fill is not None and fill.done and fill.error is None else None

    async def join(self, target: UpstreamTarget, digest: str) -> Fill | None:
        """The running fill of `digest`, starting one if needed; None if the blob got published meanwhile."""
        fill = self.running(digest)
        if fill is None:
            if await self._store.stat(digest) is not None:
                return None
            fill = self.running(digest)  # another request may have started one during the await
        if fill is None:
            fill = Fill(digest, self._store.new_spool(digest))
            fill.org = target.org
            self._fills[digest] = fill
            task = asyncio.create_task(self._run(fill, target), name=f"fill {digest[:19]}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await fill.started.wait()
        if fill.stored is not None:
            return None
        if fill.error is not None and fill.readable == 0:
            raise fill.error
        return fill

    async def _run(self, fill: Fill, target: UpstreamTarget) -> None:
        try:
            lock = await self._claim(fill)
            if lock is None:
                return
            try:
                await self._counted_fetch(fill, target)
            finally:
                await lock.release()
        except UpstreamNotFound as error:
            fill.fail(BlobUnknown(f"blob {fill.digest} is unknown upstream", digest=fill.digest))
            log.info("fill %s: %s", fill.digest, error.message)
        except Exception as error:  # every failure reaches the readers; the fill never dies silently
            log.warning("fill %s failed: %s", fill.digest, error)
            if isinstance(error, UpstreamBadContent):
                try:  # recorded before the readers learn of it, so the audit trail never lags the client
                    await self._ledger.blob_corrupt(target.org, target.repository, fill.digest, error.message,
                                                    self._clock.now())
                except Exception:
                    log.exception("recording the failed fill of %s failed", fill.digest)
            fill.fail(error)
        finally:
            if fill.stored is not None or not fill.done:  # unless published from it, no spool stays behind
                await fill.spool.discard()
            if self._fills.get(fill.digest) is fill:
                del self._fills[fill.digest]

    async def _claim(self, fill: Fill) -> FillLock | None:
        """The cluster-wide lock to fetch fill.digest; None once another replica has published it."""
        while True:
            lock = await self._coordinator.claim(fill.digest)
            if lock is None:
                released = await self._coordinator.wait_released(fill.digest)
            # Also after a successful claim: the previous holder publishes just before releasing.
            size = await self._store.stat(fill.digest)
            if size is not None:
                if lock is not None:
                    await lock.release()
                fill.serve_stored(self._store, size)
                return None
            if lock is not None:
                return lock
            if not released:
                # Slower, not wrong: the other replica may still be fetching, but we stop waiting.
                log.warning("fill %s: the replica fetching it did not finish in time; fetching it here too",
                            fill.digest)
                return InProcessOnly()
            # Released with nothing published: the holder failed or died; take over.

    async def _counted_fetch(self, fill: Fill, target: UpstreamTarget) -> None:
        """_fetch, counted: every fill started here ends counted once, as completed or as failed (and why)."""
        self._metrics.fill_started(target.org)
        try:
            await self._fetch(fill, target)
        except BaseException as error:  # a cancelled fill is counted too, so started = completed + failed
            self._metrics.fill_failed(target.org, fill_failure(error))
            raise
        self._metrics.fill_completed(target.org)

    async def _fetch(self, fill: Fill, target: UpstreamTarget) -> None:
        expected = Digest.parse(fill.digest)
        spool = fill.spool
        blob = await self._upstream.open_blob(target, fill.digest)
        published = False
        try:
            fill.size = blob.size
            fill.started.set()
            hasher = expected.hasher()
            written = 0
            async for chunk in blob:
                if not chunk:
                    continue
                hasher.update(chunk)
                await spool.append(chunk)
                # The previous chunks become readable; this one waits for the digest check. Readers
                # are woken per ADVANCE_STEP, not per network chunk: waking them costs more than it buys.
                if written - fill.readable >= ADVANCE_STEP:
                    fill.advance(written)
                written += len(chunk)
            if fill.size is not None and written != fill.size:
                raise BlobTruncated(f"upstream sent {written} of {fill.size} bytes of {fill.digest}")
            if not expected.matches(hasher.hexdigest()):
                raise BlobCorrupt(f"upstream bytes do not match digest {fill.digest}", digest=fill.digest)
            fill.size = written
            fill.verified = True
            # The last bytes are released only once the blob is published: a client that received a
            # whole blob can rely on the cache holding it (and on every replica finding it).
            await self._store.publish(fill.digest, spool)
            published = True
            fill.finish(written)
            await self._ledger.blob_cached(target.org, target.repository, fill.digest, written, self._clock.now())
        finally:
            await blob.aclose()
            if not published:
                await spool.discard()
