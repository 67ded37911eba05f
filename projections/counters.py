"""The counters view: per org, how many pulls were hits, misses, stale serves, revalidations and errors."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteCursor
from psycopg import Cursor

from domain.pull import Pull
from projections.base import SqliteView, View, ViewProjection
from projections.postgres_view import PostgresView


class CountersView(View):
    @abstractmethod
    def counts(self, org: str | None = None) -> dict[str, dict[str, int]]:
        """{org: {result: n}}, for one org or all."""


class CountersProjection(ViewProjection):
    name = "counters"
    handles = (Pull.Recorded,)


class SqliteCountersView(SqliteView, CountersView):
    tables = ("counters",)
    schema = (
        "CREATE TABLE IF NOT EXISTS counters (org TEXT NOT NULL, result TEXT NOT NULL, n INTEGER NOT NULL, "
        "PRIMARY KEY (org, result)) WITHOUT ROWID",
    )

    def _apply(self, c: SQLiteCursor, event: Any, tracking: Tracking) -> None:
        if isinstance(event, Pull.Recorded):
            c.execute("INSERT INTO counters VALUES (?, ?, 1) ON CONFLICT (org, result) DO UPDATE SET n = n + 1",
                      (event.org, event.result))

    def counts(self, org: str | None = None) -> dict[str, dict[str, int]]:
        if org is None:
            rows = self._query("SELECT org, result, n FROM counters ORDER BY org, result")
        else:
            rows = self._query("SELECT org, result, n FROM counters WHERE org = ? ORDER BY result", (org,))
        out: dict[str, dict[str, int]] = {}
        for row_org, result, n in rows:
            out.setdefault(row_org, {})[result] = n
        return out


class PostgresCountersView(PostgresView, CountersView):
    projection = "counters"
    tables = ("counters",)
    schema = (
        "CREATE TABLE IF NOT EXISTS {counters} (org text NOT NULL, result text NOT NULL, n bigint NOT NULL, "
        "PRIMARY KEY (org, result))",
    )

    def _apply(self, c: Cursor, event: Any, tracking: Tracking) -> None:
        if isinstance(event, Pull.Recorded):
            c.execute(self.sql("INSERT INTO {counters} AS t VALUES (%s, %s, 1) "
                               "ON CONFLICT (org, result) DO UPDATE SET n = t.n + 1"), (event.org, event.result))

    def counts(self, org: str | None = None) -> dict[str, dict[str, int]]:
        if org is None:
            rows = self._query('SELECT org, result, n FROM {counters} ORDER BY org COLLATE "C", result COLLATE "C"')
        else:
            rows = self._query('SELECT org, result, n FROM {counters} WHERE org = %s ORDER BY result COLLATE "C"',
                               (org,))
        out: dict[str, dict[str, int]] = {}
        for row_org, result, n in rows:
            out.setdefault(row_org, {})[result] = n
        return out
