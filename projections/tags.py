"""The tags view: (org, repository, tag) -> digest, media type and when upstream last confirmed it.

`tag_totals (org)` keeps each org's count of tags and of repositories holding one, changed with the
rows, so that `org show` and the metrics scrape read a row per org instead of counting its tags.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteCursor
from psycopg import Cursor

from application.ports import TagRow
from domain.cache import TagResolution
from projections.base import SqliteView, View
from projections.postgres_view import PostgresView


@dataclass(frozen=True)
class OrgTagRow:
    repository: str
    tag: str
    digest: str
    media_type: str
    checked_at: float


class TagsView(View):
    name = "tags"
    handles = (TagResolution.Resolved, TagResolution.Revalidated, TagResolution.Retargeted, TagResolution.Dropped)
    follows = ("Registry",)
    # A bulk rebuild gathers the events per tag (TagsGathering); each backend writes a gathering (write_gathered).
    gathers = handles

    def gathering(self) -> TagsGathering:
        return TagsGathering()

    def gather(self, gathered: TagsGathering, event: Any, tracking: Tracking) -> None:
        gathered.add(event)

    def process_event(self, c: Any, event: Any, tracking: Tracking) -> None:
        if isinstance(event, (TagResolution.Resolved, TagResolution.Retargeted)):
            self.put_tag(c, event.org, event.repository, event.tag, event.digest, event.media_type, event.checked_at)
        elif isinstance(event, TagResolution.Revalidated):
            # Same digest by definition; Revalidated carries no media type, so the row keeps its own.
            self.confirm_tag(c, event.org, event.repository, event.tag, event.checked_at)
        elif isinstance(event, TagResolution.Dropped):
            # Its image was evicted or flushed: the hot path stops answering the tag from here.
            self.drop_tag(c, event.org, event.repository, event.tag)

    @abstractmethod
    def put_tag(self, c: Any, org: str, repository: str, tag: str, digest: str, media_type: str,
                checked_at: float) -> None: ...

    @abstractmethod
    def confirm_tag(self, c: Any, org: str, repository: str, tag: str, checked_at: float) -> None: ...

    @abstractmethod
    def drop_tag(self, c: Any, org: str, repository: str, tag: str) -> None: ...

    @abstractmethod
    def get_tag(self, org: str, repository: str, tag: str) -> TagRow | None: ...

    @abstractmethod
    def list_tags(self, org: str, repository: str) -> list[str]: ...

    @abstractmethod
    def org_tag_page(self, org: str, after: tuple[str, str] | None, limit: int,
                     repository: str | None = None) -> list[OrgTagRow]:
        """At most `limit` cached tags of an org (of one repository if given) after (repository, tag), in
        that order: a keyset page along the primary key, as cheap deep in the view as at its start."""

    @abstractmethod
    def org_tag_totals(self, org: str) -> tuple[int, int]:
        """(cached tags, repositories with one) of an org: its kept row."""

    @abstractmethod
    def org_repositories(self, org: str) -> list[str]:
        """The repositories an org holds a tag of, sorted (a robot's `all_cached` expands to them)."""

    @abstractmethod
    def tag_counts(self) -> dict[str, int]:
        """{org: cached tags}: the kept rows, for the metrics scrape."""


class SqliteTagsView(SqliteView, TagsView):
    tables = ("tags", "tag_totals")
    schema = (
        "CREATE TABLE IF NOT EXISTS tags (org TEXT NOT NULL, repository TEXT NOT NULL, tag TEXT NOT NULL, "
        "digest TEXT NOT NULL, media_type TEXT NOT NULL, checked_at REAL NOT NULL, "
        "PRIMARY KEY (org, repository, tag)) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS tag_totals (org TEXT PRIMARY KEY, tags INTEGER NOT NULL, "
        "repositories INTEGER NOT NULL) WITHOUT ROWID",
    )
    schema_version = 2   # 2: tag_totals
    _add_totals = ("INSERT INTO tag_totals VALUES (?, ?, ?) ON CONFLICT (org) DO UPDATE SET "
                   "tags = tags + excluded.tags, repositories = repositories + excluded.repositories")
    _upsert = (
        "INSERT INTO tags VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (org, repository, tag) DO UPDATE SET "
        "digest = excluded.digest, media_type = excluded.media_type, checked_at = excluded.checked_at"
    )

    def put_tag(self, c: SQLiteCursor, org: str, repository: str, tag: str, digest: str, media_type: str,
                checked_at: float) -> None:
        c.execute("SELECT EXISTS (SELECT 1 FROM tags WHERE org = ? AND repository = ? AND tag = ?), "
                  "EXISTS (SELECT 1 FROM tags WHERE org = ? AND repository = ?)", (org, repository, tag, org, repository))
        had_tag, had_repository = c.fetchone()
        c.execute(self._upsert, (org, repository, tag, digest, media_type, checked_at))
        if not had_tag:
            c.execute(self._add_totals, (org, 1, 0 if had_repository else 1))

    def confirm_tag(self, c: SQLiteCursor, org: str, repository: str, tag: str, checked_at: float) -> None:
        c.execute("UPDATE tags SET checked_at = ? WHERE org = ? AND repository = ? AND tag = ?",
                  (checked_at, org, repository, tag))

    def drop_tag(self, c: SQLiteCursor, org: str, repository: str, tag: str) -> None:
        c.execute("DELETE FROM tags WHERE org = ? AND repository = ? AND tag = ? RETURNING 1", (org, repository, tag))
        if c.fetchone() is not None:
            c.execute("SELECT EXISTS (SELECT 1 FROM tags WHERE org = ? AND repository = ?)", (org, repository))
            c.execute(self._add_totals, (org, -1, 0 if c.fetchone()[0] else -1))

    # A bulk rebuild gathers its events (TagsGathering) as PostgreSQL's does, and writes each kind of effect with
    # one executemany, the org totals then counted again from the rows: event by event, each put read the rows
    # twice (the tag's and its repository's), ~70-90 s of the second process at 10M pulls (session 25).
    _gathered_writes = {
        "put": _upsert,
        "drop": "DELETE FROM tags WHERE org = ? AND repository = ? AND tag = ?",
        "confirm": "UPDATE tags SET checked_at = ? WHERE org = ? AND repository = ? AND tag = ?",
    }

    def write_gathered(self, c: SQLiteCursor, gathered: TagsGathering) -> None:
        by_kind = gathered.by_kind()
        by_kind["confirm"] = [(checked_at, *key) for *key, checked_at in by_kind["confirm"]]
        for kind, rows in by_kind.items():
            if rows:
                c.executemany(self._gathered_writes[kind], rows)
        # The totals as the rows give them, for the orgs a put could have made a row for (TagsGathering.orgs).
        for org, puts in gathered.orgs.items():
            c.execute("SELECT count(*), count(DISTINCT repository), EXISTS (SELECT 1 FROM tag_totals WHERE org = ?) "
                      "FROM tags WHERE org = ?", (org, org))
            tags, repositories, known = c.fetchone()
            if puts or known:
                c.execute("INSERT INTO tag_totals VALUES (?, ?, ?) ON CONFLICT (org) DO UPDATE SET "
                          "tags = excluded.tags, repositories = excluded.repositories", (org, tags, repositories))

    def get_tag(self, org: str, repository: str, tag: str) -> TagRow | None:
        rows = self._query("SELECT digest, media_type, checked_at FROM tags "
                           "WHERE org = ? AND repository = ? AND tag = ?", (org, repository, tag))
        return TagRow(*rows[0]) if rows else None

    def list_tags(self, org: str, repository: str) -> list[str]:
        rows = self._query("SELECT tag FROM tags WHERE org = ? AND repository = ? ORDER BY tag", (org, repository))
        return [row[0] for row in rows]

    def org_tag_page(self, org: str, after: tuple[str, str] | None, limit: int,
                     repository: str | None = None) -> list[OrgTagRow]:
        where, args = _page_filter("?", org, after, repository)
        rows = self._query(f"SELECT repository, tag, digest, media_type, checked_at FROM tags WHERE {where} "
                           "ORDER BY repository, tag LIMIT ?", (*args, limit))
        return [OrgTagRow(*row) for row in rows]

    def org_tag_totals(self, org: str) -> tuple[int, int]:
        rows = self._query("SELECT tags, repositories FROM tag_totals WHERE org = ?", (org,))
        return (rows[0][0], rows[0][1]) if rows else (0, 0)

    def org_repositories(self, org: str) -> list[str]:
        return [row[0] for row in self._query("SELECT DISTINCT repository FROM tags WHERE org = ? "
                                              "ORDER BY repository", (org,))]

    def tag_counts(self) -> dict[str, int]:
        return {org: n for org, n in self._query("SELECT org, tags FROM tag_totals WHERE tags > 0")}


class TagsGathering:
    """A bulk rebuild's tag events, each tag's effect folded in log order: what the last put left (a later
    revalidation moves only its checked_at), a drop, or a revalidation alone (of the row the copy holds, if any)."""

    def __init__(self) -> None:
        # (org, repository, tag) -> ("put", digest, media_type, checked_at) | ("drop",) | ("confirm", checked_at)
        self.effects: dict[tuple[str, str, str], tuple] = {}
        # org -> whether any tag was put (then its totals row exists, even if back at 0)
        self.orgs: dict[str, bool] = {}

    def add(self, event: Any) -> None:
        key = (event.org, event.repository, event.tag)
        self.orgs[event.org] = self.orgs.get(event.org, False) or isinstance(
            event, (TagResolution.Resolved, TagResolution.Retargeted))
        if isinstance(event, (TagResolution.Resolved, TagResolution.Retargeted)):
            self.effects[key] = ("put", event.digest, event.media_type, event.checked_at)
        elif isinstance(event, TagResolution.Revalidated):
            before = self.effects.get(key)
            if before is None or before[0] == "confirm":
                self.effects[key] = ("confirm", event.checked_at)
            elif before[0] == "put":
                self.effects[key] = (*before[:3], event.checked_at)
            # after a drop: no row to confirm
        elif isinstance(event, TagResolution.Dropped):
            self.effects[key] = ("drop",)

    def by_kind(self) -> dict[str, list[tuple]]:
        """The effects as rows per kind: put (org, repository, tag, digest, media_type, checked_at), drop (org,
        repository, tag), confirm (org, repository, tag, checked_at)."""
        out: dict[str, list[tuple]] = {"put": [], "drop": [], "confirm": []}
        for key, effect in self.effects.items():
            out[effect[0]].append((*key, *effect[1:]))
        return out


class PostgresTagsView(PostgresView, TagsView):
    projection = "tags"
    pipelined = True   # its writes read nothing back
    # A bulk rebuild gathers its events (TagsGathering) and writes a statement per kind of effect, the org
    # totals then counted again from the rows, instead of a statement per event: the tags of 200,000 images
    # took ~2,400 events/s of a pipeline (bench/results/2026-12-02-rebuild-s19.md).
    _put_rows = ("INSERT INTO {tags} SELECT * FROM {source} ON CONFLICT (org, repository, tag) DO UPDATE SET "
                 "digest = excluded.digest, media_type = excluded.media_type, checked_at = excluded.checked_at")
    _drop_rows = ("DELETE FROM {tags} t USING {source} AS v(org, repository, tag) WHERE t.org = v.org "
                  "AND t.repository = v.repository AND t.tag = v.tag")
    _confirm_rows = ("UPDATE {tags} t SET checked_at = v.checked_at FROM {source} AS v(org, repository, tag, "
                     "checked_at) WHERE t.org = v.org AND t.repository = v.repository AND t.tag = v.tag")
    # The totals as the rows give them (what each event's change keeps them at): for every org the gathering
    # touched, a row made only where a put could have made it (a drop or a revalidation alone makes none).
    _recount = ("SELECT o.org, count(t.tag), count(DISTINCT t.repository) FROM {source} AS o(org, puts) "
                "LEFT JOIN {tags} t ON t.org = o.org WHERE o.puts OR EXISTS (SELECT 1 FROM {tag_totals} x "
                "WHERE x.org = o.org) GROUP BY o.org")

    def write_gathered(self, c: Cursor, gathered: TagsGathering) -> None:
        by_kind = gathered.by_kind()
        for kind, text, types in (("put", self._put_rows, ("text",) * 5 + ("double precision",)),
                                  ("drop", self._drop_rows, ("text",) * 3),
                                  ("confirm", self._confirm_rows, ("text",) * 3 + ("double precision",))):
            if by_kind[kind]:
                self.write_rows(c, text, types, by_kind[kind])
        if gathered.orgs:
            self.write_rows(c, f"INSERT INTO {{tag_totals}} {self._recount} ON CONFLICT (org) DO UPDATE SET "
                               "tags = excluded.tags, repositories = excluded.repositories",
                            ("text", "boolean"), list(gathered.orgs.items()))
    tables = ("tags", "tag_totals")
    schema = (
        "CREATE TABLE IF NOT EXISTS {tags} (org text NOT NULL, repository text NOT NULL, tag text NOT NULL, "
        "digest text NOT NULL, media_type text NOT NULL, checked_at double precision NOT NULL, "
        "PRIMARY KEY (org, repository, tag))",
        "CREATE TABLE IF NOT EXISTS {tag_totals} (org text PRIMARY KEY, tags bigint NOT NULL, "
        "repositories bigint NOT NULL)",
    )
    schema_version = 2   # 2: tag_totals
    _add_totals = (" INSERT INTO {tag_totals} AS t SELECT * FROM change ON CONFLICT (org) DO UPDATE SET "
                   "tags = t.tags + excluded.tags, repositories = t.repositories + excluded.repositories")

    # Each in one statement (no round trip more per event): every part of it sees the rows as they were
    # before it, so `seen` tells whether the tag, or its repository, was there.
    def put_tag(self, c: Cursor, org: str, repository: str, tag: str, digest: str, media_type: str,
                checked_at: float) -> None:
        c.execute(self.sql("WITH seen AS (SELECT EXISTS (SELECT 1 FROM {tags} WHERE org = %(org)s AND "
                           "repository = %(repository)s AND tag = %(tag)s) AS tag, EXISTS (SELECT 1 FROM {tags} "
                           "WHERE org = %(org)s AND repository = %(repository)s) AS repository), "
                           "put AS (INSERT INTO {tags} VALUES (%(org)s, %(repository)s, %(tag)s, %(digest)s, "
                           "%(media_type)s, %(checked_at)s) ON CONFLICT (org, repository, tag) "
                           "DO UPDATE SET digest = excluded.digest, media_type = excluded.media_type, "
                           "checked_at = excluded.checked_at), "
                           "change AS (SELECT %(org)s::text, 1::bigint, CASE WHEN seen.repository THEN 0 ELSE 1 END::bigint "
                           "FROM seen WHERE NOT seen.tag)" + self._add_totals),
                  {"org": org, "repository": repository, "tag": tag, "digest": digest, "media_type": media_type,
                   "checked_at": checked_at}, prepare=True)

    def confirm_tag(self, c: Cursor, org: str, repository: str, tag: str, checked_at: float) -> None:
        c.execute(self.sql("UPDATE {tags} SET checked_at = %s WHERE org = %s AND repository = %s AND tag = %s"),
                  (checked_at, org, repository, tag), prepare=True)

    def drop_tag(self, c: Cursor, org: str, repository: str, tag: str) -> None:
        c.execute(self.sql("WITH gone AS (DELETE FROM {tags} WHERE org = %(org)s AND repository = %(repository)s "
                           "AND tag = %(tag)s RETURNING org), "
                           "change AS (SELECT org, -1::bigint, CASE WHEN EXISTS (SELECT 1 FROM {tags} WHERE "
                           "org = %(org)s AND repository = %(repository)s AND tag <> %(tag)s) THEN 0 ELSE -1 END::bigint "
                           "FROM gone)" + self._add_totals),
                  {"org": org, "repository": repository, "tag": tag}, prepare=True)

    def get_tag(self, org: str, repository: str, tag: str) -> TagRow | None:
        rows = self._query("SELECT digest, media_type, checked_at FROM {tags} "
                           "WHERE org = %s AND repository = %s AND tag = %s", (org, repository, tag))
        return TagRow(*rows[0]) if rows else None

    def list_tags(self, org: str, repository: str) -> list[str]:
        rows = self._query("SELECT tag FROM {tags} WHERE org = %s AND repository = %s ORDER BY tag COLLATE \"C\"",
                           (org, repository))
        return [row[0] for row in rows]

    def org_tag_page(self, org: str, after: tuple[str, str] | None, limit: int,
                     repository: str | None = None) -> list[OrgTagRow]:
        # The database's own collation, the primary key's: ORDER BY ... COLLATE "C" could not walk the
        # index and would sort every tag of the org for each page. Names are ASCII (the OCI grammar),
        # which C.UTF-8 and the usual locales order alike.
        where, args = _page_filter("%s", org, after, repository)
        rows = self._query(f"SELECT repository, tag, digest, media_type, checked_at FROM {{tags}} WHERE {where} "
                           "ORDER BY repository, tag LIMIT %s", (*args, limit))
        return [OrgTagRow(*row) for row in rows]

    def org_tag_totals(self, org: str) -> tuple[int, int]:
        rows = self._query("SELECT tags, repositories FROM {tag_totals} WHERE org = %s", (org,))
        return (rows[0][0], rows[0][1]) if rows else (0, 0)

    def org_repositories(self, org: str) -> list[str]:
        return [row[0] for row in self._query("SELECT DISTINCT repository FROM {tags} WHERE org = %s "
                                              "ORDER BY repository", (org,))]

    def tag_counts(self) -> dict[str, int]:
        return {org: n for org, n in self._query("SELECT org, tags FROM {tag_totals} WHERE tags > 0")}


def _page_filter(mark: str, org: str, after: tuple[str, str] | None, repository: str | None) -> tuple[str, tuple]:
    """The WHERE of a keyset page: (repository, tag) after the cursor's, within the org (and repository)."""
    where, args = [f"org = {mark}"], [org]
    if repository is not None:
        where.append(f"repository = {mark}")
        args.append(repository)
    if after is not None:
        where.append(f"(repository, tag) > ({mark}, {mark})")
        args += after
    return " AND ".join(where), tuple(args)
