"""Storage that cannot take a blob (full, or failing): every client is still served the right bytes."""

from __future__ import annotations

import asyncio
import os

import pytest

from application.errors import BlobCorrupt
from application.fills import ADVANCE_STEP, BlobFills
from application.manifest_bytes import ManifestBytes
from application.oci_errors import oci_answer
from application.ports import BlobStorageFull, UpstreamTarget
from infra.settings import SettingsError, load_settings
from infra.storage import build_blob_store
from tests.unit.fakes import FakeClock, FakeMetrics, FakeUpstream, MemoryBlobStore, MemorySpool, RecordingLedger

TARGET = UpstreamTarget("hub", "http://up.example", "library/alpine")
DATA = os.urandom(3 * ADVANCE_STEP + 12345)   # several advance steps: readers get bytes before the fill ends
CHUNK = 64 * 1024


class NarrowSpool(MemorySpool):
    """A spool on a disk with `room` bytes left: the append that does not fit fails as ENOSPC does."""

    def __init__(self, store: NarrowStore) -> None:
        super().__init__()
        self.store = store
        self.closed = False

    async def append(self, chunk: bytes) -> None:
        if self.store.room < len(chunk):
            raise BlobStorageFull("storage full: writing a spool file: No space left on device")
        self.store.room -= len(chunk)
        await super().append(chunk)

    def close(self) -> None:
        self.closed = True


class NarrowStore(MemoryBlobStore):
    def __init__(self, room: int, publishable: bool = True, spools: bool = True) -> None:
        super().__init__()
        self.room, self.publishable, self.can_spool = room, publishable, spools

    def new_spool(self, digest: str) -> NarrowSpool:
        if not self.can_spool:
            raise BlobStorageFull("storage full: creating a spool file: No space left on device")
        spool = NarrowSpool(self)
        self.spools.append(spool)
        return spool

    async def publish(self, digest: str, spool) -> None:
        if not self.publishable:
            raise BlobStorageFull("storage full: storing it: No space left on device")
        await super().publish(digest, spool)

    async def put_bytes(self, digest: str, data: bytes) -> None:
        raise BlobStorageFull("storage full: storing it: No space left on device")


class World:
    def __init__(self, store: NarrowStore, upstream: FakeUpstream | None = None) -> None:
        self.upstream = upstream or FakeUpstream()
        self.upstream.chunk = CHUNK
        self.digest = self.upstream.put_blob(DATA)
        self.store = store
        self.metrics = FakeMetrics()
        self.ledger = RecordingLedger()
        self.fills = BlobFills(store, self.upstream, self.ledger, FakeClock(), metrics=self.metrics)

    async def pull(self, start: int = 0, end: int | None = None) -> bytes:
        fill = await self.fills.join(TARGET, self.digest)
        assert fill is not None
        return b"".join([chunk async for chunk in fill.read(start, end)])

    def upstream_gets(self) -> int:
        return len([call for call in self.upstream.calls if call[0] == "GET" and call[2] == self.digest])

    async def settled(self) -> None:
        while self.fills._tasks:
            await asyncio.sleep(0)


def run(scenario):
    asyncio.run(scenario())


def test_a_blob_storage_has_no_room_for_is_served_whole_from_upstream_and_not_kept():
    async def scenario():
        w = World(NarrowStore(room=0))
        assert await w.pull() == DATA
        await w.settled()
        assert w.store.objects == {}
        assert w.metrics.of("fill_failed") == [("hub", "storage")]
        assert w.ledger.records == []   # nothing recorded as cached
        assert all(spool.discarded and spool.closed for spool in w.store.spools)
    run(scenario)


def test_readers_joined_before_the_disk_filled_get_every_byte_and_the_spool_is_released():
    async def scenario():
        w = World(NarrowStore(room=2 * ADVANCE_STEP + CHUNK))
        first, second = await asyncio.gather(w.pull(), w.pull())
        assert first == DATA and second == DATA
        await w.settled()
        (spool,) = w.store.spools
        assert spool.discarded and spool.closed
        assert w.store.objects == {}
        # one fill, then one stream per reader for the bytes past the spool
        assert w.upstream_gets() == 3
    run(scenario)


