"""Commit signals within one process: a recorder that committed events wakes the projection workers following that log.

eventsourcing builds recorders from a topic string, so a writer's recorder cannot be handed the
workers it should wake, and each worker reads through an application instance (and recorder) of its
own. Both sides meet here instead, by the identity of the log: the database and the events table.
A signal is only a hint that saves a worker from polling; what another process writes is still
found by the worker's fallback poll (or, on PostgreSQL, by LISTEN/NOTIFY).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable


def log_of(recorder: object) -> Hashable:
    """Which log a recorder writes: its database (SQLite file, or PostgreSQL server, database and schema) and table."""
    store = getattr(recorder, "datastore", None)
    table = getattr(recorder, "events_table_name", "")
    pool = getattr(store, "pool", None)
    db_name = getattr(pool, "db_name", None)   # SQLite: eventsourcing 9.5 keeps the file's name on the pool
    if db_name is not None:
        return ("sqlite", db_name, table)
    if pool is not None:            # PostgreSQL
        kwargs = getattr(pool, "kwargs", {}) or {}
        return ("postgres", kwargs.get("host"), str(kwargs.get("port")), kwargs.get("dbname"),
                getattr(store, "schema", ""), table)
    return ("other", id(store), table)   # e.g. in-memory: only that very recorder's readers


class CommitSignals:
    """threading.Events by log; `committed(log)` sets every event registered for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[Hashable, set[threading.Event]] = {}
        self._generations: dict[Hashable, int] = {}

    def subscribe(self, log: Hashable, event: threading.Event) -> None:
        with self._lock:
            self._waiters.setdefault(log, set()).add(event)

    def unsubscribe(self, log: Hashable, event: threading.Event) -> None:
        with self._lock:
            waiters = self._waiters.get(log)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[log]

    def committed(self, log: Hashable) -> None:
        """`log` has new events: every worker following it here wakes, and its shared tail page is stale."""
        with self._lock:
            self._generations[log] = self._generations.get(log, 0) + 1
            waiters = self._waiters.get(log)
            events = tuple(waiters) if waiters else ()
        for event in events:
            event.set()

    def announced(self, log: Hashable) -> None:
        """Another process wrote to `log` and said so (PostgreSQL NOTIFY): the shared tail page is stale. The
        listener wakes the log's workers itself."""
        with self._lock:
            self._generations[log] = self._generations.get(log, 0) + 1

    def generation(self, log: Hashable) -> int:
        """How many commits to `log` were signalled or announced here: a page read before a change is stale."""
        return self._generations.get(log, 0)


class Hurry:
    """Whether anyone in this process is waiting for the views to catch up (a flush, a pin, a seal, a test).

    Projection workers gather a burst of commits for up to GATHER before reading it (workers.py): cheaper,
    but a view then lags by that much. A waiter enters `with HURRY:` and every gathering worker reads at
    once, so waiting for a view costs its processing, not the gathering window too.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting = 0
        self._gatherers: set[threading.Event] = set()

    @property
    def waiting(self) -> bool:
        return self._waiting > 0

    def subscribe(self, event: threading.Event) -> None:
        with self._lock:
            self._gatherers.add(event)

    def unsubscribe(self, event: threading.Event) -> None:
        with self._lock:
            self._gatherers.discard(event)

    def __enter__(self) -> Hurry:
        with self._lock:
            self._waiting += 1   # counted before the events are set: see ProjectionWorker._gather
            events = tuple(self._gatherers)
        for event in events:
            event.set()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._waiting -= 1


# One per process: writers and workers of the same log find each other here (see the module docstring).
COMMITS = CommitSignals()
HURRY = Hurry()
