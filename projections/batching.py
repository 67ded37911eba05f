"""Projection runners that write one view transaction per page of events, not one per event.

The library's runner calls process_event() for each event, so every pull cost each of the audit,
counters and blobs views its own transaction (the largest share of a warm pull's CPU in the
benchmark profile). Views already take a batch: rows and the batch's last tracking position go
in one transaction, so exactly-once holds as before.
"""

from __future__ import annotations

import weakref
from threading import Event
from typing import Any

from eventsourcing.projection import BaseProjectionRunner, ProjectionRunner

MAX_BATCH = 500  # the subscription's page size


def _page_has_more(subscription: Any) -> bool:
    # The recorder subscription (ListenNotifySubscription) holds the current page in memory; what
    # is left of it arrives without waiting, so the batch is written only when the page is used up.
    inner = getattr(subscription, "subscription", None)
    page = getattr(inner, "_notifications", None)
    index = getattr(inner, "_notifications_index", None)
    return page is not None and index is not None and index < len(page)


def process_in_batches(subscription, projection, is_stopping: Event, runner: weakref.ReferenceType) -> None:
    """The runner's processing loop (same contract as the library's): errors go to the runner."""
    batch: list = []
    try:
        for item in subscription:
            batch.append(item)
            if len(batch) >= MAX_BATCH or not _page_has_more(subscription):
                projection.view.process(batch)
                batch = []
    except BaseException as error:
        owner = runner()
        if owner is not None:
            owner._thread_error = error  # noqa: SLF001 - where the library's run_forever() looks
    finally:
        is_stopping.set()


class BatchingProjectionRunner(ProjectionRunner):
    _process_events_loop = staticmethod(process_in_batches)


class BatchingBaseProjectionRunner(BaseProjectionRunner):
    _process_events_loop = staticmethod(process_in_batches)
