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
from projections.base import Batch, SqliteView, View
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
    name = "blobs"
    handles = (CachedBlob.Cached, CachedManifest.Cached, Pull.Recorded)
    follows = ("Registry", "Pulls")

    def process_page(self, c: Any, batch: Batch) -> None:
        # Pulls commute (counts add, last_pulled takes the max), so a page's pulls are summed per
        # manifest and written once each, after the page's other events.
        pulls: dict[tuple[str, str, str], list] = {}
        for event, tracking in batch:
            if isinstance(event, Pull.Recorded):
                if event.digest:
                    seen = pulls.setdefault((event.org, event.repository, event.digest), [0, event.at])
                    seen[0], seen[1] = seen[0] + 1, max(seen[1], event.at)
            else:
                self.process_event(c, event, tracking)
        counts: dict[tuple[str, str], list] = {}
        for (org, repository, digest), (n, at) in pulls.items():
            blobs = self.count_manifest_pulls(c, org, repository, digest, n, at)
            if blobs is not None:  # else the manifest is not known yet: its Cached event adds these pulls
                _add_blob_pulls(counts, org, blobs, n, at)
        if counts:
            self.count_blob_pulls(c, [(org, digest, at, n) for (org, digest), (n, at) in counts.items()])

    def process_event(self, c: Any, event: Any, tracking: Tracking) -> None:
        if isinstance(event, Pull.Recorded):
            self.process_page(c, [(event, tracking)])
        elif isinstance(event, CachedBlob.Cached):
            self.put_cached_blob(c, event.org, event.digest, event.repository, event.size, event.cached_at)
        elif isinstance(event, CachedManifest.Cached):
            known = self.manifest_ref(c, event.org, event.repository, event.digest)
            if known is not None and known[0] is not None:
                return  # already known: the same content-addressed fact
            self.set_manifest_blobs(c, event.org, event.repository, event.digest, list(event.blobs))
            if known is not None and known[1]:
                # Pulls recorded before the manifest was known now count for its blobs.
                counts: dict[tuple[str, str], list] = {}
                _add_blob_pulls(counts, event.org, event.blobs, known[1], known[2])
                self.count_blob_pulls(c, [(org, digest, at, n) for (org, digest), (n, at) in counts.items()])

    # -- storage ---------------------------------------------------------------------------------------
    @abstractmethod
    def put_cached_blob(self, c: Any, org: str, digest: str, repository: str, size: int, cached_at: float) -> None:
        """Insert or complete the blob's row (it may exist already, holding pulls counted before)."""

    @abstractmethod
    def count_manifest_pulls(self, c: Any, org: str, repository: str, digest: str, n: int,
                             at: float) -> list[str] | None:
        """Add n pulls at `at` (latest) to the manifest's row; return its blobs, None while it is not cached."""

    @abstractmethod
    def manifest_ref(self, c: Any, org: str, repository: str, digest: str) -> tuple | None:
        """(blobs or None, pull count, last pulled) of a manifest's row, None without one."""

    @abstractmethod
    def set_manifest_blobs(self, c: Any, org: str, repository: str, digest: str, blobs: list[str]) -> None: ...

    @abstractmethod
    def count_blob_pulls(self, c: Any, rows: list[tuple[str, str, float | None, int]]) -> None:
        """Add (org, digest, last pulled, n) pulls to each blob's row."""

    # -- queries ---------------------------------------------------------------------------------------
    @abstractmethod
    def list_blobs(self, org: str) -> list[BlobRow]:
        """The org's cached blobs, least recently pulled first (never pulled before all)."""

    @abstractmethod
    def org_totals(self) -> dict[str, tuple[int, int]]:
        """{org: (cached blob count, their bytes)}: one grouped query, for the metrics scrape."""


