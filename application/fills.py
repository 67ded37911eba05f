"""Blob fills: one upstream fetch per cold blob, streamed to every waiting client while it is stored."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio.to_thread

from application.errors import BlobCorrupt, BlobTruncated, BlobUnknown, UpstreamBadContent, UpstreamNotFound
from application.metering import fill_failure
from application.ops_log import NoOpsLog, OpsLog
from application.ports import (BlobStorageUnavailable, BlobStore, Clock, FillCoordinator, FillLock, Ledger, Metrics,
                               NoMetrics, Spool, Upstream, UpstreamTarget)
from application.orgs import OrgConfig
from application.singleflight import InProcessOnly
from domain.names import Digest
from domain.prefetch import blobs_that_fit, quota_room, room_left

log = logging.getLogger(__name__)
# What a reader takes from the spool at once: a wake-up step's worth, so a reader woken at a step
# sends it in one piece (fewer trips through the response layers than 256 KiB reads; one chunk per
# reader in memory, as before).
READ_CHUNK = 1024 * 1024
FIRST_STEP = 64 * 1024
ADVANCE_STEP = 1024 * 1024
# Fills copied in worker threads at once; the upstream gives a blob a blocking body only while one is free.
COPY_THREADS = 16
# How long a prefetch may take to learn the room it has (statvfs, the quota usage read): past that, a
# hung filesystem or database skips the prefetch (the client's GETs fill as usual) instead of holding
# every later prefetch behind it.
PLANNING_SECONDS = 1.0


PassThrough = Callable[[int, "int | None", Any], AsyncIterator[bytes]]


class NoSpool:
    """The spool of a fill whose spool file could not even be created (no room, no fds): the first
    append fails, so the fill's readers are served from upstream."""

    def __init__(self, error: BlobStorageUnavailable) -> None:
        self._error = error

    async def append(self, chunk: bytes) -> None:
        raise self._error

    def read_at(self, offset: int, size: int) -> bytes:
        raise self._error

    async def discard(self) -> None:
        pass

    def close(self) -> None:
        pass


