"""The counters view: per org, how many pulls were hits, misses, stale serves, revalidations and errors."""

from __future__ import annotations

from abc import abstractmethod
from collections import Counter
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteCursor
from psycopg import Cursor

from domain.pull import Pull
from projections.base import Batch, SqliteView, View
from projections.postgres_view import PostgresView


class CountersView(View):
    name = "counters"
    handles = (Pull.Recorded,)
    follows = ("Pulls",)

    def process_page(self, c: Any, batch: Batch) -> None:
        # A page of pulls is a handful of (org, result) pairs: one upsert per pair, not per pull.
        counts: Counter[tuple[str, str]] = Counter()
        for event, tracking in batch:
            self.process_event(counts, event, tracking)
        if counts:
            self.add_counts(c, [(org, result, n) for (org, result), n in counts.items()])

    def process_event(self, c: Any, event: Any, tracking: Tracking) -> None:
        # `c` is the page's Counter here: the counts reach the database in process_page.
        if isinstance(event, Pull.Recorded):
            c[(event.org, event.result)] += 1

    @abstractmethod
    def add_counts(self, c: Any, counts: list[tuple[str, str, int]]) -> None:
        """Add n to each (org, result) counter."""

    @abstractmethod
    def counts(self, org: str | None = None) -> dict[str, dict[str, int]]:
        """{org: {result: n}}, for one org or all."""


class SqliteCountersView(SqliteView, CountersView):
    tables = ("counters",)
    schema = (
        "CREATE TABLE IF NOT EXISTS counters (org TEXT NOT NULL, result TEXT NOT NULL, n INTEGER NOT NULL, "
        "PRIMARY KEY (org, result)) WITHOUT ROWID",
    )

    def add_counts(self, c: SQLiteCursor, counts: list[tuple[str, str, int]]) -> None:
        c.executemany("INSERT INTO counters VALUES (?, ?, ?) ON CONFLICT (org, result) DO UPDATE SET n = n + excluded.n",
                      counts)

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

    def add_counts(self, c: Cursor, counts: list[tuple[str, str, int]]) -> None:
        c.executemany(self.sql("INSERT INTO {counters} AS t VALUES (%s, %s, %s) "
                               "ON CONFLICT (org, result) DO UPDATE SET n = t.n + excluded.n"), counts)

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
