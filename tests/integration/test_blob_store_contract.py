"""The one contract every blob storage backend passes: filesystem, and S3 on a real S3 endpoint (moto_server)."""

from __future__ import annotations

import asyncio
import gc
import os
import random

import pytest

from application.ports import BlobNotFound, BlobStorageFull
from domain.names import InvalidDigest
from infra.storage.filesystem import FilesystemBlobStore
from infra.storage.free_space import FreeSpaceFloor
from infra.storage.s3 import MIN_PART_SIZE, S3BlobStore
from tests.support.images import sha256

pytestmark = pytest.mark.integration


class Backend:
    """A store plus what a test needs to look behind it (a fresh instance, the remote leftovers)."""

    def __init__(self, name: str, tmp_path, moto=None) -> None:
        self.name, self.tmp_path, self.moto = name, tmp_path, moto
        self.bucket = moto.new_bucket() if moto else None
        self.store = self.open()

    def open(self):
        """A new store on the same storage, as a restarted process would build it."""
        if self.name == "filesystem":
            return FilesystemBlobStore(str(self.tmp_path / "storage"))
        # The smallest part S3 allows, so that a few MiB already make a multipart upload.
        return S3BlobStore(bucket=self.bucket, endpoint_url=self.moto.endpoint_url,
                           spool_dir=str(self.tmp_path / "spool"), part_size=MIN_PART_SIZE, abandoned_after=0)

    def spool_files(self) -> list[str]:
        return os.listdir(self.store.spool_dir)

    def remote_uploads(self) -> list[dict]:
        return self.moto.uploads(self.bucket) if self.moto else []


@pytest.fixture(params=["filesystem", "s3"])
def backend(request, tmp_path) -> Backend:
    moto = request.getfixturevalue("moto_s3") if request.param == "s3" else None
    return Backend(request.param, tmp_path, moto)


def run(coroutine):
    return asyncio.run(coroutine)


def blob(size: int, seed: int = 1) -> tuple[str, bytes]:
    data = random.Random(seed).randbytes(size)
    return sha256(data), data


async def fill(store, digest: str, data: bytes, chunk: int = 256 * 1024):
    spool = store.new_spool(digest)
    for offset in range(0, len(data), chunk):
        await spool.append(data[offset:offset + chunk])
    return spool


