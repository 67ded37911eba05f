"""Replaying an application's notification log into views, in pages (STACK-NOTES §2.3, option 3)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar

from eventsourcing.application import Application
from eventsourcing.persistence import Tracking

from infra.projection_runtime.archived_pages import ArchivedRecords, pages
from infra.projection_runtime.bulk import ViewWriter, read_ahead
from infra.projection_runtime.decoding import decoder_of
from projections.base import View

# Called before each page of a replay in this context, when set: raising stops the replay there (its
# views as a killed replay leaves them). rebuild_many sets it to its child process's health, so that a
# child that failed stops this process's part now, not once that part is done (an hour at 10M pulls).
STOP_CHECK: ContextVar[Callable[[], None] | None] = ContextVar("replay_stop_check", default=None)


def replay(view: View, app: Application, topics: list[str], page_size: int, start: int = 0,
           until: float | None = None, archive: ArchivedRecords | None = None) -> int:
    """Process the app's events after `start` up to its current head; returns how many were processed.

    `until` (epoch seconds): only the events stamped at or before it, for a copy of the views as they
    stood then (`entrepot replay`). The filter reads each event's own timestamp, not its position: a
    log's order is its commit order, which a clock need not follow exactly (batched pulls, replicas).
    """
    return replay_shared([view], app, page_size, [start], topics=topics, until=until, archive=archive)[0]


def replay_shared(views: Sequence[View], app: Application, page_size: int, starts: Sequence[int],
                  topics: list[str] | None = None, seconds: list[float] | None = None,
                  until: float | None = None, archive: ArchivedRecords | None = None,
                  gather_events: int = 0) -> list[int]:
    """Replay the app's log into several views at once: each page is read and decoded once, then every
    view writes the events it handles in one transaction of its own, tracked at the last of them.

    A view's rows do not depend on where pages begin and end (the live runner's pages differ anyway),
    so sharing pages gives each view what replaying it alone would. `starts`: each view's position
    (events at or before it are skipped for that view). `seconds`, when given, accumulates the time
    each view spent writing. A view of stored bytes (`View.stored`, the chain) takes the notifications
    themselves, every topic of its log. Returns the events each view processed.

    `archive`, when given: the app's archived events are read first (archived_pages.py), into the views
    that take them (`View.takes_archived`); the others skip those pages.

    `gather_events` > 0 (a rebuild): a view with `gathers` folds its pages into one gathering and writes it,
    with the tracking of its last event, once it holds that many events (and at the end): far fewer rows
    written when pages repeat keys (counts, per-image stats). A page with an event the view cannot gather
    writes what was gathered, then itself as usual. Killed in between, the view holds what was written with
    its tracking: it resumes after that, exactly once. The next page is read and decoded in a thread while
    the views write this one, each in a thread of its own (bulk.py: SQLite and psycopg release the GIL
    while the database works).
    """
    head = app.recorder.max_notification_id()
    counts = [0] * len(views)
    if head is None or head <= min(starts, default=head):
        return counts
    if topics is None:
        wanted = [view.handled_topics() for view in views]
        # A view that names no topics takes them all (the chain): then the pages are not filtered.
        topics = [] if any(not names for names in wanted) else sorted({topic for names in wanted for topic in names})
    # Exact classes, as the topics filter of a view's own replay selects them (handles, in _replay_pages).
    decode = until is not None or not all(view.stored for view in views)
    positions = list(starts)
    if not any(view.takes_archived for view in views):
        archive = None   # no segment is read for views that take none of it (the audit and chain views)
    # Each view writes in a thread of its own, page after page: while one view's database works (SQLite
    # and psycopg release the GIL; PostgreSQL works in a process of its own), the others go on.
    writers = [ViewWriter(view, gather_events, log=app.name) for view in views]
    try:
        counts = _replay_pages(views, writers, app, page_size, positions, topics, decode, until, archive, head)
    finally:
        for writer in writers:
            writer.close()
    if seconds is not None:
        for i, writer in enumerate(writers):
            seconds[i] += writer.seconds
    for i, view in enumerate(views):
        if positions[i] < head and until is None:
            # The live runner tracks every event, used or not; end where it would have ended.
            view.insert_tracking(Tracking(app.name, head))
    return counts


def _replay_pages(views: Sequence[View], writers: Sequence[ViewWriter], app: Application, page_size: int,
                  positions: list[int], topics: list[str], decode: bool, until: float | None,
                  archive: ArchivedRecords | None, head: int) -> list[int]:
    """replay_shared's pages, handed to each view's writer; `positions` end at each view's last event."""
    handles = [frozenset(view.handles) for view in views]
    to_event = decoder_of(app)   # the mapper's events; pull events by a faster path (decoding.py)
    position = min(positions)
    counts = [0] * len(views)

    def decoded_pages() -> Iterator[tuple[list, list, list, bool]]:
        for page, archived in pages(app, archive, position, page_size, head, topics):
            trackings = [Tracking(app.name, n.id) for n in page]   # one per event, shared by every view
            yield page, trackings, [(to_event(n), t) for n, t in zip(page, trackings)] if decode else [], archived

    stop_check = STOP_CHECK.get()
    for page, trackings, decoded, archived in read_ahead(decoded_pages()):
        if stop_check is not None:
            stop_check()
        if until is not None:   # only what was stamped by then
            stamped = [event.timestamp.timestamp() <= until for event, _ in decoded]
            page = [n for n, keep in zip(page, stamped) if keep]
            trackings = [t for t, keep in zip(trackings, stamped) if keep]
            decoded = [item for item, keep in zip(decoded, stamped) if keep]
        if not page:
            continue
        first = page[0].id
        kinds = {type(event) for event, _ in decoded}
        for i, view in enumerate(views):
            if archived and not view.takes_archived:
                continue
            if view.stored:
                batch = list(zip(page, trackings)) if positions[i] < first else \
                    [(n, t) for n, t in zip(page, trackings) if n.id > positions[i]]
            elif positions[i] < first and kinds <= handles[i]:
                batch = decoded   # the whole page: the usual case of a rebuild, without a copy per view
            else:
                batch = [item for item in decoded if item[1].notification_id > positions[i]
                         and type(item[0]) in handles[i]]
            if not batch:
                continue
            writers[i].write(batch)
            positions[i], counts[i] = batch[-1][1].notification_id, counts[i] + len(batch)
    for writer in writers:
        writer.finish()   # what is gathered; raises a writer's error
    return counts
