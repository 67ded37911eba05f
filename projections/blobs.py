"""The blobs view: (org, digest) -> repository, size, when cached, when last pulled and how often.

It follows both applications: CachedBlob/CachedManifest from CacheRecords and Pull.Recorded from Pulls.
The two runners interleave in any order (a miss's Pull usually lands before its blobs are cached),
so every update here commutes: counts add, last_pulled takes the max, and a row may exist
before its Cached event (cached_at NULL). The final rows therefore do not depend on the
interleaving, which is what lets an offline rebuild reproduce the live view exactly.

A blob row belongs to the generation of the org (domain.org.CacheOrg.Recreated) whose CachedBlob
recorded it last: a new org of a deleted one's name lists only what it brought in itself.

`blob_totals (org, generation)` keeps the count and bytes of the cached rows, changed in the page that
changes them, so that `org show` and the metrics scrape read a row per org instead of summing its blobs.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteCursor
from psycopg import Cursor
from psycopg.types.json import Jsonb

from domain.cache import CachedBlob, CachedManifest
from domain.pull import Pull
from projections.base import AGGREGATE_GATHERING_SCALE, REGISTRY_BOUNDED_GATHERING_SCALE, Batch, SqliteView, View
from projections.postgres_view import UPDATED_IN_PLACE, PostgresView


@dataclass(frozen=True)
class BlobRow:
    org: str
    digest: str
    repository: str
    size: int
    cached_at: float
    last_pulled: float | None
    pull_count: int


class BlobsView(View):
    name = "blobs"
    handles = (CachedBlob.Cached, CachedManifest.Cached, Pull.Recorded)
    follows = ("Registry", "Pulls")
    # Every update commutes (see the module's docstring), so any number of pages may be gathered at once.
    gathers = handles
    gathering_scale = REGISTRY_BOUNDED_GATHERING_SCALE   # a row per image or blob, not per pull (View.gathering_scale)
    gathering_scales = {"Registry": AGGREGATE_GATHERING_SCALE}   # that log's rows are per event (base.py)

    def process_page(self, c: Any, batch: Batch) -> None:
        # A page's events are gathered per key first and written in a few statements: blobs cached,
        # manifests cached, then pulls.
        self.gathered_page(c, batch)

    def gathering(self) -> _Page:
        return _Page()

    def process_event(self, c: Any, event: Any, tracking: Tracking) -> None:
        # `c` is the gathering here: write_gathered writes it.
        page = c
        if isinstance(event, Pull.Recorded):
            if event.digest:
                seen = page.pulls.setdefault((event.org, event.repository, event.digest), [0, event.at])
                seen[0], seen[1] = seen[0] + 1, max(seen[1], event.at)
        elif isinstance(event, CachedBlob.Cached):
            page.blobs[(event.org, event.digest)] = (event.repository, event.size, event.cached_at,
                                                     event.generation)  # last wins
        elif isinstance(event, CachedManifest.Cached):
            # Content-addressed: a second Cached of the same manifest is the same fact.
            page.manifests.setdefault((event.org, event.repository, event.digest), list(event.blobs))

    def write_gathered(self, c: Any, page: _Page) -> None:
        if page.blobs:
            rows = [(*key, *value) for key, value in page.blobs.items()]
            before = self.cached_blobs(c, list(page.blobs))
            self.put_cached_blobs(c, rows)
            self.add_blob_totals(c, _totals_change(rows, before))
        counts: dict[tuple[str, str], list] = {}
        if page.manifests:
            known = self.manifest_refs(c, list(page.manifests))
            new = {key: blobs for key, blobs in page.manifests.items() if known.get(key, (None,))[0] is None}
            if new:
                self.set_manifest_blobs(c, [(*key, blobs) for key, blobs in new.items()])
            for key, blobs in new.items():
                _, pull_count, last_pulled = known.get(key, (None, 0, None))
                if pull_count:  # pulls recorded before the manifest was known now count for its blobs
                    _add_blob_pulls(counts, key[0], blobs, pull_count, last_pulled)
        if page.pulls:
            listed = self.count_manifest_pulls(c, [(*key, n, at) for key, (n, at) in page.pulls.items()])
            for key, (n, at) in page.pulls.items():
                blobs = listed.get(key)
                if blobs is not None:  # else the manifest is not known yet: its Cached event adds these pulls
                    _add_blob_pulls(counts, key[0], blobs, n, at)
        if counts:
            self.count_blob_pulls(c, [(org, digest, at, n) for (org, digest), (n, at) in counts.items()])

    # -- storage: each method takes distinct keys ------------------------------------------------------
    @abstractmethod
    def put_cached_blobs(self, c: Any, rows: list[tuple[str, str, str, int, float, int]]) -> None:
        """Insert or complete (org, digest, repository, size, cached_at, generation) rows (they may hold pulls already)."""

    @abstractmethod
    def cached_blobs(self, c: Any, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, int]]:
        """{(org, digest): (size, generation)} of the keys cached already."""

    @abstractmethod
    def add_blob_totals(self, c: Any, changes: list[tuple[str, int, int, int]]) -> None:
        """Add (org, generation, blobs, bytes) changes to blob_totals."""

    @abstractmethod
    def manifest_refs(self, c: Any, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], tuple]:
        """{(org, repository, digest): (blobs or None, pull count, last pulled)} of the keys that have a row."""

    @abstractmethod
    def set_manifest_blobs(self, c: Any, rows: list[tuple[str, str, str, list[str]]]) -> None:
        """Set the blobs of (org, repository, digest, blobs) manifests, creating their rows if needed."""

    @abstractmethod
    def count_manifest_pulls(self, c: Any, rows: list[tuple[str, str, str, int, float]]
                             ) -> dict[tuple[str, str, str], list[str] | None]:
        """Add (org, repository, digest, n, latest at) pulls to each manifest's row; return each
        manifest's blobs, None while it is not cached."""

    @abstractmethod
    def count_blob_pulls(self, c: Any, rows: list[tuple[str, str, float | None, int]]) -> None:
        """Add (org, digest, last pulled, n) pulls to each blob's row."""

    # -- queries ---------------------------------------------------------------------------------------
    @abstractmethod
    def list_blobs(self, org: str, generation: int | None = None) -> list[BlobRow]:
        """The org's cached blobs (of one generation of it, if given), least recently pulled first (never
        pulled before all)."""

    @abstractmethod
    def blob_page(self, org: str, after: str | None, limit: int, generation: int | None = None) -> list[BlobRow]:
        """At most `limit` cached blobs of an org (of one generation of it, if given) with a digest after
        `after`, by digest: a keyset page."""

    @abstractmethod
    def org_blob_totals(self, org: str, generation: int | None = None) -> tuple[int, int]:
        """(cached blobs, their bytes) of one org (of one generation of it, if given), counted in the database."""

    @abstractmethod
    def org_totals(self) -> dict[str, tuple[int, int]]:
        """{org: (cached blob count, their bytes)} of each org's latest generation: one grouped query, for
        the metrics scrape."""