def _add_blob_pulls(counts: dict, org: str, blobs: list, n: int, at: float | None) -> None:
    # dict.fromkeys: a layer listed twice in one manifest is still one pull of that blob.
    for digest in dict.fromkeys(blobs):
        seen = counts.setdefault((org, digest), [0, at])
        seen[0] += n
        if at is not None and (seen[1] is None or at > seen[1]):
            seen[1] = at


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

    def put_cached_blob(self, c: SQLiteCursor, org: str, digest: str, repository: str, size: int,
                        cached_at: float) -> None:
        c.execute("INSERT INTO blobs (org, digest, repository, size, cached_at) VALUES (?, ?, ?, ?, ?) "
                  "ON CONFLICT (org, digest) DO UPDATE SET repository = excluded.repository, "
                  "size = excluded.size, cached_at = excluded.cached_at", (org, digest, repository, size, cached_at))

    def count_manifest_pulls(self, c: SQLiteCursor, org: str, repository: str, digest: str, n: int,
                             at: float) -> list[str] | None:
        c.execute("INSERT INTO manifest_refs (org, repository, digest, last_pulled, pull_count) "
                  "VALUES (?, ?, ?, ?, ?) ON CONFLICT (org, repository, digest) DO UPDATE SET "
                  "pull_count = pull_count + excluded.pull_count, "
                  "last_pulled = max(coalesce(last_pulled, excluded.last_pulled), excluded.last_pulled) "
                  "RETURNING blobs", (org, repository, digest, at, n))
        blobs = c.fetchone()[0]
        return None if blobs is None else json.loads(blobs)

    def manifest_ref(self, c: SQLiteCursor, org: str, repository: str, digest: str) -> tuple | None:
        c.execute("SELECT blobs, pull_count, last_pulled FROM manifest_refs "
                  "WHERE org = ? AND repository = ? AND digest = ?", (org, repository, digest))
        row = c.fetchone()
        return None if row is None else tuple(row)

    def set_manifest_blobs(self, c: SQLiteCursor, org: str, repository: str, digest: str, blobs: list[str]) -> None:
        c.execute("INSERT INTO manifest_refs (org, repository, digest, blobs) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT (org, repository, digest) DO UPDATE SET blobs = excluded.blobs",
                  (org, repository, digest, json.dumps(blobs)))

    def count_blob_pulls(self, c: SQLiteCursor, rows: list[tuple[str, str, float | None, int]]) -> None:
        c.executemany(self._count_blob, rows)

    def list_blobs(self, org: str) -> list[BlobRow]:
        rows = self._query(f"SELECT {_BLOB_COLUMNS} FROM blobs WHERE org = ? AND cached_at IS NOT NULL "
                           "ORDER BY coalesce(last_pulled, 0), digest", (org,))
        return [BlobRow(*row) for row in rows]

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

    def put_cached_blob(self, c: Cursor, org: str, digest: str, repository: str, size: int,
                        cached_at: float) -> None:
        c.execute(self.sql("INSERT INTO {blobs} (org, digest, repository, size, cached_at) "
                           "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (org, digest) DO UPDATE SET "
                           "repository = excluded.repository, size = excluded.size, cached_at = excluded.cached_at"),
                  (org, digest, repository, size, cached_at))

    def count_manifest_pulls(self, c: Cursor, org: str, repository: str, digest: str, n: int,
                             at: float) -> list[str] | None:
        c.execute(self.sql("INSERT INTO {manifest_refs} AS m (org, repository, digest, last_pulled, pull_count) "
                           "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (org, repository, digest) DO UPDATE SET "
                           "pull_count = m.pull_count + excluded.pull_count, "
                           "last_pulled = GREATEST(m.last_pulled, excluded.last_pulled) RETURNING blobs"),
                  (org, repository, digest, at, n), prepare=True)
        return c.fetchone()["blobs"]

    def manifest_ref(self, c: Cursor, org: str, repository: str, digest: str) -> tuple | None:
        c.execute(self.sql("SELECT blobs, pull_count, last_pulled FROM {manifest_refs} "
                           "WHERE org = %s AND repository = %s AND digest = %s"), (org, repository, digest))
        row = c.fetchone()
        return None if row is None else (row["blobs"], row["pull_count"], row["last_pulled"])

    def set_manifest_blobs(self, c: Cursor, org: str, repository: str, digest: str, blobs: list[str]) -> None:
        c.execute(self.sql("INSERT INTO {manifest_refs} (org, repository, digest, blobs) VALUES (%s, %s, %s, %s) "
                           "ON CONFLICT (org, repository, digest) DO UPDATE SET blobs = excluded.blobs"),
                  (org, repository, digest, Jsonb(blobs)))

    def count_blob_pulls(self, c: Cursor, rows: list[tuple[str, str, float | None, int]]) -> None:
        c.executemany(self.sql("INSERT INTO {blobs} AS b (org, digest, last_pulled, pull_count) "
                               "VALUES (%s, %s, %s, %s) ON CONFLICT (org, digest) DO UPDATE SET "
                               "pull_count = b.pull_count + excluded.pull_count, "
                               "last_pulled = GREATEST(b.last_pulled, excluded.last_pulled)"), rows)

    def list_blobs(self, org: str) -> list[BlobRow]:
        rows = self._query(f"SELECT {_BLOB_COLUMNS} FROM {{blobs}} WHERE org = %s AND cached_at IS NOT NULL "
                           'ORDER BY coalesce(last_pulled, 0), digest COLLATE "C"', (org,))
        return [BlobRow(*row) for row in rows]

    def org_totals(self) -> dict[str, tuple[int, int]]:
        rows = self._query("SELECT org, count(*), coalesce(sum(size), 0)::bigint FROM {blobs} "
                           "WHERE cached_at IS NOT NULL GROUP BY org")
        return {org: (count, size) for org, count, size in rows}
