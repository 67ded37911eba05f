"""The analytics view's tables and SQL on SQLite and PostgreSQL (its logic is in projections/analytics.py)."""

from __future__ import annotations

from eventsourcing.sqlite import SQLiteCursor
from psycopg import Connection, Cursor
from psycopg.rows import tuple_row

from projections.analytics import MINUTE_TABLES, TRAFFIC, AnalyticsView
from domain.analytics import MINUTE
from projections.base import SqliteView
from projections.postgres_view import PostgresView, read_with_retry

TABLES = ("analytics_pulls", "analytics_traffic", "analytics_fills", "analytics_member_ids", "analytics_member_sets",
          "analytics_images", "analytics_repositories", "analytics_generations", "analytics_minute_floor")
# 2: generation (the org's, domain.org.CacheOrg.Recreated) in every key; 3: members as numbered sets per
# bucket (analytics_member_ids, analytics_member_sets) instead of a row per member and bucket, and the
# indexes of the every-org summary and of top lists
SCHEMA_VERSION = 3
# PostgreSQL 4: the value columns in the keys' and the top lists' indexes (INCLUDE), so that one org's reads
# are index-only scans of their own rows. Without them PostgreSQL read one org's hourly series through the
# every-org index, filtering the other orgs' rows out: 37 ms where the covering key takes 1.5 ms (10M pulls).
# SQLite's tables are their keys (WITHOUT ROWID) and need none of it: its schema stays 3.
POSTGRES_SCHEMA_VERSION = 4
_TRAFFIC_COLUMNS = ", ".join(f"{name} {{int}} NOT NULL" for name in TRAFFIC)
# One schema for both: {int} is the integer type, {blob} bytes, {name} a table (the PostgreSQL copy's name).
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS {analytics_pulls} (org {text}, generation {int} NOT NULL, grain {int} NOT NULL, start {int} NOT NULL, "
    "result {text}, n {int} NOT NULL, PRIMARY KEY (org, generation, grain, start, result){cover_n}){rowid}",
    "CREATE TABLE IF NOT EXISTS {analytics_traffic} (org {text}, generation {int} NOT NULL, grain {int} NOT NULL, start {int} NOT NULL, "
    f"{_TRAFFIC_COLUMNS}, PRIMARY KEY (org, generation, grain, start){{cover_traffic}}){{rowid}}",
    "CREATE TABLE IF NOT EXISTS {analytics_fills} (org {text}, generation {int} NOT NULL, grain {int} NOT NULL, start {int} NOT NULL, "
    "bucket {int} NOT NULL, n {int} NOT NULL, PRIMARY KEY (org, generation, grain, start, bucket){cover_n}){rowid}",
    # Each member of an org gets an integer per kind (projections/analytics_sets.py).
    "CREATE TABLE IF NOT EXISTS {analytics_member_ids} (org {text}, kind {text}, member {text}, id {int} NOT NULL, "
    "PRIMARY KEY (org, kind, member)){rowid}",
    "CREATE TABLE IF NOT EXISTS {analytics_member_sets} (org {text}, generation {int} NOT NULL, grain {int} NOT NULL, "
    "start {int} NOT NULL, clients {blob} NOT NULL, repositories {blob} NOT NULL, "
    "PRIMARY KEY (org, generation, grain, start)){rowid}",
    "CREATE TABLE IF NOT EXISTS {analytics_images} (org {text}, generation {int} NOT NULL, day {int} NOT NULL, repository {text}, "
    "reference {text}, pulls {int} NOT NULL, PRIMARY KEY (org, generation, day, repository, reference){cover_pulls}){rowid}",
    "CREATE TABLE IF NOT EXISTS {analytics_repositories} (org {text}, generation {int} NOT NULL, day {int} NOT NULL, repository {text}, "
    "pulls {int} NOT NULL, bytes {int} NOT NULL, PRIMARY KEY (org, generation, day, repository){cover_pulls_bytes}){rowid}",
    "CREATE TABLE IF NOT EXISTS {analytics_generations} (org {text} PRIMARY KEY, registered {int} NOT NULL, "
    "latest {int} NOT NULL){rowid}",
    # One row: minute buckets from `floor` on are kept whole (projections/analytics.py). Added without a new
    # schema version: a view without it keeps every minute, which is what floor 0 says.
    "CREATE TABLE IF NOT EXISTS {analytics_minute_floor} (id {int} PRIMARY KEY, floor {int} NOT NULL){rowid}",
    # The indexes in the order a page writes the tables (pulls, traffic, fills, member ids and sets, images,
    # repositories): on PostgreSQL each CREATE INDEX IF NOT EXISTS of a view's open locks its table, and
    # another order would deadlock with a runner's page.
    # The overview asks every org at once: by bucket, not by org first. With the whole row in the index,
    # reading one needs no lookup of the row (PostgreSQL: an index-only scan once vacuumed): half the CPU
    # of the summary's largest read (bench/results/2026-11-30-analytics-history-s6.md).
    "CREATE INDEX IF NOT EXISTS {analytics_pulls_by_start} ON {analytics_pulls} (grain, start, org, generation, result, n)",
    "CREATE INDEX IF NOT EXISTS {analytics_traffic_by_start} ON {analytics_traffic} (grain, start){cover_traffic_by_start}",
    "CREATE INDEX IF NOT EXISTS {analytics_fills_by_start} ON {analytics_fills} (grain, start, org, generation, bucket, n)",
    "CREATE UNIQUE INDEX IF NOT EXISTS {analytics_member_ids_by_id} ON {analytics_member_ids} (org, kind, id)",
    "CREATE INDEX IF NOT EXISTS {analytics_member_sets_by_start} ON {analytics_member_sets} (grain, start)",
    # A top list reads each day's rows from the most pulled (or the most bytes) down (projections/analytics_top.py).
    "CREATE INDEX IF NOT EXISTS {analytics_images_by_pulls} ON {analytics_images} (org, generation, day, pulls){cover_image}",
    "CREATE INDEX IF NOT EXISTS {analytics_repositories_by_pulls} ON {analytics_repositories} (org, generation, day, pulls){cover_repository_bytes}",
    "CREATE INDEX IF NOT EXISTS {analytics_repositories_by_bytes} ON {analytics_repositories} (org, generation, day, bytes){cover_repository_pulls}",
)
INDEXES = ("analytics_member_ids_by_id", "analytics_pulls_by_start", "analytics_traffic_by_start",
           "analytics_fills_by_start", "analytics_member_sets_by_start", "analytics_images_by_pulls",
           "analytics_repositories_by_pulls", "analytics_repositories_by_bytes")
