"""What a fill makes readable before the digest check: with a declared length, every byte short of it
as soon as it is written; the blob's last bytes only once verified."""

from __future__ import annotations

import asyncio
import os

import pytest

from application.errors import BlobCorrupt
from application.fills import FIRST_STEP, BlobFills
from application.ports import UpstreamTarget
from tests.unit.fakes import FakeClock, FakeUpstream, MemoryBlobStore, RecordingLedger

TARGET = UpstreamTarget("hub", "http://up.example", "library/alpine")
HALF = 2 * FIRST_STEP
DATA = os.urandom(2 * HALF)


class SteppedBlob:
    """Two chunks; the second comes only once `more` is set. `size` is declared unless `sized` is False."""

    def __init__(self, data: bytes, more: asyncio.Event, sized: bool) -> None:
        self.size = len(data) if sized else None
        self._data, self._more = data, more

    async def __aiter__(self):
        yield self._data[:HALF]
        await self._more.wait()
        yield self._data[HALF:]

    async def aclose(self) -> None:
        pass


class SteppedUpstream(FakeUpstream):
    def __init__(self, sized: bool = True) -> None:
        super().__init__()
        self.more = asyncio.Event()
        self.sized = sized

    async def open_blob(self, target: UpstreamTarget, digest: str) -> SteppedBlob:
        data = self.blobs[digest]
        if digest in self.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        return SteppedBlob(data, self.more, self.sized)


async def read_stepped(fill, upstream: SteppedUpstream) -> tuple[bytes, bytes, BaseException | None]:
    """What one reader of the whole blob has received while the upstream holds back its second chunk,
    what it has received in the end, and the error it got, if any."""
    received = bytearray()

    async def read() -> None:
        async for chunk in fill.read(0, fill.size):
            received.extend(chunk)

    reading = asyncio.create_task(read())
    for _ in range(20):
        await asyncio.sleep(0)
    held = bytes(received)
    upstream.more.set()
    try:
        await reading
    except BlobCorrupt as error:
        return held, bytes(received), error
    return held, bytes(received), None


@pytest.mark.parametrize("sized", [True, False])
def test_a_chunk_short_of_the_declared_length_is_readable_before_the_next_arrives(sized):
    async def scenario() -> bytes:
        upstream = SteppedUpstream(sized)
        digest = upstream.put_blob(DATA)
        fills = BlobFills(MemoryBlobStore(), upstream, RecordingLedger(), FakeClock())
        fill = await fills.join(TARGET, digest)
        return await read_stepped(fill, upstream)

    held, received, error = asyncio.run(scenario())
    # Without a declared length the chunk might be the last one: it waits for the next (or the end).
    assert held == (DATA[:HALF] if sized else b"")
    assert received == DATA and error is None


def test_the_last_chunk_of_a_corrupt_blob_is_never_readable():
    async def scenario() -> tuple[bytes, bytes, BaseException | None]:
        upstream = SteppedUpstream()
        digest = upstream.put_blob(DATA)
        upstream.corrupt.add(digest)
        fills = BlobFills(MemoryBlobStore(), upstream, RecordingLedger(), FakeClock())
        fill = await fills.join(TARGET, digest)
        return await read_stepped(fill, upstream)

    held, received, error = asyncio.run(scenario())
    assert held == DATA[:HALF]
    assert received == DATA[:HALF] and isinstance(error, BlobCorrupt)
