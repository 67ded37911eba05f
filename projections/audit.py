"""The audit view: every pull, served or failed, who pulled what and how it was answered, in notification order."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, fields
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteCursor
from psycopg import Cursor

from domain.pull import Pull
from projections.base import Batch, SqliteView, View
from projections.postgres_view import PostgresView

MAX_LIMIT = 10_000


@dataclass(frozen=True)
class AuditRow:
    id: int          # the pull's notification id in the Pulls application: stable, and the paging key
    org: str
    repository: str
    reference: str
    digest: str
    result: str
    client: str
    actor: str       # who pulled: "anonymous", a robot or org admin (<org>+<name>), "admin"
    user_agent: str
    at: float
    status: int      # the HTTP status answered
    error_code: str  # the OCI error code of an `error` pull, else ""
    note: str        # a stale serve: the upstream problem behind it; an error: the message answered
    generation: int  # which org of that name pulled (domain.org.CacheOrg.Recreated): a deleted one's stay its own


# Named, not `*`: the rows' shape stays the same when a rebuild switches readers to a new copy.
COLUMNS = ", ".join(f.name for f in fields(AuditRow))


class AuditView(View):
    name = "audit"
    handles = (Pull.Recorded,)
    follows = ("Pulls",)
    # Archived pulls left this view when they were archived; queries read them from the segments
    # (infra/archived_audit.py), so a rebuild must not bring their rows back.
    takes_archived = False
    gathers = (Pull.Recorded,)

    def process_page(self, c: Any, batch: Batch) -> None:
        # One multi-row insert per page rather than a statement per pull.
        self.gathered_page(c, batch)

    def gathering(self) -> list[tuple]:
        return []

    def process_event(self, c: Any, event: Any, tracking: Tracking) -> None:
        # `c` is the gathering's list of rows here: they reach the database in write_gathered.
        if isinstance(event, Pull.Recorded):
            c.append(_values(event, tracking))

    def write_gathered(self, c: Any, gathered: list[tuple]) -> None:
        if gathered:
            self.add_rows(c, gathered)

    @abstractmethod
    def add_rows(self, c: Any, rows: list[tuple]) -> None:
        """Insert audit rows, given in the tables' column order (AuditRow's)."""

    @abstractmethod
    def remove_rows(self, first: int, last: int) -> int:
        """Delete the rows with ids in [first, last] (their pulls were archived); returns how many."""

    @abstractmethod
    def query(self, org: str | None = None, repository: str | None = None, result: str | None = None,
              since: float | None = None, until: float | None = None, after_id: int | None = None,
              limit: int = 100, client: str | None = None, user_agent: str | None = None,
              actor: str | None = None, digest: str | None = None) -> list[AuditRow]:
        """Rows in id order; `since` <= at < `until`; page on with after_id = the last row's id.

        `client` matches the address exactly, `actor` and `digest` exactly, `user_agent` any substring of it.
        """


def audit_filters(placeholder: str, contains: str, org, repository, result, since, until, after_id, limit,
                  client, user_agent, actor=None, digest=None) -> tuple[str, list]:
    """The WHERE clause and parameters of a query, in either SQL dialect (`?` or `%s`)."""
    clauses, params = [], []
    for clause, value in (("org = ?", org), ("repository = ?", repository), ("result = ?", result),
                          ("at >= ?", since), ("at < ?", until), ("id > ?", after_id),
                          ("client = ?", client), ("actor = ?", actor), ("digest = ?", digest),
                          (contains, user_agent)):
        if value is not None:
            clauses.append(clause.replace("?", placeholder))
            params.append(value)
    params.append(max(1, min(int(limit), MAX_LIMIT)))
    return (f"WHERE {' AND '.join(clauses)} " if clauses else ""), params


def audit_row(event: Pull.Recorded, position: int) -> AuditRow:
    """The row of a pull read from elsewhere (an archive segment), as the view would hold it."""
    return AuditRow(*_values(event, Tracking("Pulls", position)))


def _values(event: Pull.Recorded, tracking: Tracking) -> tuple:
    """One audit row, in the tables' column order (AuditRow's)."""
    return (tracking.notification_id, event.org, event.repository, event.reference, event.digest, event.result,
            event.client, event.actor, event.user_agent, event.at, event.status, event.error_code, event.note,
            event.generation)


class SqliteAuditView(SqliteView, AuditView):
    tables = ("audit",)
    schema_version = 4   # 2: status, error_code and note; 3: actor; 4: generation
    schema = (
        "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, org TEXT NOT NULL, repository TEXT NOT NULL, "
        "reference TEXT NOT NULL, digest TEXT NOT NULL, result TEXT NOT NULL, client TEXT NOT NULL, actor TEXT NOT NULL, "
        "user_agent TEXT NOT NULL, at REAL NOT NULL, status INTEGER NOT NULL, error_code TEXT NOT NULL, "
        "note TEXT NOT NULL, generation INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS audit_org ON audit (org, repository, id)",
        # An org's pages walk this in id order; with (org, repository, id) alone, every page of
        # `?org=` sorted all of the org's rows (seconds at millions). IF NOT EXISTS: an existing view
        # gets it when next opened, without a rebuild.
        "CREATE INDEX IF NOT EXISTS audit_org_id ON audit (org, id)",
        # ?repository= without an org: the same walk (177 ms a page at 1M pulls without it).
        "CREATE INDEX IF NOT EXISTS audit_repository_id ON audit (repository, id)",
        "CREATE INDEX IF NOT EXISTS audit_at ON audit (at)",
        # The pulls of one digest (`history digest`). An index needs no replay, so no new schema_version:
        # CREATE INDEX IF NOT EXISTS runs at every open and builds it once on an older file.
        "CREATE INDEX IF NOT EXISTS audit_digest ON audit (digest, id)",
    )

    def add_rows(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        c.executemany("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def remove_rows(self, first: int, last: int) -> int:
        with self._writing() as c:
            c.execute("DELETE FROM audit WHERE id BETWEEN ? AND ?", (first, last))
            return c.sqlite_cursor.rowcount

    def query(self, org: str | None = None, repository: str | None = None, result: str | None = None,
              since: float | None = None, until: float | None = None, after_id: int | None = None,
              limit: int = 100, client: str | None = None, user_agent: str | None = None,
              actor: str | None = None, digest: str | None = None) -> list[AuditRow]:
        where, params = audit_filters("?", "instr(user_agent, ?) > 0", org, repository, result, since, until,
                                      after_id, limit, client, user_agent, actor, digest)
        rows = self._query(f"SELECT {COLUMNS} FROM audit {where}ORDER BY id LIMIT ?", params)
        return [AuditRow(*row) for row in rows]


class PostgresAuditView(PostgresView, AuditView):
    projection = "audit"
    tables = ("audit",)
    schema_version = 4   # 2: status, error_code and note; 3: actor; 4: generation
    indexes = ("audit_org", "audit_org_id", "audit_repository_id", "audit_at", "audit_digest")
    schema = (
        "CREATE TABLE IF NOT EXISTS {audit} (id bigint PRIMARY KEY, org text NOT NULL, repository text NOT NULL, "
        "reference text NOT NULL, digest text NOT NULL, result text NOT NULL, client text NOT NULL, actor text NOT NULL, "
        "user_agent text NOT NULL, at double precision NOT NULL, status integer NOT NULL, error_code text NOT NULL, "
        "note text NOT NULL, generation integer NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {audit_org} ON {audit} (org, repository, id)",
        "CREATE INDEX IF NOT EXISTS {audit_org_id} ON {audit} (org, id)",   # see SqliteAuditView
        "CREATE INDEX IF NOT EXISTS {audit_repository_id} ON {audit} (repository, id)",
        "CREATE INDEX IF NOT EXISTS {audit_at} ON {audit} (at)",
        "CREATE INDEX IF NOT EXISTS {audit_digest} ON {audit} (digest, id)",   # as on SQLite: no replay needed
    )

    def add_rows(self, c: Cursor, rows: list[tuple]) -> None:
        # COPY: the fastest way into PostgreSQL, in the page's transaction like any statement.
        with c.copy(self.sql(f"COPY {{audit}} ({COLUMNS}) FROM STDIN")) as copy:
            for row in rows:
                copy.write_row(row)

    def remove_rows(self, first: int, last: int) -> int:
        with self.datastore.transaction(commit=True) as c:
            c.execute(self.sql("DELETE FROM {audit} WHERE id BETWEEN %s AND %s"), (first, last))
            return c.rowcount

    def query(self, org: str | None = None, repository: str | None = None, result: str | None = None,
              since: float | None = None, until: float | None = None, after_id: int | None = None,
              limit: int = 100, client: str | None = None, user_agent: str | None = None,
              actor: str | None = None, digest: str | None = None) -> list[AuditRow]:
        where, params = audit_filters("%s", "strpos(user_agent, %s) > 0", org, repository, result, since, until,
                                      after_id, limit, client, user_agent, actor, digest)
        rows = self._query(f"SELECT {COLUMNS} FROM {{audit}} {where}ORDER BY id LIMIT %s", params)
        return [AuditRow(*row) for row in rows]
