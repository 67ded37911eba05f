"""Retention with archive: pull events older than `[audit] retain_days` move to blob storage as chained
segments (domain/archive.py), then leave the event store, the audit view and the chain view.

One round, each step idempotent, so a process killed anywhere resumes without losing or duplicating:

1. resume: a segment recorded `Written` but not `Removed` has its rows removed now, then `Removed`;
2. plan: the next pulls after the last archived position, oldest first, up to `batch`, only those
   older than the cutoff, already processed by every view that follows Pulls (their aggregates keep
   counting them), never the log's last notification (SQLite reuses the largest rowid once deleted);
3. their links are taken from the chain view and recomputed from the stored bytes: a mismatch stops
   the round (archiving never launders an edited event into the archive);
4. write the segment (the store writes under a temporary name and renames), read it back, check its
   hash and every link;
5. record `ArchiveSegment.Written` (its id is derived from the first position: recorded once);
6. delete the rows (event store, audit view, chain view), then record `Removed`.

Between 5 and 6 the events are in both places; readers take positions up to the last written
segment from the archive and the rest from the store, so nothing is read twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import anyio.to_thread
from eventsourcing.application import Application
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from application.ports import Clock
from domain.archive import (ArchiveSegment, InvalidSegment, SegmentHeader, SegmentRecord, decode_segment,
                            encode_segment, segment_hash, segment_name)
from domain.audit_chain import GENESIS, PULL_TOPIC, link_of
from application.background import cancel_and_wait

log = logging.getLogger(__name__)

WRITTEN_TOPIC, REMOVED_TOPIC = get_topic(ArchiveSegment.Written), get_topic(ArchiveSegment.Removed)
SYSTEM_ACTOR = "system"
DAY = 86400.0


class SegmentStore(Protocol):
    """Where segments live (filesystem or S3, infra/storage/archive.py)."""

    def put(self, name: str, data: bytes) -> None:
        """Store under `name`, atomically (a reader sees the old object or the whole new one)."""

    def get(self, name: str) -> bytes:
        """The stored bytes; raises SegmentMissing."""


class SegmentMissing(LookupError):
    """No object under that name in the archive store."""


class EventRows(Protocol):
    """Deleting stored events of one topic in a position range (infra/event_rows.py): no library call does it."""

    def delete(self, application: str, topic: str, first: int, last: int) -> int: ...


class ArchiveAborted(RuntimeError):
    """The chain view and the stored events disagree: nothing is archived until `audit verify` is clean."""


@dataclass(frozen=True)
class SegmentInfo:
    application: str
    name: str
    sha256: str
    previous: str
    first: int
    last: int
    count: int
    head_link: str
    head_count: int
    min_at: float
    max_at: float
    size: int
    at: float
    position: int         # the Written event's notification id in the Access log
    removed: bool

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def read_segments(access: Application, application: str = "Pulls") -> list[SegmentInfo]:
    """Every segment recorded in the Access log for `application`, oldest first."""
    found: dict[str, SegmentInfo] = {}
    start = 1
    while True:
        page = access.recorder.select_notifications(start=start, limit=1000, topics=[WRITTEN_TOPIC, REMOVED_TOPIC])
        for notification in page:
            event = access.mapper.to_domain_event(notification)
            key = str(event.originator_id)
            if isinstance(event, ArchiveSegment.Written):
                if event.application == application:
                    found[key] = SegmentInfo(event.application, event.name, event.sha256, event.previous,
                                             event.first, event.last, event.count, event.head_link,
                                             event.head_count, event.min_at, event.max_at, event.size, event.at,
                                             notification.id, False)
            elif key in found:
                found[key] = SegmentInfo(**{**found[key].__dict__, "removed": True})
        if len(page) < 1000:
            return sorted(found.values(), key=lambda s: s.first)
        start = page[-1].id + 1


@dataclass
class ArchiveReport:
    segments: int = 0
    events: int = 0
    bytes: int = 0
    resumed: int = 0


class Archiver:
    """Runs archive rounds for the Pulls log (module docstring)."""

    def __init__(self, pulls: Application, access: Application, store: SegmentStore, rows: EventRows,
                 chain: Any, audit: Any, projected: Callable[[], int], clock: Clock, retain_days: float,
                 batch: int = 5000, step: Callable[[str], None] | None = None, actor: str = SYSTEM_ACTOR) -> None:
        self._pulls, self._access, self._store, self._rows = pulls, access, store, rows
        self._chain, self._audit, self._projected = chain, audit, projected
        self._clock, self._retain_days, self._batch = clock, retain_days, batch
        self._step = step or (lambda name: None)   # fault injection in tests: a SIGKILL at a named step
        self._actor = actor

    @property
    def enabled(self) -> bool:
        return self._retain_days > 0

    def run(self, max_segments: int | None = None) -> ArchiveReport:
        """Resume what a killed round left, then archive segment after segment until nothing is due."""
        report = ArchiveReport()
        if self._retain_days <= 0:
            return report
        segments = read_segments(self._access)
        for segment in segments:
            if not segment.removed:
                self._remove(segment)
                report.resumed += 1
        previous = segments[-1] if segments else None
        while max_segments is None or report.segments < max_segments:
            written = self._archive_next(previous)
            if written is None:
                break
            report.segments, report.events, report.bytes = (report.segments + 1, report.events + written.count,
                                                            report.bytes + written.size)
            previous = written
        return report

    def _archive_next(self, previous: SegmentInfo | None) -> SegmentInfo | None:
        after = previous.last if previous else 0
        cutoff = self._clock.now() - self._retain_days * DAY
        limit = min(self._projected(), (self._pulls.recorder.max_notification_id() or 0) - 1)
        records, head_count, times = self._due(after, limit, cutoff)
        if not records:
            return None
        header = SegmentHeader("Pulls", records[0].id, records[-1].id, len(records),
                               previous.sha256 if previous else "",
                               previous.head_link if previous else GENESIS.hex(), records[-1].link)
        data = encode_segment(header, records)
        name = segment_name("Pulls", header.first, header.last)
        self._store.put(name, data)
        self._step("written")
        self._check_stored(name, data, header)
        info = SegmentInfo("Pulls", name, segment_hash(data), header.previous, header.first, header.last,
                           header.count, header.head_link, head_count, min(times), max(times), len(data),
                           self._clock.now(), 0, False)
        segment = ArchiveSegment(application="Pulls", name=name, sha256=info.sha256, previous=info.previous,
                                 first=info.first, last=info.last, count=info.count, head_link=info.head_link,
                                 head_count=head_count, min_at=info.min_at, max_at=info.max_at, size=info.size,
                                 actor=self._actor, at=info.at)
        try:
            self._access.save(segment)
        except IntegrityError:
            # Another archiver (a replica) recorded a segment starting here meanwhile: its range is the
            # one that counts, and its removal is its own (or the next round's resume), never ours.
            log.info("archive segment from position %d was recorded by another archiver", info.first)
            return None
        self._step("recorded")
        self._remove(info)
        log.info("archived %d pull events (positions %d-%d) to %s, %d bytes", info.count, info.first, info.last,
                 name, info.size)
        return info

    def _due(self, after: int, limit: int, cutoff: float) -> tuple[list[SegmentRecord], int, list[float]]:
        """The next pulls to archive with their links, checked against the chain view; the last one's
        ordinal; their pull times."""
        link = bytes.fromhex(self._chain_link_before(after))
        expected = {row.position: row for row in self._chain.links("Pulls", after=after, limit=self._batch)}
        records: list[SegmentRecord] = []
        times: list[float] = []
        for stored in self._stored_pulls(after, limit):
            event = self._pulls.mapper.to_domain_event(stored)
            if event.at >= cutoff or len(records) >= self._batch:
                break
            link = link_of(link, "Pulls", stored)
            row = expected.get(stored.id)
            if row is None or row.link != link.hex():
                raise ArchiveAborted(f"pull at position {stored.id} ({stored.originator_id}) does not match the "
                                     "chain view; run `entrepot audit verify` before archiving")
            records.append(SegmentRecord(stored.id, str(stored.originator_id), stored.originator_version,
                                         stored.topic, bytes(stored.state), link.hex()))
            times.append(event.at)
        return records, (expected[records[-1].id].count if records else 0), times

    def _chain_link_before(self, after: int) -> str:
        if after == 0:
            return GENESIS.hex()
        segments = read_segments(self._access)
        return next(s.head_link for s in reversed(segments) if s.last == after)

    def _stored_pulls(self, after: int, limit: int) -> Iterator[Any]:
        position = after
        while position < limit:
            page = self._pulls.recorder.select_notifications(start=position, limit=500, stop=limit,
                                                             topics=[PULL_TOPIC], inclusive_of_start=False)
            yield from page
            if len(page) < 500:
                return
            position = page[-1].id

    def _check_stored(self, name: str, data: bytes, header: SegmentHeader) -> None:
        """Read the segment back: the same bytes, decodable, every link recomputed from its states."""
        try:
            stored = self._store.get(name)
            if segment_hash(stored) != segment_hash(data):
                raise InvalidSegment("the stored bytes differ from those written")
            read_header, records = decode_segment(stored)
            link = bytes.fromhex(header.previous_link)
            for record in records:
                link = link_of(link, "Pulls", record)
                if link.hex() != record.link:
                    raise InvalidSegment(f"link of position {record.id} does not verify")
            if read_header != header:
                raise InvalidSegment("header differs")
        except (InvalidSegment, SegmentMissing) as error:
            raise ArchiveAborted(f"segment {name} did not verify after writing: {error}") from None

    def _remove(self, segment: SegmentInfo) -> None:
        rows = self._rows.delete("Pulls", PULL_TOPIC, segment.first, segment.last)
        self._step("deleted-events")
        self._audit.remove_rows(segment.first, segment.last)
        self._chain.remove_links("Pulls", segment.last)
        recorded = self._access.repository.get(ArchiveSegment.create_id("Pulls", segment.first))
        recorded.remove(rows, self._actor, self._clock.now())
        try:
            self._access.save(recorded)
        except IntegrityError:   # another archiver (a replica resuming the same segment) recorded it first
            log.info("removal of archive segment %s was recorded by another archiver", segment.name)


class ArchiveService:
    """`entrepot serve` runs an archive round at start and every `interval` seconds while `retain_days` > 0."""

    def __init__(self, archiver: Archiver, interval: float = 3600.0) -> None:
        self._archiver, self._interval = archiver, interval
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if self._archiver.enabled:
            self._task = asyncio.create_task(self._run(), name="audit-archive")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)   # lets a deadline on this stop through (application/background.py)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                report = await anyio.to_thread.run_sync(self._archiver.run, abandon_on_cancel=True)
                if report.segments or report.resumed:
                    log.info("archive round: %d segments, %d events, %d bytes (%d resumed)", report.segments,
                             report.events, report.bytes, report.resumed)
            except Exception:   # the next round tries again; a killed round is resumed by it
                log.exception("archiving old pull events failed")
            await asyncio.sleep(self._interval)
