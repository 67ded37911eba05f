"""Replaying an application's notification log into a view, in pages (STACK-NOTES §2.3, option 3)."""

from __future__ import annotations

from eventsourcing.application import Application
from eventsourcing.persistence import Tracking

from projections.base import View, page_of


def replay(view: View, app: Application, topics: list[str], page_size: int, start: int = 0,
           until: float | None = None) -> int:
    """Process the app's events after `start` up to its current head; returns how many were processed.

    `until` (epoch seconds): only the events stamped at or before it, for a copy of the views as they
    stood then (`entrepot replay`). The filter reads each event's own timestamp, not its position: a
    log's order is its commit order, which a clock need not follow exactly (batched pulls, replicas).
    """
    head = app.recorder.max_notification_id()
    if head is None or head <= start:
        return 0
    position, count = start, 0
    while True:
        page = app.recorder.select_notifications(start=position, limit=page_size, stop=head, topics=topics,
                                                 inclusive_of_start=False)
        if not page:
            break
        # One transaction per page, tracked at the page's last notification.
        taken = page
        if until is not None:   # only what was stamped by then (decoded here even for a view of stored bytes)
            taken = [n for n in page if app.mapper.to_domain_event(n).timestamp.timestamp() <= until]
        batch = page_of(view, app, taken)
        view.process(batch)
        position, count = page[-1].id, count + len(batch)
        if len(page) < page_size:
            break
    if position < head and until is None:
        # The live runner tracks every event, used or not; end where it would have ended.
        view.insert_tracking(Tracking(app.name, head))
    return count
