"""Blob fills coordinated across replicas, with a fake coordinator standing in for Redis."""

from __future__ import annotations

import asyncio

from application.fills import BlobFills
from application.ports import UpstreamTarget
from tests.unit.fakes import FakeClock, FakeUpstream, MemoryBlobStore, RecordingLedger

TARGET = UpstreamTarget("hub", "http://up.example", "library/alpine")
DATA = b"layer-bytes-" * 10


class FakeLock:
    def __init__(self, coordinator: FakeCoordinator, digest: str) -> None:
        self.coordinator, self.digest = coordinator, digest

    async def release(self) -> None:
        self.coordinator.held.discard(self.digest)


class FakeCoordinator:
    """Locks held by 'other replicas' are in `held`; `while_waiting` plays what they do meanwhile."""

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.while_waiting = None
        self.released_in_time = True

    async def claim(self, digest: str) -> FakeLock | None:
        if digest in self.held:
            return None
        self.held.add(digest)
        return FakeLock(self, digest)

    async def wait_released(self, digest: str) -> bool:
        if self.while_waiting is not None:
            await self.while_waiting(digest)
        return self.released_in_time


class Replica:
    def __init__(self, coordinator: FakeCoordinator, store: MemoryBlobStore | None = None) -> None:
        self.upstream = FakeUpstream()
        self.digest = self.upstream.put_blob(DATA)
        self.store = store or MemoryBlobStore()
        self.ledger = RecordingLedger()
        self.fills = BlobFills(self.store, self.upstream, self.ledger, FakeClock(), coordinator=coordinator)

    async def pull(self) -> bytes:
        fill = await self.fills.join(TARGET, self.digest)
        source = self.store.read(self.digest) if fill is None else fill.read(0, fill.size)
        return b"".join([chunk async for chunk in source])

    def upstream_gets(self) -> int:
        return len([call for call in self.upstream.calls if call[2] == self.digest])


def test_a_replica_serves_from_shared_storage_what_the_lock_holder_published_meanwhile():
    async def scenario():
        coordinator = FakeCoordinator()
        replica = Replica(coordinator)
        coordinator.held.add(replica.digest)

        async def other_replica_publishes(digest: str) -> None:
            await replica.store.put_bytes(digest, DATA)
            coordinator.held.discard(digest)
        coordinator.while_waiting = other_replica_publishes
        assert await replica.pull() == DATA
        assert replica.upstream_gets() == 0
        assert replica.store.spools[-1].discarded
    asyncio.run(scenario())


def test_a_replica_takes_over_when_the_holder_releases_without_publishing():
    async def scenario():
        coordinator = FakeCoordinator()
        replica = Replica(coordinator)
        coordinator.held.add(replica.digest)

        async def holder_fails(digest: str) -> None:
            coordinator.held.discard(digest)
        coordinator.while_waiting = holder_fails
        assert await replica.pull() == DATA
        assert replica.upstream_gets() == 1
        assert coordinator.held == set()  # our own lock is released after the fill
    asyncio.run(scenario())


def test_a_replica_fetches_itself_when_the_wait_times_out():
    async def scenario():
        coordinator = FakeCoordinator()
        replica = Replica(coordinator)
        coordinator.held.add(replica.digest)
        coordinator.released_in_time = False
        assert await replica.pull() == DATA
        assert replica.upstream_gets() == 1 and await replica.store.stat(replica.digest) == len(DATA)
    asyncio.run(scenario())


def test_a_lock_won_after_the_blob_was_published_is_given_back_without_fetching():
    async def scenario():
        coordinator = FakeCoordinator()
        replica = Replica(coordinator)
        original_claim = coordinator.claim

        async def claim_after_publish(digest: str):
            await replica.store.put_bytes(digest, DATA)  # the previous holder published just before releasing
            return await original_claim(digest)
        coordinator.claim = claim_after_publish
        assert await replica.pull() == DATA
        assert replica.upstream_gets() == 0 and coordinator.held == set()
    asyncio.run(scenario())
