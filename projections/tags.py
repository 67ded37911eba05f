"""The tags view: (org, repository, tag) -> digest, media type and when upstream last confirmed it."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteCursor

from application.ports import TagRow
from domain.cache import TagResolution
from projections.base import SqliteView, View, ViewProjection


class TagsView(View):
    @abstractmethod
    def get_tag(self, org: str, repository: str, tag: str) -> TagRow | None: ...

    @abstractmethod
    def list_tags(self, org: str, repository: str) -> list[str]: ...


class TagsProjection(ViewProjection):
    name = "tags"
    handles = (TagResolution.Resolved, TagResolution.Revalidated, TagResolution.Retargeted)


class SqliteTagsView(SqliteView, TagsView):
    tables = ("tags",)
    schema = (
        "CREATE TABLE IF NOT EXISTS tags (org TEXT NOT NULL, repository TEXT NOT NULL, tag TEXT NOT NULL, "
        "digest TEXT NOT NULL, media_type TEXT NOT NULL, checked_at REAL NOT NULL, "
        "PRIMARY KEY (org, repository, tag)) WITHOUT ROWID",
    )
    _upsert = (
        "INSERT INTO tags VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (org, repository, tag) DO UPDATE SET "
        "digest = excluded.digest, media_type = excluded.media_type, checked_at = excluded.checked_at"
    )

    def _apply(self, c: SQLiteCursor, event: Any, tracking: Tracking) -> None:
        if isinstance(event, (TagResolution.Resolved, TagResolution.Retargeted)):
            c.execute(self._upsert, (event.org, event.repository, event.tag, event.digest, event.media_type,
                                     event.checked_at))
        elif isinstance(event, TagResolution.Revalidated):
            # Same digest by definition; Revalidated carries no media type, so keep the row's.
            c.execute("UPDATE tags SET checked_at = ? WHERE org = ? AND repository = ? AND tag = ?",
                      (event.checked_at, event.org, event.repository, event.tag))

    def get_tag(self, org: str, repository: str, tag: str) -> TagRow | None:
        rows = self._query("SELECT digest, media_type, checked_at FROM tags "
                           "WHERE org = ? AND repository = ? AND tag = ?", (org, repository, tag))
        return TagRow(*rows[0]) if rows else None

    def list_tags(self, org: str, repository: str) -> list[str]:
        rows = self._query("SELECT tag FROM tags WHERE org = ? AND repository = ? ORDER BY tag", (org, repository))
        return [row[0] for row in rows]
