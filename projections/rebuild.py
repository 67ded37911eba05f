"""Offline rebuild of one view from the event store, in batches (STACK-NOTES §2.3, option 3)."""

from __future__ import annotations

import logging

from eventsourcing.application import Application
from eventsourcing.persistence import Tracking

from projections.base import View
from projections.catalog import open_view, spec

log = logging.getLogger(__name__)

PAGE_SIZE = 500


def rebuild(name: str, env: dict, page_size: int = PAGE_SIZE) -> dict[str, int]:
    """Clear the view and replay every application it follows; returns events replayed per application.

    Nothing else may write the view meanwhile: stop its runners (or the server) first.
    Events recorded during the rebuild are left for the runner, which resumes after the
    position the rebuild ends at.
    """
    projection_spec = spec(name)
    view = open_view(name, env)
    replayed: dict[str, int] = {}
    try:
        view.clear()  # rows and tracking in one transaction: a failed rebuild restarts from scratch
        for app_class in projection_spec.applications:
            app = app_class(env=env)
            try:
                replayed[app.name] = _replay(view, app, projection_spec.projection.handled_topics(), page_size)
            finally:
                app.close()
    finally:
        view.close()
    log.info("rebuilt projection %s: %s", name, replayed)
    return replayed


def _replay(view: View, app: Application, topics: list[str], page_size: int) -> int:
    head = app.recorder.max_notification_id()
    if head is None:
        return 0
    position, count = 0, 0
    while True:
        page = app.recorder.select_notifications(start=position, limit=page_size, stop=head, topics=topics,
                                                 inclusive_of_start=False)
        if not page:
            break
        # One transaction per page, tracked at the page's last notification.
        view.process([(app.mapper.to_domain_event(n), Tracking(app.name, n.id)) for n in page])
        position, count = page[-1].id, count + len(page)
        if len(page) < page_size:
            break
    if position < head:
        # The live runner tracks every event, used or not; end where it would have ended.
        view.insert_tracking(Tracking(app.name, head))
    return count