_ADD_TRAFFIC = ", ".join(f"{name} = t.{name} + excluded.{name}" for name in TRAFFIC)

def _upserts(placeholder: str) -> dict[str, str]:
    def values(n: int) -> str:
        return ", ".join([placeholder] * n)
    return {
        "pulls": f"INSERT INTO {{analytics_pulls}} AS t VALUES ({values(6)}) "
                 "ON CONFLICT (org, generation, grain, start, result) DO UPDATE SET n = t.n + excluded.n",
        "traffic": f"INSERT INTO {{analytics_traffic}} AS t VALUES ({values(4 + len(TRAFFIC))}) "
                   f"ON CONFLICT (org, generation, grain, start) DO UPDATE SET {_ADD_TRAFFIC}",
        "fills": f"INSERT INTO {{analytics_fills}} AS t VALUES ({values(6)}) "
                 "ON CONFLICT (org, generation, grain, start, bucket) DO UPDATE SET n = t.n + excluded.n",
        "member_ids": f"INSERT INTO {{analytics_member_ids}} VALUES ({values(4)})",
        # The page has merged the stored set into the new one (AnalyticsView.write_member_sets).
        "member_sets": f"INSERT INTO {{analytics_member_sets}} AS t VALUES ({values(6)}) "
                       "ON CONFLICT (org, generation, grain, start) DO UPDATE SET clients = excluded.clients, "
                       "repositories = excluded.repositories",
        "images": f"INSERT INTO {{analytics_images}} AS t VALUES ({values(6)}) "
                  "ON CONFLICT (org, generation, day, repository, reference) DO UPDATE SET pulls = t.pulls + excluded.pulls",
        "repositories": f"INSERT INTO {{analytics_repositories}} AS t VALUES ({values(6)}) "
                        "ON CONFLICT (org, generation, day, repository) DO UPDATE SET pulls = t.pulls + excluded.pulls, "
                        "bytes = t.bytes + excluded.bytes",
        # Both runners raise these, never lower them: the writes commute.
        "generations": f"INSERT INTO {{analytics_generations}} AS t VALUES ({values(3)}) ON CONFLICT (org) DO UPDATE "
                       "SET registered = {max}(t.registered, excluded.registered), latest = {max}(t.latest, excluded.latest)",
    }

