"""A fill whose upstream blob offers a blocking body and whose spool a blocking append (the HTTP upstream
and the filesystem store do): its bytes are read, hashed, written and flushed in a worker thread, with
the same guarantees as on the event loop — readable as they arrive, the last bytes only once verified
and published, and a cancelled fill's thread gone before its spool is."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading

import pytest

from application.errors import BlobCorrupt
from application.fills import FIRST_STEP, BlobFills
from application.ports import UpstreamTarget
from infra.storage.filesystem import FilesystemBlobStore
from tests.unit.fakes import FakeClock, RecordingLedger

TARGET = UpstreamTarget("hub", "http://up.example", "library/alpine")
HALF = 2 * FIRST_STEP
DATA = os.urandom(2 * HALF)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


class BlockingBlob:
    """Two chunks from a worker thread; the second only once `more` is set (a threading.Event)."""

    def __init__(self, data: bytes) -> None:
        self.size = len(data)
        self.data = data
        self.more = threading.Event()
        self.threads: set[int] = set()
        self.chunks_given = 0
        self.closed = False

    def blocking_chunks(self):
        self.threads.add(threading.get_ident())
        yield self.data[:HALF]
        self.chunks_given += 1
        self.more.wait(10)
        yield self.data[HALF:]
        self.chunks_given += 1

    def __aiter__(self):
        raise AssertionError("a blob with a blocking body is copied in a thread, never iterated on the loop")

    async def aclose(self) -> None:
        self.closed = True


class BlockingUpstream:
    def __init__(self, data: bytes) -> None:
        self.blob = BlockingBlob(data)

    async def open_blob(self, target: UpstreamTarget, digest: str) -> BlockingBlob:
        return self.blob


async def wait_until(condition, seconds: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def spool_files(store: FilesystemBlobStore) -> list[str]:
    return os.listdir(store.spool_dir)


@pytest.fixture
def store(tmp_path) -> FilesystemBlobStore:
    return FilesystemBlobStore(str(tmp_path / "blobs"))


def test_a_blocking_body_is_copied_in_a_thread_readable_as_it_arrives_and_published_flushed(store):
    async def scenario():
        upstream = BlockingUpstream(DATA)
        fills = BlobFills(store, upstream, RecordingLedger(), FakeClock())
        fill = await fills.join(TARGET, DIGEST)
        received = bytearray()

        async def read() -> None:
            async for chunk in fill.read(0, fill.size):
                received.extend(chunk)

        reading = asyncio.create_task(read())
        await wait_until(lambda: len(received) >= HALF)   # the first chunk, while the thread waits for more
        assert bytes(received) == DATA[:HALF]
        upstream.blob.more.set()
        await reading
        assert bytes(received) == DATA
        assert upstream.blob.threads and threading.get_ident() not in upstream.blob.threads
        await wait_until(lambda: fill.published is not None)
        assert fill.spool.flushed   # flushed by the copy thread: publishing had nothing left to do
        assert await store.get_bytes(DIGEST) == DATA
        await wait_until(lambda: upstream.blob.closed)
    asyncio.run(scenario())


def test_the_last_chunk_of_a_corrupt_blob_copied_in_a_thread_is_never_readable_nor_stored(store):
    async def scenario():
        upstream = BlockingUpstream(DATA[:-1] + bytes([DATA[-1] ^ 0xFF]))
        fills = BlobFills(store, upstream, RecordingLedger(), FakeClock())
        fill = await fills.join(TARGET, DIGEST)
        received = bytearray()

        async def read() -> None:
            async for chunk in fill.read(0, fill.size):
                received.extend(chunk)

        upstream.blob.more.set()
        with pytest.raises(BlobCorrupt):
            await read()
        assert bytes(received) == DATA[:HALF]
        assert await store.stat(DIGEST) is None
        await wait_until(lambda: not spool_files(store))
    asyncio.run(scenario())


def test_a_cancelled_fill_stops_its_copy_thread_before_the_spool_is_removed(store):
    async def scenario():
        upstream = BlockingUpstream(DATA)
        fills = BlobFills(store, upstream, RecordingLedger(), FakeClock())
        fill = await fills.join(TARGET, DIGEST)
        await wait_until(lambda: fill.readable >= HALF)
        (task,) = fills._tasks
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()            # waiting for the thread, which still holds the spool
        assert spool_files(store)
        upstream.blob.more.set()          # its next chunk comes: the thread sees the stop and ends
        with pytest.raises(asyncio.CancelledError):
            await task
        assert upstream.blob.closed
        assert spool_files(store) == [] and await store.stat(DIGEST) is None
    asyncio.run(scenario())


class SlowToPublish(FilesystemBlobStore):
    """Publishes only once `go` is set."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.go = asyncio.Event()

    async def publish(self, digest, spool) -> None:
        await self.go.wait()
        await super().publish(digest, spool)


def test_a_verified_blob_reaches_its_readers_whole_while_it_is_still_being_published(tmp_path):
    async def scenario():
        store = SlowToPublish(str(tmp_path / "blobs"))
        upstream = BlockingUpstream(DATA)
        upstream.blob.more.set()
        fills = BlobFills(store, upstream, RecordingLedger(), FakeClock())
        fill = await fills.join(TARGET, DIGEST)
        received = b"".join([chunk async for chunk in fill.read(0, fill.size)])
        assert received == DATA and fill.verified
        assert await store.stat(DIGEST) is None   # not published yet
        assert fills.running(DIGEST) is fill      # a client asking now joins the verified fill
        store.go.set()
        await wait_until(lambda: fill.published is not None)
        assert await store.get_bytes(DIGEST) == DATA
    asyncio.run(scenario())
