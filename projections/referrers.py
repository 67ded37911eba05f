"""The referrers view: the manifests with a subject the cache holds, by subject, and the referrers lists upstream gave."""

from __future__ import annotations

import json
from abc import abstractmethod
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteCursor
from psycopg import Cursor
from psycopg.types.json import Jsonb

from application.ports import RecordedReferrers
from domain.cache import CachedManifest
from domain.org import CacheOrg
from domain.referrers import Descriptor
from domain.referrers_list import ReferrersList, from_recorded
from domain.retention import CacheFlush
from projections.base import SqliteView, View
from projections.postgres_view import PostgresView


class ReferrersView(View):
    """Two parts, both for the referrers API. What the cache itself learned: every manifest it cached whose
    `subject` names another (a signature, SBOM or attestation), listed only while it is held, so a referrer
    the cache lists is one it can serve. And what upstream listed per subject (ReferrersList events), which
    a flush of its scope or the org's deletion drops, like the tags."""

    name = "referrers"
    handles = (CachedManifest.Cached, CachedManifest.Evicted, CachedManifest.Recached, ReferrersList.Listed,
               ReferrersList.Changed, ReferrersList.Revalidated, CacheFlush.Flushed, CacheOrg.Deleted)
    follows = ("Registry",)

    def process_event(self, c: Any, event: Any, tracking: Tracking) -> None:
        # Version 1 events (before subjects were recorded) upcast to subject "": not a referrer.
        if isinstance(event, CachedManifest.Cached) and event.subject:
            self.add_referrer(c, event.org, event.repository, event.subject, _descriptor(event), event.cached_at)
        elif isinstance(event, CachedManifest.Evicted):
            self.hold_referrer(c, event.org, event.repository, event.digest, held=False)
            if event.reason == "flush" and event.image == event.digest:
                # A flushed image's referrers list goes with it (a tag's flush names no digest itself).
                self.drop_lists(c, event.org, event.repository, event.digest)
        elif isinstance(event, CachedManifest.Recached):
            if event.subject:
                self.add_referrer(c, event.org, event.repository, event.subject, _descriptor(event), event.cached_at)
            else:   # version 1 carried no subject: the row kept since Cached comes back
                self.hold_referrer(c, event.org, event.repository, event.digest, held=True)
        elif isinstance(event, (ReferrersList.Listed, ReferrersList.Changed)):
            self.put_list(c, event.org, event.repository, event.subject, event.descriptors, event.checked_at)
        elif isinstance(event, ReferrersList.Revalidated):
            self.confirm_list(c, event.org, event.repository, event.subject, event.checked_at)
        elif isinstance(event, CacheFlush.Flushed):
            if not event.dry_run and not event.tag:
                self.drop_lists(c, event.org, event.repository or None)
        elif isinstance(event, CacheOrg.Deleted):
            self.drop_lists(c, event.name)

    @abstractmethod
    def add_referrer(self, c: Any, org: str, repository: str, subject: str, descriptor: Descriptor,
                     cached_at: float) -> None:
        """Insert the row held, or mark the row there held again (content-addressed: the same fact)."""

    @abstractmethod
    def hold_referrer(self, c: Any, org: str, repository: str, digest: str, held: bool) -> None:
        """Mark the manifest `digest` held (cached again) or not (evicted), whatever its subject."""

    @abstractmethod
    def put_list(self, c: Any, org: str, repository: str, subject: str, descriptors: list, checked_at: float) -> None:
        """Insert or replace upstream's list of `subject` (descriptors as an index lists them)."""

    @abstractmethod
    def confirm_list(self, c: Any, org: str, repository: str, subject: str, checked_at: float) -> None: ...

    @abstractmethod
    def drop_lists(self, c: Any, org: str, repository: str | None = None, subject: str | None = None) -> None:
        """Forget upstream's lists of an org, one of its repositories, or one subject there."""

    @abstractmethod
    def referrers(self, org: str, repository: str, subject: str) -> list[Descriptor]:
        """The held descriptors whose subject is `subject`, oldest first."""

    @abstractmethod
    def upstream_list(self, org: str, repository: str, subject: str) -> RecordedReferrers | None: ...


