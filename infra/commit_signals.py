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
    if hasattr(store, "db_name"):   # SQLite
        return ("sqlite", store.db_name, table)
    pool = getattr(store, "pool", None)
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
        waiters = self._waiters.get(log)   # a dict read is atomic; a set copied under the lock
        if not waiters:
            return
        with self._lock:
            events = tuple(waiters)
        for event in events:
            event.set()


# One per process: writers and workers of the same log find each other here (see the module docstring).
COMMITS = CommitSignals()
