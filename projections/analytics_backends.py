"""The analytics view's tables and SQL on SQLite and PostgreSQL (its logic is in projections/analytics.py)."""

from __future__ import annotations

from eventsourcing.sqlite import SQLiteCursor
from psycopg import Cursor

from projections.analytics import TRAFFIC, AnalyticsView
from projections.base import SqliteView
from projections.postgres_view import PostgresView

TABLES = ("analytics_pulls", "analytics_traffic", "analytics_fills", "analytics_members", "analytics_images",
          "analytics_repositories")
_TRAFFIC_COLUMNS = ", ".join(f"{name} {{int}} NOT NULL" for name in TRAFFIC)
# One schema for both: {int} is the integer type, {name} a table (the PostgreSQL copy's name).
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS {analytics_pulls} (org {text}, grain {int} NOT NULL, start {int} NOT NULL, "
    "result {text}, n {int} NOT NULL, PRIMARY KEY (org, grain, start, result)){rowid}",
    "CREATE TABLE IF NOT EXISTS {analytics_traffic} (org {text}, grain {int} NOT NULL, start {int} NOT NULL, "
    f"{_TRAFFIC_COLUMNS}, PRIMARY KEY (org, grain, start)){{rowid}}",
    "CREATE TABLE IF NOT EXISTS {analytics_fills} (org {text}, grain {int} NOT NULL, start {int} NOT NULL, "
    "bucket {int} NOT NULL, n {int} NOT NULL, PRIMARY KEY (org, grain, start, bucket)){rowid}",
    "CREATE TABLE IF NOT EXISTS {analytics_members} (org {text}, grain {int} NOT NULL, start {int} NOT NULL, "
    "kind {text}, member {text}, PRIMARY KEY (org, grain, start, kind, member)){rowid}",
    "CREATE TABLE IF NOT EXISTS {analytics_images} (org {text}, day {int} NOT NULL, repository {text}, "
    "reference {text}, pulls {int} NOT NULL, PRIMARY KEY (org, day, repository, reference)){rowid}",
    "CREATE TABLE IF NOT EXISTS {analytics_repositories} (org {text}, day {int} NOT NULL, repository {text}, "
    "pulls {int} NOT NULL, bytes {int} NOT NULL, PRIMARY KEY (org, day, repository)){rowid}",
    # The overview asks every org at once (one grouped query per table): by bucket, not by org first.
    "CREATE INDEX IF NOT EXISTS {analytics_pulls_by_start} ON {analytics_pulls} (grain, start)",
    "CREATE INDEX IF NOT EXISTS {analytics_traffic_by_start} ON {analytics_traffic} (grain, start)",
    "CREATE INDEX IF NOT EXISTS {analytics_fills_by_start} ON {analytics_fills} (grain, start)",
    # Covering (org, kind, member too): the distinct counts of every org read the index alone, not the table.
    "CREATE INDEX IF NOT EXISTS {analytics_members_by_start} ON {analytics_members} (grain, start, org, kind, member)",
)
# Added to existing views when opened (CREATE INDEX IF NOT EXISTS): no schema version, no rebuild.
INDEXES = ("analytics_pulls_by_start", "analytics_traffic_by_start", "analytics_fills_by_start",
           "analytics_members_by_start")
_ADD_TRAFFIC = ", ".join(f"{name} = t.{name} + excluded.{name}" for name in TRAFFIC)

def _upserts(placeholder: str) -> dict[str, str]:
    def values(n: int) -> str:
        return ", ".join([placeholder] * n)
    return {
        "pulls": f"INSERT INTO {{analytics_pulls}} AS t VALUES ({values(5)}) "
                 "ON CONFLICT (org, grain, start, result) DO UPDATE SET n = t.n + excluded.n",
        "traffic": f"INSERT INTO {{analytics_traffic}} AS t VALUES ({values(3 + len(TRAFFIC))}) "
                   f"ON CONFLICT (org, grain, start) DO UPDATE SET {_ADD_TRAFFIC}",
        "fills": f"INSERT INTO {{analytics_fills}} AS t VALUES ({values(5)}) "
                 "ON CONFLICT (org, grain, start, bucket) DO UPDATE SET n = t.n + excluded.n",
        "members": f"INSERT INTO {{analytics_members}} VALUES ({values(5)}) ON CONFLICT DO NOTHING",
        "images": f"INSERT INTO {{analytics_images}} AS t VALUES ({values(5)}) "
                  "ON CONFLICT (org, day, repository, reference) DO UPDATE SET pulls = t.pulls + excluded.pulls",
        "repositories": f"INSERT INTO {{analytics_repositories}} AS t VALUES ({values(5)}) "
                        "ON CONFLICT (org, day, repository) DO UPDATE SET pulls = t.pulls + excluded.pulls, "
                        "bytes = t.bytes + excluded.bytes",
    }