class Fill:
    """One blob being fetched into a spool. Readers follow `readable`, which never reaches the blob's
    last bytes before the digest is verified: a corrupt blob can never be received complete.

    When storage cannot take the blob (full, or failing), the fill stops at once and its spool file is
    removed; each reader drains the bytes already readable from the still-open file, then goes on from
    upstream on its own (`pass_through`), checked against `hashed` so that it never sends a wrong
    byte. Chosen over keeping the unread bytes in memory: nothing is buffered beyond one chunk per
    reader, a slow reader holds back no one, and a reader arriving later needs no bytes that are gone.
    """

    def __init__(self, digest: str, spool: Spool, pass_through: PassThrough | None = None) -> None:
        self.digest = digest
        self.spool = spool
        self.size: int | None = None
        self.readable = 0
        self.hashed: Any = None  # the digest's hash object over bytes [0, readable)
        self.done = False
        self.verified = False  # every byte is in the spool and matched the digest
        self.org = ""          # the org whose pull started the fill
        self.error: Exception | None = None
        self.stored: BlobStore | None = None     # set when another replica published the blob first
        self.published: BlobStore | None = None  # set once this fill published the blob
        self.started = asyncio.Event()
        self.ended = asyncio.Event()   # the fill's task is over: published, failed or cancelled
        self._changed = asyncio.Event()
        self._pass_through = pass_through
        self._readers = 0
        self._spool_open = True

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def unstored(self) -> bool:
        """Storage could not keep the blob: readers are served past `readable` straight from upstream."""
        return isinstance(self.error, BlobStorageUnavailable) and self._pass_through is not None

    @property
    def refused(self) -> bool:
        """Failed before a byte was readable, for a reason no reader can get around."""
        return self.error is not None and self.readable == 0 and not self.unstored

    def advance(self, readable: int, hashed: Any = None) -> None:
        self.readable, self.hashed = readable, hashed
        self._notify()

    def advance_to(self, readable: int, hashed: Any) -> None:
        """advance(), unless as many bytes are readable already."""
        if readable > self.readable:
            self.advance(readable, hashed)

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

    def release_spool_if_idle(self) -> None:
        """Close the spool (its read fd: the space of a removed file comes back only then) once the
        fill has ended and no reader is reading it. A reader starting later reads the published blob,
        goes on from upstream, or gets the fill's error, never the closed file."""
        if self._spool_open and self._readers == 0 and (self.done or self.error is not None):
            self._spool_open = False
            self.spool.close()

    async def read(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes [start, end) as they arrive; raises the fill's error if it fails before `end`."""
        if self.stored is not None:
            async for chunk in self.stored.read(self.digest, start, end):
                yield chunk
            return
        self._readers += 1
        try:
            offset = start
            while end is None or offset < end:
                if offset < self.readable and self._spool_open:
                    limit = self.readable if end is None else min(end, self.readable)
                    size = min(READ_CHUNK, limit - offset)
                    chunk = self.spool.read_at(offset, size)
                    offset += len(chunk)
                    yield chunk
                    continue
                if self.done and offset >= self.readable:
                    return
                if self.published is not None:  # the spool was released: the store has every byte
                    async for chunk in self.published.read(self.digest, offset, end):
                        yield chunk
                    return
                if self.unstored and self._pass_through is not None:
                    # Bytes already sent came from the spool: the upstream stream must agree on them.
                    resume = self.hashed if offset > start else None
                    async for chunk in self._pass_through(offset, end, resume):
                        yield chunk
                    return
                if self.error is not None:
                    raise self.error
                if self.done:
                    return
                await self._changed.wait()
        finally:
            self._readers -= 1
            self.release_spool_if_idle()


class _Copy:
    """One fill's bytes as they arrive: hashed, counted, and when to wake its readers. Only bytes
    that cannot be the blob's last become readable before the digest check: with a declared length,
    every byte short of it (this chunk included, so a client's first bytes do not wait for the next
    chunk); without one, all but this chunk, as the body may end after it. Readers are woken at
    steps, not per network chunk (waking them costs more than it buys): at 64 KiB, doubling up to
    1 MiB, then every MiB. Fixed offsets: a stalled upstream leaves at most one step unread, however
    the chunks fell. The hash so far goes with them: a reader that must go on from upstream checks it."""

    def __init__(self, fill: Fill, hasher: Any) -> None:
        self.fill = fill
        self.hasher = hasher
        self.before_last = hasher.copy()   # the hash of every byte but the last chunk's
        self.written = self.last = 0
        self._step_at = FIRST_STEP

    def take(self, chunk: bytes) -> tuple[int, Any] | None:
        """Hash `chunk`; (readable, hash) to advance the fill to once it is in the spool, else None."""
        if not chunk:
            return None
        self.before_last = self.hasher.copy()
        self.hasher.update(chunk)
        self.written += len(chunk)
        self.last = len(chunk)
        size = self.fill.size
        if size is not None and self.written < size:
            sure, sure_hash = self.written, self.hasher
        else:
            sure, sure_hash = self.written - self.last, self.before_last
        if sure < self._step_at:
            return None
        while self._step_at <= sure:
            self._step_at = self._step_at * 2 if self._step_at < ADVANCE_STEP else self._step_at + ADVANCE_STEP
        return sure, sure_hash.copy()


def blocking_chunks(blob: Any) -> Iterator[bytes] | None:
    """The blob's body as a blocking iterator for a worker thread, if its upstream offers one."""
    offer = getattr(blob, "blocking_chunks", None)
    return offer() if offer is not None else None


_threads: ThreadPoolExecutor | None = None


def _copy_threads() -> ThreadPoolExecutor:
    global _threads
    if _threads is None:
        _threads = ThreadPoolExecutor(max_workers=COPY_THREADS, thread_name_prefix="fill-copy")
    return _threads


class BlobFills:
    """Keeps at most one running fill per digest in this process, and (through the coordinator)
    one per cluster of replicas sharing blob storage. What a fill brings in (or finds corrupt) is
    reported to the ledger."""

    def __init__(self, store: BlobStore, upstream: Upstream, ledger: Ledger, clock: Clock,
                 coordinator: FillCoordinator | None = None, metrics: Metrics | None = None,
                 ops: OpsLog | None = None, prefetch_at_once: int = 0,
                 usage: Callable[[str], int] | None = None) -> None:
        """`prefetch_at_once`: how many fills prefetch() runs at a time in this process (0: none);
        `usage(org)`: the bytes an org's images hold as its quota counts them (a view read, run in a
        thread), so a prefetch stays within the org's quota."""
        self._coordinator = coordinator or InProcessOnly()
        self._ops = ops or NoOpsLog()
        self._metrics = metrics or NoMetrics()
        self._store = store
        self._upstream = upstream
        self._ledger = ledger
        self._clock = clock
        self._fills: dict[str, Fill] = {}
        self._tasks: set[asyncio.Task] = set()
        self._prefetch_slots = asyncio.Semaphore(prefetch_at_once) if prefetch_at_once > 0 else None
        self._usage = usage
        # Prefetches under way: digest -> (org, declared size), counted against the room left until they end.
        self._prefetching: dict[str, tuple[str, int]] = {}
        self._planning = asyncio.Lock()   # one prefetch weighs the room at a time, so two never share it

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
            try:
                spool: Spool = self._store.new_spool(digest)
            except BlobStorageUnavailable as error:
                spool = NoSpool(error)
            fill = Fill(digest, spool, lambda start, end, resume: self._pass_through(target, digest, start, end, resume))
            fill.org = target.org
            self._fills[digest] = fill
            task = asyncio.create_task(self._run(fill, target), name=f"fill {digest[:19]}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await fill.started.wait()
        if fill.stored is not None:
            return None
        if fill.refused:
            raise fill.error
        return fill

    def prefetch(self, target: UpstreamTarget, digests: list[str], sizes: dict[str, int] | None = None,
                 quota_bytes: int = 0) -> None:
        """Start fetching `digests` (an image's blobs, its client asks for them next) without waiting
        for the client: fills exactly like those a request starts (one per digest, joined by the
        requests that come, verified before published), at most `prefetch_at_once` at a time; a blob
        stored or being fetched already is left alone. A fill that fails is the next request's to retry.

        Only what fits is prefetched (`sizes`: what the manifest declares): free space stays above
        [storage] low_free_bytes, counting what the fills under way have still to write, and an org
        with a quota (`quota_bytes`) is not taken past it. Started all at once regardless, three 20 MiB
        layers ran a 40 MiB disk out of room (every one of them failed, and the disk once ended
        `unavailable`) where the client's own GETs leave it `degraded` (tests/integration/test_full_disk.py).
        What is not prefetched is filled when the client asks."""
        if self._prefetch_slots is None:
            return
        wanted = [digest for digest in dict.fromkeys(digests)
                  if self.running(digest) is None and digest not in self._prefetching]
        if wanted:
            self._spawn(self._prefetch_within_room(target, wanted, sizes or {}, quota_bytes),
                        f"prefetch {target.repository}")

    def prefetch_for(self, org: OrgConfig, repository: str, digests: list[str],
                     sizes: dict[str, int] | None = None) -> None:
        """prefetch() for `repository` of `org` (the ManifestCache's prefetch hook)."""
        self.prefetch(org.target(repository), digests, sizes, org.quota_bytes)

    def _spawn(self, work, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prefetch_within_room(self, target: UpstreamTarget, digests: list[str], sizes: dict[str, int],
                                    quota_bytes: int) -> None:
        async with self._planning:
            try:
                async with asyncio.timeout(PLANNING_SECONDS):
                    room = room_left(await self._disk_room(), await self._quota_room(target.org, quota_bytes))
                    if room is not None and sum(sizes.get(digest, room + 1) for digest in digests) > room:
                        # Not all fit: a blob stored already (a base layer another image brought) needs no
                        # fill and takes no room. Asked only then: on S3 each is a HEAD, and join() asks again.
                        stored = await asyncio.gather(*(self._store.stat(digest) for digest in digests))
                        digests = [digest for digest, size in zip(digests, stored) if size is None]
            except Exception as error:   # no room known, no prefetch: the client's GETs fill as usual
                log.info("prefetch for %s skipped: %s", target.repository, repr(error))
                return
            chosen = [digest for digest in blobs_that_fit(digests, sizes, room)
                      if self.running(digest) is None and digest not in self._prefetching]
            for digest in chosen:
                self._prefetching[digest] = (target.org, sizes.get(digest, 0))
                self._spawn(self._prefetched(target, digest), f"prefetch {digest[:19]}")
        if len(chosen) < len(digests):
            log.info("prefetch for %s: %d of %d blobs fit in the %s bytes left above low_free_bytes or the "
                     "quota; the others are filled when asked", target.repository, len(chosen), len(digests), room)

    async def _disk_room(self) -> int | None:
        """What the store may still take above its low watermark, less what the fills under way (and the
        prefetches not started yet) have still to write: statvfs counts only what is written already."""
        room = await self._store.room()
        if room is None:
            return None
        coming = {digest: size for digest, (_, size) in self._prefetching.items()}
        for digest, fill in self._fills.items():
            expected = fill.size if fill.size is not None else coming.get(digest, 0)
            coming[digest] = 0 if fill.done or fill.error is not None else max(0, expected - fill.readable)
        return room - sum(coming.values())

    async def _quota_room(self, org: str, quota_bytes: int) -> int | None:
        if not quota_bytes:
            return None
        usage = await anyio.to_thread.run_sync(self._usage, org, abandon_on_cancel=True) if self._usage else 0
        reserved = sum(size for owner, size in self._prefetching.values() if owner == org)
        return quota_room(quota_bytes, usage, reserved)

    async def _prefetched(self, target: UpstreamTarget, digest: str) -> None:
        assert self._prefetch_slots is not None
        try:
            async with self._prefetch_slots:
                try:
                    fill = await self.join(target, digest)
                except Exception as error:   # the fill logged why; a client asking gets the error from a new fill
                    log.debug("prefetch of %s failed: %s", digest, error)
                    return
                if fill is not None:
                    await fill.ended.wait()
        finally:
            self._prefetching.pop(digest, None)

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
        except BlobStorageUnavailable as error:
            log.warning("fill %s: storage cannot keep it (%s); its clients are served straight from upstream",
                        fill.digest, error)
            fill.fail(error)
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
            fill.release_spool_if_idle()
            if self._fills.get(fill.digest) is fill:
                del self._fills[fill.digest]
            fill.ended.set()

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
        started_at = self._clock.now()
        start = time.perf_counter()   # a duration: monotonic, not the Clock port's time of day
        try:
            stored = await self._fetch(fill, target)
        except BaseException as error:  # a cancelled fill is counted too, so started = completed + failed
            self._metrics.fill_failed(target.org, fill_failure(error))
            raise
        if stored:
            self._metrics.fill_completed(target.org, time.perf_counter() - start)
            self._ops.fill_finished(target, fill.digest, fill.size or 0, self._clock.now() - started_at)
        else:
            self._metrics.fill_failed(target.org, fill_failure(fill.error or BlobStorageUnavailable()))

    async def _fetch(self, fill: Fill, target: UpstreamTarget) -> bool:
        """Fetch, verify and publish; False when the blob was verified but storage could not publish it
        (its readers then finish from the spool, which holds every byte)."""
        expected = Digest.parse(fill.digest)
        spool = fill.spool
        blob = await self._upstream.open_blob(target, fill.digest)
        published = False
        flushing: asyncio.Future | None = None   # the copy thread flushing the spool to disk, if it does
        try:
            fill.size = blob.size
            self._ops.fill_started(target, fill.digest, blob.size)
            fill.started.set()
            copy = _Copy(fill, expected.hasher())
            chunks = blocking_chunks(blob)
            write = getattr(spool, "append_blocking", None)
            if chunks is not None and write is not None:
                flushing = await self._copy_in_thread(copy, chunks, write, getattr(spool, "flush_blocking", None))
            else:
                async for chunk in blob:
                    step = copy.take(chunk)
                    if chunk:
                        await spool.append(chunk)
                    if step is not None:
                        fill.advance(*step)
            written, last, hasher, before_last = copy.written, copy.last, copy.hasher, copy.before_last
            # All but the last chunk go out while the length and the digest are checked.
            fill.advance_to(written - last, before_last)
            if fill.size is not None and written != fill.size:
                raise BlobTruncated(f"upstream sent {written} of {fill.size} bytes of {fill.digest}")
            if not expected.matches(hasher.hexdigest()):
                raise BlobCorrupt(f"upstream bytes do not match digest {fill.digest}", digest=fill.digest)
            fill.size = written
            fill.verified = True
            # Verified: every byte goes to the readers now, while the blob is flushed and published (fsync
            # and rename, or the S3 upload's completion). Only verified bytes are released, only a flushed
            # blob is published, and one that cannot be is still served whole from the spool. Released
            # once published instead, a client's last bytes waited for the disk: with every fill of a cold
            # pull flushing at once, 20-60 ms on the loaded bench machine (bench/results/2026-11-30-cold-s7.md).
            fill.advance(written, hasher)
            try:
                if flushing is not None:
                    await asyncio.shield(flushing)   # cancelled meanwhile: the finally below waits for it
                await self._store.publish(fill.digest, spool)
            except BlobStorageUnavailable as error:
                log.warning("fill %s: storage cannot keep it (%s); its clients are served from the spool",
                            fill.digest, error)
                fill.error = error  # not published: a reader arriving after the spool is released goes upstream
                fill.finish(written)
                return False
            published = True
            fill.published = self._store
            fill.finish(written)
            await self._ledger.blob_cached(target.org, target.repository, fill.digest, written, self._clock.now(),
                                           generation=target.generation)
            return True
        finally:
            if flushing is not None and not flushing.done():
                await asyncio.wait([flushing])   # the thread lets go of the spool before it is discarded
            await blob.aclose()
            if not published:
                await spool.discard()

    @staticmethod
    async def _copy_in_thread(copy: _Copy, chunks: Iterator[bytes], write: Callable[[bytes], None],
                              flush: Callable[[], None] | None) -> asyncio.Future:
        """The body's bytes read, hashed and written to the spool in one worker thread; the loop is woken
        only at the readers' steps. On one event loop each upstream chunk (at most 256 KiB a socket
        read) crossed anyio, h11, httpcore, httpx and the fill on its own, and its hashing and spool
        write held the loop too: for a 24 MiB cold pull, most of the loop's time
        (bench/results/2026-11-30-cold-s7.md). In the thread, socket reads, sha256 and file writes
        run without the GIL. Returns once the body is in the spool, with the thread's future: the
        spool is flushed to disk there next, when the spool can (`flush`), so publishing waits for no
        other thread. Cancelled, the copy stops at its next chunk and is waited for: the thread never
        writes to a spool the fill has discarded."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        copied = loop.create_future()   # the whole body is in the spool (its flush may still run)

        def body_copied() -> None:
            if not copied.done():
                copied.set_result(None)

        def run() -> None:
            for chunk in chunks:
                if stop.is_set():
                    return
                step = copy.take(chunk)
                if chunk:
                    write(chunk)
                if step is not None:
                    loop.call_soon_threadsafe(copy.fill.advance, *step)
            loop.call_soon_threadsafe(body_copied)
            if flush is not None:
                flush()

        future = loop.run_in_executor(_copy_threads(), run)
        try:
            await asyncio.wait([copied, future], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            stop.set()
            await asyncio.wait([future])  # until the thread has let go of the spool (at most a read timeout)
            raise
        if not copied.done():   # the thread ended before the body did: its error
            copied.cancel()
            future.result()
            raise RuntimeError("the copy thread stopped before the end of the body")   # only a stop does that
        return future

    async def _pass_through(self, target: UpstreamTarget, digest: str, start: int, end: int | None,
                            resume: Any) -> AsyncIterator[bytes]:
        """Bytes [start, end) of `digest` straight from upstream, kept nowhere: what a reader of a fill
        that storage could not keep gets past the spool. The Upstream port has no ranges, so the blob
        comes from its first byte and is hashed whole; as in a fill, the last bytes are held back until
        the digest matches. `resume`, when the reader already sent bytes up to `start` from the spool,
        is the fill's hash of [0, start): this stream's must equal it, or those bytes were not the blob's.
        At most one chunk per reader is held in memory."""
        log.info("serving %s from byte %d straight from upstream: storage could not keep it", digest, start)
        expected = Digest.parse(digest)
        blob = await self._upstream.open_blob(target, digest)
        try:
            hasher = expected.hasher()
            position = 0
            held = b""  # the latest bytes for the client: sent when more arrive, or once the digest matches
            agreed = resume is None
            async for chunk in blob:
                if not chunk:
                    continue
                if resume is not None and position <= start < position + len(chunk):
                    hasher.update(chunk[:start - position])
                    if hasher.hexdigest() != resume.hexdigest():
                        raise BlobCorrupt(f"upstream sent other bytes of {digest} the second time", digest=digest)
                    agreed = True
                    hasher.update(chunk[start - position:])
                else:
                    hasher.update(chunk)
                wanted = chunk[max(0, start - position):None if end is None else max(0, end - position)]
                position += len(chunk)
                if wanted:
                    if held:
                        yield held
                    held = wanted
            if blob.size is not None and position != blob.size:
                raise BlobTruncated(f"upstream sent {position} of {blob.size} bytes of {digest}")
            if not agreed or not expected.matches(hasher.hexdigest()):
                raise BlobCorrupt(f"upstream bytes do not match digest {digest}", digest=digest)
            if held:
                yield held
        finally:
            await blob.aclose()