async def read(store, digest: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([part async for part in store.read(digest, start, end)])


def test_a_published_blob_has_its_size_and_reads_back_whole_and_in_ranges(backend):
    store = backend.store
    digest, data = blob(300_000)

    async def scenario():
        await store.publish(digest, await fill(store, digest, data))
        assert await store.stat(digest) == len(data)
        assert await read(store, digest) == data
        assert await read(store, digest, 1000, 2000) == data[1000:2000]
        assert await read(store, digest, len(data) - 5) == data[-5:]
        assert await read(store, digest, len(data)) == b""
        assert await read(store, digest, 10, 10) == b""
        assert await store.get_bytes(digest) == data
    run(scenario())


def test_a_blob_larger_than_several_parts_reads_back_across_part_boundaries(backend):
    store = backend.store
    digest, data = blob(2 * MIN_PART_SIZE + 12345, seed=2)

    async def scenario():
        await store.publish(digest, await fill(store, digest, data, chunk=1024 * 1024))
        assert await store.stat(digest) == len(data)
        boundary = MIN_PART_SIZE
        assert await read(store, digest, boundary - 100, boundary + 100) == data[boundary - 100:boundary + 100]
        assert await read(store, digest) == data
    run(scenario())
    assert backend.remote_uploads() == [] and backend.spool_files() == []


def test_small_content_put_as_bytes_is_read_back(backend):
    store = backend.store
    digest, data = blob(1234, seed=3)

    async def scenario():
        await store.put_bytes(digest, data)
        assert await store.stat(digest) == 1234
        assert await store.get_bytes(digest) == data
        empty = sha256(b"")
        await store.put_bytes(empty, b"")
        assert await store.stat(empty) == 0 and await store.get_bytes(empty) == b""
        assert await read(store, empty) == b""
    run(scenario())


def test_a_missing_blob_is_none_to_stat_and_blob_not_found_to_readers(backend):
    store = backend.store
    digest, _ = blob(10, seed=4)

    async def scenario():
        assert await store.stat(digest) is None
        with pytest.raises(BlobNotFound):
            await store.get_bytes(digest)
        with pytest.raises(BlobNotFound):
            await read(store, digest)
        with pytest.raises(BlobNotFound):
            await read(store, digest, 5, 9)
        assert store.local_path(digest) is None
    run(scenario())


def test_a_deleted_blob_is_gone_and_deleting_it_again_is_no_error(backend):
    store = backend.store
    digest, data = blob(300_000, seed=8)
    kept, other = blob(10, seed=9)

    async def scenario():
        await store.publish(digest, await fill(store, digest, data))
        await store.put_bytes(kept, other)
        assert await store.delete(digest) is True
        assert await store.stat(digest) is None
        with pytest.raises(BlobNotFound):
            await read(store, digest)
        assert await store.delete(digest) is False     # a restarted reaper repeats a deletion
        assert await store.get_bytes(kept) == other   # nothing else went
    run(scenario())


def test_an_invalid_digest_never_reaches_storage(backend):
    with pytest.raises(InvalidDigest):
        run(backend.store.stat("sha256:../../etc/passwd"))


def test_a_spool_is_readable_while_written_and_invisible_until_published(backend):
    store = backend.store
    digest, data = blob(MIN_PART_SIZE + 1000, seed=5)

    async def scenario():
        spool = await fill(store, digest, data[:4096])
        assert spool.read_at(100, 50) == data[100:150]
        await spool.append(data[4096:])
        assert spool.read_at(MIN_PART_SIZE, 1000) == data[MIN_PART_SIZE:]
        assert await store.stat(digest) is None
        await store.publish(digest, spool)
        # A reader that joined the fill still finishes from the spool once it is published.
        assert spool.read_at(0, 10) == data[:10]
    run(scenario())


def test_a_discarded_spool_leaves_nothing_behind(backend):
    store = backend.store
    digest, data = blob(MIN_PART_SIZE + 300_000, seed=6)  # past one part: S3 has started an upload

    async def scenario():
        spool = await fill(store, digest, data)
        await spool.discard()
        await spool.discard()  # idempotent: a fill's error paths may both discard
        assert await store.stat(digest) is None
    run(scenario())
    assert backend.spool_files() == []
    assert backend.remote_uploads() == []


def test_leftovers_of_a_killed_process_are_removed_at_start_and_never_visible(backend):
    digest, data = blob(MIN_PART_SIZE + 1000, seed=7)

    async def crashed_fill():
        spool = await fill(backend.store, digest, data)
        await asyncio.sleep(0.3)  # S3: let the first part go up, as it would before a crash
        del spool                 # the process dies: no discard, no publish

    run(crashed_fill())
    gc.collect()
    assert len(backend.spool_files()) == 1
    assert len(backend.remote_uploads()) == (1 if backend.moto else 0)
    restarted = backend.open()
    assert restarted.clean_spool() >= 1
    assert backend.spool_files() == []
    assert backend.remote_uploads() == []
    assert run(restarted.stat(digest)) is None


def test_only_a_backend_with_urls_of_its_own_offers_redirects(backend):
    digest, data = blob(100, seed=8)
    run(backend.store.put_bytes(digest, data))
    assert run(backend.store.redirect_url(digest)) is None  # redirect is off unless configured


def test_the_storage_probe_says_low_below_the_watermark_and_storage_full_below_the_floor(backend):
    free = os.statvfs(backend.store.spool_dir).f_bavail * os.statvfs(backend.store.spool_dir).f_frsize
    backend.store.floor = FreeSpaceFloor(min_free_bytes=0, low_free_bytes=0)
    assert run(backend.store.check()) == "ok"
    backend.store.floor = FreeSpaceFloor(min_free_bytes=0, low_free_bytes=free * 2)
    assert run(backend.store.check()) == "low"
    backend.store.floor = FreeSpaceFloor(min_free_bytes=free * 2, low_free_bytes=free * 4)
    with pytest.raises(BlobStorageFull, match="^storage full: .* below min_free_bytes"):
        run(backend.store.check())


def test_the_room_a_prefetch_may_take_is_the_free_space_above_low_free_bytes(backend):
    def free() -> int:
        stats = os.statvfs(backend.store.spool_dir)
        return stats.f_bavail * stats.f_frsize
    low = 64 * 1024 * 1024
    backend.store.floor = FreeSpaceFloor(min_free_bytes=0, low_free_bytes=low)
    before, room, after = free(), run(backend.store.room()), free()
    # Other writers share the filesystem: the room lies within what was free just before and after.
    assert min(before, after) - low - 16 * 1024 * 1024 <= room <= max(before, after) - low + 16 * 1024 * 1024
    backend.store.floor = FreeSpaceFloor(min_free_bytes=0, low_free_bytes=before * 2)
    assert run(backend.store.room()) < 0   # under the watermark already: no room at all
