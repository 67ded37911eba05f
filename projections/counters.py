"""The counters view: per org, how many pulls were hits, misses, stale serves, revalidations and errors.

Kept per generation of the org (domain.org.CacheOrg.Recreated): a new org of a deleted one's name
counts from zero, and the old one's counts stay as they were.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import Counter
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteCursor
from psycopg import Cursor

from domain.pull import Pull
from projections.base import AGGREGATE_GATHERING_SCALE, Batch, SqliteView, View
from projections.postgres_view import PostgresView


class CountersView(View):
    name = "counters"
    handles = (Pull.Recorded,)
    follows = ("Pulls",)
    gathers = (Pull.Recorded,)
    gathering_scale = AGGREGATE_GATHERING_SCALE   # a row per key, not per event (View.gathering_scale)

    def process_page(self, c: Any, batch: Batch) -> None:
        # A page of pulls is a handful of (org, result) pairs: one upsert per pair, not per pull.
        self.gathered_page(c, batch)

    def gathering(self) -> Counter[tuple[str, int, str]]:
        return Counter()

    def process_event(self, c: Any, event: Any, tracking: Tracking) -> None:
        # `c` is the gathering's Counter here: the counts reach the database in write_gathered.
        if isinstance(event, Pull.Recorded):
            c[(event.org, event.generation, event.result)] += 1

    def write_gathered(self, c: Any, gathered: Counter[tuple[str, int, str]]) -> None:
        if gathered:
            self.add_counts(c, [(*key, n) for key, n in gathered.items()])

    @abstractmethod
    def add_counts(self, c: Any, counts: list[tuple[str, int, str, int]]) -> None:
        """Add n to each (org, generation, result) counter."""

    @abstractmethod
    def _rows(self, org: str | None, generation: int | None) -> list[tuple[str, str, int]]:
        """(org, result, n), summed over the generations unless one is given, ordered by org and result."""

    def counts(self, org: str | None = None, generation: int | None = None) -> dict[str, dict[str, int]]:
        """{org: {result: n}}, for one org or all; of one generation of the org, or of every org of that name."""
        out: dict[str, dict[str, int]] = {}
        for row_org, result, n in self._rows(org, generation):
            out.setdefault(row_org, {})[result] = n
        return out


class SqliteCountersView(SqliteView, CountersView):
    tables = ("counters",)
    schema = (
        "CREATE TABLE IF NOT EXISTS counters (org TEXT NOT NULL, generation INTEGER NOT NULL, result TEXT NOT NULL, "
        "n INTEGER NOT NULL, PRIMARY KEY (org, generation, result)) WITHOUT ROWID",
    )
    schema_version = 2   # 2: generation

    def add_counts(self, c: SQLiteCursor, counts: list[tuple[str, int, str, int]]) -> None:
        c.executemany("INSERT INTO counters VALUES (?, ?, ?, ?) ON CONFLICT (org, generation, result) "
                      "DO UPDATE SET n = n + excluded.n", counts)

    def _rows(self, org: str | None, generation: int | None) -> list[tuple[str, str, int]]:
        where, params = _where(org, generation, "?")
        return self._query(f"SELECT org, result, sum(n) FROM counters {where} GROUP BY org, result "
                           "ORDER BY org, result", params)


class PostgresCountersView(PostgresView, CountersView):
    projection = "counters"
    tables = ("counters",)
    schema = (
        "CREATE TABLE IF NOT EXISTS {counters} (org text NOT NULL, generation integer NOT NULL, "
        "result text NOT NULL, n bigint NOT NULL, PRIMARY KEY (org, generation, result))",
    )
    schema_version = 2   # 2: generation

    def add_counts(self, c: Cursor, counts: list[tuple[str, int, str, int]]) -> None:
        c.executemany(self.sql("INSERT INTO {counters} AS t VALUES (%s, %s, %s, %s) "
                               "ON CONFLICT (org, generation, result) DO UPDATE SET n = t.n + excluded.n"), counts)

    def _rows(self, org: str | None, generation: int | None) -> list[tuple[str, str, int]]:
        where, params = _where(org, generation, "%s")
        return [(row_org, result, int(n)) for row_org, result, n in self._query(
            f'SELECT org, result, sum(n) FROM {{counters}} {where} GROUP BY org, result '
            'ORDER BY org COLLATE "C", result COLLATE "C"', params)]


def _where(org: str | None, generation: int | None, mark: str) -> tuple[str, tuple]:
    """The WHERE clause (and its parameters) of one org, and of one of its generations."""
    clauses = [(f"org = {mark}", org), (f"generation = {mark}", generation)]
    chosen = [(clause, value) for clause, value in clauses if value is not None]
    return ("WHERE " + " AND ".join(c for c, _ in chosen) if chosen else "",
            tuple(value for _, value in chosen))
