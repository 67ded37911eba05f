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