def _descriptor(event: Any) -> Descriptor:
    return Descriptor(event.media_type, event.digest, event.size, event.artifact_type, dict(event.annotations or {}))


def _scope(org: str, repository: str | None, subject: str | None, placeholder: str) -> tuple[str, tuple]:
    """The WHERE clause of an org, repository or subject scope, and its parameters."""
    clause, params = f"org = {placeholder}", [org]
    if repository is not None:
        clause, params = clause + f" AND repository = {placeholder}", [*params, repository]
    if subject is not None:
        clause, params = clause + f" AND subject = {placeholder}", [*params, subject]
    return clause, tuple(params)


class SqliteReferrersView(SqliteView, ReferrersView):
    tables = ("referrers", "upstream_referrers")
    schema_version = 2   # 2: held, the index by digest, upstream_referrers
    schema = (
        "CREATE TABLE IF NOT EXISTS referrers (org TEXT NOT NULL, repository TEXT NOT NULL, subject TEXT NOT NULL, "
        "digest TEXT NOT NULL, media_type TEXT NOT NULL, size INTEGER NOT NULL, artifact_type TEXT NOT NULL, "
        "annotations TEXT NOT NULL, cached_at REAL NOT NULL, held INTEGER NOT NULL, "   # annotations: a JSON object
        "PRIMARY KEY (org, repository, subject, digest)) WITHOUT ROWID",
        "CREATE INDEX IF NOT EXISTS referrers_by_digest ON referrers (org, repository, digest)",
        "CREATE TABLE IF NOT EXISTS upstream_referrers (org TEXT NOT NULL, repository TEXT NOT NULL, "
        "subject TEXT NOT NULL, descriptors TEXT NOT NULL, checked_at REAL NOT NULL, "   # descriptors: a JSON list
        "PRIMARY KEY (org, repository, subject)) WITHOUT ROWID",
    )

    def add_referrer(self, c: SQLiteCursor, org: str, repository: str, subject: str, descriptor: Descriptor,
                     cached_at: float) -> None:
        c.execute("INSERT INTO referrers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1) "
                  "ON CONFLICT (org, repository, subject, digest) DO UPDATE SET held = 1",
                  (org, repository, subject, descriptor.digest, descriptor.media_type, descriptor.size,
                   descriptor.artifact_type, json.dumps(dict(descriptor.annotations)), cached_at))

    def hold_referrer(self, c: SQLiteCursor, org: str, repository: str, digest: str, held: bool) -> None:
        c.execute("UPDATE referrers SET held = ? WHERE org = ? AND repository = ? AND digest = ?",
                  (int(held), org, repository, digest))

    def put_list(self, c: SQLiteCursor, org: str, repository: str, subject: str, descriptors: list,
                 checked_at: float) -> None:
        c.execute("INSERT INTO upstream_referrers VALUES (?, ?, ?, ?, ?) ON CONFLICT (org, repository, subject) "
                  "DO UPDATE SET descriptors = excluded.descriptors, checked_at = excluded.checked_at",
                  (org, repository, subject, json.dumps(descriptors), checked_at))

    def confirm_list(self, c: SQLiteCursor, org: str, repository: str, subject: str, checked_at: float) -> None:
        c.execute("UPDATE upstream_referrers SET checked_at = ? WHERE org = ? AND repository = ? AND subject = ?",
                  (checked_at, org, repository, subject))

    def drop_lists(self, c: SQLiteCursor, org: str, repository: str | None = None, subject: str | None = None) -> None:
        where, params = _scope(org, repository, subject, "?")
        c.execute(f"DELETE FROM upstream_referrers WHERE {where}", params)

    def referrers(self, org: str, repository: str, subject: str) -> list[Descriptor]:
        rows = self._query("SELECT media_type, digest, size, artifact_type, annotations FROM referrers "
                           "WHERE org = ? AND repository = ? AND subject = ? AND held = 1 ORDER BY cached_at, digest",
                           (org, repository, subject))
        return [Descriptor(media_type, digest, size, artifact_type, json.loads(annotations))
                for media_type, digest, size, artifact_type, annotations in rows]

    def upstream_list(self, org: str, repository: str, subject: str) -> RecordedReferrers | None:
        rows = self._query("SELECT descriptors, checked_at FROM upstream_referrers "
                           "WHERE org = ? AND repository = ? AND subject = ?", (org, repository, subject))
        return RecordedReferrers(from_recorded(json.loads(rows[0][0])), rows[0][1]) if rows else None


