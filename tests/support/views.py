"""Reading read-model views from tests, which trail the event store by the projections' lag."""

from __future__ import annotations

import time


def wait_for_rows(view, count: int, timeout: float = 10.0) -> list:
    """The view's rows (up to 1000) once there are at least `count`, or whatever is there after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        rows = view.query(limit=1000)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.02)


def blob_row(blobs, org: str, digest: str):
    """The blobs view's row of one cached blob (what BlobsView.get_blob answered), or None."""
    return next((row for row in blobs.list_blobs(org) if row.digest == digest), None)


def manifest_pulls(blobs, org: str, repository: str, digest: str) -> tuple[int, float | None]:
    """(pull count, last pulled) of one manifest or index digest, read from the blobs view's manifest_refs rows."""
    for row in blobs.dump()["manifest_refs"]:   # org, repository, digest, blobs, last_pulled, pull_count
        if tuple(row[:3]) == (org, repository, digest):
            return row[5], row[4]
    return 0, None


def view_dumps(env: dict, names) -> dict:
    """{view: every table's rows} of the named views (View.dump), for comparing a rebuilt read model."""
    from infra.projection_runtime.opening import open_view

    out = {}
    for name in names:
        view = open_view(name, env)
        try:
            out[name] = view.dump()
        finally:
            view.close()
    return out


def events_of(*items) -> list:
    """The domain events of `items`, in order: an aggregate's pending events (collect_events), or an event as it is."""
    events = []
    for item in items:
        events.extend(item.collect_events() if hasattr(item, "collect_events") else [item])
    return events