# PostgreSQL takes a page's rows of one table as one statement over arrays (unnest) rather than one
# statement per row: a page's keys are distinct (summed per key first), so ON CONFLICT meets each once.
_T, _I = "text", "bigint"
_COLUMN_TYPES = {"pulls": (_T, _I, _I, _T, _I), "traffic": (_T, _I, _I, *[_I] * len(TRAFFIC)),
                 "fills": (_T, _I, _I, _I, _I), "members": (_T, _I, _I, _T, _T), "images": (_T, _I, _T, _T, _I),
                 "repositories": (_T, _I, _T, _I, _I)}


def _unnest_upserts() -> dict[str, str]:
    out = {}
    for kind, statement in _upserts("%s").items():
        head, _, tail = statement.partition(" VALUES (")
        arrays = ", ".join(f"%s::{kind_type}[]" for kind_type in _COLUMN_TYPES[kind])
        out[kind] = f"{head} SELECT * FROM unnest({arrays}) {tail.partition(') ')[2]}"
    return out


def _schema(text: str, integer: str, rowid: str, names: dict[str, str]) -> tuple[str, ...]:
    return tuple(ddl.format(text=text, int=integer, rowid=rowid, **names) for ddl in SCHEMA)


_SQLITE_NAMES = {name: name for name in (*TABLES, *INDEXES)}


class SqliteAnalyticsView(SqliteView, AnalyticsView):
    tables = TABLES
    _names = _SQLITE_NAMES
    schema = _schema("TEXT NOT NULL", "INTEGER", " WITHOUT ROWID", _SQLITE_NAMES)
    _sql = {kind: text.format(**_SQLITE_NAMES) for kind, text in _upserts("?").items()}

    def add_pulls(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        c.executemany(self._sql["pulls"], rows)

    def add_traffic(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        c.executemany(self._sql["traffic"], rows)

    def add_fills(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        c.executemany(self._sql["fills"], rows)

    def add_members(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        c.executemany(self._sql["members"], rows)

    def add_images(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        c.executemany(self._sql["images"], rows)

    def add_repositories(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        c.executemany(self._sql["repositories"], rows)

    def _rows(self, text: str, params: list) -> list[tuple]:
        return [tuple(row) for row in self._query(text.format(**self._names).replace("%s", "?"), params)]

class PostgresAnalyticsView(PostgresView, AnalyticsView):
    projection = "analytics"
    tables = TABLES
    indexes = INDEXES
    # {name} placeholders stay for PostgresView to fill with this version's table names.
    schema = _schema("text NOT NULL", "bigint", "", {name: "{" + name + "}" for name in (*TABLES, *INDEXES)})
    _upsert = _unnest_upserts()

    def _add(self, c: Cursor, kind: str, rows: list[tuple]) -> None:
        c.execute(self.sql(self._upsert[kind]), [list(column) for column in zip(*rows)])

    def add_pulls(self, c: Cursor, rows: list[tuple]) -> None:
        self._add(c, "pulls", rows)

    def add_traffic(self, c: Cursor, rows: list[tuple]) -> None:
        self._add(c, "traffic", rows)

    def add_fills(self, c: Cursor, rows: list[tuple]) -> None:
        self._add(c, "fills", rows)

    def add_members(self, c: Cursor, rows: list[tuple]) -> None:
        self._add(c, "members", rows)

    def add_images(self, c: Cursor, rows: list[tuple]) -> None:
        self._add(c, "images", rows)

    def add_repositories(self, c: Cursor, rows: list[tuple]) -> None:
        self._add(c, "repositories", rows)

    def _rows(self, text: str, params: list) -> list[tuple]:
        return self._query(text, params)

__all__ = ["PostgresAnalyticsView", "SqliteAnalyticsView"]