def test_a_ranged_read_of_a_blob_storage_cannot_keep_gets_exactly_its_range():
    async def scenario():
        w = World(NarrowStore(room=ADVANCE_STEP + CHUNK))
        start, end = ADVANCE_STEP // 2, 2 * ADVANCE_STEP + 77
        assert await w.pull(start, end) == DATA[start:end]
        assert await w.pull(len(DATA) - 5) == DATA[-5:]
    run(scenario)


def test_a_reader_is_never_sent_bytes_upstream_sends_differently_the_second_time():
    class Fickle(FakeUpstream):
        """Sends the blob with a changed first byte the first time, then the real blob."""

        def __init__(self) -> None:
            super().__init__()
            self.opened = 0

        async def open_blob(self, target, digest):
            blob = await super().open_blob(target, digest)
            self.opened += 1
            if self.opened == 1:
                blob._data = bytes([blob._data[0] ^ 0xFF]) + blob._data[1:]
            return blob

    async def scenario():
        w = World(NarrowStore(room=2 * ADVANCE_STEP), Fickle())
        fill = await w.fills.join(TARGET, w.digest)
        received = bytearray()
        with pytest.raises(BlobCorrupt):
            async for chunk in fill.read(0, None):
                received += chunk
        assert 0 < len(received) < len(DATA)   # the bytes from the spool, never completed
    run(scenario)


def test_a_verified_blob_that_cannot_be_published_is_served_from_its_spool_with_one_upstream_fetch():
    async def scenario():
        w = World(NarrowStore(room=len(DATA), publishable=False))
        assert await w.pull() == DATA
        await w.settled()
        assert w.upstream_gets() == 1
        assert w.store.objects == {}
        assert w.metrics.of("fill_failed") == [("hub", "storage")]
        assert w.metrics.of("fill_completed") == []
        (spool,) = w.store.spools
        assert spool.discarded and spool.closed
    run(scenario)


def test_a_reader_arriving_after_an_unpublished_fill_released_its_spool_goes_to_upstream():
    async def scenario():
        w = World(NarrowStore(room=len(DATA), publishable=False))
        fill = await w.fills.join(TARGET, w.digest)
        await w.settled()   # the fill ended and, with no reader, released its spool
        assert w.store.spools[0].closed
        assert b"".join([chunk async for chunk in fill.read(0, None)]) == DATA
    run(scenario)


def test_a_spool_file_that_cannot_be_created_still_serves_the_blob():
    async def scenario():
        w = World(NarrowStore(room=0, spools=False))
        assert await w.pull() == DATA
        await w.settled()
        assert w.metrics.of("fill_failed") == [("hub", "storage")]
    run(scenario)


def test_manifest_bytes_storage_cannot_keep_are_still_answered_from_memory():
    async def scenario():
        content = ManifestBytes(NarrowStore(room=0))
        await content.put("sha256:" + "ab" * 32, b"{}")
        assert await content.get("sha256:" + "ab" * 32) == b"{}"
    run(scenario)


def test_storage_full_is_a_507_with_a_clear_message_never_a_500():
    answer = oci_answer(BlobStorageFull("storage full: writing a spool file: No space left on device"))
    assert answer is not None
    assert (answer.status, answer.code) == (507, "UNAVAILABLE")
    assert answer.message.startswith("storage full:")


@pytest.mark.parametrize("text, message", [
    ("[storage]\nmin_free_bytes = -1\n", "[storage] min_free_bytes: expected an integer >= 0"),
    ('[storage]\nlow_free_bytes = "1GiB"\n', '[storage] low_free_bytes: expected an integer, got "1GiB"'),
])
def test_free_space_settings_are_byte_counts_with_bounds(tmp_path, text, message):
    path = tmp_path / "entrepot.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as raised:
        load_settings(str(path))
    assert message in str(raised.value), str(raised.value)


def test_free_space_settings_reach_the_store(tmp_path):
    path = tmp_path / "entrepot.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n[storage]\nmin_free_bytes = 5\nlow_free_bytes = 7\n')
    store = build_blob_store(load_settings(str(path)))
    assert (store.floor.min_free_bytes, store.floor.low_free_bytes) == (5, 7)
