"""The blobs view: (org, digest) -> repository, size, when cached, when last pulled and how often.

It follows both applications: CachedBlob/CachedManifest from Registry and Pull.Recorded from Pulls.
The two runners interleave in any order (a miss's Pull usually lands before its blobs are cached),
so every update here commutes: counts add, last_pulled takes the max, and a row may exist
before its Cached event (cached_at NULL). The final rows therefore do not depend on the
interleaving, which is what lets an offline rebuild reproduce the live view exactly.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteCursor
from psycopg import Cursor
from psycopg.types.json import Jsonb

from domain.cache import CachedBlob, CachedManifest
from domain.pull import Pull
from projections.base import SqliteView, View, ViewProjection
from projections.postgres_view import PostgresView


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
    @abstractmethod
    def get_blob(self, org: str, digest: str) -> BlobRow | None:
        """A cached blob (one only referenced by pulled manifests is not returned)."""

    @abstractmethod
    def list_blobs(self, org: str) -> list[BlobRow]:
        """The org's cached blobs, least recently pulled first (never pulled before all)."""

    @abstractmethod
    def manifest_pulls(self, org: str, repository: str, digest: str) -> tuple[int, float | None]:
        """(pull count, last pulled) of one manifest or index digest."""

    @abstractmethod
    def org_totals(self) -> dict[str, tuple[int, int]]:
        """{org: (cached blob count, their bytes)}: one grouped query, for the metrics scrape."""


class BlobsProjection(ViewProjection):
    name = "blobs"
    handles = (CachedBlob.Cached, CachedManifest.Cached, Pull.Recorded)


_BLOB_COLUMNS = "org, digest, repository, size, cached_at, last_pulled, pull_count"


