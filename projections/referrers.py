"""The referrers view: (org, repository, subject, digest) -> the descriptor of each cached manifest that has a subject."""

from __future__ import annotations

import json
from abc import abstractmethod
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteCursor
from psycopg import Cursor
from psycopg.types.json import Jsonb

from domain.cache import CachedManifest
from domain.referrers import Descriptor
from projections.base import SqliteView, View
from projections.postgres_view import PostgresView


class ReferrersView(View):
    """What the cache itself learned about referrers: every manifest it cached whose `subject`
    names another (a signature, SBOM or attestation), keyed by that subject for the referrers API."""

    name = "referrers"
    handles = (CachedManifest.Cached,)
    follows = ("Registry",)

    def process_event(self, c: Any, event: Any, tracking: Tracking) -> None:
        # Version 1 events (before subjects were recorded) upcast to subject "": not a referrer.
        if isinstance(event, CachedManifest.Cached) and event.subject:
            self.add_referrer(c, event.org, event.repository, event.subject,
                              Descriptor(event.media_type, event.digest, event.size, event.artifact_type,
                                         dict(event.annotations or {})), event.cached_at)

    @abstractmethod
    def add_referrer(self, c: Any, org: str, repository: str, subject: str, descriptor: Descriptor,
                     cached_at: float) -> None:
        """Insert the row unless the key is there already (content-addressed: the same fact)."""

    @abstractmethod
    def referrers(self, org: str, repository: str, subject: str) -> list[Descriptor]:
        """The descriptors whose subject is `subject`, oldest first."""


class SqliteReferrersView(SqliteView, ReferrersView):
    tables = ("referrers",)
    schema = (
        "CREATE TABLE IF NOT EXISTS referrers (org TEXT NOT NULL, repository TEXT NOT NULL, subject TEXT NOT NULL, "
        "digest TEXT NOT NULL, media_type TEXT NOT NULL, size INTEGER NOT NULL, artifact_type TEXT NOT NULL, "
        "annotations TEXT NOT NULL, cached_at REAL NOT NULL, "   # annotations: a JSON object
        "PRIMARY KEY (org, repository, subject, digest)) WITHOUT ROWID",
    )

    def add_referrer(self, c: SQLiteCursor, org: str, repository: str, subject: str, descriptor: Descriptor,
                     cached_at: float) -> None:
        c.execute("INSERT INTO referrers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                  (org, repository, subject, descriptor.digest, descriptor.media_type, descriptor.size,
                   descriptor.artifact_type, json.dumps(dict(descriptor.annotations)), cached_at))

    def referrers(self, org: str, repository: str, subject: str) -> list[Descriptor]:
        rows = self._query("SELECT media_type, digest, size, artifact_type, annotations FROM referrers "
                           "WHERE org = ? AND repository = ? AND subject = ? ORDER BY cached_at, digest",
                           (org, repository, subject))
        return [Descriptor(media_type, digest, size, artifact_type, json.loads(annotations))
                for media_type, digest, size, artifact_type, annotations in rows]


class PostgresReferrersView(PostgresView, ReferrersView):
    projection = "referrers"
    tables = ("referrers",)
    schema = (
        "CREATE TABLE IF NOT EXISTS {referrers} (org text NOT NULL, repository text NOT NULL, subject text NOT NULL, "
        "digest text NOT NULL, media_type text NOT NULL, size bigint NOT NULL, artifact_type text NOT NULL, "
        "annotations jsonb NOT NULL, cached_at double precision NOT NULL, "
        "PRIMARY KEY (org, repository, subject, digest))",
    )

    def add_referrer(self, c: Cursor, org: str, repository: str, subject: str, descriptor: Descriptor,
                     cached_at: float) -> None:
        c.execute(self.sql("INSERT INTO {referrers} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"),
                  (org, repository, subject, descriptor.digest, descriptor.media_type, descriptor.size,
                   descriptor.artifact_type, Jsonb(dict(descriptor.annotations)), cached_at))

    def referrers(self, org: str, repository: str, subject: str) -> list[Descriptor]:
        rows = self._query("SELECT media_type, digest, size, artifact_type, annotations FROM {referrers} "
                           'WHERE org = %s AND repository = %s AND subject = %s ORDER BY cached_at, digest COLLATE "C"',
                           (org, repository, subject))
        return [Descriptor(*row) for row in rows]