@dataclass
class _Page:
    """One page's events, gathered per key."""

    blobs: dict[tuple[str, str], tuple] = field(default_factory=dict)   # (org, digest) -> repo, size, at, generation
    manifests: dict[tuple[str, str, str], list] = field(default_factory=dict)     # key -> blobs
    pulls: dict[tuple[str, str, str], list] = field(default_factory=dict)         # key -> [n, latest at]


def _totals_change(rows: list[tuple], before: dict[tuple[str, str], tuple[int, int]]) -> list[tuple[str, int, int, int]]:
    """What caching `rows` (org, digest, repository, size, cached_at, generation) changes in blob_totals: a
    blob cached again leaves its earlier (size, generation) and counts with its new one."""
    change: dict[tuple[str, int], list[int]] = {}
    for org, digest, _, size, _, generation in rows:
        if (org, digest) in before:
            old_size, old_generation = before[(org, digest)]
            total = change.setdefault((org, old_generation), [0, 0])
            total[0], total[1] = total[0] - 1, total[1] - old_size
        total = change.setdefault((org, generation), [0, 0])
        total[0], total[1] = total[0] + 1, total[1] + size
    return [(org, generation, n, size) for (org, generation), (n, size) in change.items() if n or size]


def _add_blob_pulls(counts: dict, org: str, blobs: list, n: int, at: float | None) -> None:
    # dict.fromkeys: a layer listed twice in one manifest is still one pull of that blob.
    for digest in dict.fromkeys(blobs):
        seen = counts.setdefault((org, digest), [0, at])
        seen[0] += n
        if at is not None and (seen[1] is None or at > seen[1]):
            seen[1] = at


_BLOB_COLUMNS = "org, digest, repository, size, cached_at, last_pulled, pull_count"
# A deleted org's blobs are not those of the org of its name now: the metrics count the latest generation.
_LATEST_TOTALS = ("SELECT org, blobs, bytes FROM {blob_totals} AS t "
                  "WHERE generation = (SELECT max(g.generation) FROM {blob_totals} AS g WHERE g.org = t.org)")


