"""Fakes of the application's ports, for unit tests of the domain and application layers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from eventsourcing.application import AggregateNotFoundError

from application.errors import UpstreamNotFound, UpstreamUnavailable
from application.ports import (BlobNotFound, ManifestRow, RateLimit, RecordedReferrers, TagRow, UpstreamManifest,
                               UpstreamManifestHead, UpstreamReferrers, UpstreamTarget)
from domain.referrers import Descriptor
from domain.referrers_list import ReferrersList, from_recorded
from application.pull_through import pull_through
from application.cache_records import CacheRecords
from domain.cache import CachedManifest, TagResolution
from domain.names import Digest, parse_reference


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class MemorySpool:
    def __init__(self) -> None:
        self.data = bytearray()
        self.discarded = False

    @property
    def size(self) -> int:
        return len(self.data)

    async def append(self, chunk: bytes) -> None:
        self.data += chunk

    def read_at(self, offset: int, size: int) -> bytes:
        return bytes(self.data[offset:offset + size])

    async def discard(self) -> None:
        self.discarded = True

    def close(self) -> None:
        pass


class MemoryBlobStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.spools: list[MemorySpool] = []
        self.free_room: int | None = None   # what room() answers: None, not bounded

    async def stat(self, digest: str) -> int | None:
        content = self.objects.get(digest)
        return None if content is None else len(content)

    async def read(self, digest: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if digest not in self.objects:
            raise BlobNotFound(digest)
        yield self.objects[digest][start:end]

    def local_path(self, digest: str) -> str | None:
        return None

    async def get_bytes(self, digest: str) -> bytes:
        try:
            return self.objects[digest]
        except KeyError:
            raise BlobNotFound(digest) from None

    async def put_bytes(self, digest: str, data: bytes) -> None:
        self.objects[digest] = data

    def new_spool(self, digest: str) -> MemorySpool:
        spool = MemorySpool()
        self.spools.append(spool)
        return spool

    async def publish(self, digest: str, spool: MemorySpool) -> None:
        self.objects[digest] = bytes(spool.data)

    async def redirect_url(self, digest: str) -> str | None:
        return None

    async def delete(self, digest: str) -> bool:
        return self.objects.pop(digest, None) is not None

    async def room(self) -> int | None:
        """free_room less what is stored (spools take no room here: fills in progress are the caller's to count)."""
        if self.free_room is None:
            return None
        return self.free_room - sum(len(content) for content in self.objects.values())


class FakeBlob:
    def __init__(self, data: bytes, chunk: int, gate: asyncio.Event | None, fail_after: int | None) -> None:
        self.size = len(data)
        self._data, self._chunk, self._gate, self._fail_after = data, chunk, gate, fail_after
        self.closed = False

    async def __aiter__(self):
        for offset in range(0, len(self._data), self._chunk):
            if self._fail_after is not None and offset >= self._fail_after:
                raise UpstreamUnavailable("connection closed mid-blob")
            if self._gate is not None:
                await self._gate.wait()
            yield self._data[offset:offset + self._chunk]
            await asyncio.sleep(0)

    async def aclose(self) -> None:
        self.closed = True


class FakeUpstream:
    """An upstream records in memory: repository -> tags and manifests; blobs by digest."""

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}   # (repo, ref) -> (bytes, media type)
        self.blobs: dict[str, bytes] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.down = False
        self.chunk = 4
        self.gate: asyncio.Event | None = None
        self.manifest_gate: asyncio.Event | None = None   # while set and not yet open, manifest GETs wait
        self.manifest_asked = asyncio.Event()
        self.fail_after: int | None = None
        self.corrupt: set[str] = set()
        self.error: Exception | None = None      # raised by every call while set
        self.blobless: set[str] = set()           # base URLs of upstreams that hold none of the blobs
        self.rate_limit: RateLimit | None = None  # sent with every manifest answer
        self.referrers_api = False                # whether it answers the OCI 1.1 referrers API
        self.referrers: dict[tuple[str, str], list] = {}   # (repo, subject) -> descriptors, when it does

    def put_manifest(self, repository: str, tag: str | None, content: bytes, media_type: str) -> str:
        digest = str(Digest.of(content))
        self.manifests[(repository, digest)] = (content, media_type)
        if tag:
            self.manifests[(repository, tag)] = (content, media_type)
        return digest

    def put_blob(self, data: bytes) -> str:
        digest = str(Digest.of(data))
        self.blobs[digest] = data
        return digest

    def _check(self) -> None:
        if self.down:
            raise UpstreamUnavailable("connection refused")
        if self.error is not None:
            raise self.error

    async def get_manifest(self, target: UpstreamTarget, reference: str, accept: list[str]) -> UpstreamManifest:
        self.calls.append(("GET", target.repository, reference))
        self.manifest_asked.set()
        if self.manifest_gate is not None:
            await self.manifest_gate.wait()
        self._check()
        try:
            content, media_type = self.manifests[(target.repository, reference)]
        except KeyError:
            raise UpstreamNotFound("manifest unknown", status=404) from None
        return UpstreamManifest(content, media_type, str(Digest.of(content)), self.rate_limit)

    async def head_manifest(self, target: UpstreamTarget, reference: str, accept: list[str]) -> UpstreamManifestHead:
        self.calls.append(("HEAD", target.repository, reference))
        self._check()
        try:
            content, media_type = self.manifests[(target.repository, reference)]
        except KeyError:
            raise UpstreamNotFound("manifest unknown", status=404) from None
        return UpstreamManifestHead(str(Digest.of(content)), media_type, len(content), self.rate_limit)

    async def head_blob(self, target: UpstreamTarget, digest: str) -> int | None:
        self.calls.append(("HEAD", target.repository, digest))
        self._check()
        if digest not in self.blobs or target.base_url in self.blobless:
            raise UpstreamNotFound("blob unknown", status=404)
        return len(self.blobs[digest])

    async def open_blob(self, target: UpstreamTarget, digest: str) -> FakeBlob:
        self.calls.append(("GET", target.repository, digest))
        self._check()
        if digest not in self.blobs or target.base_url in self.blobless:
            raise UpstreamNotFound("blob unknown", status=404)
        data = self.blobs[digest]
        if digest in self.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        return FakeBlob(data, self.chunk, self.gate, self.fail_after)

    async def list_tags(self, target: UpstreamTarget) -> list[str]:
        self._check()
        return [ref for (repo, ref) in self.manifests if repo == target.repository and ":" not in ref]

    async def get_referrers(self, target: UpstreamTarget, digest: str) -> UpstreamReferrers:
        """A registry without the referrers API (404) unless `referrers_api` is set; then its lists."""
        self.calls.append(("GET", target.repository, f"referrers/{digest}"))
        self._check()
        if not self.referrers_api:
            raise UpstreamNotFound("404 page not found", status=404)
        return UpstreamReferrers(list(self.referrers.get((target.repository, digest), [])), self.rate_limit)

    async def aclose(self) -> None:
        pass


