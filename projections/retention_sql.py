"""The retention view on SQLite and PostgreSQL: the schema of each, and the shared SQL text run on either."""

from __future__ import annotations

import logging
from typing import Any

from projections.base import SqliteView
from projections.postgres_view import UPDATED_IN_PLACE, PostgresView
from projections.retention import CACHED_STATS, PULL_STATS, WHOLE_CACHE, RetentionView
from domain.retention import NO_PULLS

TABLES = ("images", "members", "children", "sizes", "image_tags", "orphans", "retention_log", "eviction_totals",
          "retention_generations", "org_usage")
# 2: the org's generation in images, retention_log and eviction_totals; retention_generations. 3: org_usage
SCHEMA_VERSION = 3

log = logging.getLogger(__name__)


def _columns(real: str, integer: str, text: str, updated_in_place: str = "") -> tuple[str, ...]:
    """CREATE TABLE statements in a backend's types; each backend adds its indexes. `updated_in_place`: the
    storage of images, whose pull stats every gathering of pulls updates (PostgreSQL: UPDATED_IN_PLACE)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {{images}} (org {text} NOT NULL, repository {text} NOT NULL, "
        f"digest {text} NOT NULL, media_type {text} NOT NULL DEFAULT '', held {integer} NOT NULL DEFAULT 0, "
        f"cached_at {real}, bytes {integer} NOT NULL DEFAULT 0, last_used {real} NOT NULL DEFAULT 0, "
        f"pull_count {integer} NOT NULL DEFAULT 0, score {real} NOT NULL DEFAULT {NO_PULLS}, "
        f"pinned {integer} NOT NULL DEFAULT 0, provisional {integer} NOT NULL DEFAULT 0, "
        f"generation {integer} NOT NULL DEFAULT 1, PRIMARY KEY (org, repository, digest)){updated_in_place}",
        f"CREATE TABLE IF NOT EXISTS {{members}} (org {text} NOT NULL, repository {text} NOT NULL, "
        f"image {text} NOT NULL, digest {text} NOT NULL, PRIMARY KEY (org, repository, image, digest))",
        f"CREATE TABLE IF NOT EXISTS {{children}} (org {text} NOT NULL, repository {text} NOT NULL, "
        f"child {text} NOT NULL, image {text} NOT NULL, PRIMARY KEY (org, repository, child, image))",
        f"CREATE TABLE IF NOT EXISTS {{sizes}} (digest {text} PRIMARY KEY, size {integer} NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {{image_tags}} (org {text} NOT NULL, repository {text} NOT NULL, "
        f"tag {text} NOT NULL, digest {text} NOT NULL, PRIMARY KEY (org, repository, tag))",
        f"CREATE TABLE IF NOT EXISTS {{orphans}} (digest {text} PRIMARY KEY, since {real} NOT NULL, "
        f"state {text} NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {{retention_log}} (id {integer} PRIMARY KEY, kind {text} NOT NULL, "
        f"org {text} NOT NULL, repository {text} NOT NULL, digest {text} NOT NULL, tags {text} NOT NULL, "
        f"bytes {integer} NOT NULL, reason {text} NOT NULL, policy {text} NOT NULL, actor {text} NOT NULL, "
        f"at {real} NOT NULL, dry_run {integer} NOT NULL, generation {integer} NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {{eviction_totals}} (org {text} NOT NULL, generation {integer} NOT NULL, "
        f"reason {text} NOT NULL, evictions {integer} NOT NULL, bytes {integer} NOT NULL, "
        f"PRIMARY KEY (org, generation, reason))",
        f"CREATE TABLE IF NOT EXISTS {{retention_generations}} (org {text} PRIMARY KEY, generation {integer} NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {{org_usage}} (org {text} PRIMARY KEY, bytes {integer} NOT NULL)",
    )


# The rankings are ORDER BY + LIMIT over these, never a scan of every image or blob.
INDEXES = (
    ("retention_lru", "{images} (org, held, pinned, last_used)"),
    ("retention_lfu", "{images} (org, held, pinned, score, last_used)"),
    ("retention_all_lru", "{images} (held, pinned, last_used)"),
    ("retention_all_lfu", "{images} (held, pinned, score, last_used)"),
    ("retention_members_digest", "{members} (digest)"),
    ("retention_members_org", "{members} (org, digest)"),
    ("retention_tags_digest", "{image_tags} (org, repository, digest)"),
    ("retention_orphans_since", "{orphans} (since)"),
    ("retention_log_org", "{retention_log} (org, id)"),
)


_PULLS_VALUES = ("INSERT INTO {images} (org, repository, digest, last_used, pull_count, score, generation) VALUES "
                 "(?, ?, ?, ?, ?, ?, ?) ON CONFLICT (org, repository, digest) DO UPDATE SET " + PULL_STATS)
_PULLS_FROM_SOURCE = ("INSERT INTO {images} (org, repository, digest, last_used, pull_count, score, generation) "
                      "SELECT * FROM {source} ON CONFLICT (org, repository, digest) DO UPDATE SET " + PULL_STATS)
_PULLS_TYPES = ("text", "text", "text", "double precision", "bigint", "double precision", "bigint")

# A gathering of Registry events (retention_gathering.py), a statement a table: its images as _cached upserts
# them, at the generation the org had there (the gathering's registrations before it, or the copy's, whichever is
# higher: the copy's generations are written after the images).
_IMAGES_CACHED = ("INSERT INTO {images} (org, repository, digest, media_type, held, cached_at, last_used, score, "
                  "provisional, generation) SELECT s.org, s.repository, s.digest, s.media_type, 1, s.cached_at, "
                  "s.cached_at, s.score, 1, GREATEST(s.floor, coalesce((SELECT g.generation "
                  "FROM {retention_generations} g WHERE g.org = s.org), 1)) "
                  "FROM {source} AS s(org, repository, digest, media_type, cached_at, score, floor) "
                  "ON CONFLICT (org, repository, digest) DO UPDATE SET " + CACHED_STATS)
_IMAGES_CACHED_TYPES = ("text", "text", "text", "text", "double precision", "double precision", "bigint")
_GATHERED_WRITES = {   # name -> (statement, column types)
    "generations": ("INSERT INTO {retention_generations} AS r SELECT * FROM {source} ON CONFLICT (org) DO UPDATE "
                    "SET generation = GREATEST(r.generation, excluded.generation)", ("text", "bigint")),
    "sizes": ("INSERT INTO {sizes} SELECT * FROM {source} ON CONFLICT DO NOTHING", ("text", "bigint")),
    "members": ("INSERT INTO {members} SELECT * FROM {source} ON CONFLICT DO NOTHING", ("text",) * 4),
    "children": ("INSERT INTO {children} SELECT * FROM {source} ON CONFLICT DO NOTHING", ("text",) * 4),
    "unorphaned": ("DELETE FROM {orphans} o USING {source} AS v(digest) WHERE o.digest = v.digest", ("text",)),
    "orphaned": ("INSERT INTO {orphans} SELECT v.digest, v.since, 'waiting' FROM {source} AS v(digest, since) "
                 "WHERE NOT EXISTS (SELECT 1 FROM {members} m WHERE m.digest = v.digest) ON CONFLICT DO NOTHING",
                 ("text", "double precision")),
    "tagged": ("INSERT INTO {image_tags} SELECT * FROM {source} ON CONFLICT (org, repository, tag) DO UPDATE "
               "SET digest = excluded.digest", ("text",) * 4),
    "untagged": ("DELETE FROM {image_tags} t USING {source} AS v(org, repository, tag) WHERE t.org = v.org "
                 "AND t.repository = v.repository AND t.tag = v.tag", ("text",) * 3),
}
# What the fold reads of the copy as it was before the gathering: the indexes each manifest is a child of, and
# the members of each child an index lists.
_KEYED_READS = {
    "indexes of": ("SELECT p.org, p.repository, p.child, p.image FROM {source} AS v(org, repository, child) "
                   "JOIN {children} p ON p.org = v.org AND p.repository = v.repository AND p.child = v.child"),
    "members of": ("SELECT m.org, m.repository, m.image, m.digest FROM {source} AS v(org, repository, image) "
                   "JOIN {members} m ON m.org = v.org AND m.repository = v.repository AND m.image = v.image"),
}

# The same writes on SQLite, a row at a time through executemany (a statement prepared once, no round trips):
# name -> (statement, the row's values as the statement's parameters).
_SQLITE_GATHERED_WRITES = {
    "images": ("INSERT INTO {images} (org, repository, digest, media_type, held, cached_at, last_used, score, "
               "provisional, generation) VALUES (?, ?, ?, ?, 1, ?, ?, ?, 1, max(?, coalesce((SELECT g.generation "
               "FROM {retention_generations} g WHERE g.org = ?), 1))) "
               "ON CONFLICT (org, repository, digest) DO UPDATE SET " + CACHED_STATS,
               lambda org, repository, digest, media_type, at, score, floor:
               (org, repository, digest, media_type, at, at, score, floor, org)),
    "generations": ("INSERT INTO {retention_generations} VALUES (?, ?) ON CONFLICT (org) DO UPDATE "
                    "SET generation = max({retention_generations}.generation, excluded.generation)", None),
    "sizes": ("INSERT INTO {sizes} VALUES (?, ?) ON CONFLICT DO NOTHING", None),
    "members": ("INSERT INTO {members} VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", None),
    "children": ("INSERT INTO {children} VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", None),
    "unorphaned": ("DELETE FROM {orphans} WHERE digest = ?", None),
    "orphaned": ("INSERT INTO {orphans} SELECT ?, ?, 'waiting' WHERE NOT EXISTS "
                 "(SELECT 1 FROM {members} m WHERE m.digest = ?) ON CONFLICT DO NOTHING",
                 lambda digest, since: (digest, since, digest)),
    "tagged": ("INSERT INTO {image_tags} VALUES (?, ?, ?, ?) ON CONFLICT (org, repository, tag) DO UPDATE "
               "SET digest = excluded.digest", None),
    "untagged": ("DELETE FROM {image_tags} WHERE org = ? AND repository = ? AND tag = ?", None),
}
_SQLITE_KEYED_READS = {
    "indexes of": "SELECT image FROM {children} WHERE org = ? AND repository = ? AND child = ?",
    "members of": "SELECT digest FROM {members} WHERE org = ? AND repository = ? AND image = ?",
}
# The indexes a bulk rebuild drops (the others it writes through): one missing from a view whose tables are
# there means a bulk rebuild was killed before its end (SqliteRetentionView.create_table).
_DROPPED_IN_BULK = tuple(name for name, _ in INDEXES if name not in RetentionView.written_through)

_SQLITE_NAMES = {**{name: name for name in TABLES}, "max": "max", "C": "", "cross_join": "CROSS JOIN",
                 "members_by_org": "members AS m INDEXED BY retention_members_org"}   # kept in a bulk rebuild (written_through)


def _returns_rows(text: str) -> bool:
    return text.lstrip().startswith("SELECT") or " RETURNING " in text


class SqliteRetentionView(SqliteView, RetentionView):
    tables = TABLES
    schema_version = SCHEMA_VERSION
    _names = _SQLITE_NAMES
    reads_are_local = True
    schema = (*(statement.format(**_SQLITE_NAMES) for statement in _columns("REAL", "INTEGER", "TEXT")),
              *(f"CREATE INDEX IF NOT EXISTS {name} ON {on.format(**_SQLITE_NAMES)}" for name, on in INDEXES))

    def run(self, c: Any, text: str, params: tuple = ()) -> list[tuple]:
        c.execute(text.format(**self._names), params)
        return [tuple(row) for row in c.fetchall()]

    def read(self, text: str, params: tuple = ()) -> list[tuple]:
        return [tuple(row) for row in self._query(text.format(**self._names), params)]

    def add_pull_stats(self, c: Any, rows: list[tuple]) -> None:
        c.executemany(_PULLS_VALUES.format(**self._names), rows)

    def write_gathered_rows(self, c: Any, table: str, rows: list[tuple]) -> None:
        text, params = _SQLITE_GATHERED_WRITES[table]
        c.executemany(text.format(**self._names), rows if params is None else [params(*row) for row in rows])

    def rows_of_keys(self, c: Any, read: str, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], list[str]]:
        # A statement a key: SQLite reads the file in this process, with no round trip to spare.
        text = _SQLITE_KEYED_READS[read].format(**self._names)
        out: dict[tuple[str, str, str], list[str]] = {}
        for key in keys:
            c.execute(text, key)
            found = [value for (value,) in c.fetchall()]
            if found:
                out[key] = found
        return out

    def drop_indexes(self) -> None:
        super().drop_indexes()
        self.defer_usage()   # a bulk rebuild into the cleared view (RetentionView.usage_deferred)

    def restore_indexes(self) -> None:
        if self.usage_deferred:
            with self._writing() as c:
                self.settle_usage(c)
        super().restore_indexes()

    def create_table(self) -> None:
        # Before the indexes are made again: their absence is what tells a killed bulk rebuild.
        if self._killed_in_bulk():
            with self._writing() as c:
                log.warning("view retention: a bulk rebuild was stopped before its end; summing the usage it deferred")
                self.settle_killed_rebuild(c)
        super().create_table()

    def _killed_in_bulk(self) -> bool:
        """Whether the file holds this schema's tables with an index a bulk rebuild drops missing."""
        with self.datastore.transaction(commit=False) as c:
            if self._schema_found(c) != self.schema_version:
                return False   # no tables yet, or older ones the opening drops
            c.execute("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN (%s)"
                      % ", ".join("?" * len(_DROPPED_IN_BULK)), _DROPPED_IN_BULK)
            return c.fetchone()[0] < len(_DROPPED_IN_BULK)