class SqliteBlobsView(SqliteView, BlobsView):
    tables = ("blobs", "manifest_refs", "blob_totals")
    schema = (
        "CREATE TABLE IF NOT EXISTS blobs (org TEXT NOT NULL, digest TEXT NOT NULL, "
        "repository TEXT, size INTEGER, cached_at REAL, "          # NULL until CachedBlob.Cached
        "last_pulled REAL, pull_count INTEGER NOT NULL DEFAULT 0, generation INTEGER NOT NULL DEFAULT 1, "
        "PRIMARY KEY (org, digest)) WITHOUT ROWID",
        # This view's own copy of manifest -> blobs, plus the manifest's pulls (an index counts only here).
        "CREATE TABLE IF NOT EXISTS manifest_refs (org TEXT NOT NULL, repository TEXT NOT NULL, "
        "digest TEXT NOT NULL, blobs TEXT, "                      # JSON list; NULL until CachedManifest.Cached
        "last_pulled REAL, pull_count INTEGER NOT NULL DEFAULT 0, "
        "PRIMARY KEY (org, repository, digest)) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS blob_totals (org TEXT NOT NULL, generation INTEGER NOT NULL, "
        "blobs INTEGER NOT NULL, bytes INTEGER NOT NULL, PRIMARY KEY (org, generation)) WITHOUT ROWID",
    )
    schema_version = 3   # 2: generation; 3: blob_totals
    _count_blob = (
        "INSERT INTO blobs (org, digest, last_pulled, pull_count) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (org, digest) DO UPDATE SET pull_count = pull_count + excluded.pull_count, "
        "last_pulled = max(coalesce(last_pulled, excluded.last_pulled), excluded.last_pulled)"
    )

    def put_cached_blobs(self, c: SQLiteCursor, rows: list[tuple[str, str, str, int, float, int]]) -> None:
        c.executemany("INSERT INTO blobs (org, digest, repository, size, cached_at, generation) "
                      "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (org, digest) DO UPDATE SET repository = excluded.repository, "
                      "size = excluded.size, cached_at = excluded.cached_at, generation = excluded.generation", rows)

    def cached_blobs(self, c: SQLiteCursor, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, int]]:
        found = {}
        for key in keys:
            c.execute("SELECT size, generation FROM blobs WHERE org = ? AND digest = ? AND cached_at IS NOT NULL", key)
            row = c.fetchone()
            if row is not None:
                found[key] = (row[0], row[1])
        return found

    def add_blob_totals(self, c: SQLiteCursor, changes: list[tuple[str, int, int, int]]) -> None:
        c.executemany("INSERT INTO blob_totals VALUES (?, ?, ?, ?) ON CONFLICT (org, generation) DO UPDATE SET "
                      "blobs = blobs + excluded.blobs, bytes = bytes + excluded.bytes", changes)

    def count_manifest_pulls(self, c: SQLiteCursor, rows: list[tuple[str, str, str, int, float]]
                             ) -> dict[tuple[str, str, str], list[str] | None]:
        known = {}
        for org, repository, digest, n, at in rows:   # in-process SQLite: a statement each costs little
            c.execute("INSERT INTO manifest_refs (org, repository, digest, last_pulled, pull_count) "
                      "VALUES (?, ?, ?, ?, ?) ON CONFLICT (org, repository, digest) DO UPDATE SET "
                      "pull_count = pull_count + excluded.pull_count, "
                      "last_pulled = max(coalesce(last_pulled, excluded.last_pulled), excluded.last_pulled) "
                      "RETURNING blobs", (org, repository, digest, at, n))
            blobs = c.fetchone()[0]
            known[(org, repository, digest)] = None if blobs is None else json.loads(blobs)
        return known

    def manifest_refs(self, c: SQLiteCursor, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], tuple]:
        found = {}
        for key in keys:
            c.execute("SELECT blobs, pull_count, last_pulled FROM manifest_refs "
                      "WHERE org = ? AND repository = ? AND digest = ?", key)
            row = c.fetchone()
            if row is not None:
                found[key] = (None if row[0] is None else json.loads(row[0]), row[1], row[2])
        return found

    def set_manifest_blobs(self, c: SQLiteCursor, rows: list[tuple[str, str, str, list[str]]]) -> None:
        c.executemany("INSERT INTO manifest_refs (org, repository, digest, blobs) VALUES (?, ?, ?, ?) "
                      "ON CONFLICT (org, repository, digest) DO UPDATE SET blobs = excluded.blobs",
                      [(org, repository, digest, json.dumps(blobs)) for org, repository, digest, blobs in rows])

    def count_blob_pulls(self, c: SQLiteCursor, rows: list[tuple[str, str, float | None, int]]) -> None:
        c.executemany(self._count_blob, rows)

    def list_blobs(self, org: str, generation: int | None = None) -> list[BlobRow]:
        rows = self._query(f"SELECT {_BLOB_COLUMNS} FROM blobs WHERE org = ? AND cached_at IS NOT NULL "
                           f"{'AND generation = ? ' if generation is not None else ''}"
                           "ORDER BY coalesce(last_pulled, 0), digest",
                           (org,) if generation is None else (org, generation))
        return [BlobRow(*row) for row in rows]

    def blob_page(self, org: str, after: str | None, limit: int, generation: int | None = None) -> list[BlobRow]:
        of_generation = "AND generation = ? " if generation is not None else ""
        rows = self._query(f"SELECT {_BLOB_COLUMNS} FROM blobs WHERE org = ? AND digest > ? {of_generation}"
                           "AND cached_at IS NOT NULL ORDER BY digest LIMIT ?",
                           (org, after or "", *(() if generation is None else (generation,)), limit))
        return [BlobRow(*row) for row in rows]

    def org_blob_totals(self, org: str, generation: int | None = None) -> tuple[int, int]:
        of_generation = "AND generation = ? " if generation is not None else ""
        rows = self._query(f"SELECT coalesce(sum(blobs), 0), coalesce(sum(bytes), 0) FROM blob_totals WHERE org = ? "
                           f"{of_generation}", (org,) if generation is None else (org, generation))
        return rows[0][0], rows[0][1]

    def org_totals(self) -> dict[str, tuple[int, int]]:
        return {org: (count, size) for org, count, size in self._query(_LATEST_TOTALS.format(blob_totals="blob_totals"))}