class RecordsReferrers:
    """The ReferrersRead port read straight from CacheRecords' events (the referrers view's job, faked)."""

    def __init__(self, records: CacheRecords) -> None:
        self.records = records

    def referrers(self, org: str, repository: str, subject: str) -> list[Descriptor]:
        events = (self.records.mapper.to_domain_event(n)
                  for n in self.records.recorder.select_notifications(start=1, limit=100_000))
        return [Descriptor(e.media_type, e.digest, e.size, e.artifact_type, dict(e.annotations))
                for e in events if isinstance(e, CachedManifest.Cached)
                and (e.org, e.repository, e.subject) == (org, repository, subject)]

    def upstream_list(self, org: str, repository: str, subject: str) -> RecordedReferrers | None:
        try:
            listing = self.records.repository.get(ReferrersList.create_id(org, repository, subject))
        except AggregateNotFoundError:
            return None
        return RecordedReferrers(from_recorded(listing.descriptors), listing.checked_at)


class BrokenPullRecorder:
    """A group commit whose event store refuses every write."""

    async def record(self, pull) -> None:
        raise RuntimeError("the event store is gone")


class RecordsView:
    """A TagsAndManifests read straight from CacheRecords' aggregates (the projections' job, faked)."""

    def __init__(self, records: CacheRecords) -> None:
        self.records = records

    def get_tag(self, org: str, repository: str, tag: str) -> TagRow | None:
        try:
            t = self.records.repository.get(TagResolution.create_id(org, repository, tag))
        except AggregateNotFoundError:
            return None
        return TagRow(t.digest, t.media_type, t.checked_at)

    def get_manifest(self, org: str, repository: str, digest: str) -> ManifestRow | None:
        try:
            m = self.records.repository.get(CachedManifest.create_id(org, repository, digest))
        except AggregateNotFoundError:
            return None
        return ManifestRow(m.digest, m.media_type, m.size, m.blobs, m.children)

    def list_tags(self, org: str, repository: str) -> list[str]:
        return []


class OutageView:
    """A TagsAndManifests (and holds-blob check) that can go down: `down = "raise"` fails every read as a
    refused connection would; `down = "block"` hangs every read until `release()`, as a database
    that accepts connections but never answers."""

    def __init__(self, view, holds_blob=None) -> None:
        self._view = view
        self._holds_blob = holds_blob
        self.down: str | None = None
        self.reads = 0
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def _read(self, read, *args):
        self.reads += 1
        if self.down == "raise":
            raise ConnectionRefusedError("connection refused (the database is down)")
        if self.down == "block":
            self._released.wait(10)
        return read(*args)

    def get_tag(self, org, repository, tag):
        return self._read(self._view.get_tag, org, repository, tag)

    def get_manifest(self, org, repository, digest):
        return self._read(self._view.get_manifest, org, repository, digest)

    def list_tags(self, org, repository):
        return self._read(self._view.list_tags, org, repository)

    def holds_blob(self, org, digest, generation=1):
        return self._read(self._holds_blob, org, digest, generation)


