"""The manifests view: (org, repository, digest) -> media type, size, when cached, referenced blobs and children.

`manifest_totals (org)` keeps each org's count and bytes, changed with the rows, for the metrics scrape.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteCursor
from psycopg import Cursor
from psycopg.types.json import Jsonb

from application.ports import ManifestRow
from domain.cache import CachedManifest
from projections.base import SqliteView, View
from projections.postgres_view import PostgresView


class ManifestsView(View):
    name = "manifests"
    handles = (CachedManifest.Cached, CachedManifest.Recached, CachedManifest.Evicted)
    follows = ("Registry",)
    # A bulk rebuild gathers the events per key (ManifestsGathering); each backend writes a gathering
    # (write_gathered), the org totals then counted again from the rows, instead of a statement or two per event
    # (PostgreSQL: ~1,600 events/s of a pipeline for 200,000 images, bench/results/2026-12-02-rebuild-s19.md;
    # SQLite: ~84 s of the critical second process at 10M pulls, bench/results/2026-12-03-rebuild-s25.md).
    gathers = handles

    def gathering(self) -> ManifestsGathering:
        return ManifestsGathering()

    def gather(self, gathered: ManifestsGathering, event: Any, tracking: Tracking) -> None:
        gathered.add(event)

    def process_event(self, c: Any, event: Any, tracking: Tracking) -> None:
        if isinstance(event, CachedManifest.Evicted):
            # Left the cache with its image: a pull by digest stops being answered from here.
            self.remove_manifest(c, event.org, event.repository, event.digest)
        elif isinstance(event, (CachedManifest.Cached, CachedManifest.Recached)):
            # Content-addressed: a second Cached for the same key (never expected) is the same fact.
            self.add_manifest(c, event.org, event.repository, event.digest, event.media_type, event.size,
                              event.cached_at, list(event.blobs), list(event.children))

    @abstractmethod
    def add_manifest(self, c: Any, org: str, repository: str, digest: str, media_type: str, size: int,
                     cached_at: float, blobs: list[str], children: list[str]) -> None:
        """Insert the row unless the key is there already; an inserted row counts in manifest_totals."""

    @abstractmethod
    def remove_manifest(self, c: Any, org: str, repository: str, digest: str) -> None:
        """Delete the row; a deleted row leaves manifest_totals."""

    @abstractmethod
    def get_manifest(self, org: str, repository: str, digest: str) -> ManifestRow | None: ...

    @abstractmethod
    def org_totals(self) -> dict[str, tuple[int, int]]:
        """{org: (cached manifests, their bytes)}: a kept row per org, for the metrics scrape."""


class SqliteManifestsView(SqliteView, ManifestsView):
    tables = ("manifests", "manifest_totals")
    schema = (
        "CREATE TABLE IF NOT EXISTS manifests (org TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT NOT NULL, "
        "media_type TEXT NOT NULL, size INTEGER NOT NULL, cached_at REAL NOT NULL, "
        "blobs TEXT NOT NULL, children TEXT NOT NULL, "   # JSON lists of digests
        "PRIMARY KEY (org, repository, digest)) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS manifest_totals (org TEXT PRIMARY KEY, manifests INTEGER NOT NULL, "
        "bytes INTEGER NOT NULL) WITHOUT ROWID",
    )
    schema_version = 2   # 2: manifest_totals
    _add_total = ("INSERT INTO manifest_totals VALUES (?, ?, ?) ON CONFLICT (org) DO UPDATE SET "
                  "manifests = manifests + excluded.manifests, bytes = bytes + excluded.bytes")

    def add_manifest(self, c: SQLiteCursor, org: str, repository: str, digest: str, media_type: str, size: int,
                     cached_at: float, blobs: list[str], children: list[str]) -> None:
        c.execute("INSERT INTO manifests VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING size",
                  (org, repository, digest, media_type, size, cached_at, json.dumps(blobs), json.dumps(children)))
        if c.fetchone() is not None:
            c.execute(self._add_total, (org, 1, size))

    def remove_manifest(self, c: SQLiteCursor, org: str, repository: str, digest: str) -> None:
        c.execute("DELETE FROM manifests WHERE org = ? AND repository = ? AND digest = ? RETURNING size",
                  (org, repository, digest))
        row = c.fetchone()
        if row is not None:
            c.execute(self._add_total, (org, -1, -row[0]))

    def get_manifest(self, org: str, repository: str, digest: str) -> ManifestRow | None:
        rows = self._query("SELECT digest, media_type, size, blobs, children FROM manifests "
                           "WHERE org = ? AND repository = ? AND digest = ?", (org, repository, digest))
        if not rows:
            return None
        digest, media_type, size, blobs, children = rows[0]
        return ManifestRow(digest, media_type, size, json.loads(blobs), json.loads(children))

    def org_totals(self) -> dict[str, tuple[int, int]]:
        rows = self._query("SELECT org, manifests, bytes FROM manifest_totals WHERE manifests > 0")
        return {org: (count, size) for org, count, size in rows}

    def write_gathered(self, c: SQLiteCursor, gathered: ManifestsGathering) -> None:
        removed, added = gathered.removed_and_added()
        if removed:   # a replaced row too: it goes before its new one is added
            c.executemany("DELETE FROM manifests WHERE org = ? AND repository = ? AND digest = ?", removed)
        if added:
            c.executemany("INSERT INTO manifests VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", added)
        # The totals as the rows give them; a row made only where an add could have made it, as each event's
        # change keeps them.
        for org, adds in gathered.orgs.items():
            c.execute("SELECT count(*), coalesce(sum(size), 0), EXISTS (SELECT 1 FROM manifest_totals WHERE org = ?) "
                      "FROM manifests WHERE org = ?", (org, org))
            count, size, known = c.fetchone()
            if adds or known:
                c.execute("INSERT INTO manifest_totals VALUES (?, ?, ?) ON CONFLICT (org) DO UPDATE SET "
                          "manifests = excluded.manifests, bytes = excluded.bytes", (org, count, size))


class ManifestsGathering:
    """A bulk rebuild's manifest events, each key's effect folded in log order: removed, added after a removal
    (the copy's row replaced), or added where the copy may hold it already (the first row stays)."""

    def __init__(self) -> None:
        # (org, repository, digest) -> ("remove",) | ("replace", row) | ("add", row); row: the columns after the key
        self.effects: dict[tuple[str, str, str], tuple] = {}
        # org -> whether any manifest was added to it (then its totals row exists, even if back at 0)
        self.orgs: dict[str, bool] = {}

    def add(self, event: Any) -> None:
        key = (event.org, event.repository, event.digest)
        if isinstance(event, CachedManifest.Evicted):
            self.effects[key] = ("remove",)
            self.orgs.setdefault(event.org, False)
            return
        self.orgs[event.org] = True
        before = self.effects.get(key)
        if before is None or before[0] == "remove":   # content-addressed: a second add is the same fact
            row = (event.media_type, event.size, event.cached_at, json.dumps(list(event.blobs)),
                   json.dumps(list(event.children)))
            self.effects[key] = ("add" if before is None else "replace", row)

    def removed_and_added(self) -> tuple[list[tuple], list[tuple]]:
        """The keys whose copy's row goes (removed or replaced), and the rows to add (added or replaced): every
        column, key first."""
        removed = [key for key, effect in self.effects.items() if effect[0] != "add"]
        added = [(*key, *effect[1]) for key, effect in self.effects.items() if effect[0] != "remove"]
        return removed, added


class PostgresManifestsView(PostgresView, ManifestsView):
    projection = "manifests"
    pipelined = True   # its writes read nothing back
    _remove_rows = ("DELETE FROM {manifests} m USING {source} AS v(org, repository, digest) WHERE m.org = v.org "
                    "AND m.repository = v.repository AND m.digest = v.digest")
    _add_rows = ("INSERT INTO {manifests} SELECT v.org, v.repository, v.digest, v.media_type, v.size, v.cached_at, "
                 "v.blobs::jsonb, v.children::jsonb FROM {source} AS v(org, repository, digest, media_type, size, "
                 "cached_at, blobs, children) ON CONFLICT DO NOTHING")
    _add_types = ("text", "text", "text", "text", "bigint", "double precision", "text", "text")
    # As each event's change keeps them: a row made only where an add could have made it.
    _recount = ("INSERT INTO {manifest_totals} SELECT o.org, count(m.digest), coalesce(sum(m.size), 0) "
                "FROM {source} AS o(org, adds) LEFT JOIN {manifests} m ON m.org = o.org WHERE o.adds OR EXISTS "
                "(SELECT 1 FROM {manifest_totals} x WHERE x.org = o.org) GROUP BY o.org ON CONFLICT (org) "
                "DO UPDATE SET manifests = excluded.manifests, bytes = excluded.bytes")

    def write_gathered(self, c: Cursor, gathered: ManifestsGathering) -> None:
        removed, added = gathered.removed_and_added()
        if removed:   # a replaced row too: it goes before its new one is added
            self.write_rows(c, self._remove_rows, ("text",) * 3, removed)
        if added:
            self.write_rows(c, self._add_rows, self._add_types, added)
        if gathered.orgs:
            self.write_rows(c, self._recount, ("text", "boolean"), list(gathered.orgs.items()))
    tables = ("manifests", "manifest_totals")
    schema = (
        "CREATE TABLE IF NOT EXISTS {manifests} (org text NOT NULL, repository text NOT NULL, digest text NOT NULL, "
        "media_type text NOT NULL, size bigint NOT NULL, cached_at double precision NOT NULL, "
        "blobs jsonb NOT NULL, children jsonb NOT NULL, "   # lists of digests
        "PRIMARY KEY (org, repository, digest))",
        "CREATE TABLE IF NOT EXISTS {manifest_totals} (org text PRIMARY KEY, manifests bigint NOT NULL, "
        "bytes bigint NOT NULL)",
    )
    schema_version = 2   # 2: manifest_totals
    # The row's change and the total's in one statement: no round trip more per event.
    _add_total = (" INSERT INTO {manifest_totals} AS t SELECT org, %s, %s * size FROM changed "
                  "ON CONFLICT (org) DO UPDATE SET manifests = t.manifests + excluded.manifests, "
                  "bytes = t.bytes + excluded.bytes")

    def add_manifest(self, c: Cursor, org: str, repository: str, digest: str, media_type: str, size: int,
                     cached_at: float, blobs: list[str], children: list[str]) -> None:
        c.execute(self.sql("WITH changed AS (INSERT INTO {manifests} VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                           "ON CONFLICT DO NOTHING RETURNING org, size)" + self._add_total),
                  (org, repository, digest, media_type, size, cached_at, Jsonb(blobs), Jsonb(children), 1, 1),
                  prepare=True)

    def remove_manifest(self, c: Cursor, org: str, repository: str, digest: str) -> None:
        c.execute(self.sql("WITH changed AS (DELETE FROM {manifests} WHERE org = %s AND repository = %s "
                           "AND digest = %s RETURNING org, size)" + self._add_total),
                  (org, repository, digest, -1, -1), prepare=True)

    def get_manifest(self, org: str, repository: str, digest: str) -> ManifestRow | None:
        rows = self._query("SELECT digest, media_type, size, blobs, children FROM {manifests} "
                           "WHERE org = %s AND repository = %s AND digest = %s", (org, repository, digest))
        return ManifestRow(*rows[0]) if rows else None

    def org_totals(self) -> dict[str, tuple[int, int]]:
        rows = self._query("SELECT org, manifests, bytes FROM {manifest_totals} WHERE manifests > 0")
        return {org: (count, size) for org, count, size in rows}
