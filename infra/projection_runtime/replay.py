"""Replaying an application's notification log into views, in pages (STACK-NOTES §2.3, option 3)."""

from __future__ import annotations

import time
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from eventsourcing.application import Application
from eventsourcing.persistence import Tracking

from infra.projection_runtime.archived_pages import ArchivedRecords, pages
from infra.projection_runtime.decoding import decoder_of
from projections.base import View


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
    the views write this one (SQLite and PostgreSQL release the GIL while they work).
    """
    head = app.recorder.max_notification_id()
    counts = [0] * len(views)
    if head is None or head <= min(starts, default=head):
        return counts
    if topics is None:
        wanted = [view.handled_topics() for view in views]
        # A view that names no topics takes them all (the chain): then the pages are not filtered.
        topics = [] if any(not names for names in wanted) else sorted({topic for names in wanted for topic in names})
    # Exact classes, as the topics filter of a view's own replay selects them.
    handles = [frozenset(view.handles) for view in views]
    decode = until is not None or not all(view.stored for view in views)
    to_event = decoder_of(app)   # the mapper's events; pull events by a faster path (decoding.py)
    positions = list(starts)
    position = min(starts)
    if not any(view.takes_archived for view in views):
        archive = None   # no segment is read for views that take none of it (the audit and chain views)
    gatherings = [Gathering(view, gather_events) if gather_events and view.gathers else None for view in views]

    def decoded_pages() -> Iterator[tuple[list, list, list, bool]]:
        for page, archived in pages(app, archive, position, page_size, head, topics):
            trackings = [Tracking(app.name, n.id) for n in page]   # one per event, shared by every view
            yield page, trackings, [(to_event(n), t) for n, t in zip(page, trackings)] if decode else [], archived

    for page, trackings, decoded, archived in read_ahead(decoded_pages()):
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
            started = time.perf_counter()
            gathering = gatherings[i]
            if gathering is None or not gathering.add(batch):
                if gathering is not None:
                    gathering.write()   # what came before this page, before it
                # One transaction per page and view, tracked at the view's last event of the page.
                view.process(batch)
            if seconds is not None:
                seconds[i] += time.perf_counter() - started
            positions[i], counts[i] = batch[-1][1].notification_id, counts[i] + len(batch)
    for i, gathering in enumerate(gatherings):
        if gathering is not None:
            started = time.perf_counter()
            gathering.write()
            if seconds is not None:
                seconds[i] += time.perf_counter() - started
    for i, view in enumerate(views):
        if positions[i] < head and until is None:
            # The live runner tracks every event, used or not; end where it would have ended.
            view.insert_tracking(Tracking(app.name, head))
    return counts


class Gathering:
    """One view's pages gathered in a bulk replay, written once `limit` events are in it."""

    def __init__(self, view: View, limit: int) -> None:
        self.view, self.limit = view, limit
        self.classes = frozenset(view.gathers)
        # A view that gathers every class it handles need not look at each event of its pages.
        self.every_class = self.classes >= frozenset(view.handles)
        self.gathered: Any = None
        self.events = 0
        self.last: Tracking | None = None

    def add(self, batch: Sequence[tuple[Any, Tracking]]) -> bool:
        """Gather the page; False (nothing gathered) when the view cannot gather one of its events."""
        if not self.every_class and not self.classes.issuperset({type(event) for event, _ in batch}):
            return False
        if self.gathered is None:
            self.gathered = self.view.gathering()
        gather, gathered = self.view.gather, self.gathered
        for event, tracking in batch:
            gather(gathered, event, tracking)
        self.events += len(batch)
        self.last = batch[-1][1]
        if self.events >= self.limit:
            self.write()
        return True

    def write(self) -> None:
        """Write what is gathered with its last event's tracking, in one transaction; then start afresh."""
        if self.last is not None:
            self.view.process_gathered(self.gathered, self.last)
        self.gathered, self.events, self.last = None, 0, None


T = TypeVar("T")
_DONE = object()


def read_ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """The items of `items`, produced in a thread up to `depth` ahead of the consumer.

    The producer's errors are raised to the consumer; a consumer that stops early stops the producer
    at its next item (it holds nothing but the iterator's own resources, which are closed with it).
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    break
                ready.put(item)
            ready.put(_DONE)
        except BaseException as error:   # handed to the consumer, which raises it
            ready.put(error)

    thread = threading.Thread(target=produce, name="replay-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():   # unblock a producer waiting on a full queue
            try:
                ready.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()