class SqliteBlobsView(SqliteView, BlobsView):
    tables = ("blobs", "manifest_refs")
    schema = (
        "CREATE TABLE IF NOT EXISTS blobs (org TEXT NOT NULL, digest TEXT NOT NULL, "
        "repository TEXT, size INTEGER, cached_at REAL, "          # NULL until CachedBlob.Cached
        "last_pulled REAL, pull_count INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (org, digest)) WITHOUT ROWID",
        # This view's own copy of manifest -> blobs, plus the manifest's pulls (an index counts only here).
        "CREATE TABLE IF NOT EXISTS manifest_refs (org TEXT NOT NULL, repository TEXT NOT NULL, "
        "digest TEXT NOT NULL, blobs TEXT, "                      # JSON list; NULL until CachedManifest.Cached
        "last_pulled REAL, pull_count INTEGER NOT NULL DEFAULT 0, "
        "PRIMARY KEY (org, repository, digest)) WITHOUT ROWID",
    )
    _count_blob = (
        "INSERT INTO blobs (org, digest, last_pulled, pull_count) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (org, digest) DO UPDATE SET pull_count = pull_count + excluded.pull_count, "
        "last_pulled = max(coalesce(last_pulled, excluded.last_pulled), excluded.last_pulled)"
    )

    def _apply(self, c: SQLiteCursor, event: Any, tracking: Tracking) -> None:
        if isinstance(event, Pull.Recorded):
            self._pulled(c, event)
        elif isinstance(event, CachedBlob.Cached):
            c.execute("INSERT INTO blobs (org, digest, repository, size, cached_at) VALUES (?, ?, ?, ?, ?) "
                      "ON CONFLICT (org, digest) DO UPDATE SET repository = excluded.repository, "
                      "size = excluded.size, cached_at = excluded.cached_at",
                      (event.org, event.digest, event.repository, event.size, event.cached_at))
        elif isinstance(event, CachedManifest.Cached):
            self._manifest_cached(c, event)

    def _pulled(self, c: SQLiteCursor, event: Any) -> None:
        if not event.digest:
            return
        key = (event.org, event.repository, event.digest)
        c.execute("INSERT INTO manifest_refs (org, repository, digest, last_pulled, pull_count) "
                  "VALUES (?, ?, ?, ?, 1) ON CONFLICT (org, repository, digest) DO UPDATE SET "
                  "pull_count = pull_count + 1, last_pulled = max(coalesce(last_pulled, excluded.last_pulled), "
                  "excluded.last_pulled) RETURNING blobs", (*key, event.at))
        blobs = c.fetchone()[0]
        if blobs is not None:  # else the manifest is not known yet: _manifest_cached adds these pulls later
            self._count_blobs(c, event.org, json.loads(blobs), 1, event.at)

    def _manifest_cached(self, c: SQLiteCursor, event: Any) -> None:
        key = (event.org, event.repository, event.digest)
        c.execute("SELECT blobs, pull_count, last_pulled FROM manifest_refs "
                  "WHERE org = ? AND repository = ? AND digest = ?", key)
        row = c.fetchone()
        if row is not None and row[0] is not None:
            return  # already known: the same content-addressed fact
        c.execute("INSERT INTO manifest_refs (org, repository, digest, blobs) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT (org, repository, digest) DO UPDATE SET blobs = excluded.blobs",
                  (*key, json.dumps(list(event.blobs))))
        if row is not None and row[1]:
            # Pulls recorded before the manifest was known now count for its blobs.
            self._count_blobs(c, event.org, event.blobs, row[1], row[2])

    def _count_blobs(self, c: SQLiteCursor, org: str, blobs: list, count: int, at: float | None) -> None:
        # dict.fromkeys: a layer listed twice in one manifest is still one pull of that blob.
        c.executemany(self._count_blob, [(org, digest, at, count) for digest in dict.fromkeys(blobs)])

    def get_blob(self, org: str, digest: str) -> BlobRow | None:
        rows = self._query(f"SELECT {_BLOB_COLUMNS} FROM blobs WHERE org = ? AND digest = ? "
                           "AND cached_at IS NOT NULL", (org, digest))
        return BlobRow(*rows[0]) if rows else None

    def list_blobs(self, org: str) -> list[BlobRow]:
        rows = self._query(f"SELECT {_BLOB_COLUMNS} FROM blobs WHERE org = ? AND cached_at IS NOT NULL "
                           "ORDER BY coalesce(last_pulled, 0), digest", (org,))
        return [BlobRow(*row) for row in rows]

    def manifest_pulls(self, org: str, repository: str, digest: str) -> tuple[int, float | None]:
        rows = self._query("SELECT pull_count, last_pulled FROM manifest_refs "
                           "WHERE org = ? AND repository = ? AND digest = ?", (org, repository, digest))
        return (rows[0][0], rows[0][1]) if rows else (0, None)

    def org_totals(self) -> dict[str, tuple[int, int]]:
        rows = self._query("SELECT org, count(*), coalesce(sum(size), 0) FROM blobs WHERE cached_at IS NOT NULL "
                           "GROUP BY org")
        return {org: (count, size) for org, count, size in rows}


