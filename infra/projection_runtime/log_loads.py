"""Views that a bulk rebuild on PostgreSQL has the database fill straight from a log (View.loads_from_log).

A view whose rows are an event's stored fields (the audit view: a row per pull) needs nothing this process
computes: the server can read each stored state itself (json_to_record) and insert the rows, with no page
read, decoded, built into rows and COPYed back by Python. On the 10M-pull store the server parsed the pulls'
states at ~2.7 us each (json; jsonb took ~20 us), against ~5 us for this process's fastest decoding before any
row is built (bench/results/2026-12-02-rebuild-s18.md).

A load runs in a thread of its own while the other views replay (the thread only waits on the server), in
chunks of LOAD_CHUNK notification ids, each one transaction with its tracking position, so a rebuild killed
midway leaves the copy as a replay would (it was never live; the next rebuild starts it over). The view then
catches up with what the log gained meanwhile by the usual replay, from its tracking position.

Only where the rows come out the same: a PostgreSQL event store in the views' own database, the plain JSON
format the fast decoder knows (no cipher, no compressor), the view's events of that log all of the loaded
class, and no archive to replay first unless the view takes none of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import get_topic
from psycopg.sql import Identifier

from infra.projection_runtime.decoding import PageDecoder
from projections.base import View

# Notification ids per transaction: ~500,000 pulls, a few seconds of the server's work each.
LOAD_CHUNK = 500_000
# False: every view replays, as before.
LOADS_FROM_LOGS = True


def loadable(view: View, app: Any, archive: Any) -> bool:
    """Whether a bulk rebuild may fill `view` from `app`'s log on the server (see the module's docstring)."""
    loaded = view.loads_from_log.get(app.name)
    recorder = app.recorder
    return (LOADS_FROM_LOGS and loaded is not None and set(view.handles) <= {loaded}
            and (archive is None or not view.takes_archived)
            and isinstance(recorder, PostgresApplicationRecorder) and PageDecoder(app.mapper).fast
            and _same_database(getattr(view, "datastore", None), recorder.datastore))


def _same_database(views: Any, events: Any) -> bool:
    def where(datastore: Any) -> tuple:
        kwargs = getattr(getattr(datastore, "pool", None), "kwargs", None) or {}
        return tuple(kwargs.get(key) for key in ("dbname", "host", "port", "user"))
    return views is not None and where(views) == where(events) and all(where(views)[:1])


class LogLoad:
    """`view` filled from `app`'s log up to its head now, in a thread: `join()` gives (events, seconds)."""

    def __init__(self, view: View, app: Any, stop_check: Callable[[], None] | None = None) -> None:
        self.view, self.app, self._stop_check = view, app, stop_check
        recorder = app.recorder
        self._table = Identifier(recorder.datastore.schema, recorder.events_table_name).as_string()
        self._topic = get_topic(view.loads_from_log[app.name])
        self._head = recorder.max_notification_id() or 0
        self.events, self.seconds = 0, 0.0
        self._error: BaseException | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"load-{view.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            after = self.view.max_tracking_id(self.app.name) or 0
            while after < self._head and not self._stopping.is_set():
                last = min(after + LOAD_CHUNK, self._head)
                self.events += self.view.load_from_log(self.app.name, self._table, self._topic, after, last)
                after = last
        except BaseException as error:   # raised in join()
            self._error = error
        finally:
            self.seconds = time.perf_counter() - started

    def join(self) -> tuple[int, float]:
        """Wait for the load (checking the rebuild's stop between waits); raise its error."""
        while self._thread.is_alive():
            try:
                if self._stop_check is not None:
                    self._stop_check()
            except BaseException:
                self.stop()
                raise
            self._thread.join(timeout=0.5)
        if self._error is not None:
            raise self._error
        return self.events, self.seconds

    def stop(self) -> None:
        """No chunk after the one under way (this rebuild failed)."""
        self._stopping.set()

    def abandon(self) -> None:
        """stop(), and wait for the chunk under way: the view is closed after this."""
        self.stop()
        self._thread.join()
