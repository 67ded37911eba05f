"""Reading the archive: its segments in order, checked (hash, chaining) as they are read, for `audit verify`,
audit queries and `entrepot audit archive show`."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator

from eventsourcing.application import Application

from application.archive import SegmentInfo, SegmentMissing, SegmentStore, read_segments
from application.audit_verify import ArchivedChain, Expected, Mismatch
from domain.archive import InvalidSegment, SegmentRecord, decode_segment, segment_hash

CACHED_SEGMENTS = 8   # decoded segments kept in memory: paging through an audit export reads each once


class SegmentArchive(ArchivedChain):
    """The Pulls log's archive: segments as the Access log records them, bytes from the segment store."""

    def __init__(self, access: Application, store: SegmentStore) -> None:
        self._access, self._store = access, store
        self._cache: OrderedDict[str, list[SegmentRecord]] = OrderedDict()
        self._cache_lock = threading.Lock()   # projection workers replaying the archive share this object

    def segments(self) -> list[SegmentInfo]:
        return read_segments(self._access)

    def last(self, application: str = "Pulls") -> int:
        """The last archived position: readers take positions up to it from the archive, the rest from the store."""
        segments = self.segments() if application == "Pulls" else []
        return segments[-1].last if segments else 0

    def read(self, segment: SegmentInfo) -> list[SegmentRecord]:
        """A segment's records; raises InvalidSegment when its bytes are not those recorded, SegmentMissing."""
        with self._cache_lock:
            cached = self._cache.get(segment.name)
            if cached is not None:
                self._cache.move_to_end(segment.name)
                return cached
        data = self._store.get(segment.name)
        if segment_hash(data) != segment.sha256:
            raise InvalidSegment(f"segment {segment.name}: its bytes are not those recorded when it was written")
        header, records = decode_segment(data)
        if (header.first, header.last, header.count, header.previous) != (segment.first, segment.last, segment.count,
                                                                          segment.previous):
            raise InvalidSegment(f"segment {segment.name}: its header is not what was recorded")
        with self._cache_lock:
            self._cache[segment.name] = records
            if len(self._cache) > CACHED_SEGMENTS:
                self._cache.popitem(last=False)
        return records

    def records_after(self, after: int, since: float | None = None,
                      until: float | None = None) -> Iterator[SegmentRecord]:
        """Archived records after position `after`; with `since`/`until`, segments holding no pull of
        [since, until) are not read at all (a query for the last hour reads no segment)."""
        for segment in self.segments():
            if segment.last <= after or (since is not None and segment.max_at < since) or \
                    (until is not None and segment.min_at >= until):
                continue
            yield from (r for r in self.read(segment) if r.id > after)

    # -- ArchivedChain (audit verify) ---------------------------------------------------------------
    def records(self, application: str, after: int) -> Iterator[SegmentRecord]:
        return self.records_after(after) if application == "Pulls" else iter(())

    def expected(self, application: str, after: int) -> Iterator[Expected]:
        if application != "Pulls":
            return iter(())
        return ((r.id, r.originator_id, r.topic, r.link) for r in self.records_after(after))

    def problem(self) -> Mismatch | None:
        previous = None
        for segment in self.segments():
            if segment.previous != (previous.sha256 if previous else ""):
                return Mismatch("Pulls", segment.first, "", "",
                                f"archive segment {segment.name} does not follow the segment before it")
            try:
                self.read(segment)
            except (InvalidSegment, SegmentMissing) as error:
                return Mismatch("Pulls", segment.first, "", "", f"archive: {error}")
            previous = segment
        return None