class PostgresBlobsView(PostgresView, BlobsView):
    """As SqliteBlobsView; its two runners (CacheRecords, Pulls) take turns through serialise_writes."""

    projection = "blobs"
    tables = ("blobs", "manifest_refs", "blob_totals")
    serialise_writes = True
    schema = (
        "CREATE TABLE IF NOT EXISTS {blobs} (org text NOT NULL, digest text NOT NULL, "
        "repository text, size bigint, cached_at double precision, "          # NULL until CachedBlob.Cached
        "last_pulled double precision, pull_count bigint NOT NULL DEFAULT 0, generation integer NOT NULL DEFAULT 1, "
        f"PRIMARY KEY (org, digest)){UPDATED_IN_PLACE}",
        "CREATE TABLE IF NOT EXISTS {manifest_refs} (org text NOT NULL, repository text NOT NULL, "
        "digest text NOT NULL, blobs jsonb, "                              # NULL until CachedManifest.Cached
        "last_pulled double precision, pull_count bigint NOT NULL DEFAULT 0, "
        f"PRIMARY KEY (org, repository, digest)){UPDATED_IN_PLACE}",
        "CREATE TABLE IF NOT EXISTS {blob_totals} (org text NOT NULL, generation integer NOT NULL, "
        "blobs bigint NOT NULL, bytes bigint NOT NULL, PRIMARY KEY (org, generation))",
    )
    schema_version = 3   # 2: generation; 3: blob_totals

    def put_cached_blobs(self, c: Cursor, rows: list[tuple[str, str, str, int, float, int]]) -> None:
        self.write_rows(c, "INSERT INTO {blobs} (org, digest, repository, size, cached_at, generation) "
                        "SELECT * FROM {source} ON CONFLICT (org, digest) DO UPDATE SET "
                        "repository = excluded.repository, size = excluded.size, cached_at = excluded.cached_at, "
                        "generation = excluded.generation",
                     ("text", "text", "text", "bigint", "double precision", "integer"), rows)

    def cached_blobs(self, c: Cursor, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, int]]:
        c.execute(self.sql("SELECT b.org, b.digest, b.size, b.generation FROM {blobs} AS b JOIN unnest(%s::text[], "
                           "%s::text[]) AS k (org, digest) USING (org, digest) WHERE b.cached_at IS NOT NULL"),
                  _columns(keys, 2), prepare=True)
        return {(row["org"], row["digest"]): (row["size"], row["generation"]) for row in c.fetchall()}

    def add_blob_totals(self, c: Cursor, changes: list[tuple[str, int, int, int]]) -> None:
        self.write_rows(c, "INSERT INTO {blob_totals} AS t SELECT * FROM {source} ON CONFLICT (org, generation) "
                        "DO UPDATE SET blobs = t.blobs + excluded.blobs, bytes = t.bytes + excluded.bytes",
                     ("text", "integer", "bigint", "bigint"), changes)

    def count_manifest_pulls(self, c: Cursor, rows: list[tuple[str, str, str, int, float]]
                             ) -> dict[tuple[str, str, str], list[str] | None]:
        # One statement for the page instead of a round trip per manifest.
        returned = self.write_rows(c, "INSERT INTO {manifest_refs} AS m (org, repository, digest, pull_count, last_pulled) "
                        "SELECT * FROM {source} ON CONFLICT (org, repository, digest) DO UPDATE SET "
                        "pull_count = m.pull_count + excluded.pull_count, "
                        "last_pulled = GREATEST(m.last_pulled, excluded.last_pulled) "
                        "RETURNING org, repository, digest, blobs",
                     ("text", "text", "text", "bigint", "double precision"), rows, returning=True)
        return {(row["org"], row["repository"], row["digest"]): row["blobs"] for row in returned}

    def manifest_refs(self, c: Cursor, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], tuple]:
        c.execute(self.sql("SELECT m.org, m.repository, m.digest, m.blobs, m.pull_count, m.last_pulled "
                           "FROM {manifest_refs} AS m JOIN unnest(%s::text[], %s::text[], %s::text[]) "
                           "AS k (org, repository, digest) USING (org, repository, digest)"),
                  _columns(keys, 3), prepare=True)
        return {(row["org"], row["repository"], row["digest"]): (row["blobs"], row["pull_count"], row["last_pulled"])
                for row in c.fetchall()}

    def set_manifest_blobs(self, c: Cursor, rows: list[tuple[str, str, str, list[str]]]) -> None:
        c.executemany(self.sql("INSERT INTO {manifest_refs} (org, repository, digest, blobs) VALUES (%s, %s, %s, %s) "
                               "ON CONFLICT (org, repository, digest) DO UPDATE SET blobs = excluded.blobs"),
                      [(org, repository, digest, Jsonb(blobs)) for org, repository, digest, blobs in rows])

    def count_blob_pulls(self, c: Cursor, rows: list[tuple[str, str, float | None, int]]) -> None:
        # Keys are distinct (summed per page), so one statement may upsert them all.
        self.write_rows(c, "INSERT INTO {blobs} AS b (org, digest, last_pulled, pull_count) "
                        "SELECT * FROM {source} ON CONFLICT (org, digest) DO UPDATE SET "
                        "pull_count = b.pull_count + excluded.pull_count, "
                        "last_pulled = GREATEST(b.last_pulled, excluded.last_pulled)",
                     ("text", "text", "double precision", "bigint"), rows)

    def list_blobs(self, org: str, generation: int | None = None) -> list[BlobRow]:
        rows = self._query(f"SELECT {_BLOB_COLUMNS} FROM {{blobs}} WHERE org = %s AND cached_at IS NOT NULL "
                           f"{'AND generation = %s ' if generation is not None else ''}"
                           'ORDER BY coalesce(last_pulled, 0), digest COLLATE "C"',
                           (org,) if generation is None else (org, generation))
        return [BlobRow(*row) for row in rows]

    def blob_page(self, org: str, after: str | None, limit: int, generation: int | None = None) -> list[BlobRow]:
        # The primary key's collation (see PostgresTagsView.org_tag_page); digests are ASCII.
        of_generation = "AND generation = %s " if generation is not None else ""
        rows = self._query(f"SELECT {_BLOB_COLUMNS} FROM {{blobs}} WHERE org = %s AND digest > %s {of_generation}"
                           "AND cached_at IS NOT NULL ORDER BY digest LIMIT %s",
                           (org, after or "", *(() if generation is None else (generation,)), limit))
        return [BlobRow(*row) for row in rows]

    def org_blob_totals(self, org: str, generation: int | None = None) -> tuple[int, int]:
        of_generation = "AND generation = %s " if generation is not None else ""
        rows = self._query("SELECT coalesce(sum(blobs), 0)::bigint AS blobs, coalesce(sum(bytes), 0)::bigint AS bytes "
                           f"FROM {{blob_totals}} WHERE org = %s {of_generation}",
                           (org,) if generation is None else (org, generation))
        return rows[0][0], rows[0][1]

    def org_totals(self) -> dict[str, tuple[int, int]]:
        return {org: (count, size) for org, count, size in self._query(_LATEST_TOTALS)}


def _columns(rows: list[tuple], width: int) -> tuple[list, ...]:
    """Rows as column lists, for `unnest(%s, %s, ...)`: one statement for many rows."""
    return tuple(list(column) for column in zip(*rows)) if rows else tuple([] for _ in range(width))
