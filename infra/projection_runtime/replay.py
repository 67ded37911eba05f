"""Replaying an application's notification log into views, in pages (STACK-NOTES §2.3, option 3)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from eventsourcing.application import Application
from eventsourcing.persistence import Tracking

from projections.base import View


def replay(view: View, app: Application, topics: list[str], page_size: int, start: int = 0) -> int:
    """Process the app's events after `start` up to its current head; returns how many were processed."""
    return replay_shared([view], app, page_size, [start], topics=topics)[0]


def replay_shared(views: Sequence[View], app: Application, page_size: int, starts: Sequence[int],
                  topics: list[str] | None = None, seconds: list[float] | None = None) -> list[int]:
    """Replay the app's log into several views at once: each page is read and decoded once, then every
    view writes the events it handles in one transaction of its own, tracked at the last of them.

    A view's rows do not depend on where pages begin and end (the live runner's pages differ anyway),
    so sharing pages gives each view what replaying it alone would. `starts`: each view's position
    (events at or before it are skipped for that view). `seconds`, when given, accumulates the time
    each view spent writing. Returns the events each view processed.
    """
    head = app.recorder.max_notification_id()
    counts = [0] * len(views)
    if head is None or head <= min(starts, default=head):
        return counts
    if topics is None:
        topics = sorted({topic for view in views for topic in view.handled_topics()})
    # Exact classes, as the topics filter of a view's own replay selects them.
    handles = [frozenset(view.handles) for view in views]
    positions = list(starts)
    position = min(starts)
    while True:
        page = app.recorder.select_notifications(start=position, limit=page_size, stop=head, topics=topics,
                                                 inclusive_of_start=False)
        if not page:
            break
        decoded = [(app.mapper.to_domain_event(n), Tracking(app.name, n.id)) for n in page]
        for i, view in enumerate(views):
            batch = [item for item in decoded if item[1].notification_id > positions[i]
                     and type(item[0]) in handles[i]]
            if not batch:
                continue
            started = time.perf_counter()
            # One transaction per page and view, tracked at the view's last event of the page.
            view.process(batch)
            if seconds is not None:
                seconds[i] += time.perf_counter() - started
            positions[i], counts[i] = batch[-1][1].notification_id, counts[i] + len(batch)
        position = page[-1].id
        if len(page) < page_size:
            break
    for i, view in enumerate(views):
        if positions[i] < head:
            # The live runner tracks every event, used or not; end where it would have ended.
            view.insert_tracking(Tracking(app.name, head))
    return counts
