"""What every view shares: a backend-neutral View (its one event dispatch) and the SQLite base."""

from __future__ import annotations

import logging
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from eventsourcing.persistence import Tracking, TrackingRecorder
from eventsourcing.sqlite import SQLiteCursor, SQLiteTrackingRecorder
from eventsourcing.utils import get_topic

log = logging.getLogger(__name__)

Batch = Sequence[tuple[Any, Tracking]]  # (domain event, its position) in notification order
# View.gathering_scale of the views that add events up per key (analytics, blobs, counters, retention).
AGGREGATE_GATHERING_SCALE = 4
# ... of those that write a row per image or blob (blobs, retention), not per pull key as analytics does: at 10M
# pulls over 200,000 images each gathering of 400,000 events upserted most images' and blobs' pull counts again
# (blobs' count upserts: ~3.8M rows for 1M blobs; retention's: ~600k for 200k images). For the pulls only
# (View.gathering_scales): their gathering of the Registry log holds rows per event (an image's members,
# sizes, tags), and at 25 it held a 10M-pull store's whole Registry log, ~1.1M events: +400 MiB of peak
# memory in each process (session 20: 838 -> 1,242 MiB; retention's per-pull weights are 8 B each).
REGISTRY_BOUNDED_GATHERING_SCALE = 25


class View(TrackingRecorder, ABC):
    """A read model that records its rows and its tracking position in one transaction.

    Each view's logic lives once, in its backend-neutral class: `process_event` dispatches on the
    event's type and calls the view's storage methods, which the SQLite and PostgreSQL classes
    implement with their SQL. A storage method takes the open transaction's cursor as `c`.
    """

    name: ClassVar[str] = ""                        # the projection's name (env prefix, tables, locks)
    handles: ClassVar[tuple[type, ...]] = ()        # the event classes the view uses; others only move tracking
    follows: ClassVar[tuple[str, ...]] = ()         # the applications whose notification logs feed it
    stored: ClassVar[bool] = False                  # True: it takes stored notifications (their bytes), not events
    # Whether a replay feeds it the archived pulls (infra/projection_runtime/archived_pages.py): aggregates
    # must keep counting them; a view whose archived rows are served from the segments does not.
    takes_archived: ClassVar[bool] = True
    # The event classes whose effect the view can gather across pages and write at once: a bulk rebuild
    # (infra/projection_runtime/bulk.py) folds many pages into one `gathering()` and writes it with the last
    # page's tracking, in one transaction. Gathering pages must write what writing them one by one writes
    # (sums, maxima, last-wins, rows in order). Empty: the view writes page by page.
    gathers: ClassVar[tuple[type, ...]] = ()
    # How many times a bulk rebuild's gathering size (rebuild.REBUILD_BULK_EVENTS) this view gathers before
    # writing: a view whose gathering holds a row per key (an image's pull stats, a bucket's sums) rather
    # than per event writes each key once per gathering, so larger gatherings write fewer rows for the same
    # events, at little more memory. Views that hold every event's row (audit, chain) keep 1.
    gathering_scale: ClassVar[int] = 1
    # The scale for one log's events where it differs (an application's name -> scale): a view whose rows per
    # key follow one log's events but hold another's event by event (retention and blobs: the Registry log).
    gathering_scales: ClassVar[Mapping[str, int]] = {}
    # Secondary indexes the view's own writes look rows up by: a bulk rebuild keeps them (drop_indexes), as
    # without them each event's lookup scans the table and the rebuild grows with the square of the view.
    written_through: ClassVar[tuple[str, ...]] = ()

    # The clock of what a view keeps by age (analytics' minute buckets); a replay to an instant sets it there.
    now: Callable[[], float] = staticmethod(time.time)

    def configure(self, settings: Any) -> None:
        """Take the view's own settings (an eventsourcing Environment keyed by the view's name, e.g.
        ANALYTICS_MINUTE_DAYS) when it is opened; most views have none."""

    def archive_covered(self, application: str) -> int | None:
        """For a view that does not take archived events but must account for them before it takes the
        store's (the chain: it goes on from the archive's last link): the last archived position it has
        accounted for so far. None: the view does not depend on the archive in that way."""
        return None

    @abstractmethod
    def process(self, batch: Batch) -> None:
        """Apply the events and record the last tracking, all or nothing.

        A position at or below the recorded one raises IntegrityError and changes nothing.
        """

    def process_page(self, c: Any, batch: Batch) -> None:
        """Write one page of events inside the page's transaction; views that can group a page's
        events into fewer statements (counts, inserts) override this, still dispatching by type."""
        for event, tracking in batch:
            self.process_event(c, event, tracking)

    @abstractmethod
    def process_event(self, c: Any, event: Any, tracking: Tracking) -> None:
        """Write the rows for one event; events the view does not use are ignored."""

    # -- gathering (views with `gathers`) --------------------------------------------------------------
    def gathering(self) -> Any:
        """An empty gathering of events, for `gather` to fill and `write_gathered` to write."""
        raise NotImplementedError(f"view {self.name} gathers nothing")

    def gather(self, gathered: Any, event: Any, tracking: Tracking) -> None:
        """Add one event (of a class in `gathers`) to a gathering; nothing is written yet."""
        self.process_event(gathered, event, tracking)

    def write_gathered(self, c: Any, gathered: Any) -> None:
        """Write a gathering's rows inside the open transaction."""
        raise NotImplementedError(f"view {self.name} gathers nothing")

    def gathered_page(self, c: Any, batch: Batch) -> None:
        """process_page of a view whose every event class is in `gathers`: one page gathered, then written."""
        gathered = self.gathering()
        for event, tracking in batch:
            self.gather(gathered, event, tracking)
        self.write_gathered(c, gathered)

    @abstractmethod
    def process_gathered(self, gathered: Any, tracking: Tracking, events: int = 1) -> None:
        """Write a gathering of `events` events and its last event's tracking in one transaction (a bulk
        rebuild's flush)."""

    # -- a bulk rebuild from empty ---------------------------------------------------------------------
    @abstractmethod
    def drop_indexes(self) -> None:
        """Drop the view's secondary indexes (keys stay): a bulk rebuild into an empty view makes them once,
        at the end (`restore_indexes`), instead of updating them row by row. Opening the view makes any
        missing one, so a rebuild killed in between leaves a view whose next opening restores them."""

    @abstractmethod
    def restore_indexes(self) -> None:
        """Make the indexes `drop_indexes` dropped (the schema's CREATE INDEX IF NOT EXISTS)."""

    @classmethod
    def handled_topics(cls) -> list[str]:
        """Topics for an offline replay, which need not visit unused events."""
        return [get_topic(event_class) for event_class in cls.handles]

    @abstractmethod
    def clear(self) -> None:
        """Delete every row and every application's tracking position, in one transaction."""

    @abstractmethod
    def dump(self) -> dict[str, list[tuple]]:
        """Every table's rows, sorted: for comparing a rebuilt view with a live one."""

    @abstractmethod
    def close(self) -> None: ...