# The one row of the minute floor, replaced ({p}: the backend's placeholder). Not among the upserts above,
# whose rows PostgreSQL reads from a {source}.
_PUT_MINUTE_FLOOR = ("INSERT INTO {analytics_minute_floor} VALUES (1, {p}) "
                     "ON CONFLICT (id) DO UPDATE SET floor = excluded.floor")

# PostgreSQL takes a page's rows of one table as one statement (over arrays, or a stage filled by COPY:
# projections/postgres_rows.py) rather than one statement per row: a page's keys are distinct (summed per
# key first), so ON CONFLICT meets each once.
_T, _I = "text", "bigint"
_COLUMN_TYPES = {"pulls": (_T, _I, _I, _I, _T, _I), "traffic": (_T, _I, _I, _I, *[_I] * len(TRAFFIC)),
                 "fills": (_T, _I, _I, _I, _I, _I), "member_ids": (_T, _T, _T, _I),
                 "member_sets": (_T, _I, _I, _I, "bytea", "bytea"),
                 "images": (_T, _I, _I, _T, _T, _I), "repositories": (_T, _I, _I, _T, _I, _I),
                 "generations": (_T, _I, _I)}


def _source_upserts() -> dict[str, str]:
    """Each upsert reading its rows from a {source} (projections/postgres_rows.row_source)."""
    out = {}
    for kind, statement in _upserts("%s").items():
        head, _, tail = statement.partition(" VALUES (")
        out[kind] = f"{head} SELECT * FROM {{source}} {tail.partition(') ')[2]}"
    return out


# What PostgreSQL's indexes carry besides their keys (see POSTGRES_SCHEMA_VERSION); SQLite's: nothing.
_POSTGRES_COVERS = {"cover_n": " INCLUDE (n)", "cover_traffic": f" INCLUDE ({', '.join(TRAFFIC)})",
                    "cover_pulls": " INCLUDE (pulls)", "cover_pulls_bytes": " INCLUDE (pulls, bytes)",
                    "cover_traffic_by_start": f" INCLUDE (org, generation, {', '.join(TRAFFIC)})",
                    "cover_image": " INCLUDE (repository, reference)",
                    "cover_repository_bytes": " INCLUDE (repository, bytes)",
                    "cover_repository_pulls": " INCLUDE (repository, pulls)"}
_NO_COVERS = dict.fromkeys(_POSTGRES_COVERS, "")


def _schema(text: str, integer: str, blob: str, rowid: str, names: dict[str, str],
            covers: dict[str, str] = _NO_COVERS) -> tuple[str, ...]:
    return tuple(ddl.format(text=text, int=integer, blob=blob, rowid=rowid, **covers, **names) for ddl in SCHEMA)


_SQLITE_NAMES = {name: name for name in (*TABLES, *INDEXES)}