class PostgresReferrersView(PostgresView, ReferrersView):
    projection = "referrers"
    tables = ("referrers", "upstream_referrers")
    indexes = ("referrers_by_digest",)
    schema_version = 2
    schema = (
        "CREATE TABLE IF NOT EXISTS {referrers} (org text NOT NULL, repository text NOT NULL, subject text NOT NULL, "
        "digest text NOT NULL, media_type text NOT NULL, size bigint NOT NULL, artifact_type text NOT NULL, "
        "annotations jsonb NOT NULL, cached_at double precision NOT NULL, held boolean NOT NULL, "
        "PRIMARY KEY (org, repository, subject, digest))",
        "CREATE INDEX IF NOT EXISTS {referrers_by_digest} ON {referrers} (org, repository, digest)",
        "CREATE TABLE IF NOT EXISTS {upstream_referrers} (org text NOT NULL, repository text NOT NULL, "
        "subject text NOT NULL, descriptors jsonb NOT NULL, checked_at double precision NOT NULL, "
        "PRIMARY KEY (org, repository, subject))",
    )

    def add_referrer(self, c: Cursor, org: str, repository: str, subject: str, descriptor: Descriptor,
                     cached_at: float) -> None:
        c.execute(self.sql("INSERT INTO {referrers} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, true) "
                           "ON CONFLICT (org, repository, subject, digest) DO UPDATE SET held = true"),
                  (org, repository, subject, descriptor.digest, descriptor.media_type, descriptor.size,
                   descriptor.artifact_type, Jsonb(dict(descriptor.annotations)), cached_at))

    def hold_referrer(self, c: Cursor, org: str, repository: str, digest: str, held: bool) -> None:
        c.execute(self.sql("UPDATE {referrers} SET held = %s WHERE org = %s AND repository = %s AND digest = %s"),
                  (held, org, repository, digest), prepare=True)

    def put_list(self, c: Cursor, org: str, repository: str, subject: str, descriptors: list,
                 checked_at: float) -> None:
        c.execute(self.sql("INSERT INTO {upstream_referrers} VALUES (%s, %s, %s, %s, %s) "
                           "ON CONFLICT (org, repository, subject) "
                           "DO UPDATE SET descriptors = excluded.descriptors, checked_at = excluded.checked_at"),
                  (org, repository, subject, Jsonb(descriptors), checked_at))

    def confirm_list(self, c: Cursor, org: str, repository: str, subject: str, checked_at: float) -> None:
        c.execute(self.sql("UPDATE {upstream_referrers} SET checked_at = %s "
                           "WHERE org = %s AND repository = %s AND subject = %s"),
                  (checked_at, org, repository, subject), prepare=True)

    def drop_lists(self, c: Cursor, org: str, repository: str | None = None, subject: str | None = None) -> None:
        where, params = _scope(org, repository, subject, "%s")
        c.execute(self.sql(f"DELETE FROM {{upstream_referrers}} WHERE {where}"), params)

    def referrers(self, org: str, repository: str, subject: str) -> list[Descriptor]:
        rows = self._query("SELECT media_type, digest, size, artifact_type, annotations FROM {referrers} "
                           "WHERE org = %s AND repository = %s AND subject = %s AND held "
                           'ORDER BY cached_at, digest COLLATE "C"', (org, repository, subject))
        return [Descriptor(*row) for row in rows]

    def upstream_list(self, org: str, repository: str, subject: str) -> RecordedReferrers | None:
        rows = self._query("SELECT descriptors, checked_at FROM {upstream_referrers} "
                           "WHERE org = %s AND repository = %s AND subject = %s", (org, repository, subject))
        return RecordedReferrers(from_recorded(rows[0][0]), rows[0][1]) if rows else None