class PostgresBlobsView(PostgresView, BlobsView):
    """As SqliteBlobsView; its two runners (Registry, Pulls) take turns through serialise_writes."""

    projection = "blobs"
    tables = ("blobs", "manifest_refs")
    serialise_writes = True
    schema = (
        "CREATE TABLE IF NOT EXISTS {blobs} (org text NOT NULL, digest text NOT NULL, "
        "repository text, size bigint, cached_at double precision, "          # NULL until CachedBlob.Cached
        "last_pulled double precision, pull_count bigint NOT NULL DEFAULT 0, PRIMARY KEY (org, digest))",
        "CREATE TABLE IF NOT EXISTS {manifest_refs} (org text NOT NULL, repository text NOT NULL, "
        "digest text NOT NULL, blobs jsonb, "                              # NULL until CachedManifest.Cached
        "last_pulled double precision, pull_count bigint NOT NULL DEFAULT 0, "
        "PRIMARY KEY (org, repository, digest))",
    )

    def _apply(self, c: Cursor, event: Any, tracking: Tracking) -> None:
        if isinstance(event, Pull.Recorded):
            self._pulled(c, event)
        elif isinstance(event, CachedBlob.Cached):
            c.execute(self.sql("INSERT INTO {blobs} (org, digest, repository, size, cached_at) "
                               "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (org, digest) DO UPDATE SET "
                               "repository = excluded.repository, size = excluded.size, "
                               "cached_at = excluded.cached_at"),
                      (event.org, event.digest, event.repository, event.size, event.cached_at))
        elif isinstance(event, CachedManifest.Cached):
            self._manifest_cached(c, event)

    def _pulled(self, c: Cursor, event: Any) -> None:
        if not event.digest:
            return
        c.execute(self.sql("INSERT INTO {manifest_refs} AS m (org, repository, digest, last_pulled, pull_count) "
                           "VALUES (%s, %s, %s, %s, 1) ON CONFLICT (org, repository, digest) DO UPDATE SET "
                           "pull_count = m.pull_count + 1, last_pulled = GREATEST(m.last_pulled, excluded.last_pulled) "
                           "RETURNING blobs"), (event.org, event.repository, event.digest, event.at))
        blobs = c.fetchone()["blobs"]
        if blobs is not None:  # else the manifest is not known yet: _manifest_cached adds these pulls later
            self._count_blobs(c, event.org, blobs, 1, event.at)

    def _manifest_cached(self, c: Cursor, event: Any) -> None:
        key = (event.org, event.repository, event.digest)
        c.execute(self.sql("SELECT blobs, pull_count, last_pulled FROM {manifest_refs} "
                           "WHERE org = %s AND repository = %s AND digest = %s"), key)
        row = c.fetchone()
        if row is not None and row["blobs"] is not None:
            return  # already known: the same content-addressed fact
        c.execute(self.sql("INSERT INTO {manifest_refs} (org, repository, digest, blobs) VALUES (%s, %s, %s, %s) "
                           "ON CONFLICT (org, repository, digest) DO UPDATE SET blobs = excluded.blobs"),
                  (*key, Jsonb(list(event.blobs))))
        if row is not None and row["pull_count"]:
            # Pulls recorded before the manifest was known now count for its blobs.
            self._count_blobs(c, event.org, event.blobs, row["pull_count"], row["last_pulled"])

    def _count_blobs(self, c: Cursor, org: str, blobs: list, count: int, at: float | None) -> None:
        # dict.fromkeys: a layer listed twice in one manifest is still one pull of that blob.
        c.executemany(self.sql("INSERT INTO {blobs} AS b (org, digest, last_pulled, pull_count) "
                               "VALUES (%s, %s, %s, %s) ON CONFLICT (org, digest) DO UPDATE SET "
                               "pull_count = b.pull_count + excluded.pull_count, "
                               "last_pulled = GREATEST(b.last_pulled, excluded.last_pulled)"),
                      [(org, digest, at, count) for digest in dict.fromkeys(blobs)])

    def get_blob(self, org: str, digest: str) -> BlobRow | None:
        rows = self._query(f"SELECT {_BLOB_COLUMNS} FROM {{blobs}} WHERE org = %s AND digest = %s "
                           "AND cached_at IS NOT NULL", (org, digest))
        return BlobRow(*rows[0]) if rows else None

    def list_blobs(self, org: str) -> list[BlobRow]:
        rows = self._query(f"SELECT {_BLOB_COLUMNS} FROM {{blobs}} WHERE org = %s AND cached_at IS NOT NULL "
                           'ORDER BY coalesce(last_pulled, 0), digest COLLATE "C"', (org,))
        return [BlobRow(*row) for row in rows]

    def manifest_pulls(self, org: str, repository: str, digest: str) -> tuple[int, float | None]:
        rows = self._query("SELECT pull_count, last_pulled FROM {manifest_refs} "
                           "WHERE org = %s AND repository = %s AND digest = %s", (org, repository, digest))
        return (rows[0][0], rows[0][1]) if rows else (0, None)

    def org_totals(self) -> dict[str, tuple[int, int]]:
        rows = self._query("SELECT org, count(*), coalesce(sum(size), 0)::bigint FROM {blobs} "
                           "WHERE cached_at IS NOT NULL GROUP BY org")
        return {org: (count, size) for org, count, size in rows}