class SqliteAnalyticsView(SqliteView, AnalyticsView):
    tables = TABLES
    retired_tables = ("analytics_members",)   # schema 2's row per (bucket, member)
    schema_version = SCHEMA_VERSION
    _names = _SQLITE_NAMES
    schema = _schema("TEXT NOT NULL", "INTEGER", "BLOB", " WITHOUT ROWID", _SQLITE_NAMES)
    _sql = {kind: text.replace("{max}", "max").format(**_SQLITE_NAMES) for kind, text in _upserts("?").items()}

    def add_pulls(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        c.executemany(self._sql["pulls"], rows)

    def add_traffic(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        c.executemany(self._sql["traffic"], rows)

    def add_fills(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        c.executemany(self._sql["fills"], rows)

    def member_ids(self, c: SQLiteCursor, org: str, kind: str, names: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for first in range(0, len(names), 500):   # well below SQLite's limit of parameters per statement
            chunk = names[first:first + 500]
            c.execute("SELECT member, id FROM analytics_member_ids WHERE org = ? AND kind = ? AND member IN (%s)"
                      % ", ".join("?" * len(chunk)), (org, kind, *chunk))
            out.update((member, number) for member, number in c.fetchall())
        return out

    def next_member_id(self, c: SQLiteCursor, org: str, kind: str) -> int:
        c.execute("SELECT coalesce(max(id), -1) + 1 FROM analytics_member_ids WHERE org = ? AND kind = ?", (org, kind))
        return int(c.fetchone()[0])

    def add_member_ids(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        c.executemany(self._sql["member_ids"], rows)

    def member_sets(self, c: SQLiteCursor, org: str, generation: int, grain: int, first: int, last: int) -> list[tuple]:
        c.execute("SELECT start, clients, repositories FROM analytics_member_sets WHERE org = ? AND generation = ? "
                  "AND grain = ? AND start BETWEEN ? AND ?", (org, generation, grain, first, last))
        return [tuple(row) for row in c.fetchall()]

    def put_member_sets(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        c.executemany(self._sql["member_sets"], rows)

    def add_images(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        c.executemany(self._sql["images"], rows)

    def add_repositories(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        c.executemany(self._sql["repositories"], rows)

    def add_generations(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        c.executemany(self._sql["generations"], rows)

    def registered_generation(self, c: SQLiteCursor, org: str) -> int:
        c.execute("SELECT registered FROM analytics_generations WHERE org = ?", (org,))
        row = c.fetchone()
        return int(row[0]) if row else 1

    def stored_minute_floor(self, c: SQLiteCursor) -> int:
        c.execute("SELECT floor FROM analytics_minute_floor")
        row = c.fetchone()
        return int(row[0]) if row else 0

    def put_minute_floor(self, c: SQLiteCursor, floor: int) -> None:
        c.execute(_PUT_MINUTE_FLOOR.format(p="?", analytics_minute_floor="analytics_minute_floor"), (floor,))

    def oldest_minute(self, c: SQLiteCursor) -> int | None:
        starts = []
        for table in MINUTE_TABLES:
            c.execute(f"SELECT min(start) FROM {table} WHERE grain = ?", (MINUTE,))
            starts.append(c.fetchone()[0])
        return min((start for start in starts if start is not None), default=None)

    def forget_minutes(self, c: SQLiteCursor, before: int) -> None:
        for table in MINUTE_TABLES:
            c.execute(f"DELETE FROM {table} WHERE grain = ? AND start < ?", (MINUTE, before))

    def _rows(self, text: str, params: list, serial: bool = False) -> list[tuple]:
        return [tuple(row) for row in self._query(text.format(**self._names).replace("%s", "?"), params)]

class PostgresAnalyticsView(PostgresView, AnalyticsView):
    projection = "analytics"
    tables = TABLES
    retired_tables = ("analytics_members",)   # schema 2's row per (bucket, member)
    schema_version = POSTGRES_SCHEMA_VERSION
    indexes = INDEXES
    # {name} placeholders stay for PostgresView to fill with this version's table names.
    schema = _schema("text NOT NULL", "bigint", "bytea", "", {name: "{" + name + "}" for name in (*TABLES, *INDEXES)},
                     _POSTGRES_COVERS)
    _upsert = {kind: text.replace("{max}", "GREATEST") for kind, text in _source_upserts().items()}

    def _add(self, c: Cursor, kind: str, rows: list[tuple]) -> None:
        self.write_rows(c, self._upsert[kind], _COLUMN_TYPES[kind], rows)

    def add_pulls(self, c: Cursor, rows: list[tuple]) -> None:
        self._add(c, "pulls", rows)

    def add_traffic(self, c: Cursor, rows: list[tuple]) -> None:
        self._add(c, "traffic", rows)

    def add_fills(self, c: Cursor, rows: list[tuple]) -> None:
        self._add(c, "fills", rows)

    def member_ids(self, c: Cursor, org: str, kind: str, names: list[str]) -> dict[str, int]:
        c.execute(self.sql("SELECT member, id FROM {analytics_member_ids} WHERE org = %s AND kind = %s "
                           "AND member = ANY(%s)"), (org, kind, names))
        return {row["member"]: row["id"] for row in c.fetchall()}

    def next_member_id(self, c: Cursor, org: str, kind: str) -> int:
        c.execute(self.sql("SELECT coalesce(max(id), -1) + 1 AS next FROM {analytics_member_ids} "
                           "WHERE org = %s AND kind = %s"), (org, kind))
        return int(c.fetchone()["next"])

    def add_member_ids(self, c: Cursor, rows: list[tuple]) -> None:
        self._add(c, "member_ids", rows)

    def member_sets(self, c: Cursor, org: str, generation: int, grain: int, first: int, last: int) -> list[tuple]:
        c.execute(self.sql("SELECT start, clients, repositories FROM {analytics_member_sets} WHERE org = %s AND "
                           "generation = %s AND grain = %s AND start BETWEEN %s AND %s"),
                  (org, generation, grain, first, last))
        return [(row["start"], row["clients"], row["repositories"]) for row in c.fetchall()]

    def put_member_sets(self, c: Cursor, rows: list[tuple]) -> None:
        self._add(c, "member_sets", rows)

    def add_images(self, c: Cursor, rows: list[tuple]) -> None:
        self._add(c, "images", rows)

    def add_repositories(self, c: Cursor, rows: list[tuple]) -> None:
        self._add(c, "repositories", rows)

    def add_generations(self, c: Cursor, rows: list[tuple]) -> None:
        self._add(c, "generations", rows)

    def registered_generation(self, c: Cursor, org: str) -> int:
        c.execute(self.sql("SELECT registered FROM {analytics_generations} WHERE org = %s"), (org,))
        row = c.fetchone()
        return int(row["registered"] if isinstance(row, dict) else row[0]) if row else 1

    def stored_minute_floor(self, c: Cursor) -> int:
        c.execute(self.sql("SELECT floor FROM {analytics_minute_floor}"))
        row = c.fetchone()
        return int(row["floor"]) if row else 0

    def put_minute_floor(self, c: Cursor, floor: int) -> None:
        c.execute(self.sql(_PUT_MINUTE_FLOOR.replace("{p}", "%s")), (floor,))

    def oldest_minute(self, c: Cursor) -> int | None:
        c.execute(self.sql(" UNION ALL ".join(f"(SELECT min(start) AS start FROM {{{table}}} WHERE grain = {MINUTE})"
                                              for table in MINUTE_TABLES)))
        return min((row["start"] for row in c.fetchall() if row["start"] is not None), default=None)

    def forget_minutes(self, c: Cursor, before: int) -> None:
        for table in MINUTE_TABLES:
            c.execute(self.sql(f"DELETE FROM {{{table}}} WHERE grain = {MINUTE} AND start < %s"), (before,))

    def _rows(self, text: str, params: list, serial: bool = False) -> list[tuple]:
        if not serial:
            return self._query(text, params)
        statement = self.read_sql(text)

        def read(conn: Connection) -> list:
            with conn.transaction():
                # Planned without parallel workers: starting them cost more than these reads of a few
                # thousand index rows take (bench/results/2026-11-30-analytics-history-s6.md). SET LOCAL:
                # the pooled connection goes back to other views unchanged.
                conn.execute("SET LOCAL max_parallel_workers_per_gather = 0", prepare=True)
                with conn.cursor(row_factory=tuple_row) as cursor:
                    return cursor.execute(statement, params, prepare=True).fetchall()
        return read_with_retry(self.datastore, read)

__all__ = ["PostgresAnalyticsView", "SqliteAnalyticsView"]