def page_of(view: View, app: Any, notifications: Sequence[Any]) -> list[tuple[Any, Tracking]]:
    """A page of an application's notifications as the view takes them: decoded domain events, or the
    stored notifications themselves for a view that hashes their bytes (the chain view)."""
    decode = (lambda n: n) if view.stored else app.mapper.to_domain_event
    return [(decode(n), Tracking(app.name, n.id)) for n in notifications]


class SqliteView(SQLiteTrackingRecorder, View):
    """A view in its own SQLite file: the fixed `tracking` table sits next to the view's tables.

    The file's `PRAGMA user_version` holds the schema version its tables were made with. Opening a
    file made with an older one drops the view's rows and tracking (in the transaction that
    recreates the tables), so the runner replays the events into the new shape: a rebuild.
    """

    tables: ClassVar[tuple[str, ...]] = ()      # names, for clear() and dump()
    retired_tables: ClassVar[tuple[str, ...]] = ()   # tables older schemas had: dropped by the upgrade
    schema: ClassVar[tuple[str, ...]] = ()      # CREATE TABLE / INDEX IF NOT EXISTS statements
    schema_version: ClassVar[int] = 1           # raise it with any change to `schema`
    # Page cache of this view's connections in KiB (0: SQLite's default, 2 MiB). An offline rebuild may
    # raise it: a large view's indexes outgrow the default, and each page's transaction then rewrites
    # thousands of index pages (bench/results/2026-11-30-rebuild-speed14-notes.md).
    cache_kib: int = 0

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *self.schema]

    def create_table(self) -> None:
        """Create the view's tables, rebuilding them when the file's are older; one transaction.

        Our own, over public parts only (the create statements, the tracking insert): the library's
        create_table() also migrates multi-row tracking tables, which no view of ours ever had.
        """
        # A deferred transaction: opening a view that exists takes no write lock, so a reader does
        # not wait for a runner's page.
        with self.datastore.transaction(commit=True) as c:
            found = self._schema_found(c)
            if found is not None and found < self.schema_version:
                log.warning("view %s: schema version %d is older than %d; rebuilding it from the event store",
                            "/".join(self.tables), found, self.schema_version)
                for table in (*self.tables, *self.retired_tables):
                    c.execute(f"DROP TABLE IF EXISTS {table}")
                c.execute("DELETE FROM tracking WHERE application_name != ?", (self.table_migration_identifier,))
            for statement in self.create_table_statements:
                c.execute(statement)
            c.execute("SELECT 1 FROM tracking WHERE application_name = ?", (self.table_migration_identifier,))
            if c.fetchone() is None:
                # The library's mark of a single-row tracking table, as its own create_table() writes it.
                self._insert_tracking(c, Tracking(self.table_migration_identifier, 1))
            if found != self.schema_version:
                # Written only when it changes: a write waits for the file's lock, which a runner may hold.
                c.execute(f"PRAGMA user_version = {int(self.schema_version)}")

    def _schema_found(self, c: SQLiteCursor) -> int | None:
        """The schema version of the view's tables in this file; None when there are none yet."""
        if not self.tables:
            return None
        c.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (%s)"
                  % ", ".join("?" * len(self.tables)), self.tables)
        if c.fetchone()[0] == 0:
            return None
        c.execute("PRAGMA user_version")
        return c.fetchone()[0] or 1   # 0: made before versions were recorded, all of which were version 1

    def process(self, batch: Batch) -> None:
        if not batch:
            return
        with self._writing() as c:
            # Tracking first: a replayed position fails before any row is touched.
            self._insert_tracking(c, batch[-1][1])
            self.process_page(c, batch)

    def process_gathered(self, gathered: Any, tracking: Tracking, events: int = 1) -> None:
        with self._writing() as c:
            self._insert_tracking(c, tracking)
            self.write_gathered(c, gathered)

    def drop_indexes(self) -> None:
        with self._writing() as c:
            # sql IS NULL: the indexes of primary keys and UNIQUE constraints, which stay.
            c.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
            for (name,) in c.fetchall():
                if name not in self.written_through:
                    c.execute(f'DROP INDEX "{name}"')

    def restore_indexes(self) -> None:
        self.create_table()

    def clear(self) -> None:
        with self._writing() as c:
            for table in self.tables:
                c.execute(f"DELETE FROM {table}")
            c.execute("DELETE FROM tracking WHERE application_name != ?", (self.table_migration_identifier,))

    def dump(self) -> dict[str, list[tuple]]:
        with self.datastore.transaction(commit=False) as c:
            out = {}
            for table in (*self.tables, "tracking"):
                c.execute(f"SELECT * FROM {table}")
                out[table] = sorted((tuple(row) for row in c.fetchall()), key=repr)
            return out

    def close(self) -> None:
        self.datastore.close()

    @contextmanager
    def _writing(self) -> Iterator[SQLiteCursor]:
        """One write transaction that takes the file's write lock up front.

        BEGIN IMMEDIATE waits (busy timeout) for another writer of the same file, such as the
        second runner of the blobs view; a deferred BEGIN that reads first could instead fail
        with SQLITE_BUSY when it upgrades to writing.
        """
        with self.datastore.get_connection(commit=True) as conn:
            c = conn.cursor()
            try:
                # WAL + NORMAL may lose the last commits on power loss, but rows and tracking
                # are lost together, so the view replays them: still exactly once.
                c.execute("PRAGMA synchronous=NORMAL")
                if self.cache_kib:
                    c.execute(f"PRAGMA cache_size = -{int(self.cache_kib)}")
                c.execute("BEGIN IMMEDIATE")
                yield c
                conn.commit()
            except BaseException:
                conn.rollback()  # also after a failed commit: the pooled connection must not stay in a transaction
                raise
            finally:
                c.sqlite_cursor.close()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, params)
            return c.fetchall()
