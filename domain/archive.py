"""Archive segments of old pull events, pure: the `ArchiveSegment` aggregate and the segment format.

A segment is gzip-compressed JSON Lines. The first line is the header:

    {"format": "entrepot-archive-v1", "application": "Pulls", "first": P, "last": Q, "count": N,
     "previous": "<sha256 hex of the previous segment's bytes, or empty>",
     "previous_link": "<the chain link before the first event>", "head_link": "<the link of the last event>"}

then one line per archived event, in position order, with the event exactly as stored and its chain link:

    {"position": P, "event_id": "<uuid>", "version": 1, "topic": "domain.pull:Pull.Recorded",
     "state": "<base64 of the stored bytes>", "link": "<hex>"}

Segments chain to each other through `previous`, and through the audit chain itself (a segment's
`previous_link` is the previous segment's `head_link`). The bytes are deterministic for the same
events (gzip without a timestamp, sorted keys), so a segment rewritten after a crash is the same object.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from dataclasses import dataclass
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

FORMAT = "entrepot-archive-v1"


class InvalidSegment(ValueError):
    """Bytes that are not a segment of this format, or whose header does not describe its lines."""


@dataclass(frozen=True)
class SegmentRecord:
    """One archived event; the attribute names are a stored notification's, so links are computed alike."""

    id: int                   # the notification id (position)
    originator_id: str
    originator_version: int
    topic: str
    state: bytes
    link: str                 # hex of its chain link


@dataclass(frozen=True)
class SegmentHeader:
    application: str
    first: int
    last: int
    count: int
    previous: str             # sha256 hex of the previous segment's bytes ("" for the first)
    previous_link: str
    head_link: str


def encode_segment(header: SegmentHeader, records: list[SegmentRecord]) -> bytes:
    lines = [json.dumps({"format": FORMAT, **header.__dict__}, sort_keys=True)]
    lines += [json.dumps({"position": r.id, "event_id": str(r.originator_id), "version": r.originator_version,
                          "topic": r.topic, "state": base64.b64encode(r.state).decode(), "link": r.link},
                         sort_keys=True) for r in records]
    return gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6, mtime=0)


def decode_segment(data: bytes) -> tuple[SegmentHeader, list[SegmentRecord]]:
    try:
        lines = gzip.decompress(data).decode().splitlines()
        head = json.loads(lines[0])
        if head.pop("format", None) != FORMAT:
            raise InvalidSegment("not an entrepot-archive-v1 segment")
        header = SegmentHeader(**head)
        records = [SegmentRecord(d["position"], d["event_id"], d["version"], d["topic"],
                                 base64.b64decode(d["state"]), d["link"]) for d in map(json.loads, lines[1:])]
    except (OSError, EOFError, ValueError, KeyError, TypeError, IndexError) as error:
        raise InvalidSegment(f"unreadable segment: {error}") from None
    if len(records) != header.count or (records and (records[0].id, records[-1].id) != (header.first, header.last)):
        raise InvalidSegment("the segment's header does not describe its events")
    return header, records


def segment_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def segment_name(application: str, first: int, last: int) -> str:
    """The object name under the archive prefix: one segment per first position (a rewrite replaces it)."""
    return f"{application.lower()}/{first:015d}-{last:015d}.jsonl.gz"


class ArchiveSegment(Aggregate):
    """One segment's life: Written (stored and verified), then Removed (its events left the event store)."""

    class Written(Aggregate.Created):
        application: str
        name: str
        sha256: str
        previous: str
        first: int
        last: int
        count: int
        head_link: str
        head_count: int    # the last event's ordinal in the chain: where a rebuilt chain view resumes
        min_at: float      # the earliest and latest pull times inside: time-bounded queries skip the segment
        max_at: float
        size: int          # bytes of the compressed segment
        actor: str
        at: float

    class Removed(Aggregate.Event):
        rows: int
        actor: str
        at: float

    @staticmethod
    def create_id(application: str, first: int, **_: Any) -> UUID:
        # Deterministic: a second Written for the same first position (a retry, another replica) is refused.
        return uuid5(NAMESPACE_URL, f"entrepot:archive-segment:{application}:{first}")

    @event(Written)
    def __init__(self, application: str, name: str, sha256: str, previous: str, first: int, last: int, count: int,
                 head_link: str, head_count: int, min_at: float, max_at: float, size: int, actor: str,
                 at: float) -> None:
        self.application, self.name, self.sha256, self.previous = application, name, sha256, previous
        self.first, self.last, self.count, self.head_link, self.size = first, last, count, head_link, size
        self.head_count, self.min_at, self.max_at = head_count, min_at, max_at
        self.removed = False

    def remove(self, rows: int, actor: str, at: float) -> None:
        if not self.removed:
            self._removed(rows=rows, actor=actor, at=at)

    @event(Removed)
    def _removed(self, rows: int, actor: str, at: float) -> None:
        self.removed = True
