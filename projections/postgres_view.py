"""The PostgreSQL base of every view: one version's tables, rows and tracking in one transaction (STACK-NOTES §2.1)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import psycopg
from eventsourcing.persistence import OperationalError, Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg import Connection, Cursor
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from projections import versions
from projections.base import Batch, View
from projections.postgres_rows import row_source
from projections.versions import advisory_key

T = TypeVar("T")

# The storage of a table whose rows are updated over and over (a blob's or an image's pull stats, at every page
# or gathering that pulls it): each page keeps a third of itself free, so that an update whose columns no index
# holds writes the new version beside the old one (a HOT update: no new index entry, the dead version pruned
# there when the page fills) instead of at the end of the table. At the default (full pages) every update moved
# its row and added index entries: in a 10M-pull rebuild the upserts of blobs, manifest_refs and images read
# 3.8M, 2.8M and 1.4M blocks from the OS; the blobs view alone with this: 0.8x the blocks, half the WAL, 0.75x
# its upserts' time (bench/results/2026-12-01-rebuild-s14.md). Up to 1/0.7 of the tables' size on disk.
UPDATED_IN_PLACE = " WITH (fillfactor = 70)"


def read_with_retry(datastore: PostgresDatastore, read: Callable[[Connection], T]) -> T:
    """Run a read on a pooled connection, once more on a fresh one if the first was dead.

    A connection whose backend was terminated (pg_terminate_backend, a PostgreSQL restart, a
    failover) fails on first use; the pool checks connections when they are handed out, but one
    can die between the check and the query. A read that timed out is not retried: the database
    is slow, and waiting twice would not help.
    """
    try:
        with datastore.get_connection() as conn:
            return read(conn)
    except OperationalError as error:
        if isinstance(error.__cause__, psycopg.errors.QueryCanceled):
            raise
    with datastore.get_connection() as conn:
        return read(conn)


class PostgresView(PostgresTrackingRecorder, View):
    """A view bound to one version of its tables (projections/versions.py).

    Writes always go to that version. Reads go to the same version when `follow_live` is False
    (runners, rebuilds), else through the stable names that follow the live version (readers).
    """

    projection: ClassVar[str] = ""               # the projection's name: table prefix and lock key
    tables: ClassVar[tuple[str, ...]] = ()       # logical table names, for clear(), dump() and the switch
    retired_tables: ClassVar[tuple[str, ...]] = ()   # tables older schemas had: dropped once the runner holds the view
    indexes: ClassVar[tuple[str, ...]] = ()      # index names used as {placeholders} in `schema`
    statistics: ClassVar[tuple[str, ...]] = ()   # extended statistics' names used as {placeholders} in `schema`
    schema: ClassVar[tuple[str, ...]] = ()       # CREATE TABLE / INDEX IF NOT EXISTS with {table} placeholders
    serialise_writes: ClassVar[bool] = False     # several runners write this view: one writer at a time
    # A page's statements in a pipeline: one whose rows are not read is sent without waiting for its result,
    # and a round trip is taken only where rows are read (fetched), an error failing the page there or at its
    # end. For views whose writes never look at c.description or c.rowcount, which a pipeline knows only
    # once the result is fetched. A 200k-image rebuild ran a statement per event, or ~17 an image
    # (retention), each a round trip: 167 events/s at load 12 (issue 16).
    pipelined: ClassVar[bool] = False
    schema_version: ClassVar[int] = 1            # raise it with any change to `schema`; see LockedRunners (infra)

    def __init__(self, datastore: PostgresDatastore, *, version: int | None = None, follow_live: bool = True,
                 release: Callable[[PostgresDatastore], None] | None = None, **_factory_kwargs: Any) -> None:
        # `release`: how close() lets go of a datastore shared with other views (the runtime's pool)
        self._release = release or PostgresDatastore.close
        if version is None:
            version = versions.live_version(datastore, self.projection)
        self.version, self.follow_live = version, follow_live
        super().__init__(datastore, tracking_table_name=versions.tracking_table(self.projection, version))
        s = datastore.schema
        self._write = {name: Identifier(s, versions.table(name, version)) for name in self.tables}
        self._write["tracking"] = Identifier(s, versions.tracking_table(self.projection, version))
        if follow_live:
            self._read = {name: Identifier(s, versions.table(name, None)) for name in self.tables}
            self._read["tracking"] = Identifier(s, versions.tracking_table(self.projection, None))
            self.max_tracking_id_statement = SQL(
                "SELECT MAX(notification_id) FROM {} WHERE application_name=%s").format(self._read["tracking"])
        else:
            self._read = self._write
        names = {**self._write, **{i: Identifier(versions.table(i, version)) for i in self.indexes},
                 # Unlike an index, a statistics object goes to the first schema of the search path unless named
                 # with its schema; a table's DROP drops its statistics with it.
                 **{n: Identifier(s, versions.table(n, version)) for n in self.statistics}}
        created = [SQL(ddl).format(**names) for ddl in self.schema]
        self.sql_create_statements.extend(created)
        self._index_statements = [statement for ddl, statement in zip(self.schema, created) if ddl.startswith("CREATE INDEX")]
        # What a copy made with an older schema does not get (_create_copy): its indexes and statistics.
        self._added_later = {id(statement) for ddl, statement in zip(self.schema, created)
                             if ddl.startswith(("CREATE INDEX", "CREATE STATISTICS"))}
        self._lock_key = advisory_key(s, self.projection, f"write-v{version}")
        self._statements: dict[tuple[str, str], SQL] = {}
        # When to analyze (_written): events written through this object since its copy's statistics were
        # last brought up to date, and how many that takes (None: not read yet from the copy's statistics).
        self._since_analysis = 0
        self._analyze_after: float | None = None

    def sql(self, text: str) -> SQL:
        """A write statement: {table} placeholders name this version's tables."""
        return self._compose(("w", text), text, self._write)

    def read_sql(self, text: str) -> SQL:
        """A read statement: {table} placeholders name the live tables (readers) or this version's."""
        return self._compose(("r", text), text, self._read)

    def _compose(self, key: tuple[str, str], text: str, names: dict[str, Identifier]) -> SQL:
        # Composed once per statement: the runners' hot loop would otherwise rebuild it per event. Kept as
        # its text: psycopg turns a Composed into bytes again at every execute, quoting each identifier
        # (~5 us a statement, 3 % of a rebuild's GIL time); our names are plain ASCII, quoted alike anywhere.
        statement = self._statements.get(key)
        if statement is None:
            statement = self._statements[key] = SQL(SQL(text).format(**names).as_string(None))
        return statement

    # -- DDL -------------------------------------------------------------------------------------------
    def create_table(self) -> None:
        """Create this version's tables (and the readers' names over them when it is live), under the DDL lock.

        Our own, over public parts only (the create statements, the tracking insert): the library's
        create_table() also migrates multi-row tracking tables, which no copy of ours ever had.
        """
        with self.datastore.transaction(commit=True) as curs:
            self._create_copy(curs)

    def _create_copy(self, curs: Cursor) -> None:
        curs.execute("SET LOCAL statement_timeout = 0")   # DDL may queue behind other views' DDL: not a read
        versions.ddl_lock(curs, self.datastore.schema)
        # Looked up under the lock: another process may be creating this version at the same moment.
        curs.execute("SELECT to_regclass(%s) IS NOT NULL AS present",
                     (f'"{self.datastore.schema}"."{self.tracking_table_name}"',))
        new_copy = not curs.fetchone()["present"]
        # A copy made with an older schema is only read until its rebuild replaces it (LockedRunners._upgrade):
        # it gets no index or statistics a newer schema added, which may name a column it lacks (audit's actor).
        older = not new_copy and versions.schema_of(curs, self.datastore.schema, self.projection,
                                                     self.version) < self.schema_version
        skipped = self._added_later if older else set()
        for statement in self.sql_create_statements:
            if id(statement) not in skipped:
                curs.execute(statement)
        if new_copy:  # an existing copy keeps the schema version it was made with
            # The library's mark of a single-row tracking table, as its own create_table() writes it.
            self._insert_tracking(curs, Tracking(self.table_migration_identifier, 1))
            versions.record_schema(curs, self.datastore.schema, self.projection, self.version, self.schema_version)
        stable = [f'"{self.datastore.schema}"."{versions.table(name, None)}"' for name in self.tables]
        stable.append(f'"{self.datastore.schema}"."{versions.tracking_table(self.projection, None)}"')
        curs.execute("SELECT bool_or(to_regclass(name) IS NULL) AS missing FROM unnest(%s::text[]) AS name", (stable,))
        missing = curs.fetchone()["missing"]
        if missing and self.version == versions.live_version_in(curs, self.datastore.schema, self.projection):
            versions.point_readers(curs, self.datastore.schema, self.projection, self.tables, self.version)

    # -- writing ---------------------------------------------------------------------------------------
    def process(self, batch: Batch) -> None:
        if not batch:
            return
        with self.datastore.transaction(commit=True) as c:
            self._process(c, batch)
        self._written(len(batch))

    def _written(self, events: int) -> None:
        """`events` more written through this object: analyze the copy once it may have doubled since the last time.

        A copy being rebuilt grows from empty faster than autovacuum analyzes it (and never, where
        autovacuum is off, as on the bench machine): the planner then keeps the plans of an empty
        table, e.g. a hash join over every image for each manifest, so a replay slowed down as the
        copy grew (retention: 127 events/s at 200k pulls). So the copy is analyzed after its first
        page, then whenever the events written since reach what its largest table held at the last
        analysis (or the events written before it, for a view with fewer rows than events): at
        doublings, so the analyses cost in proportion to the copy's size.

        The baseline is the copy's own statistics, not this object's history: a runner that starts on
        a copy of a million rows (every restart of `projections run`) follows a few pulls a page, and
        counting its pages analyzed all its tables after the 1st, 2nd, 4th, 8th... page, each time
        sampling 30,000 rows of each table: on the 1M-pull store that was most of the PostgreSQL CPU a
        warm pull cost (bench.scale_warm), for statistics that barely moved.
        """
        self._since_analysis += events
        if self._analyze_after is None:
            self._analyze_after = self._rows_analyzed()
        if self._since_analysis >= self._analyze_after:
            written, self._since_analysis = self._since_analysis, 0
            self._analyze_after = max(self._analyze(), written, 1)

    def _rows_analyzed(self) -> float:
        """Rows in the copy's largest table when it was last analyzed (0: never, or empty then)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT coalesce(max(c.reltuples), 0) AS n FROM pg_class c WHERE c.oid = ANY(%s::regclass[])",
                      ([self._write[name].as_string(c) for name in self.tables],))
            return max(float(c.fetchone()["n"]), 0.0)

    def _analyze(self) -> float:
        """Fresh statistics for this copy's tables; the rows of its largest table now."""
        with self.datastore.transaction(commit=True) as c:
            c.execute("SET LOCAL statement_timeout = 0")
            for name in self.tables:
                c.execute(SQL("ANALYZE {}").format(self._write[name]))
        return self._rows_analyzed()

    def process_gathered(self, gathered: Any, tracking: Tracking, events: int = 1) -> None:
        with self.datastore.transaction(commit=True) as c:
            self._begin_page(c, tracking)
            # A gathering's rows are built between its statements (analytics: seconds of Python when a loaded
            # machine starves the writer's thread), and the views' pool ends a session idle in a transaction
            # after a few seconds: a 1M rebuild failed so at load 10. Only a bulk rebuild gathers, into a copy
            # of its own (PostgreSQL: blue/green), so no one else waits on this transaction's locks.
            c.execute("SELECT set_config('idle_in_transaction_session_timeout', '0', true)", prepare=True)
            self.write_gathered(c, gathered)
        self._written(events)

    def write_rows(self, c: Cursor, text: str, types: Sequence[str], rows: Sequence[tuple],
                   returning: bool = False) -> list:
        """Run a write statement that selects its rows from `{source}`: `rows`, whose columns have these
        PostgreSQL types, as arrays or through a stage (postgres_rows.row_source); what it returns, if asked."""
        with row_source(c, types, rows) as (source, params):
            c.execute(self.sql(text.replace("{source}", source)), params, prepare=True)
            return c.fetchall() if returning else []

    def _process(self, c: Cursor, batch: Batch) -> None:
        self._begin_page(c, batch[-1][1])
        if self.pipelined:
            with c.connection.pipeline():
                self.process_page(c, batch)
        else:
            self.process_page(c, batch)

    def _begin_page(self, c: Cursor, tracking: Tracking) -> None:
        """The start of a page's transaction: its settings, the writers' lock, then its tracking position."""
        # No wait for the WAL flush: a crash can only lose rows together with their tracking
        # position, which the runner then replays, so the view stays exactly-once (STACK-NOTES §2.3).
        # The views' connections have a short statement timeout for reads; a page of writes is not bounded by it.
        c.execute("SELECT set_config('synchronous_commit', 'off', true), set_config('statement_timeout', '0', true)",
                  prepare=True)
        if self.serialise_writes:
            # Read-modify-write across rows that another runner of this view may touch at the same
            # moment: without this, READ COMMITTED could lose an update (SQLite gets it from BEGIN IMMEDIATE).
            c.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,), prepare=True)
        # Tracking first: a replayed position fails before any row is touched.
        self._insert_tracking(c, tracking)

    def drop_indexes(self) -> None:
        # Only this version's named secondary indexes (`indexes`): keys stay. Used on a fresh blue/green copy.
        with self.datastore.transaction(commit=True) as c:
            c.execute("SET LOCAL statement_timeout = 0")
            versions.ddl_lock(c, self.datastore.schema)
            for index in (index for index in self.indexes if index not in self.written_through):
                c.execute(SQL("DROP INDEX IF EXISTS {}").format(
                    Identifier(self.datastore.schema, versions.table(index, self.version))))

    def restore_indexes(self) -> None:
        # Without the schema's DDL lock: this version's own index names, on a copy only the rebuild writes,
        # so the copies of several views make theirs at the same time (bulk.restore_indexes).
        with self.datastore.transaction(commit=True) as c:
            c.execute("SET LOCAL statement_timeout = 0")
            c.execute("SET LOCAL maintenance_work_mem = '256MB'")   # sorts of a large view's keys in memory
            for statement in self._index_statements:
                c.execute(statement)

    def clear(self) -> None:
        self._since_analysis, self._analyze_after = 0, None   # emptied: its statistics are read afresh
        with self.datastore.transaction(commit=True) as c:
            for name in self.tables:
                c.execute(self.sql(f"DELETE FROM {{{name}}}"))
            c.execute(self.sql("DELETE FROM {tracking} WHERE application_name != %s"),
                      (self.table_migration_identifier,))

    # -- reading ---------------------------------------------------------------------------------------
    def dump(self) -> dict[str, list[tuple]]:
        with self.datastore.transaction(commit=False) as c:
            out = {}
            for name in (*self.tables, "tracking"):
                c.execute(self.read_sql(f"SELECT * FROM {{{name}}}"))
                out[name] = sorted((tuple(row.values()) for row in c.fetchall()), key=repr)
            return out

    def _query(self, text: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Rows as tuples, from a read statement with {table} placeholders; prepared after a few uses."""
        statement = self.read_sql(text)

        def read(conn: Connection) -> list[tuple]:
            # Tuples straight from the driver: the pool's connections make dicts, which cost a dict per row
            # and a tuple more (thousands of rows for an analytics query).
            with conn.cursor(row_factory=tuple_row) as cursor:
                return cursor.execute(statement, params, prepare=True).fetchall()
        return read_with_retry(self.datastore, read)

    def close(self) -> None:
        self._release(self.datastore)
