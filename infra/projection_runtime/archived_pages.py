"""The page source of a replay: an application's archived events first, then its event store.

Retention (application/archive.py) moves old `Pull.Recorded` events into segments and deletes them
from the event store; a view replayed from the store alone would lose them from its aggregates.
A replay therefore reads, for the Pulls log, the archived records up to the archive's last position
(as stored notifications with their original notification ids, so tracking and ordering are those
of the original log), then the store after that position. Between a segment's `Written` and its
`Removed` the events are in both places; taking positions up to `last()` from the archive and the
rest from the store reads none twice (the same rule as `ArchivedAudit`).

Pages are tagged `archived` so that each view decides whether it takes them (`View.takes_archived`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Protocol
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import Notification

from infra.projection_runtime.page_reading import select_page


class ArchivedRecords(Protocol):
    """What a replay needs of the archive (application/archive_reading.py's SegmentArchive)."""

    def last(self, application: str = "Pulls") -> int: ...

    def records(self, application: str, after: int) -> Iterator[Any]: ...


class Page(NamedTuple):
    notifications: list[Notification]
    archived: bool          # read from archive segments (their rows are gone from the event store)


def archived_until(archive: ArchivedRecords | None, app: Application) -> int:
    """The last archived position of the app's log (0: nothing archived, or no archive given)."""
    return archive.last(app.name) if archive is not None else 0


def pages(app: Application, archive: ArchivedRecords | None, start: int, page_size: int, stop: int,
          topics: Sequence[str] = ()) -> Iterator[Page]:
    """Pages of the app's notifications after `start` up to `stop`: archived ones first, then the store's."""
    position = start
    archived_last = min(archived_until(archive, app), stop)
    if archive is not None and position < archived_last:
        yield from _archived_pages(archive, app.name, position, archived_last, page_size, topics)
        position = archived_last
    while position < stop:
        page: list[Notification] = []
        while len(page) < page_size and position < stop:
            # With a topics filter, each query covers at most `page_size` positions (a page sparser than that
            # takes several): PostgreSQL's planner, with no statistics on the events table (a restored store
            # before its first ANALYZE) or a filter it thinks selective, took a bitmap scan of every position
            # up to `stop` and sorted them all, for each page: 1.4 s a page at 1M pulls against 2.5 ms for
            # the window, so a rebuild of views that all filter topics was quadratic in the log's length.
            upto = min(stop, position + page_size) if topics else stop
            wanted = page_size - len(page)
            found = select_page(app.recorder, position, wanted, upto, topics)
            page += found
            # Fewer than asked: every position up to `upto` was read.
            position = found[-1].id if len(found) == wanted else upto
        if page:
            yield Page(page, False)


def _archived_pages(archive: ArchivedRecords, application: str, after: int, last: int, page_size: int,
                    topics: Sequence[str]) -> Iterator[Page]:
    wanted = frozenset(topics)
    page: list[Notification] = []
    for record in archive.records(application, after):
        if record.id > last:
            break
        if wanted and record.topic not in wanted:
            continue
        page.append(as_notification(record))
        if len(page) == page_size:
            yield Page(page, True)
            page = []
    if page:
        yield Page(page, True)


def as_notification(record: Any) -> Notification:
    """An archived record as the store returned it before archiving (the chain hashes these bytes)."""
    return Notification(originator_id=_originator_id(record.originator_id),
                        originator_version=record.originator_version, topic=record.topic, state=record.state,
                        id=record.id)


def _originator_id(value: str) -> UUID | str:
    # Segments keep the id as text; the store hands UUIDs back (text ids, ORIGINATOR_ID_TYPE=text, stay text).
    try:
        return UUID(value)
    except ValueError:
        return value