class FakeMetrics:
    """The Metrics port, remembering every call: `calls["fill_failed"] == [("hub", "corrupt")]`."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple]] = {}

    def _record(self, name: str, *args) -> None:
        self.calls.setdefault(name, []).append(args)

    def of(self, name: str) -> list[tuple]:
        return self.calls.get(name, [])

    def total(self, name: str, *labels) -> int:
        """The sum of the sizes recorded by bytes_served / bytes_fetched with these labels."""
        return sum(args[-1] for args in self.of(name) if args[:-1] == labels)

    def manifest_pulled(self, org: str, result: str) -> None:
        self._record("manifest_pulled", org, result)

    def blob_pulled(self, org: str, result: str) -> None:
        self._record("blob_pulled", org, result)

    def stale_served(self, org: str) -> None:
        self._record("stale_served", org)

    def bytes_served(self, org: str, kind: str, size: int, repository: str = "") -> None:
        self._record("bytes_served", org, kind, size)   # the repository feeds analytics only

    def bytes_fetched(self, org: str, kind: str, size: int) -> None:
        self._record("bytes_fetched", org, kind, size)

    def upstream_answered(self, org: str, kind: str, outcome: str, seconds: float) -> None:
        assert seconds >= 0
        self._record("upstream_answered", org, kind, outcome)

    def fill_started(self, org: str) -> None:
        self._record("fill_started", org)

    def fill_completed(self, org: str, seconds: float = 0.0) -> None:
        assert seconds >= 0
        self._record("fill_completed", org)

    def fill_failed(self, org: str, reason: str) -> None:
        self._record("fill_failed", org, reason)

    def pulls_unrecorded(self, count: int, reason: str) -> None:
        self._record("pulls_unrecorded", count, reason)

    def pull_backlog(self, size: int) -> None:
        self._record("pull_backlog", size)


def run_scenario(make_world, test):
    """Build a world (a cache wired to fakes) in a fresh event loop and run `test(world)`, its group
    commit started before and stopped after."""
    async def main():
        world = make_world()
        await world.group.start()
        try:
            return await test(world)
        finally:
            await world.group.stop()
    return asyncio.run(main())


class RecordingLedger:
    """The Ledger port, remembering every record: `records == [("blob_cached", "hub", ...)]`."""

    def __init__(self) -> None:
        self.records: list[tuple] = []

    async def manifest_cached(self, org, repository, digest, media_type, size, blobs, children, at, tag=None,
                              referrer=None, sizes=None):
        self.records.append(("manifest_cached", org, repository, digest, tag))

    async def tag_checked(self, org, repository, tag, digest, media_type, at):
        self.records.append(("tag_checked", org, repository, tag, digest))

    async def referrers_listed(self, org, repository, subject, descriptors, at, shown):
        self.records.append(("referrers_listed", org, repository, subject, len(descriptors)))

    async def blob_cached(self, org, repository, digest, size, at, generation=1):
        self.records.append(("blob_cached", org, repository, digest, size))

    async def blob_corrupt(self, org, repository, digest, reason, at):
        self.records.append(("blob_corrupt", org, repository, digest))


class AsTheEdgeAsks:
    """A PullThrough called the way interfaces/http/oci.py calls it (one org lookup per request,
    the reference parsed once), so scenarios read as pulls by name."""

    def __init__(self, pull) -> None:
        self.pull = pull
        self.rate_limits = pull.rate_limits

    async def manifest(self, org: str, repository: str, reference: str, accept: list[str], client=None,
                       record: bool = True):
        ref = parse_reference(reference)
        return await self.pull.manifests.manifest(await self.pull.org(org), repository, ref, accept, client,
                                                  record=record)

    async def blob(self, org: str, repository: str, digest: str):
        found = await self.pull.org(org)
        return await self.pull.blobs.blob(found, repository, Digest.parse(digest))

    async def blob_head(self, org: str, repository: str, digest: str):
        found = await self.pull.org(org)
        return await self.pull.blobs.blob_head(found, repository, Digest.parse(digest))

    async def tags(self, org: str, repository: str) -> list[str]:
        return await self.pull.tag_list.tags(await self.pull.org(org), repository)

    async def referrers(self, org: str, repository: str, subject: str, client=None, record: bool = True):
        return await self.pull.manifests.referrers(await self.pull.org(org), repository, subject, client,
                                                   record=record)


def edge_cache(**wiring) -> AsTheEdgeAsks:
    """pull_through(**wiring), called as the HTTP edge calls it."""
    return AsTheEdgeAsks(pull_through(**wiring))
