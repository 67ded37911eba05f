"""The hot path's tag and manifest lookups: prepared primary-key reads of the tags and manifests views, SQLite or PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import threading

from psycopg.sql import SQL, Identifier

from application.ports import ManifestRow, TagRow
from projections.postgres_view import PostgresView, read_with_retry


class SqliteTagsAndManifests:
    """Implements application.ports.TagsAndManifests; safe to share between threads.

    Each thread gets its own read-only connection to tags.db with manifests.db attached,
    kept open so that sqlite3's statement cache keeps the lookups prepared. Autocommit
    reads see every transaction the runners committed before the read began (WAL).
    """

    def __init__(self, tags_db: str, manifests_db: str) -> None:
        self._tags_db, self._manifests_db = tags_db, manifests_db
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise RuntimeError("SqliteTagsAndManifests is closed")
            # check_same_thread=False only so that close() may close it from another thread.
            conn = sqlite3.connect(self._tags_db, uri=True, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
            conn.execute("ATTACH DATABASE ? AS m", (self._manifests_db,))
            with self._lock:
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    def get_tag(self, org: str, repository: str, tag: str) -> TagRow | None:
        row = self._connection().execute(
            "SELECT digest, media_type, checked_at FROM main.tags WHERE org = ? AND repository = ? AND tag = ?",
            (org, repository, tag)).fetchone()
        return TagRow(*row) if row else None

    def get_manifest(self, org: str, repository: str, digest: str) -> ManifestRow | None:
        row = self._connection().execute(
            "SELECT digest, media_type, size, blobs, children FROM m.manifests "
            "WHERE org = ? AND repository = ? AND digest = ?", (org, repository, digest)).fetchone()
        if row is None:
            return None
        return ManifestRow(row[0], row[1], row[2], json.loads(row[3]), json.loads(row[4]))

    def list_tags(self, org: str, repository: str) -> list[str]:
        rows = self._connection().execute(
            "SELECT tag FROM main.tags WHERE org = ? AND repository = ? ORDER BY tag", (org, repository)).fetchall()
        return [row[0] for row in rows]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()


class PostgresTagsAndManifests:
    """Implements application.ports.TagsAndManifests over the live tags and manifests tables; thread-safe.

    Reads go through the tags view's own small pool and the stable names, so a blue/green rebuild
    switches these lookups too; psycopg prepares each statement after a few uses per connection.
    """

    def __init__(self, tags: PostgresView) -> None:
        self._tags = tags
        self._select_tag = tags.read_sql("SELECT digest, media_type, checked_at FROM {tags} "
                                         "WHERE org = %s AND repository = %s AND tag = %s")
        self._list_tags = tags.read_sql('SELECT tag FROM {tags} WHERE org = %s AND repository = %s '
                                        'ORDER BY tag COLLATE "C"')
        schema = tags.datastore.schema
        self._select_manifest = SQL("SELECT digest, media_type, size, blobs, children FROM {} "
                                    "WHERE org = %s AND repository = %s AND digest = %s").format(
            Identifier(schema, "manifests"))

    def _one(self, statement, params: tuple) -> dict | None:
        return read_with_retry(self._tags.datastore,
                               lambda conn: conn.execute(statement, params, prepare=True).fetchone())

    def get_tag(self, org: str, repository: str, tag: str) -> TagRow | None:
        row = self._one(self._select_tag, (org, repository, tag))
        return TagRow(row["digest"], row["media_type"], row["checked_at"]) if row else None

    def get_manifest(self, org: str, repository: str, digest: str) -> ManifestRow | None:
        row = self._one(self._select_manifest, (org, repository, digest))
        if row is None:
            return None
        return ManifestRow(row["digest"], row["media_type"], row["size"], row["blobs"], row["children"])

    def list_tags(self, org: str, repository: str) -> list[str]:
        rows = read_with_retry(self._tags.datastore,
                               lambda conn: conn.execute(self._list_tags, (org, repository), prepare=True).fetchall())
        return [row["tag"] for row in rows]

    def close(self) -> None:
        self._tags.close()