class PostgresRetentionView(PostgresView, RetentionView):
    """As SqliteRetentionView; its two runners (CacheRecords, Pulls) take turns through serialise_writes."""

    projection = "retention"
    tables = TABLES
    schema_version = SCHEMA_VERSION
    indexes = tuple(name for name, _ in INDEXES)
    serialise_writes = True
    pipelined = True   # run() fetches by the statement's text
    schema = (*_columns("double precision", "bigint", "text", UPDATED_IN_PLACE),
              *(f"CREATE INDEX IF NOT EXISTS {{{name}}} ON {on}" for name, on in INDEXES))

    @staticmethod
    def _dialect(text: str) -> str:
        return (text.replace("{max}", "GREATEST").replace("{C}", ' COLLATE "C"').replace("{members_by_org}", "{members} AS m")
                .replace("{cross_join}", "JOIN")
                .replace("?", "%s"))

    def run(self, c: Any, text: str, params: tuple = ()) -> list[tuple]:
        c.execute(self.sql(self._dialect(text)), params, prepare=True)
        # Whether it returns rows by its text, not c.description: in a pipeline a result is there once fetched.
        return [tuple(row.values()) for row in c.fetchall()] if _returns_rows(text) else []

    def read(self, text: str, params: tuple = ()) -> list[tuple]:
        return self._query(self._dialect(text), params)

    # The two steps of a manifest that read what they wrote (the digests new to `sizes`, to `members`) are one
    # statement each here, whose later parts take the rows added from the first (RETURNING), so the pipeline
    # sends them on without a round trip: a Registry page then waits for the server only to read the indexes
    # of its manifests and its orgs' generations. Every part of a statement sees the tables as they were before
    # it: a part that needs the new sizes takes them from `added`; the new members are all this image's, which
    # the usage's NOT EXISTS leaves out anyway. Rows as RetentionView's two-step statements write them.
    def _sized_chunk(self, c: Any, pairs: list[tuple[str, int]]) -> None:
        self._send(c, "WITH added AS (INSERT INTO {sizes} VALUES " + ", ".join(["(?, ?)"] * len(pairs))
                   + " ON CONFLICT DO NOTHING RETURNING digest, size), "
                   "grown AS (UPDATE {images} AS i SET bytes = i.bytes + g.total FROM (SELECT m.org, m.repository, "
                   "m.image, sum(a.size) AS total FROM {members} m JOIN added a ON a.digest = m.digest "
                   "GROUP BY m.org, m.repository, m.image) g "
                   "WHERE i.org = g.org AND i.repository = g.repository AND i.digest = g.image), "
                   "orgs AS (INSERT INTO {org_usage} AS u SELECT m.org, sum(a.size) FROM (SELECT DISTINCT org, digest "
                   "FROM {members} WHERE digest IN (SELECT digest FROM added)) m JOIN added a ON a.digest = m.digest "
                   "GROUP BY m.org ON CONFLICT (org) DO UPDATE SET bytes = u.bytes + excluded.bytes) "
                   "INSERT INTO {org_usage} AS u SELECT CAST(? AS TEXT), coalesce(sum(a.size) FILTER (WHERE EXISTS "
                   "(SELECT 1 FROM {members} m WHERE m.digest = a.digest)), 0) FROM added a HAVING count(*) > 0 "
                   "ON CONFLICT (org) DO UPDATE SET bytes = u.bytes + excluded.bytes",
                   (*(part for pair in pairs for part in pair), WHOLE_CACHE))

    def _add_member_chunk(self, c: Any, org: str, repository: str, image: str, digests: list[str]) -> None:
        self._send(c, "WITH added AS (INSERT INTO {members} VALUES " + ", ".join(["(?, ?, ?, ?)"] * len(digests))
                   + " ON CONFLICT DO NOTHING RETURNING digest), "
                   "grown AS (UPDATE {images} SET bytes = bytes + coalesce((SELECT sum(s.size) FROM {sizes} s "
                   "WHERE s.digest IN (SELECT digest FROM added)), 0) WHERE org = ? AND repository = ? AND digest = ? "
                   "AND EXISTS (SELECT 1 FROM added)), "
                   "org AS (INSERT INTO {org_usage} AS u SELECT CAST(? AS TEXT), coalesce(sum(s.size), 0) FROM {sizes} s "
                   "WHERE s.digest IN (SELECT digest FROM added) AND NOT EXISTS (SELECT 1 FROM {members} m "
                   "WHERE m.org = ? AND m.digest = s.digest AND (m.repository <> ? OR m.image <> ?)) "
                   "HAVING EXISTS (SELECT 1 FROM added) ON CONFLICT (org) DO UPDATE SET bytes = u.bytes + excluded.bytes) "
                   "INSERT INTO {org_usage} AS u SELECT CAST(? AS TEXT), coalesce(sum(s.size), 0) FROM {sizes} s "
                   "WHERE s.digest IN (SELECT digest FROM added) AND NOT EXISTS (SELECT 1 FROM {members} m "
                   "WHERE m.digest = s.digest AND (m.org <> ? OR m.repository <> ? OR m.image <> ?)) "
                   "HAVING EXISTS (SELECT 1 FROM added) ON CONFLICT (org) DO UPDATE SET bytes = u.bytes + excluded.bytes",
                   (*(part for digest in digests for part in (org, repository, image, digest)),
                    org, repository, image, org, org, repository, image, WHOLE_CACHE, org, repository, image))

    def drop_indexes(self) -> None:
        super().drop_indexes()
        self.defer_usage()   # a bulk rebuild into a copy not live yet (RetentionView.usage_deferred)

    def restore_indexes(self) -> None:
        if self.usage_deferred:
            with self.datastore.transaction(commit=True) as c:
                c.execute("SET LOCAL statement_timeout = 0")
                self.settle_usage(c)
        super().restore_indexes()

    def write_gathered_rows(self, c: Any, table: str, rows: list[tuple]) -> None:
        """A statement a table, its rows as arrays or staged (write_rows)."""
        text, types = (self._dialect(_IMAGES_CACHED), _IMAGES_CACHED_TYPES) if table == "images" else _GATHERED_WRITES[table]
        self.write_rows(c, text, types, rows)

    def rows_of_keys(self, c: Any, read: str, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], list[str]]:
        """One statement joining `keys` (three text columns) as `{source}`."""
        out: dict[tuple[str, str, str], list[str]] = {}
        if keys:
            for row in self.write_rows(c, _KEYED_READS[read], ("text",) * 3, keys, returning=True):
                org, repository, key, value = row.values()
                out.setdefault((org, repository, key), []).append(value)
        return out

    def _send(self, c: Any, text: str, params: tuple) -> None:
        """A statement whose rows are not read: in the page's pipeline, sent without waiting for it."""
        c.execute(self.sql(self._dialect(text)), params, prepare=True)

    def add_pull_stats(self, c: Any, rows: list[tuple]) -> None:
        # One statement (the page's keys are distinct) rather than one per image.
        self.write_rows(c, self._dialect(_PULLS_FROM_SOURCE), _PULLS_TYPES, rows)
